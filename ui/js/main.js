// The browser's entry point: the page's own server, its cookie, and a WebSocket that reconnects.

import { Api, ApiError } from "./api.js";
import { start } from "./app.js";
import { WebSocketTransport } from "./transport.js";

const api = new Api();
const scheme = location.protocol === "https:" ? "wss" : "ws";
const root = document.getElementById("app");
if (root) {
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
