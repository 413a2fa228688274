// What the client holds of one room: its messages by id, the messages of its own still waiting for the
// server, and how far it has seen everything. Pure: no DOM, no socket.

/** @typedef {import("./protocol.js").ChatMessage} ChatMessage */

/**
 * @typedef {{ nonce: string, text: string, state: "sending" | "failed", error: string }} Pending
 */

export class Room {
  /**
   * @param {number} id @param {string} title
   * @param {number} since the room is joined from here: everything up to it is not wanted (or held)
   * @param {number} [liveFrom] the room's newest message when it was opened
   */
  constructor(id, title, since = 0, liveFrom = since) {
    this.id = id;
    this.title = title;
    /** Everything up to this id is held or known to be unavailable. */
    this.since = since;
    /** Messages after this id are new to the person (the ones up to it were said before the room opened). */
    this.liveFrom = liveFrom;
    /** @type {Map<number, ChatMessage>} */
    this.messages = new Map();
    /** Own messages sent but not yet acknowledged, by nonce, in sending order. @type {Map<string, Pending>} */
    this.pending = new Map();
    /** Messages received while the room was not in view. */
    this.unread = 0;
    /** True once the server said the oldest held message is the oldest there is. */
    this.atStart = false;
    /** Set while older messages are being fetched. */
    this.loadingOlder = false;
    /** True once the server confirmed the join (a refusal after that is a removal). */
    this.joined = false;
    /** "Ann entered" / "Ann left" lines, each shown after the message that was newest when it came. @type {{ after: number, text: string }[]} */
    this.presence = [];
    /** Who is in the room, from the join reply and the enter and leave notices since; null when not known
     * (not joined yet, or the server does not tell). @type {Set<string> | null} */
    this.members = null;
    /** Who is typing, and until when (ms since the epoch). @type {Map<string, number>} */
    this.typists = new Map();
  }

  /**
   * The server confirmed the join, with who is in the room (null: the server does not say).
   * @param {string[] | null} members
   */
  entered(members) {
    this.joined = true;
    this.members = members === null ? null : new Set(members);
  }

  /** The connection is gone: the room is not joined until the server confirms it again. */
  disconnected() {
    this.joined = false;
    this.members = null;
    this.typists.clear();
  }

  /** The members, sorted. */
  memberList() {
    return this.members === null ? [] : [...this.members].sort((a, b) => a.localeCompare(b));
  }

  /**
   * `username` is typing, for `ttlMs` from `now`.
   * @param {string} username @param {number} now @param {number} ttlMs
   */
  typing(username, now, ttlMs) {
    this.typists.set(username, now + ttlMs);
  }

  /** Who is typing at `now`, sorted (expired ones are forgotten). @param {number} now */
  typingNow(now) {
    for (const [name, until] of this.typists) if (until <= now) this.typists.delete(name);
    return [...this.typists.keys()].sort((a, b) => a.localeCompare(b));
  }

  /**
   * Adds a message unless it is already held. Returns whether it was new.
   * @param {ChatMessage} message
   */
  add(message) {
    if (this.messages.has(message.id)) return false;
    this.messages.set(message.id, message);
    // What they were typing has been said.
    this.typists.delete(message.username);
    return true;
  }

  /** The held messages, oldest first. */
  ordered() {
    return [...this.messages.values()].sort((a, b) => a.id - b.id);
  }

  /**
   * Notes someone entering or leaving, after the newest message held (the newest 50 notes are kept).
   * @param {string} username @param {boolean} entered
   */
  someone(username, entered) {
    if (entered) this.members?.add(username);
    else {
      this.members?.delete(username);
      this.typists.delete(username);
    }
    let newest = this.since;
    for (const id of this.messages.keys()) newest = Math.max(newest, id);
    this.presence.push({ after: newest, text: `${username} ${entered ? "entered" : "left"} the room` });
    if (this.presence.length > 50) this.presence.shift();
  }

  /** The smallest id held, or null. */
  oldest() {
    let min = null;
    for (const id of this.messages.keys()) if (min === null || id < min) min = id;
    return min;
  }

  /**
   * The highest id N up to which the client has everything there is: what it may claim when it resumes
   * (ids are dense, so a hole means a missing message, and the client must not claim past it).
   */
  seenUpTo() {
    let n = this.since;
    while (this.messages.has(n + 1)) n += 1;
    return n;
  }

  /**
   * The server did not replay messages after `after` and before `before` (too many, or no longer stored):
   * they are fetched as history for reading, and not waited for again.
   * @param {number} before
   */
  skipTo(before) {
    this.since = Math.max(this.since, before - 1);
  }

  /**
   * Remembers an own message on its way to the server.
   * @param {string} nonce @param {string} text
   */
  sending(nonce, text) {
    this.pending.set(nonce, { nonce, text, state: "sending", error: "" });
  }

  /**
   * The server stored an own message: it becomes a message with its id (the event may come later, or may
   * have come already; either way it is held once).
   * @param {string} nonce @param {number} id @param {number} ts @param {string} username
   */
  acknowledged(nonce, id, ts, username) {
    const pending = this.pending.get(nonce);
    if (!pending) return;
    this.pending.delete(nonce);
    this.add({ id, room: this.id, username, message: pending.text, ts });
  }

  /**
   * The server refused an own message.
   * @param {string} nonce @param {string} error
   */
  failed(nonce, error) {
    const pending = this.pending.get(nonce);
    if (pending) {
      pending.state = "failed";
      pending.error = error;
    }
  }
}
