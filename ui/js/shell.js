// The desktop shell's side of the client: HTTP calls and the chat socket go through the app's Rust side
// (Tauri commands, and a channel per window), which holds the ONE socket that every window shares and the
// session token, which never enters the page.

import { Api, ApiError } from "./api.js";

/** The Tauri API the shell injects (`withGlobalTauri`). @returns {any} */
export function tauri() {
  return /** @type {any} */ (window).__TAURI__;
}

/** Whether this page runs inside the desktop shell. */
export function inShell() {
  return tauri() !== undefined;
}

/**
 * Calls a command of the shell; its errors (`{status, message}`) become ApiErrors.
 * @param {string} command @param {Record<string, unknown>} [args]
 * @returns {Promise<any>}
 */
export async function invoke(command, args = {}) {
  try {
    return await tauri().core.invoke(command, args);
  } catch (error) {
    const e = /** @type {any} */ (error);
    if (e && typeof e === "object" && typeof e.message === "string") throw new ApiError(Number(e.status) || 0, e.message);
    throw new ApiError(0, String(e));
  }
}

/** This window's label: `main`, or `room-ID` for a room's own window. @returns {string} */
export function windowLabel() {
  return tauri().window.getCurrentWindow().label;
}

/** The server's API through the shell, with the session's token added there. */
export class ShellApi extends Api {
  /** @param {string} method @param {string} path @param {object} [body] */
  async exchange(method, path, body) {
    const answer = await invoke("api_request", { method, path, body: body ?? null });
    return { status: answer.status, body: answer.body ?? undefined, retryAfter: answer.retry_after ?? null };
  }

  /** Logs out of the app: the socket, the remembered login and the server's session. */
  logout() {
    return invoke("logout");
  }
}

/**
 * The chat socket as this window sees it. The shell rejoins rooms and resends unacknowledged messages
 * itself after a reconnect (`resumes`), for every window at once.
 */
export class ShellTransport {
  constructor() {
    this.resumes = true;
    /** @type {import("./transport.js").ConnectionState} */
    this.state = "connecting";
    this.stopped = false;
    /** The newest state event seen: the one returned on attaching may be older than one already sent. */
    this.stateSeq = -1;
    /** @type {Promise<void> | undefined} */
    this.attached = undefined;
    /** @type {(frame: any) => void} */
    this.onevent = () => {};
    /** @type {(state: import("./transport.js").ConnectionState, why?: string) => void} */
    this.onstate = () => {};
  }

  connect() {
    this.stopped = false;
    this.attach();
  }

  /**
   * Hands the shell this window's channel, once; whatever is sent waits for it, so that no answer can
   * come back before the window is there to take it.
   * @returns {Promise<void>}
   */
  attach() {
    if (this.attached) return this.attached;
    const channel = new (tauri().core.Channel)();
    /** @param {any} event */
    const take = (event) => {
      if (this.stopped) return;
      if (event.kind === "frame") {
        let frame;
        try {
          frame = JSON.parse(event.frame);
        } catch {
          return;
        }
        this.onevent(frame);
      } else if (event.kind === "state" && event.seq > this.stateSeq) {
        this.stateSeq = event.seq;
        this.state = event.state;
        this.onstate(event.state, event.why ?? undefined);
      }
    };
    channel.onmessage = take;
    this.attached = invoke("chat_attach", { events: channel }).then(take, () => this.onstate("closed", "Not logged in."));
    return this.attached;
  }

  /** @param {object} command */
  send(command) {
    const text = JSON.stringify(command);
    this.attach().then(() => invoke("chat_send", { command: text })).catch(() => {});
    return this.state === "open";
  }

  /** This window stops listening; the socket is the app's and stays for the other windows. */
  close() {
    this.stopped = true;
  }
}
