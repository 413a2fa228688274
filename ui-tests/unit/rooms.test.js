import { test } from "node:test";
import assert from "node:assert/strict";
import { Room } from "../../ui/js/rooms.js";

/** @param {number} id */
const message = (id) => ({ id, room: 1, username: "ann", message: `m${id}`, ts: id });

test("a message is held once", () => {
  const room = new Room(1, "Lobby");
  assert.equal(room.add(message(1)), true);
  assert.equal(room.add(message(1)), false);
  room.add(message(3));
  room.add(message(2));
  assert.deepEqual(room.ordered().map((m) => m.id), [1, 2, 3]);
});

test("seen-up-to stops at the first hole, from where the room was joined", () => {
  const room = new Room(1, "Lobby", 40);
  assert.equal(room.seenUpTo(), 40, "nothing after the join point yet");
  room.add(message(41));
  room.add(message(42));
  room.add(message(44));
  assert.equal(room.seenUpTo(), 42, "43 is missing: 44 is not claimed");
  room.add(message(43));
  assert.equal(room.seenUpTo(), 44);
  room.add(message(10));
  assert.equal(room.seenUpTo(), 44, "older history does not change it");
});

test("a gap the server cannot fill is not waited for", () => {
  const room = new Room(1, "Lobby", 0);
  room.add(message(1));
  room.add(message(600));
  assert.equal(room.seenUpTo(), 1);
  room.skipTo(600);
  assert.equal(room.seenUpTo(), 600);
});

test("an acknowledged own message takes its id; a refused one says why", () => {
  const room = new Room(1, "Lobby");
  room.sending("k1", "hello");
  room.sending("k2", "too much");
  room.acknowledged("k1", 5, 99, "ann");
  assert.deepEqual(room.messages.get(5), { id: 5, room: 1, username: "ann", message: "hello", ts: 99 });
  assert.equal(room.add(message(5)), false, "the echo of the same message is not shown twice");
  room.failed("k2", "That message is too long.");
  assert.deepEqual([...room.pending.values()], [{ nonce: "k2", text: "too much", state: "failed", error: "That message is too long." }]);
});
