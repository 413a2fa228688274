// The web client in a real browser against the real server: what a person sees and does.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { dataDir, launch, logIn, manage, openPage, removeDir, screenshot, startServer, stopServer } from "./harness.js";

/** @type {import("playwright-core").Browser} */
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** No test may hang: each gets this long. */
const LIMIT = { timeout: 90_000 };

/**
 * A server with an admin "boss" (staff too), a plain user "pat", and rooms Lobby, Games and a staff-only
 * "Staff room"; runs `body`, then cleans up whatever happened.
 * @param {(server: any, dir: string) => Promise<void>} body @param {string[]} [extra] options for `serve`
 */
async function withServer(body, extra = []) {
  const dir = dataDir();
  manage(dir, ["createsuperuser", "--username", "boss", "--password-stdin"], "boss-pw\n");
  manage(dir, ["createuser", "--username", "pat", "--password-stdin"], "pat-pw\n");
  for (const args of [["--title", "Lobby"], ["--title", "Games"], ["--title", "Staff room", "--staff-only"]]) {
    manage(dir, ["createroom", ...args]);
  }
  const server = await startServer(dir, 0, extra);
  try {
    await body(server, dir);
  } finally {
    await stopServer(server, true);
    removeDir(dir);
  }
}

/** @param {import("playwright-core").Page} page @param {string} text */
async function say(page, text) {
  await page.getByRole("textbox", { name: "Message" }).fill(text);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
}

/** The message texts shown in the open room. @param {import("playwright-core").Page} page */
function shown(page) {
  return page.locator(".messages .message .text").allTextContents();
}

/** Waits until `text` is shown in the open room. @param {import("playwright-core").Page} page @param {string} text */
async function sees(page, text) {
  await page.locator(".messages .message:not(.pending) .text", { hasText: text }).first().waitFor();
}

test("the first page of an empty server creates the admin account", LIMIT, async () => {
  const dir = dataDir();
  const server = await startServer(dir);
  try {
    const page = await openPage(browser, server.url);
    await page.getByRole("heading", { name: "Welcome to MultiChat" }).waitFor();
    await screenshot(page, "01-first-run");
    await page.getByLabel("Username").fill("root");
    await page.getByLabel("Password").fill("a good password");
    await page.getByRole("button", { name: "Create admin account" }).click();
    await page.getByRole("button", { name: "Admin" }).waitFor();

    const stranger = await openPage(browser, server.url);
    await stranger.getByRole("button", { name: "Log in" }).waitFor();
    assert.equal(await stranger.getByRole("button", { name: "Create admin account" }).count(), 0, "setup is closed now");
    await stranger.getByLabel("Username").fill("root");
    await stranger.getByLabel("Password").fill("wrong");
    await stranger.getByRole("button", { name: "Log in" }).click();
    await stranger.getByText("Wrong username or password.").waitFor();
    await screenshot(stranger, "02-login-error");
    for (let n = 0; n < 4; n += 1) await stranger.getByRole("button", { name: "Log in" }).click();
    await stranger.getByText(/Too many attempts\. Try again in \d+ seconds?\./).waitFor();
    await stranger.waitForTimeout(8_500); // the backoff after a few failures is seconds, not minutes

    await logIn(stranger, "root", "a good password");
    await stranger.getByRole("button", { name: "Account" }).click();
    await stranger.getByLabel("Current password").fill("a good password");
    await stranger.getByLabel("New password").fill("an even better one");
    await stranger.getByRole("button", { name: "Change password" }).click();
    await stranger.getByText("Your password was changed.").waitFor();
    await stranger.getByRole("button", { name: "Log out" }).click();
    await logIn(stranger, "root", "an even better one");

    await stranger.getByRole("button", { name: "Log out" }).click();
    await stopServer(server, true);
    await stranger.getByLabel("Username").fill("root");
    await stranger.getByLabel("Password").fill("an even better one");
    await stranger.getByRole("button", { name: "Log in" }).click();
    await stranger.getByText("The server cannot be reached. Check your connection and try again.").waitFor();
  } finally {
    await stopServer(server, true);
    removeDir(dir);
  }
});

