// The wire protocol of /chat/stream/ (docs/protocol.md): commands the client sends, and the events it gets
// back, read into plain objects. Pure: no DOM, no socket.

/**
 * @typedef {{ id: number, room: number, username: string, message: string, ts: number }} ChatMessage
 *
 * @typedef {{ kind: "joined", room: number, title: string, members: string[] | null }
 *   | { kind: "left", room: number }
 *   | { kind: "message", message: ChatMessage }
 *   | { kind: "presence", room: number, username: string, entered: boolean }
 *   | { kind: "typing", room: number, username: string, ttlMs: number }
 *   | { kind: "error", code: string, detail: string, room: number | null, nonce: string | null }
 *   | { kind: "ack", nonce: string, room: number, id: number, ts: number }
 *   | { kind: "history", room: number, messages: ChatMessage[], more: boolean }
 *   | { kind: "gap", room: number, after: number, before: number }
 *   | { kind: "rooms-changed" }
 *   | { kind: "unknown" }} ServerEvent
 */

/** @param {number} room @param {number | null} [after] */
export function join(room, after = null) {
  return after === null ? { command: "join", room } : { command: "join", room, after };
}

/** @param {number} room */
export function leave(room) {
  return { command: "leave", room };
}

/** @param {number} room @param {string} message @param {string} nonce */
export function send(room, message, nonce) {
  return { command: "send", room, message, nonce };
}

/** @param {number} room */
export function typing(room) {
  return { command: "typing", room };
}

/** @param {number} room @param {{ before?: number, after?: number, limit?: number }} page */
export function history(room, page) {
  return { command: "history", room, ...page };
}

/**
 * @param {any} m
 * @returns {ChatMessage}
 */
function chatMessage(m) {
  return { id: Number(m.id), room: Number(m.room), username: String(m.username), message: String(m.message), ts: Number(m.ts) };
}

/**
 * Reads one server frame (already parsed JSON).
 * @param {any} frame
 * @returns {ServerEvent}
 */
export function read(frame) {
  if (frame === null || typeof frame !== "object") return { kind: "unknown" };
  if (typeof frame.error === "string") {
    return {
      kind: "error",
      code: frame.error,
      detail: typeof frame.detail === "string" ? frame.detail : "",
      room: frame.room === undefined ? null : Number(frame.room),
      nonce: typeof frame.nonce === "string" ? frame.nonce : null,
    };
  }
  if (frame.join !== undefined) {
    // No member list when the server has presence turned off.
    const members = Array.isArray(frame.members) ? frame.members.map(String) : null;
    return { kind: "joined", room: Number(frame.join), title: String(frame.title), members };
  }
  if (frame.leave !== undefined) return { kind: "left", room: Number(frame.leave) };
  if (typeof frame.ack === "string") {
    return { kind: "ack", nonce: frame.ack, room: Number(frame.room), id: Number(frame.id), ts: Number(frame.ts) };
  }
  if (frame.history !== undefined) {
    return { kind: "history", room: Number(frame.history), messages: frame.messages.map(chatMessage), more: Boolean(frame.more) };
  }
  if (frame.gap !== undefined) {
    return { kind: "gap", room: Number(frame.gap), after: Number(frame.after), before: Number(frame.before) };
  }
  if (frame.rooms === "changed") return { kind: "rooms-changed" };
  if (frame.typing !== undefined) {
    return { kind: "typing", room: Number(frame.typing), username: String(frame.username), ttlMs: Number(frame.ttl_ms) || 5000 };
  }
  if (frame.msg_type === 0) return { kind: "message", message: chatMessage(frame) };
  if (frame.msg_type === 4 || frame.msg_type === 5) {
    return { kind: "presence", room: Number(frame.room), username: String(frame.username), entered: frame.msg_type === 4 };
  }
  return { kind: "unknown" };
}

/** Sentences for the server's error codes, as a person should read them. */
const SENTENCES = /** @type {Record<string, string>} */ ({
  ROOM_ACCESS_DENIED: "This room is for staff only.",
  ROOM_INVALID: "That room does not exist (any more).",
  MESSAGE_TOO_LONG: "That message is too long.",
  MESSAGE_EMPTY: "That message is empty.",
  RATE_LIMITED: "You are sending too fast. Wait a moment and try again.",
  FRAME_TOO_LARGE: "That message is too large.",
  SERVER_ERROR: "The server could not do that just now. Try again.",
  USER_HAS_TO_LOGIN: "Your session has ended. Log in again.",
});

/**
 * A human sentence for an error event: the server's own detail where it is more specific.
 * @param {string} code @param {string} [detail]
 */
export function describe(code, detail = "") {
  const sentence = SENTENCES[code] ?? "Something went wrong.";
  if (code === "MESSAGE_TOO_LONG" && detail) return `That message is too long (${detail.replace(/^messages are /, "")}).`;
  return sentence;
}

/**
 * The sentence for being taken out of a room one was in, from the server's reason.
 * @param {string} title @param {string} detail
 */
export function removal(title, detail) {
  const reason = detail ? `${detail.charAt(0).toUpperCase()}${detail.slice(1)}.` : "";
  return `You were removed from ${title}. ${reason}`.trim();
}
