// The desktop app as a person uses it, driven through WebDriver: log in with "remember me", chat with
// someone in a browser, open a room in its own window, be logged in again after a restart, log out; and
// host a server with the toggle and let a browser log in to it. Run by test.sh inside Xvfb and a private
// D-Bus session with an unlocked gnome-keyring.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as web from "../e2e/harness.js";
import {
  By, Key, WAIT, click, freePort, homeDir, keyringEntries, nativeWindowTitled, removeDir, screenshot, shown, showsText,
  hasValue, press, sleep, startDriver, switchTo, type, watchNotifications,
} from "./harness.js";

/** No test may hang: each gets this long. */
const LIMIT = { timeout: 240_000 };

/** @param {import("playwright-core").Page} page @param {string} text */
async function browserSays(page, text) {
  await page.getByRole("textbox", { name: "Message" }).fill(text);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
}

/** @param {import("playwright-core").Page} page @param {string} text */
async function browserSees(page, text) {
  await page.locator(".messages .message:not(.pending) .text", { hasText: text }).first().waitFor();
}

/** @param {import("selenium-webdriver").WebDriver} app @param {string} text */
async function appSays(app, text) {
  const input = await shown(app, "#message");
  await input.sendKeys(text, Key.ENTER);
}

/** @param {import("selenium-webdriver").WebDriver} app @param {string} title */
async function openRoom(app, title) {
  await click(app, By.css(`button.room[aria-label=${JSON.stringify(title)}]`), title);
  await showsText(app, ".room-header h2", title);
}

test("log in with remember me, chat with a browser, a room in its own window, back after a restart", LIMIT, async () => {
  const dir = web.dataDir();
  web.manage(dir, ["createsuperuser", "--username", "ann", "--password-stdin"], "ann-pw\n");
  web.manage(dir, ["createuser", "--username", "bob", "--password-stdin"], "bob-pw\n");
  for (const title of ["Lobby", "Games"]) web.manage(dir, ["createroom", "--title", title]);
  const server = await web.startServer(dir);
  const home = homeDir();
  const driver = await startDriver(home);
  const browser = await web.launch();
  const notifications = watchNotifications();
  /** @type {import("selenium-webdriver").WebDriver | undefined} */
  let app;
  try {
    app = await driver.open();
    // First start: the login window asks for the server, with "remember me" ticked.
    await type(app, "server", `127.0.0.1:${server.port}`);
    await type(app, "username", "ann");
    await type(app, "password", "ann-pw");
    assert.equal(await (await shown(app, "input[name=remember]")).isSelected(), true);
    await screenshot(app, "desktop-login");
    await press(app, "Log in");
    await openRoom(app, "Games");
    await openRoom(app, "Lobby");
    assert.equal(keyringEntries().length, 1, "the token is in the keyring");

    // Bob, in a browser, and Ann, in the app, talk in the Lobby.
    const bob = await web.openPage(browser, server.url);
    await web.logIn(bob, "bob", "bob-pw");
    await bob.getByRole("button", { name: "Lobby" }).click();
    await browserSays(bob, "hi ann");
    await showsText(app, ".messages", "hi ann");
    // Who is in the room, and who is typing there, as in the browser.
    await showsText(app, ".room-header", "2 online");
    await showsText(app, ".members", "bob");
    await bob.getByRole("textbox", { name: "Message" }).pressSequentially("typing to ann", { delay: 200 });
    await showsText(app, ".typing", "bob is typing…");
    await screenshot(app, "desktop-typing");
    await bob.getByRole("textbox", { name: "Message" }).press("Enter");
    await showsText(app, ".messages", "typing to ann");
    await app.wait(async () => (await (await shown(app, ".typing")).getText()) === "", WAIT, "the message ends the typing");
    await appSays(app, "hi bob, from the desktop");
    await browserSees(bob, "hi bob, from the desktop");
    await screenshot(app, "desktop-chat");

    // A message in Games, not in view: counted in the window title, and a desktop notification.
    await bob.getByRole("button", { name: "Games" }).click();
    await browserSays(bob, "anyone for chess?");
    await app.wait(async () => (await app?.getTitle()) === "(1) MultiChat", WAIT, "the unread count in the title");
    await app.wait(async () => nativeWindowTitled("(1) MultiChat"), WAIT, "the native window title");
    await app.wait(async () => notifications.seen().includes("anyone for chess?"), WAIT, "a notification");
    assert.match(notifications.seen(), /bob in Games/);
    assert.equal(notifications.seen().split("anyone for chess?").length, 2, "one notification");

    // The Lobby in a window of its own: the same conversation, on the same socket.
    await press(app, "Open in new window");
    await switchTo(app, `room-1`);
    await showsText(app, ".messages", "hi bob, from the desktop");
    await bob.getByRole("button", { name: "Lobby" }).click();
    await browserSays(bob, "both windows see this");
    await showsText(app, ".messages", "both windows see this");
    await appSays(app, "said in the room window");
    await browserSees(bob, "said in the room window");
    await app.wait(async () => nativeWindowTitled("Lobby — MultiChat"), WAIT, "the room window's title");
    await screenshot(app, "desktop-room-window");
    await switchTo(app, "main");
    await showsText(app, ".messages", "said in the room window");

    // Restart: logged in from the keyring, no login window, and the rooms that were open are open again.
    await app.quit();
    app = await driver.open();
    await shown(app, "button.room.joined");
    await showsText(app, ".me", "ann");
    assert.equal((await app.findElements(By.css("button.room.joined"))).length, 2, "Lobby and Games reopened");
    await screenshot(app, "desktop-restarted");

    // Logging out forgets the login everywhere: the keyring, the server, the next start.
    await press(app, "Log out");
    await shown(app, "input[name=password]");
    assert.equal(keyringEntries().length, 0, "the keyring entry is deleted");
    await app.quit();
    app = await driver.open();
    await shown(app, "input[name=password]");
    await hasValue(app, "input[name=server]", `http://127.0.0.1:${server.port}`); // the last server is offered
  } catch (e) {
    if (app) await screenshot(app, "desktop-failed-chat").catch(() => {});
    throw e;
  } finally {
    await notifications.stop();
    await app?.quit().catch(() => {});
    await driver.stop();
    await browser.close();
    await web.stopServer(server, true);
    removeDir(home);
    removeDir(dir);
  }
});

