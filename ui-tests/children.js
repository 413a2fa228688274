// The processes a test starts (servers, tauri-driver and the app under it, `discover`), and time limits on
// waiting for them. Each child runs in a process group of its own, and every group still alive is killed when
// the test process exits: a test that failed or timed out before its cleanup (node --test-force-exit ends the
// file then) leaves nothing behind to keep the run going. It happens without any test failing, too: now and
// then Debian's WebKitWebDriver leaves the app running after its session is deleted (its web process gone, as in
// WebKit bug 321418, fixed upstream in 2026), and that orphaned app, holding tauri-driver's stderr, kept its
// test file from ever ending.

import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";

/** @type {Set<import("node:child_process").ChildProcess>} */
const running = new Set();

// What is still running when the file ends was not stopped by its test (which failed, or leaks): said, then
// killed.
process.on("exit", () => {
  for (const child of running) {
    if (child.pid === undefined) continue;
    const left = alive(child.pid);
    if (left.length) console.error(`still running when the tests ended, killed:\n${left.join("\n")}`);
    killGroup(child, "SIGKILL");
  }
});

/**
 * The processes of group `group` that have not exited (zombies have), read from /proc: `ps` may not be there.
 * @param {number} group @returns {string[]}
 */
function alive(group) {
  const found = [];
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // After the command name (in parentheses, and free to hold anything): state, parent, group.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(pgrp) !== group || state === "Z") continue;
      found.push(`${pid} ${readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim()}`);
    } catch {
      // exited while read
    }
  }
  return found;
}

/**
 * `spawn`, in a process group of its own that dies with this process at the latest.
 * @param {string} command @param {string[]} args @param {import("node:child_process").SpawnOptions} options
 */
export function start(command, args, options) {
  const child = spawn(command, args, { ...options, detached: true });
  // Kept after it exits: what it started may still be running in its group.
  running.add(child);
  return child;
}

/**
 * Signals `child` and everything it started (its process group).
 * @param {import("node:child_process").ChildProcess} child @param {NodeJS.Signals} signal
 */
export function killGroup(child, signal) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal); // the group is gone already
  }
}

/**
 * Stops `child`'s group: `signal`, then SIGKILL if it is still there after `grace` ms. Resolves whether it
 * went on `signal` alone.
 * @param {import("node:child_process").ChildProcess} child @param {NodeJS.Signals} signal @param {number} grace
 * @returns {Promise<boolean>}
 */
export async function stop(child, signal, grace) {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  killGroup(child, signal);
  const gracefully = await within(exited, grace, "").then(() => true, () => false);
  if (!gracefully) {
    killGroup(child, "SIGKILL");
    await exited;
  }
  return gracefully;
}

/**
 * `promise`, or an error naming `what` if it has not settled within `ms`: a wait on another process must end
 * even when that process never answers.
 * @template T @param {Promise<T>} promise @param {number} ms @param {string} what @returns {Promise<T>}
 */
export function within(promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, late]).finally(() => clearTimeout(timer)));
}