test("two people chat in a room, and one of them in a second room too", LIMIT, async () => {
  await withServer(async (server) => {
    const boss = await openPage(browser, server.url);
    const pat = await openPage(browser, server.url);
    await logIn(boss, "boss", "boss-pw");
    await logIn(pat, "pat", "pat-pw");

    await pat.getByRole("button", { name: "Lobby" }).waitFor();
    assert.equal(await pat.getByRole("button", { name: "Staff room" }).count(), 0, "a plain user never sees the staff-only room");
    await boss.getByRole("button", { name: "Staff room" }).waitFor();

    await boss.getByRole("button", { name: "Lobby" }).click();
    await boss.getByRole("heading", { name: "Lobby" }).waitFor();
    // The heading shows at once; the room is busy until the server confirms boss is in (and will hear pat enter).
    await boss.locator('.messages[aria-busy="false"]').waitFor();
    await pat.getByRole("button", { name: "Lobby" }).click();
    await boss.getByText("pat entered the room").waitFor();
    await say(boss, "Hello from boss");
    await sees(pat, "Hello from boss");
    await say(pat, "Hi boss!");
    await sees(boss, "Hi boss!");
    assert.equal(await boss.locator(".message.own .text", { hasText: "Hello from boss" }).count(), 1, "own messages stand out");
    assert.equal(await boss.locator(".message.own .text", { hasText: "Hi boss!" }).count(), 0);

    // A second room for pat: both rooms arrive over the one socket.
    await pat.getByRole("button", { name: "Games" }).click();
    await boss.getByRole("button", { name: "Games" }).click();
    await say(boss, "Anyone for chess?");
    await sees(pat, "Anyone for chess?");
    await boss.getByRole("button", { name: "Lobby" }).click();
    await say(boss, "Back in the lobby");
    await pat.getByText("1 unread").waitFor();
    await screenshot(pat, "03-chat-unread");
    await pat.getByRole("button", { name: "Lobby" }).click();
    await sees(pat, "Back in the lobby");
    assert.deepEqual(await shown(pat), ["Hello from boss", "Hi boss!", "Back in the lobby"]);

    // Text is text: markup in a message is shown, never run or rendered.
    const markup = `<img src=x onerror="window.pwned=1"><b>bold</b>`;
    await say(boss, markup);
    await sees(pat, "<b>bold</b>");
    assert.equal(await pat.locator(".messages b, .messages img").count(), 0);
    assert.equal(await pat.evaluate(() => /** @type {any} */ (window).pwned), undefined);
    await screenshot(boss, "04-chat-desktop");

    // A refusal is said next to the message it concerns, not in a dialog.
    await say(pat, "x".repeat(4001));
    await pat.locator(".message.failed").getByText("That message is too long (limited to 4000 characters).").waitFor();

    await pat.setViewportSize({ width: 400, height: 700 });
    await screenshot(pat, "05-chat-phone");
    await pat.getByRole("button", { name: "Leave" }).click();
    await pat.getByRole("heading", { name: "Games" }).waitFor(); // the other open room comes into view
    await pat.getByRole("button", { name: "Leave" }).click();
    await pat.getByText("Choose a room").waitFor();
  });
});

