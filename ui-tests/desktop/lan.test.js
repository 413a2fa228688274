// LAN discovery in the desktop app: the login window lists the servers announced on the network, live, and a
// click fills the address; the app's own "Host server" is announced under the name the host gives it, and the
// host can stop that. mDNS must never reach the machine's real network: test.sh runs the desktop tests inside
// a network namespace with only loopback (MULTICHAT_NETNS is set there); anywhere else this test is skipped.

import { test } from "node:test";
import assert from "node:assert/strict";
import { start, stop } from "../children.js";
import * as web from "../e2e/harness.js";
import { By, WAIT, click, freePort, hasValue, homeDir, press, removeDir, screenshot, shown, sleep, startDriver, type } from "./harness.js";

const LIMIT = { timeout: 240_000 };
const inNamespace = process.env.MULTICHAT_NETNS !== undefined;

/**
 * The names the login window lists now.
 * @param {import("selenium-webdriver").WebDriver} app @returns {Promise<string[]>}
 */
async function listed(app) {
  try {
    const names = [];
    for (const element of await app.findElements(By.css(".lan-servers .lan-name"))) names.push(await element.getText());
    return names;
  } catch {
    return []; // redrawn while read: read again
  }
}

/**
 * Waits until the login window's list satisfies `wanted`.
 * @param {import("selenium-webdriver").WebDriver} app @param {(names: string[]) => boolean} wanted @param {string} what
 */
async function untilListed(app, wanted, what) {
  /** @type {string[]} */
  let last = [];
  await app.wait(async () => wanted((last = await listed(app))), WAIT).catch(() => {
    throw new Error(`the list of servers on the network never ${what} (last seen: ${JSON.stringify(last)})`);
  });
}

/** `multichat-server discover`: what another computer's app would hear. */
function discover() {
  const child = start(web.BINARY, ["discover"], { stdio: ["ignore", "pipe", "ignore"] });
  /** @type {any[]} */
  const events = [];
  let buffer = "";
  child.stdout.on("data", (chunk) => {
    buffer += chunk;
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const line of lines) if (line) events.push(JSON.parse(line));
  });
  return {
    /** @param {(event: any) => boolean} wanted @param {string} what */
    async until(wanted, what) {
      const deadline = Date.now() + WAIT;
      while (!events.some(wanted)) {
        if (Date.now() > deadline) throw new Error(`discover never heard ${what}: ${JSON.stringify(events)}`);
        await sleep(100);
      }
      return events.find(wanted);
    },
    stop: () => stop(child, "SIGTERM", 5_000),
  };
}

test("the login window lists servers on the network live, a click fills the address; the host's own server is announced, and can stop being", {
  ...LIMIT,
  skip: inNamespace ? false : "runs only inside a network namespace (test.sh, as root)",
}, async () => {
  const dir = web.dataDir();
  web.manage(dir, ["createsuperuser", "--username", "ann", "--password-stdin"], "ann-pw\n");
  web.manage(dir, ["createroom", "--title", "Lobby"]);
  const team = await web.startServer(dir, 0, ["--advertise", "--advertise-name", "Team server"]);
  const otherDir = web.dataDir();
  const home = homeDir();
  const driver = await startDriver(home);
  const elsewhere = discover();
  /** @type {Awaited<ReturnType<typeof web.startServer>> | undefined} */
  let other;
  /** @type {import("selenium-webdriver").WebDriver | undefined} */
  let app;
  try {
    app = await driver.open();
    await untilListed(app, (names) => names.includes("Team server"), "showed Team server");

    // Hosting, under a name of the host's choosing: the app's own list, and other computers, see it.
    const port = await freePort();
    await type(app, "ip", "127.0.0.1");
    await type(app, "port", String(port));
    await type(app, "name", "Ann's laptop");
    await click(app, By.css("input[name=enabled]"), "the Host server toggle");
    await shown(app, ".announced");
    const hosted = await elsewhere.until((e) => e.event === "found" && e.port === port, "the hosted server");
    assert.equal(hosted.name, "Ann's laptop");
    assert.equal(hosted.kind, "desktop");
    await untilListed(app, (names) => names.includes("Ann's laptop"), "showed the app's own server");
    await screenshot(app, "desktop-lan");

    // The host stops announcing it (it keeps running): it leaves every list.
    await click(app, By.css("input[name=advertise]"), "the announce switch");
    await elsewhere.until((e) => e.event === "lost" && e.id === hosted.id, "the hosted server withdrawn");
    await untilListed(app, (names) => !names.includes("Ann's laptop"), "dropped the app's own server");
    const setup = await fetch(`http://127.0.0.1:${port}/api/setup`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(setup.status, 200, "still hosting");

    // A server that starts appears; stopped, it goes.
    other = await web.startServer(otherDir, 0, ["--advertise", "--advertise-name", "Old server"]);
    await untilListed(app, (names) => names.includes("Old server"), "showed a server that started");
    await web.stopServer(other);
    await untilListed(app, (names) => !names.includes("Old server") && names.includes("Team server"), "dropped a server that stopped");

    // A click fills the address; logging in there works as with a typed one.
    await (await shown(app, "form[aria-labelledby=login-title] input[name=server]")).clear();
    await click(app, By.xpath(`//button[contains(@class, "lan-server")][.//span[.="Team server"]]`), "Team server");
    await hasValue(app, "form[aria-labelledby=login-title] input[name=server]", team.url);
    await type(app, "username", "ann");
    await type(app, "password", "ann-pw");
    await press(app, "Log in");
    await shown(app, "button.room");
  } catch (e) {
    if (app) await screenshot(app, "desktop-failed-lan").catch(() => {});
    console.error(`tauri-driver and the app wrote:\n${driver.log().slice(-4000)}\nTeam server wrote:\n${team.log().slice(-4000)}`);
    throw e;
  } finally {
    await elsewhere.stop();
    await app?.quit().catch(() => {});
    await driver.stop();
    if (other) await web.stopServer(other);
    await web.stopServer(team);
    removeDir(home);
    removeDir(dir);
    removeDir(otherDir);
  }
});
