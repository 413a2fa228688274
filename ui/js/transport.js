// The one way the client reaches the server's chat socket. The rest of the client sees only this shape
// (open, send a command, receive events, connection state), so the desktop shell can put its own
// transport in its place.

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionState
 *
 * @typedef {object} Transport
 * @property {() => void} connect                 start (and keep) the connection
 * @property {(command: object) => boolean} send  false when not connected (the caller resends on "open")
 * @property {() => void} close                   stop for good
 * @property {(frame: any) => void} onevent       set by the client: one parsed server frame
 * @property {(state: ConnectionState, why?: string) => void} onstate  set by the client
 * @property {boolean} [resumes]  true when the transport itself rejoins rooms and resends unacknowledged
 *   messages after reconnecting (the desktop shell's does), so the client must not do it again
 */

/** Close codes after which reconnecting cannot help: the session is over. */
const FINAL = new Set([4001, 4003]);

/** A browser WebSocket that reconnects with exponential backoff (0.5 s doubling up to 5 s, jittered). */
export class WebSocketTransport {
  /**
   * @param {object} options
   * @param {string} options.url                        ws:// or wss:// address of /chat/stream/
   * @param {string | null} [options.token]             session token (else the browser's cookie is used)
   * @param {() => Promise<boolean>} [options.shouldRetry]  asked before each reconnect (e.g. still logged in?)
   */
  constructor({ url, token = null, shouldRetry = async () => true }) {
    this.url = url;
    this.token = token;
    this.shouldRetry = shouldRetry;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.attempt = 0;
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {(frame: any) => void} */
    this.onevent = () => {};
    /** @type {(state: ConnectionState, why?: string) => void} */
    this.onstate = () => {};
  }

  connect() {
    this.stopped = false;
    this.onstate(this.attempt === 0 ? "connecting" : "reconnecting");
    const protocols = this.token ? ["multichat", `token.${this.token}`] : ["multichat"];
    const socket = new WebSocket(this.url, protocols);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.onstate("open");
    };
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      this.onevent(frame);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (FINAL.has(event.code)) {
        this.stopped = true;
        this.onstate("closed", event.reason || "session ended");
        return;
      }
      this.retry();
    };
  }

  /** @param {object} command */
  send(command) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(command));
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000);
    this.socket = null;
  }

  retry() {
    this.attempt += 1;
    this.onstate("reconnecting");
    const delay = Math.min(5000, 500 * 2 ** (this.attempt - 1)) * (0.5 + Math.random() / 2);
    this.timer = setTimeout(async () => {
      if (this.stopped) return;
      if (await this.shouldRetry()) {
        this.connect();
      } else {
        this.stopped = true;
        this.onstate("closed", "session ended");
      }
    }, delay);
  }
}