test("each room lists who is in it, with an online count, and shows who is typing", LIMIT, async () => {
  await withServer(async (server) => {
    const boss = await openPage(browser, server.url);
    const pat = await openPage(browser, server.url);
    await logIn(boss, "boss", "boss-pw");
    await logIn(pat, "pat", "pat-pw");
    const members = (/** @type {import("playwright-core").Page} */ page) =>
      page.getByRole("complementary", { name: "In this room" }).getByRole("listitem").allTextContents();

    await boss.getByRole("button", { name: "Lobby" }).click();
    await boss.locator('.messages[aria-busy="false"]').waitFor();
    assert.deepEqual(await members(boss), ["boss"]);
    await pat.getByRole("button", { name: "Lobby" }).click();
    await pat.locator('.messages[aria-busy="false"]').waitFor();
    assert.deepEqual(await members(pat), ["boss", "pat"], "the join brings who is already there");
    await pat.getByText("2 online").waitFor();
    await boss.getByText("2 online").waitFor(); // pat entering updates boss's list
    assert.deepEqual(await members(boss), ["boss", "pat"]);

    // Typing shows on the other side, for a few seconds, and ends by itself.
    await boss.getByRole("textbox", { name: "Message" }).pressSequentially("Hello the", { delay: 30 });
    await pat.getByText("boss is typing…").waitFor();
    assert.equal(await boss.getByText("boss is typing…").count(), 0, "not to the typist");
    await screenshot(pat, "06-members-and-typing");
    const shownAt = Date.now();
    await pat.getByText("boss is typing…").waitFor({ state: "detached", timeout: 10_000 });
    assert.ok(Date.now() - shownAt > 2_000, "shown for a few seconds, not a flash");
    // … and a message ends it at once.
    await boss.getByRole("textbox", { name: "Message" }).pressSequentially("re", { delay: 30 });
    await pat.getByText("boss is typing…").waitFor();
    await boss.getByRole("textbox", { name: "Message" }).press("Enter");
    await sees(pat, "Hello there");
    assert.equal(await pat.getByText("boss is typing…").count(), 0);

    await boss.getByRole("button", { name: "Leave" }).click();
    await pat.getByText("1 online").waitFor();
    assert.deepEqual(await members(pat), ["pat"]);
  });
});

test("admins manage rooms in the Admin tab, and everyone sees the changes at once", LIMIT, async () => {
  await withServer(async (server) => {
    const boss = await openPage(browser, server.url, { colorScheme: "dark" });
    const pat = await openPage(browser, server.url);
    await logIn(boss, "boss", "boss-pw");
    await logIn(pat, "pat", "pat-pw");
    assert.equal(await pat.getByRole("button", { name: "Admin" }).count(), 0, "no Admin tab for a plain user");
    await pat.getByRole("button", { name: "Lobby" }).click();
    await pat.getByRole("heading", { name: "Lobby" }).waitFor();

    await boss.getByRole("button", { name: "Admin" }).click();
    await boss.getByLabel("Title", { exact: true }).fill("Book club");
    await boss.getByRole("button", { name: "Create room" }).click();
    await boss.getByText("Room “Book club” created.").waitFor();
    await pat.getByRole("button", { name: "Book club" }).waitFor();
    await screenshot(boss, "06-admin-dark");

    await boss.getByLabel("Staff only: Lobby").check();
    await pat.getByText("You were removed from Lobby. This room is now for staff only.").waitFor();
    await pat.getByRole("button", { name: "Lobby" }).waitFor({ state: "detached" });
    await screenshot(pat, "07-removed-from-room");

    await boss.getByLabel("New username", { exact: true }).fill("newbie");
    await boss.getByLabel("New password", { exact: true }).fill("newbie-pw");
    await boss.getByRole("button", { name: "Create user" }).click();
    await boss.getByText("User “newbie” created.").waitFor();
    const newbie = await openPage(browser, server.url);
    await logIn(newbie, "newbie", "newbie-pw");
  });
});

