import { test } from "node:test";
import assert from "node:assert/strict";
import { Api, ApiError } from "../../ui/js/api.js";

/** Replaces fetch with one answering `status` and `body` (with `headers`). */
function answer(status, body, headers = {}) {
  globalThis.fetch = async () => new Response(body, { status, headers });
}

test("answers that are not the API's are an error, not empty data", async () => {
  answer(200, "<!doctype html><title>Some other site</title>");
  await assert.rejects(new Api().me(), (e) => e instanceof ApiError && /not as a MultiChat server/.test(e.message));
});

test("errors become sentences, with the wait when throttled", async () => {
  answer(409, JSON.stringify({ error: "that username is taken" }));
  await assert.rejects(new Api().createUser({ username: "a", password: "b", is_staff: false, is_admin: false }), {
    message: "That username is taken.",
  });
  answer(429, JSON.stringify({ error: "too many failed attempts; try again in 4 s" }), { "retry-after": "4" });
  await assert.rejects(new Api().login("a", "b"), { message: "Too many attempts. Try again in 4 seconds." });
  answer(429, "{}", { "retry-after": "1" });
  await assert.rejects(new Api().login("a", "b"), { message: "Too many attempts. Try again in 1 second." });
  globalThis.fetch = async () => {
    throw new TypeError("fetch failed");
  };
  await assert.rejects(new Api().rooms(), (e) => e instanceof ApiError && e.status === 0);
});

test("a token, when given, is sent as a bearer token", async () => {
  /** @type {Headers | undefined} */
  let seen;
  globalThis.fetch = async (_url, init) => {
    seen = new Headers(init?.headers);
    return new Response(JSON.stringify({ id: 1 }), { status: 200 });
  };
  await new Api("http://server:8000", "tok").me();
  assert.equal(seen?.get("authorization"), "Bearer tok");
});
