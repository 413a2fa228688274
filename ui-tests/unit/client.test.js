import { test } from "node:test";
import assert from "node:assert/strict";
import { ChatClient, RECENT, TYPING_EVERY } from "../../ui/js/client.js";

/** A transport that records what is sent and lets the test play the server. */
class FakeTransport {
  constructor() {
    /** @type {any[]} */
    this.sent = [];
    this.open = false;
    /** @type {(frame: any) => void} */
    this.onevent = () => {};
    /** @type {(state: any, why?: string) => void} */
    this.onstate = () => {};
  }
  connect() {}
  close() {}
  /** @param {object} command */
  send(command) {
    if (!this.open) return false;
    this.sent.push(command);
    return true;
  }
  /** @param {"open" | "reconnecting" | "closed"} state */
  state(state) {
    this.open = state === "open";
    this.onstate(state);
  }
  take() {
    const sent = this.sent;
    this.sent = [];
    return sent;
  }
}

function setup() {
  const transport = new FakeTransport();
  let n = 0;
  const client = new ChatClient(transport, "ann", () => `nonce-${++n}`);
  transport.state("open");
  return { transport, client };
}

test("opening a room joins it from its recent messages and shows it", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 120);
  assert.deepEqual(transport.take(), [{ command: "join", room: 3, after: 120 - RECENT }]);
  assert.equal(client.active, 3);
  client.open(3, "Lobby", 130);
  assert.deepEqual(transport.take(), [], "already joined: only shown");
});

test("after a reconnect every room resumes from what it holds and unacknowledged sends are retried", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  client.open(4, "Games", 10);
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "one", id: 1, ts: 1 });
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "two", id: 2, ts: 2 });
  client.say(3, "are you there?");
  transport.take();
  transport.state("reconnecting");
  client.say(3, "hello?");
  assert.deepEqual(transport.take(), [], "nothing goes out while disconnected");
  transport.state("open");
  assert.deepEqual(transport.take(), [
    { command: "join", room: 3, after: 2 },
    { command: "send", room: 3, message: "are you there?", nonce: "nonce-1" },
    { command: "send", room: 3, message: "hello?", nonce: "nonce-2" },
    { command: "join", room: 4, after: 0 },
  ]);
  transport.onevent({ ack: "nonce-1", room: 3, id: 3, ts: 3 });
  transport.onevent({ msg_type: 0, room: 3, username: "ann", message: "are you there?", id: 3, ts: 3 });
  const lobby = client.rooms.get(3);
  assert.deepEqual(lobby?.ordered().map((m) => m.message), ["one", "two", "are you there?"], "the echo is not shown twice");
  assert.deepEqual([...(lobby?.pending.keys() ?? [])], ["nonce-2"]);
});

test("rooms not in view count unread messages from others", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  client.open(4, "Games", 0);
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "psst", id: 1, ts: 1 });
  transport.onevent({ msg_type: 0, room: 3, username: "ann", message: "mine", id: 2, ts: 2 });
  assert.equal(client.rooms.get(3)?.unread, 1);
  client.show(3);
  assert.equal(client.rooms.get(3)?.unread, 0);
});

test("messages said before a room was opened are neither unread nor news", () => {
  const { transport, client } = setup();
  /** @type {number[]} */
  const fresh = [];
  client.onfresh = (_room, message) => fresh.push(message.id);
  client.open(3, "Lobby", 40); // the room's newest message is 40 when it is opened
  client.open(4, "Games", 0);
  for (let id = 38; id <= 42; id += 1) {
    transport.onevent({ msg_type: 0, room: 3, username: "bob", message: `m${id}`, id, ts: id });
  }
  transport.onevent({ msg_type: 0, room: 3, username: "ann", message: "mine", id: 43, ts: 43 });
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "again", id: 42, ts: 42 });
  assert.equal(client.rooms.get(3)?.unread, 2, "41 and 42 only");
  assert.deepEqual(fresh, [41, 42], "own messages and repeats are not news either");
});

