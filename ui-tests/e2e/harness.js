// End-to-end harness: the real server binary on a free loopback port with a fresh database, and Debian's
// Chromium driven through playwright-core. Everything is bounded in time and cleaned up.

import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { start, stop } from "../children.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(here, "../../target");
export const BINARY = process.env.MULTICHAT_BIN ?? path.join(targetDir, "debug/multichat-server");
export const SCREENSHOTS = path.join(here, "../screenshots");

/** The flags the machine's notes give for Chromium as root in a closed network. */
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

/** A fresh data directory (SQLite) for one test. */
export function dataDir() {
  return mkdtempSync(path.join(tmpdir(), "multichat-e2e-"));
}

/**
 * Runs a management command of the binary (createuser, createroom…); returns its stdout.
 * @param {string} dir @param {string[]} args @param {string} [input]
 */
export function manage(dir, args, input = "") {
  const result = spawnSync(BINARY, ["--data-dir", dir, ...args], { input, encoding: "utf8", timeout: 30_000 });
  if (result.status !== 0) throw new Error(`${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout.trim();
}

/**
 * Starts `serve` on `port` (0: any free one), with `extra` options, and resolves once it listens.
 * @param {string} dir @param {number} [port] @param {string[]} [extra]
 */
export function startServer(dir, port = 0, extra = []) {
  const child = start(BINARY, ["--data-dir", dir, "--bind", `127.0.0.1:${port}`, ...extra, "serve"], {
    env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not start within 20 s")), 20_000);
    let log = "";
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const match = /listening on http:\/\/([\d.]+):(\d+)/.exec(log);
      if (match && timer) {
        clearTimeout(timer);
        resolve({ url: `http://${match[1]}:${match[2]}`, port: Number(match[2]), child, log: () => log });
      }
    });
    child.on("exit", (code) => reject(new Error(`the server exited (${code}) before listening:\n${log}`)));
  });
}

/** How long a server may take to stop gracefully: its goodbyes on the LAN take 2 s at most. */
const STOP_GRACE = 15_000;

/**
 * Stops a server started by startServer: SIGKILL when `kill`, else a graceful SIGTERM, which fails (after a
 * SIGKILL) if the server is still running after STOP_GRACE.
 */
export async function stopServer(server, kill = false) {
  if (kill) {
    await stop(server.child, "SIGKILL", STOP_GRACE);
  } else if (!(await stop(server.child, "SIGTERM", STOP_GRACE))) {
    throw new Error(`the server did not stop within ${STOP_GRACE / 1000} s of SIGTERM:\n${server.log()}`);
  }
}

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_FLAGS, timeout: 30_000 });
}

/**
 * A new browser context (its own cookies) with a page at `url`.
 * @param {import("playwright-core").Browser} browser @param {string} url
 * @param {{ width?: number, height?: number, colorScheme?: "light" | "dark" }} [options]
 */
export async function openPage(browser, url, { width = 1280, height = 800, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  await page.goto(url);
  return page;
}

/**
 * Logs in through the login page.
 * @param {import("playwright-core").Page} page @param {string} username @param {string} password
 */
export async function logIn(page, username, password) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
}

/** @param {import("playwright-core").Page} page @param {string} name */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** Removes a data directory. @param {string} dir */
export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}
