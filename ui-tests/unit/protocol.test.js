import { test } from "node:test";
import assert from "node:assert/strict";
import * as protocol from "../../ui/js/protocol.js";

test("server frames are read into events", () => {
  assert.deepEqual(protocol.read({ join: "3", title: "Lobby" }), { kind: "joined", room: 3, title: "Lobby", members: null });
  assert.deepEqual(
    protocol.read({ join: "3", title: "Lobby", members: ["ann", "bob"] }),
    { kind: "joined", room: 3, title: "Lobby", members: ["ann", "bob"] },
  );
  assert.deepEqual(
    protocol.read({ typing: "3", username: "bob", ttl_ms: 4000 }),
    { kind: "typing", room: 3, username: "bob", ttlMs: 4000 },
  );
  assert.deepEqual(protocol.read({ leave: "3" }), { kind: "left", room: 3 });
  assert.deepEqual(protocol.read({ msg_type: 0, room: 3, username: "ann", message: "hi", id: 7, ts: 5 }), {
    kind: "message",
    message: { id: 7, room: 3, username: "ann", message: "hi", ts: 5 },
  });
  assert.deepEqual(protocol.read({ msg_type: 4, room: 3, username: "bob" }), { kind: "presence", room: 3, username: "bob", entered: true });
  assert.deepEqual(protocol.read({ ack: "k1", room: 3, id: 8, ts: 9 }), { kind: "ack", nonce: "k1", room: 3, id: 8, ts: 9 });
  assert.deepEqual(protocol.read({ gap: "3", after: 1, before: 6 }), { kind: "gap", room: 3, after: 1, before: 6 });
  assert.deepEqual(protocol.read({ rooms: "changed" }), { kind: "rooms-changed" });
  assert.deepEqual(protocol.read({ error: "RATE_LIMITED", detail: "slow down", room: 3, nonce: "k2" }), {
    kind: "error", code: "RATE_LIMITED", detail: "slow down", room: 3, nonce: "k2",
  });
  assert.deepEqual(protocol.read({ error: "ROOM_INVALID" }), { kind: "error", code: "ROOM_INVALID", detail: "", room: null, nonce: null });
  assert.equal(protocol.read({ something: "new" }).kind, "unknown");
  assert.equal(protocol.read(null).kind, "unknown");
});

test("commands are the server's", () => {
  assert.deepEqual(protocol.join(3), { command: "join", room: 3 });
  assert.deepEqual(protocol.join(3, 40), { command: "join", room: 3, after: 40 });
  assert.deepEqual(protocol.send(3, "hi", "k"), { command: "send", room: 3, message: "hi", nonce: "k" });
  assert.deepEqual(protocol.history(3, { before: 10, limit: 5 }), { command: "history", room: 3, before: 10, limit: 5 });
});

test("errors read as sentences, never as codes", () => {
  assert.equal(protocol.describe("ROOM_ACCESS_DENIED"), "This room is for staff only.");
  assert.equal(protocol.removal("Ops", "this room is now for staff only"), "You were removed from Ops. This room is now for staff only.");
  assert.match(protocol.describe("MESSAGE_TOO_LONG", "messages are limited to 4000 characters"), /too long \(limited to 4000 characters\)/);
  assert.equal(protocol.describe("SOMETHING_NEW"), "Something went wrong.");
});