test("a transport that resumes by itself is not asked to rejoin or resend", () => {
  const transport = new FakeTransport();
  const resuming = Object.assign(transport, { resumes: true });
  const client = new ChatClient(resuming, "ann", () => "n1");
  transport.state("open");
  client.open(3, "Lobby", 0);
  client.say(3, "hello");
  transport.take();
  transport.state("reconnecting");
  transport.state("open");
  assert.deepEqual(transport.take(), []);
  assert.equal(client.rooms.get(3)?.pending.get("n1")?.state, "sending", "still waiting for its ack");
});

test("a room the user is taken out of closes with a sentence saying why", () => {
  const { transport, client } = setup();
  client.open(5, "Staff room", 0);
  transport.onevent({ join: "5", title: "Staff room" });
  transport.onevent({ error: "ROOM_ACCESS_DENIED", detail: "you may no longer be in this staff-only room", room: 5 });
  transport.onevent({ leave: "5" });
  assert.equal(client.rooms.has(5), false);
  assert.deepEqual(client.notices.map((n) => n.text), ["You were removed from Staff room. You may no longer be in this staff-only room."]);
});

test("a room the user may not enter is refused with a sentence, not a code", () => {
  const { transport, client } = setup();
  client.open(5, "Staff room", 0);
  transport.onevent({ error: "ROOM_ACCESS_DENIED", detail: "this room is for staff only", room: 5 });
  assert.equal(client.rooms.has(5), false);
  assert.deepEqual(client.notices.map((n) => n.text), ["Staff room: This room is for staff only."]);
});

test("a refused message is marked, with the reason, where it was written", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  client.say(3, "x".repeat(10));
  transport.onevent({ error: "RATE_LIMITED", detail: "too many", room: 3, nonce: "nonce-1" });
  const pending = client.rooms.get(3)?.pending.get("nonce-1");
  assert.equal(pending?.state, "failed");
  assert.equal(pending?.error, "You are sending too fast. Wait a moment and try again.");
  assert.deepEqual(client.notices, []);
});

test("a gap is filled from history and not waited for again", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  transport.take();
  transport.onevent({ gap: "3", after: 0, before: 501 });
  assert.deepEqual(transport.take(), [{ command: "history", room: 3, after: 0, before: 501, limit: 200 }]);
  assert.equal(client.rooms.get(3)?.seenUpTo(), 500);
});

test("older messages are asked for once, until the start of the room", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 60);
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "m11", id: 11, ts: 1 });
  transport.take();
  client.loadOlder(3);
  client.loadOlder(3);
  assert.deepEqual(transport.take(), [{ command: "history", room: 3, before: 11, limit: RECENT }]);
  transport.onevent({ history: "3", messages: [{ msg_type: 0, room: 3, username: "bob", message: "m10", id: 10, ts: 0 }], more: false });
  assert.equal(client.rooms.get(3)?.atStart, true);
  client.loadOlder(3);
  assert.deepEqual(transport.take(), []);
});

test("the room list is fetched again when the server says rooms changed", () => {
  const { transport, client } = setup();
  let asked = 0;
  client.onroomschanged = () => (asked += 1);
  transport.onevent({ rooms: "changed" });
  assert.equal(asked, 1);
});

test("people entering and leaving are noted after the newest message", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "hi", id: 1, ts: 1 });
  transport.onevent({ msg_type: 4, room: 3, username: "cat" });
  transport.onevent({ msg_type: 5, room: 3, username: "bob" });
  assert.deepEqual(client.rooms.get(3)?.presence, [
    { after: 1, text: "cat entered the room" },
    { after: 1, text: "bob left the room" },
  ]);
});