test("host a server with the toggle: its admin is created here, a browser logs in to it, it comes back on restart", LIMIT, async () => {
  const home = homeDir();
  const driver = await startDriver(home);
  const browser = await web.launch();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  /** @type {import("selenium-webdriver").WebDriver | undefined} */
  let app;
  try {
    app = await driver.open();
    await type(app, "ip", "127.0.0.1");
    await type(app, "port", String(port));
    await click(app, By.css("input[name=enabled]"), "the Host server toggle");
    await showsText(app, ".host-status", "Hosting");
    await showsText(app, ".addresses", url);

    // The first time, the host creates the server's admin; the login form is then filled in for it.
    await shown(app, "#admin-title");
    const admin = await app.findElement(By.css("form[aria-labelledby=admin-title]"));
    await admin.findElement(By.css("input[name=username]")).sendKeys("host");
    await admin.findElement(By.css("input[name=password]")).sendKeys("host-pw");
    await screenshot(app, "desktop-host");
    await press(app, "Create administrator");
    await app.wait(async () => (await app?.findElements(By.css("#admin-title")))?.length === 0, WAIT);
    await hasValue(app, "form[aria-labelledby=login-title] input[name=server]", url);
    await hasValue(app, "form[aria-labelledby=login-title] input[name=username]", "host");
    await type(app, "password", "host-pw");
    await press(app, "Log in");

    // The admin makes a room; a browser on the "LAN" logs in to the hosted server and talks to the host.
    await press(app, "Admin");
    await type(app, "title", "LAN party");
    await press(app, "Create room");
    await press(app, "Chat");
    await openRoom(app, "LAN party");
    const guest = await web.openPage(browser, url);
    await web.logIn(guest, "host", "host-pw");
    await guest.getByRole("button", { name: "LAN party" }).click();
    await browserSays(guest, "hello, host");
    await showsText(app, ".messages", "hello, host");
    await appSays(app, "welcome");
    await browserSees(guest, "welcome");

    // The setting is remembered: the next start hosts again.
    await app.quit();
    app = await driver.open();
    await shown(app, "button.room");
    assert.equal((await fetch(`${url}/api/setup`)).status, 200, "hosting again after the restart");
    await press(app, "Host server");
    await showsText(app, ".host-status", "Hosting");
    await screenshot(app, "desktop-host-tab");

    // Off: the server stops (gracefully: the browser's socket is closed, it says it is reconnecting).
    await click(app, By.css("input[name=enabled]"), "the Host server toggle");
    await showsText(app, ".host-status", "Not hosting");
    await assert.rejects(fetch(`${url}/api/setup`), "no longer listening");
    await guest.getByText("Reconnecting…").waitFor();
  } catch (e) {
    if (app) await screenshot(app, "desktop-failed-host").catch(() => {});
    throw e;
  } finally {
    await app?.quit().catch(() => {});
    await driver.stop();
    await browser.close();
    removeDir(home);
  }
});

// Give a slow machine's WebKit a moment between apps.
test.afterEach(() => sleep(500));