test("after the server restarts, rooms come back and what was missed appears exactly once", LIMIT, async () => {
  await withServer(async (server, dir) => {
    const boss = await openPage(browser, server.url);
    const pat = await openPage(browser, server.url);
    await logIn(boss, "boss", "boss-pw");
    await logIn(pat, "pat", "pat-pw");
    for (const page of [boss, pat]) await page.getByRole("button", { name: "Lobby" }).click();
    await say(boss, "before the crash");
    await sees(pat, "before the crash");

    await stopServer(server, true);
    await pat.getByRole("status").filter({ hasText: "Reconnecting…" }).waitFor();
    await screenshot(pat, "08-reconnecting");
    await pat.context().setOffline(true); // pat stays cut off while the others talk
    await say(pat, "typed while cut off");
    await pat.locator(".message.pending", { hasText: "typed while cut off" }).getByText("sending…").waitFor();
    const restarted = await startServer(dir, server.port);
    server.child = restarted.child;
    await boss.getByRole("status").waitFor({ state: "hidden", timeout: 15_000 });
    for (const n of [1, 2, 3]) await say(boss, `while you were away ${n}`);
    await sees(boss, "while you were away 3");
    assert.equal(await pat.getByRole("status").textContent(), "Reconnecting…", "pat was still cut off");

    await pat.context().setOffline(false);
    await pat.getByRole("status").waitFor({ state: "hidden", timeout: 15_000 });
    await sees(pat, "while you were away 3");
    await sees(boss, "typed while cut off");
    await pat.waitForTimeout(500); // anything doubled would have arrived by now
    assert.deepEqual(await shown(pat), [
      "before the crash",
      "while you were away 1",
      "while you were away 2",
      "while you were away 3",
      "typed while cut off",
    ]);
    assert.equal((await shown(boss)).filter((t) => t === "typed while cut off").length, 1, "the retried message was stored once");
    assert.equal(await pat.locator(".room-view h2").count(), 1, "no duplicate panes");
    assert.equal(await pat.getByText("sending…").count(), 0, "acknowledged at last");
  });
});

test("opening a room shows its recent messages, and scrolling up loads older ones", LIMIT, async () => {
  await withServer(async (server) => {
    const boss = await openPage(browser, server.url);
    await logIn(boss, "boss", "boss-pw");
    await boss.getByRole("button", { name: "Lobby" }).click();
    await boss.getByRole("heading", { name: "Lobby" }).waitFor();
    // 120 messages straight over the page's own socket (faster than typing them).
    await boss.evaluate(async () => {
      const socket = new WebSocket(`ws://${location.host}/chat/stream/`);
      await new Promise((resolve) => (socket.onopen = resolve));
      socket.send(JSON.stringify({ command: "join", room: 1 }));
      let acked = 0;
      const done = new Promise((resolve) => {
        socket.onmessage = (event) => {
          if (JSON.parse(event.data).ack && ++acked === 120) resolve(null);
        };
      });
      for (let n = 1; n <= 120; n += 1) {
        socket.send(JSON.stringify({ command: "send", room: 1, message: `old ${n}`, nonce: `n${n}` }));
      }
      await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${acked} acks`)), 20_000))]);
      socket.close();
    });
    const pat = await openPage(browser, server.url);
    await logIn(pat, "pat", "pat-pw");
    await pat.getByRole("button", { name: "Lobby" }).click();
    await sees(pat, "old 120");
    assert.equal((await shown(pat)).length, 50, "the 50 most recent");
    assert.equal((await shown(pat))[0], "old 71");
    for (let tries = 0; tries < 10 && (await pat.getByText("This is the start of the room.").count()) === 0; tries += 1) {
      await pat.locator(".messages").evaluate((list) => list.scrollTo(0, 0));
      await pat.waitForTimeout(300);
    }
    await pat.getByText("This is the start of the room.").waitFor();
    const all = await shown(pat);
    assert.deepEqual(all, Array.from({ length: 120 }, (_, n) => `old ${n + 1}`), "every message once, in order");
  }, ["--messages-per-second", "1000"]);
});

test("the rooms open in a tab are open again after a reload", LIMIT, async () => {
  await withServer(async (server) => {
    const pat = await openPage(browser, server.url);
    await logIn(pat, "pat", "pat-pw");
    await pat.getByRole("button", { name: "Games" }).click();
    await pat.getByRole("button", { name: "Lobby" }).click();
    await pat.locator("button.room.joined").nth(1).waitFor();
    await pat.reload();
    await pat.getByRole("button", { name: "Log out" }).waitFor();
    await pat.locator("button.room.joined").nth(1).waitFor();
    assert.deepEqual(await pat.locator("button.room.joined .title").allTextContents(), ["Lobby", "Games"]);
  });
});
