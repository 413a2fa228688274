// The entry point. In a browser: the page's own server, its cookie, and a WebSocket that reconnects. In
// the desktop shell: desktop.js, where the shell's Rust side does the talking to the server.

import { Api, ApiError } from "./api.js";
import { start } from "./app.js";
import { WebSocketTransport } from "./transport.js";
import { inShell } from "./shell.js";

const api = new Api();
const scheme = location.protocol === "https:" ? "wss" : "ws";
const root = document.getElementById("app");
if (root && inShell()) {
  import("./desktop.js").then(({ startDesktop }) => startDesktop(root));
} else if (root) {
  start(root, {
    api,
    transport: () =>
      new WebSocketTransport({
        url: `${scheme}://${location.host}/chat/stream/`,
        // Reconnecting is pointless once the session is gone: then the login page is shown instead.
        shouldRetry: async () => {
          try {
            await api.me();
            return true;
          } catch (e) {
            return !(e instanceof ApiError && e.status === 401);
          }
        },
      }),
  });
}
