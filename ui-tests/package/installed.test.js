// The app as installed from its .deb (test.sh installs it first and points MULTICHAT_DESKTOP_BIN at it):
// it starts, loads the client bundled into it, and shows the login window.

import { test } from "node:test";
import assert from "node:assert/strict";
import { APP, homeDir, removeDir, screenshot, shown, startDriver } from "../desktop/harness.js";

test("the installed app starts and shows its login window", { timeout: 120_000 }, async () => {
  assert.ok(APP.startsWith("/usr/"), `not the installed app: ${APP}`);
  const home = homeDir();
  const driver = await startDriver(home);
  try {
    const app = await driver.open();
    await shown(app, "input[name=server]");
    await shown(app, "#host-title");
    assert.equal(await app.getTitle(), "MultiChat");
    await screenshot(app, "desktop-installed");
    await app.quit();
  } finally {
    await driver.stop();
    removeDir(home);
  }
});
