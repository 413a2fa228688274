// The chat client: which rooms are joined, what each holds, what is on its way, and what to tell the person.
// It speaks the protocol through a Transport and knows nothing of the DOM, so it is unit tested with a fake.

import * as protocol from "./protocol.js";
import { Room } from "./rooms.js";

/** @typedef {import("./transport.js").Transport} Transport */
/** @typedef {import("./transport.js").ConnectionState} ConnectionState */

/** How many recent messages opening a room shows. */
export const RECENT = 50;

/** How often, at most, the client says the person is typing in a room (the server allows 2 a second). */
export const TYPING_EVERY = 2000;

/** @typedef {{ id: number, text: string }} Notice */

/**
 * The time, and a way to be called back later (replaced in tests).
 * @typedef {{ now: () => number, later: (callback: () => void, ms: number) => void }} Clock
 */

/** @type {Clock} */
const realClock = { now: () => Date.now(), later: (callback, ms) => { setTimeout(callback, ms); } };

export class ChatClient {
  /**
   * @param {Transport} transport
   * @param {string} me the logged-in username (own messages are shown as such)
   * @param {() => string} newNonce
   * @param {Clock} clock
   */
  constructor(transport, me, newNonce = () => crypto.randomUUID(), clock = realClock) {
    this.transport = transport;
    this.me = me;
    this.newNonce = newNonce;
    this.clock = clock;
    /** When this person last said they were typing, per room. @type {Map<number, number>} */
    this.typedAt = new Map();
    /** Joined rooms (or being joined), in the order they were opened. @type {Map<number, Room>} */
    this.rooms = new Map();
    /** @type {number | null} */
    this.active = null;
    /** @type {ConnectionState} */
    this.state = "connecting";
    /** Things to tell the person that belong to no message. @type {Notice[]} */
    this.notices = [];
    this.noticeId = 0;
    /** Called after every change, for the view to redraw. */
    this.onchange = () => {};
    /** Called when the server says rooms or rights changed, for the room list to be fetched again. */
    this.onroomschanged = () => {};
    /** Called when the session is over. @type {(why: string) => void} */
    this.onended = () => {};
    /** Called for a message that is new to the person and not their own (for a notification). @type {(room: Room, message: import("./protocol.js").ChatMessage) => void} */
    this.onfresh = () => {};
    transport.onevent = (frame) => this.receive(protocol.read(frame));
    transport.onstate = (state, why) => this.connection(state, why);
  }

  start() {
    this.transport.connect();
  }

  stop() {
    this.transport.close();
  }

  /**
   * Opens a room: joins it (showing its recent messages) or, if already joined, brings it into view.
   * @param {number} id @param {string} title @param {number} lastMessageId the room's newest id, as listed
   */
  open(id, title, lastMessageId) {
    let room = this.rooms.get(id);
    if (!room) {
      room = new Room(id, title, Math.max(0, lastMessageId - RECENT), lastMessageId);
      this.rooms.set(id, room);
      this.transport.send(protocol.join(id, room.since));
    }
    this.show(id);
  }

  /** @param {number | null} id */
  show(id) {
    this.active = id;
    const room = id === null ? undefined : this.rooms.get(id);
    if (room) room.unread = 0;
    this.onchange();
  }

  /** @param {number} id */
  leave(id) {
    this.transport.send(protocol.leave(id));
    this.forget(id);
  }

  /**
   * Says `text` in room `id`; shown as "sending…" until the server acknowledges it.
   * @param {number} id @param {string} text
   */
  say(id, text) {
    const room = this.rooms.get(id);
    if (!room || !text.trim()) return;
    const nonce = this.newNonce();
    room.sending(nonce, text);
    this.transport.send(protocol.send(id, text, nonce));
    this.onchange();
  }

  /**
   * The person is typing in room `id`: the others are told, at most every TYPING_EVERY, and only once the
   * server has confirmed the join (before that the server would refuse it, and a refusal closes the room).
   * @param {number} id
   */
  typing(id) {
    const room = this.rooms.get(id);
    const now = this.clock.now();
    if (!room?.joined || this.state !== "open" || now - (this.typedAt.get(id) ?? -Infinity) < TYPING_EVERY) return;
    this.typedAt.set(id, now);
    this.transport.send(protocol.typing(id));
  }

  /** Who is typing in room `id` now, sorted. @param {number} id */
  typists(id) {
    return this.rooms.get(id)?.typingNow(this.clock.now()) ?? [];
  }

