// End-to-end harness for the desktop app: the real app binary driven through WebDriver (tauri-driver in
// front of WebKitWebDriver), on the virtual screen and private D-Bus session that test.sh provides (Xvfb,
// an unlocked gnome-keyring). Each test gets its own home directory, so its settings start empty.

import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Builder, By, Key, until } from "selenium-webdriver";
import { start, stop, within } from "../children.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(here, "../../target");
export const APP = process.env.MULTICHAT_DESKTOP_BIN ?? path.join(targetDir, "debug/multichat-desktop");
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? "tauri-driver";
export const SCREENSHOTS = path.join(here, "../screenshots");
export { By, Key, until };

/** How long to wait for anything the app should show. */
export const WAIT = 15_000;

/** How long one WebDriver command may take: longer means the app (its main thread) is stuck. */
const COMMAND_WAIT = 30_000;

/** How long a new app may take to start and show its window. */
const START_WAIT = 60_000;

/**
 * `count` free loopback ports, all different: each is held until all are found (a port probed and let go may
 * be handed out again at once).
 * @param {number} count @returns {Promise<number[]>}
 */
export async function freePorts(count) {
  const probes = await Promise.all(Array.from({ length: count }, () => new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => resolve(probe));
  })));
  const ports = probes.map((probe) => /** @type {import("node:net").AddressInfo} */ (probe.address()).port);
  await Promise.all(probes.map((probe) => new Promise((resolve) => probe.close(resolve))));
  return ports;
}