/** A clock the test moves by hand; callbacks run when their time comes. */
class FakeClock {
  constructor() {
    this.time = 1_000_000;
    /** @type {{ at: number, callback: () => void }[]} */
    this.waiting = [];
  }
  now() {
    return this.time;
  }
  /** @param {() => void} callback @param {number} ms */
  later(callback, ms) {
    this.waiting.push({ at: this.time + ms, callback });
  }
  /** @param {number} ms */
  advance(ms) {
    this.time += ms;
    const due = this.waiting.filter((w) => w.at <= this.time);
    this.waiting = this.waiting.filter((w) => w.at > this.time);
    for (const w of due) w.callback();
  }
}

function setupWithClock() {
  const transport = new FakeTransport();
  const clock = new FakeClock();
  const client = new ChatClient(transport, "ann", () => "nonce", { now: () => clock.now(), later: (f, ms) => clock.later(f, ms) });
  transport.state("open");
  return { transport, client, clock };
}

test("a room's members come with the join and follow who enters and leaves", () => {
  const { transport, client } = setup();
  client.open(3, "Lobby", 0);
  assert.deepEqual(client.rooms.get(3)?.memberList(), [], "not known before the server says");
  transport.onevent({ join: "3", title: "Lobby", members: ["bob", "ann"] });
  assert.deepEqual(client.rooms.get(3)?.memberList(), ["ann", "bob"]);
  transport.onevent({ msg_type: 4, room: 3, username: "cat" });
  transport.onevent({ msg_type: 5, room: 3, username: "bob" });
  assert.deepEqual(client.rooms.get(3)?.memberList(), ["ann", "cat"]);
  transport.state("reconnecting");
  assert.deepEqual(client.rooms.get(3)?.memberList(), [], "unknown while disconnected");
  assert.equal(client.rooms.get(3)?.members, null);
});

test("someone typing shows until it expires, they send, or they leave", () => {
  const { transport, client, clock } = setupWithClock();
  let redraws = 0;
  client.onchange = () => (redraws += 1);
  client.open(3, "Lobby", 0);
  transport.onevent({ join: "3", title: "Lobby", members: ["ann", "bob", "cat"] });
  transport.onevent({ typing: "3", username: "bob", ttl_ms: 5000 });
  transport.onevent({ typing: "3", username: "cat", ttl_ms: 5000 });
  assert.deepEqual(client.typists(3), ["bob", "cat"]);
  transport.onevent({ msg_type: 0, room: 3, username: "bob", message: "done", id: 1, ts: 1 });
  assert.deepEqual(client.typists(3), ["cat"], "a message ends it");
  clock.advance(4000);
  assert.deepEqual(client.typists(3), ["cat"]);
  const before = redraws;
  clock.advance(1100);
  assert.deepEqual(client.typists(3), [], "expired by itself");
  assert.ok(redraws > before, "and redrawn without it");
  transport.onevent({ typing: "3", username: "cat", ttl_ms: 5000 });
  transport.onevent({ msg_type: 5, room: 3, username: "cat" });
  assert.deepEqual(client.typists(3), [], "leaving ends it");
});

test("typing is told once the join is confirmed, at most every couple of seconds", () => {
  const { transport, client, clock } = setupWithClock();
  client.open(3, "Lobby", 0);
  transport.take();
  client.typing(3);
  assert.deepEqual(transport.take(), [], "not before the server confirmed the join");
  transport.onevent({ join: "3", title: "Lobby", members: ["ann"] });
  client.typing(3);
  client.typing(3);
  assert.deepEqual(transport.take(), [{ command: "typing", room: 3 }]);
  clock.advance(TYPING_EVERY - 1);
  client.typing(3);
  assert.deepEqual(transport.take(), []);
  clock.advance(1);
  client.typing(3);
  assert.deepEqual(transport.take(), [{ command: "typing", room: 3 }]);
  transport.state("reconnecting");
  clock.advance(TYPING_EVERY);
  client.typing(3);
  assert.deepEqual(transport.take(), [], "not while disconnected");
});