  /** Asks for the page of messages before the oldest one held. @param {number} id */
  loadOlder(id) {
    const room = this.rooms.get(id);
    const oldest = room?.oldest() ?? null;
    if (!room || room.atStart || room.loadingOlder || oldest === null) return;
    if (oldest <= 1) {
      room.atStart = true;
      return;
    }
    room.loadingOlder = this.transport.send(protocol.history(id, { before: oldest, limit: RECENT }));
  }

  /** @param {number} id */
  dismiss(id) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.onchange();
  }

  /** @param {string} text */
  notify(text) {
    this.notices.push({ id: ++this.noticeId, text });
    this.onchange();
  }

  /** @param {number} id */
  forget(id) {
    this.rooms.delete(id);
    if (this.active === id) this.active = this.rooms.keys().next().value ?? null;
    this.onchange();
  }

  /** @param {ConnectionState} state @param {string} [why] */
  connection(state, why) {
    this.state = state;
    // Until the server confirms each join again, nobody is known to be there and nothing may be sent as typing.
    if (state !== "open") for (const room of this.rooms.values()) room.disconnected();
    if (state === "open") {
      // Back (or there for the first time): rejoin every room from what it holds, then resend what the
      // server never acknowledged, with the same nonces, so nothing is posted twice.
      for (const room of this.rooms.values()) {
        room.loadingOlder = false;
        if (this.transport.resumes) continue;
        this.transport.send(protocol.join(room.id, room.seenUpTo()));
        for (const pending of room.pending.values()) {
          if (pending.state === "sending") this.transport.send(protocol.send(room.id, pending.text, pending.nonce));
        }
      }
    }
    if (state === "closed") this.onended(why ?? "session ended");
    this.onchange();
  }

  /** @param {import("./protocol.js").ServerEvent} event */
  receive(event) {
    switch (event.kind) {
      case "message": {
        const room = this.rooms.get(event.message.room);
        const message = event.message;
        // Only what was said since the room was opened is news: the recent messages shown on opening are not.
        if (room?.add(message) && message.id > room.liveFrom && message.username !== this.me) {
          if (this.active !== room.id) room.unread += 1;
          this.onfresh(room, message);
        }
        break;
      }
      case "presence":
        this.rooms.get(event.room)?.someone(event.username, event.entered);
        break;
      case "ack":
        this.rooms.get(event.room)?.acknowledged(event.nonce, event.id, event.ts, this.me);
        break;
      case "history": {
        const room = this.rooms.get(event.room);
        if (!room) break;
        const oldestBefore = room.oldest();
        for (const message of event.messages) room.add(message);
        if (room.loadingOlder && !event.more && (oldestBefore === null || event.messages.every((m) => m.id < oldestBefore))) {
          room.atStart = true;
        }
        room.loadingOlder = false;
        break;
      }
      case "gap": {
        const room = this.rooms.get(event.room);
        if (!room) break;
        // Not everything was replayed: show what is still stored of it, and stop waiting for the rest.
        room.skipTo(event.before);
        this.transport.send(protocol.history(event.room, { after: event.after, before: event.before, limit: 200 }));
        break;
      }
      case "joined":
        this.rooms.get(event.room)?.entered(event.members);
        break;
      case "typing": {
        const room = this.rooms.get(event.room);
        if (!room || event.username === this.me) break;
        room.typing(event.username, this.clock.now(), event.ttlMs);
        // Redrawn once it has expired, so that "is typing…" goes away by itself.
        this.clock.later(() => this.onchange(), event.ttlMs + 50);
        break;
      }
      case "left":
        if (this.rooms.has(event.room)) this.forget(event.room);
        break;
      case "error":
        this.refused(event);
        break;
      case "rooms-changed":
        this.onroomschanged();
        break;
      default:
        return;
    }
    this.onchange();
  }

  /** @param {Extract<import("./protocol.js").ServerEvent, { kind: "error" }>} error */
  refused(error) {
    const sentence = protocol.describe(error.code, error.detail);
    const room = error.room === null ? undefined : this.rooms.get(error.room);
    if (error.nonce && room) {
      room.failed(error.nonce, sentence);
      return;
    }
    if (room && (error.code === "ROOM_ACCESS_DENIED" || error.code === "ROOM_INVALID")) {
      // Taken out of a room one was in, or refused at the door: the room closes with a sentence saying why.
      this.forget(room.id);
      this.notify(room.joined ? protocol.removal(room.title, error.detail) : `${room.title}: ${sentence}`);
      return;
    }
    if (error.code === "USER_HAS_TO_LOGIN") return; // the close that follows ends the session
    this.notify(sentence);
  }
}