/** A free loopback port. */
export async function freePort() {
  return (await freePorts(1))[0];
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A tauri-driver whose apps run with `home` as their home (their settings and data live there).
 * @param {string} home
 */
export async function startDriver(home) {
  const [port, nativePort] = await freePorts(2);
  const child = start(TAURI_DRIVER, ["--port", String(port), "--native-port", String(nativePort)], {
    env: {
      ...process.env,
      HOME: home,
      XDG_DATA_HOME: path.join(home, ".local/share"),
      XDG_CONFIG_HOME: path.join(home, ".config"),
      XDG_CACHE_HOME: path.join(home, ".cache"),
      NO_AT_BRIDGE: "1",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (chunk) => (log += chunk));
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/status`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`tauri-driver did not start:\n${log}`);
    await sleep(100);
  }
  return {
    /**
     * Starts the app: a new WebDriver session is a new app process. Every command to it is bounded in time,
     * so that an app that stops answering fails the test, naming the command, instead of hanging it.
     */
    async open() {
      const session = new Builder()
        .usingServer(`http://127.0.0.1:${port}/`)
        .withCapabilities({ browserName: "wry", "tauri:options": { application: APP } })
        .build();
      const driver = await within(Promise.resolve(session), START_WAIT, "starting the app");
      const executor = driver.getExecutor();
      const execute = executor.execute.bind(executor);
      executor.execute = (/** @type {import("selenium-webdriver/lib/command").Command} */ command) =>
        within(execute(command), COMMAND_WAIT, `the app, asked to ${command.getName()}`);
      await driver.manage().setTimeouts({ implicit: 0, script: WAIT });
      return driver;
    },
    /** Stops tauri-driver and whatever it started (WebKitWebDriver, an app not quit). */
    async stop() {
      await stop(child, "SIGTERM", 5_000);
    },
    /** What tauri-driver and the apps under it wrote to stderr. */
    log: () => log,
  };
}

/** A fresh home directory. */
export function homeDir() {
  return mkdtempSync(path.join(tmpdir(), "multichat-desktop-"));
}

/** @param {string} dir */
export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The element matching `css` once it is there and shown.
 * @param {import("selenium-webdriver").WebDriver} driver @param {string} css
 * @returns {Promise<import("selenium-webdriver").WebElement>}
 */
export function shown(driver, css) {
  return retry(driver, async () => {
    const element = await driver.findElement(By.css(css));
    return (await element.isDisplayed()) && element;
  }, `see ${css}`);
}

/**
 * Waits until the element matching `css` contains `text`. The client redraws often, so an element may be
 * replaced while it is read: that is read again, not a failure.
 * @param {import("selenium-webdriver").WebDriver} driver @param {string} css @param {string} text
 */
export async function showsText(driver, css, text) {
  await driver.wait(async () => {
    try {
      for (const element of await driver.findElements(By.css(css))) if ((await element.getText()).includes(text)) return true;
    } catch (e) {
      if (!isStale(e)) throw e;
    }
    return false;
  }, WAIT, `${css} never shows "${text}"`);
}

/** @param {unknown} e */
function isStale(e) {
  return e instanceof Error && e.name === "StaleElementReferenceError";
}

/**
 * Runs `act` until it succeeds: the client redraws often, and an element found a moment ago may have been
 * replaced since (or not be there yet), which is a reason to look again, not a failure.
 * @template T
 * @param {import("selenium-webdriver").WebDriver} driver @param {() => Promise<T | false>} act @param {string} what
 * @returns {Promise<T>}
 */
export async function retry(driver, act, what) {
  return /** @type {Promise<T>} */ (driver.wait(async () => {
    try {
      return await act();
    } catch (e) {
      if (isStale(e) || (e instanceof Error && ["NoSuchElementError", "ElementNotInteractableError"].includes(e.name))) return false;
      throw e;
    }
  }, WAIT, `could not ${what}`));
}

/**
 * Types into the field named `name` (replacing what is there).
 * @param {import("selenium-webdriver").WebDriver} driver @param {string} name @param {string} text
 */
export function type(driver, name, text) {
  return retry(driver, async () => {
    const input = await driver.findElement(By.css(`input[name=${name}]`));
    await input.clear();
    await input.sendKeys(text);
    return (await input.getAttribute("value")) === text;
  }, `type into ${name}`);
}

/**
 * Clicks what `locator` finds once it is shown.
 * @param {import("selenium-webdriver").WebDriver} driver @param {import("selenium-webdriver").Locator} locator
 * @param {string} what
 */
export function click(driver, locator, what) {
  return retry(driver, async () => {
    const element = await driver.findElement(locator);
    if (!(await element.isDisplayed())) return false;
    await element.click();
    return true;
  }, `click ${what}`);
}

/**
 * Waits until the value of the field matching `css` is `value`.
 * @param {import("selenium-webdriver").WebDriver} driver @param {string} css @param {string} value
 */
export function hasValue(driver, css, value) {
  return retry(driver, async () => (await driver.findElement(By.css(css)).getAttribute("value")) === value, `see ${css} = ${value}`);
}

/** Clicks the button reading `text`. @param {import("selenium-webdriver").WebDriver} driver @param {string} text */
export function press(driver, text) {
  return click(driver, By.xpath(`//button[normalize-space(.)=${JSON.stringify(text)}]`), `the button "${text}"`);
}

/** The label of the window the driver is in (`main`, `room-3`). @param {import("selenium-webdriver").WebDriver} driver */
export function label(driver) {
  return driver.executeScript("return window.__TAURI__.window.getCurrentWindow().label");
}

/**
 * Switches to the window labelled `wanted`, waiting for it to open.
 * @param {import("selenium-webdriver").WebDriver} driver @param {string} wanted
 */
export async function switchTo(driver, wanted) {
  await driver.wait(async () => {
    for (const handle of await driver.getAllWindowHandles()) {
      await driver.switchTo().window(handle);
      if ((await label(driver)) === wanted) return true;
    }
    return false;
  }, WAIT, `no window ${wanted}`);
}

/** Saves a screenshot of the window the driver is in. @param {import("selenium-webdriver").WebDriver} driver @param {string} name */
export async function screenshot(driver, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await sleep(800);
  writeFileSync(path.join(SCREENSHOTS, `${name}.png`), await driver.takeScreenshot(), "base64");
}

/** Whether an X window with exactly this title exists (the native title, not the page's). @param {string} title */
export function nativeWindowTitled(title) {
  const escaped = title.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return spawnSync("xdotool", ["search", "--name", `^${escaped}$`], { encoding: "utf8" }).status === 0;
}

/** The entries the app filed in the Secret Service. */
export function keyringEntries() {
  const result = spawnSync("secret-tool", ["search", "--all", "service", "app.multichat.desktop"], { encoding: "utf8" });
  return (result.stdout + result.stderr).split("\n").filter((line) => line.startsWith("attribute.username"));
}

/**
 * Records desktop notifications sent on the session bus (the Notify calls to the notification service).
 * @returns {{ seen: () => string, stop: () => Promise<boolean> }}
 */
export function watchNotifications() {
  const child = start("dbus-monitor", ["--session", "interface='org.freedesktop.Notifications',member='Notify'"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let out = "";
  child.stdout.on("data", (chunk) => (out += chunk));
  return { seen: () => out, stop: () => stop(child, "SIGTERM", 5_000) };
}
