// The desktop app's screens around the client: the login window (server address, "remember me") with the
// "Host server" panel, and the environment that plugs the chat into the shell (shell.js). The main window
// lists rooms; a window labelled `room-ID` shows that one room.

import { ApiError } from "./api.js";
import { startChat } from "./app.js";
import { h, fill, field, checked, adminAccountForm, errorText } from "./dom.js";
import { ShellApi, ShellTransport, invoke, tauri, windowLabel } from "./shell.js";

/** @typedef {{ server: string, user: import("./api.js").User, warning: string | null }} Session */
/**
 * @typedef {{ enabled: boolean, ip: string, port: number, running: boolean, addresses: string[],
 *   local: string | null, needs_admin: boolean, error: string | null, advertise: boolean, name: string,
 *   default_name: string, announced: boolean }} HostStatus
 */
/** @typedef {{ id: string, name: string, url: string, desktop: boolean, compatible: boolean }} LanServer */

/** Starts the desktop client in `root`. @param {HTMLElement} root */
export async function startDesktop(root) {
  const room = /^room-(\d+)$/.exec(windowLabel());
  /** @type {Session | null} */
  let session = null;
  try {
    session = await invoke("session_restore");
  } catch (e) {
    // The remembered server is not reachable now: log in again (or elsewhere), with the reason shown.
    if (!room) return showLogin(root, errorText(e));
  }
  if (room) {
    if (session) return showChat(root, session, Number(room[1]));
    return closeWindow();
  }
  return session ? showChat(root, session) : showLogin(root);
}

function closeWindow() {
  tauri().window.getCurrentWindow().close();
}

/**
 * The chat, in the main window or (with `only`) in a room's own window.
 * @param {HTMLElement} root @param {Session} session @param {number} [only]
 */
function showChat(root, session, only) {
  /** @type {number | null} */
  let inView = null;
  const report = () => invoke("chat_view", { room: inView, focused: document.hasFocus() }).catch(() => {});
  window.addEventListener("focus", report);
  window.addEventListener("blur", report);
  const notices = session.warning ? [session.warning] : [];
  startChat(root, {
    api: new ShellApi(),
    transport: () => new ShellTransport(),
    only,
    notices,
    signedOut: (root, why) => {
      window.removeEventListener("focus", report);
      window.removeEventListener("blur", report);
      if (only !== undefined) return closeWindow();
      // Whatever ended the session (a logout here or elsewhere), the app forgets it too.
      invoke("logout").catch(() => {});
      showLogin(root, why);
    },
    openWindow: (room) => invoke("open_room_window", { room: room.id, title: room.title }).catch(() => {}),
    notify: (_room, m) =>
      invoke("chat_notify", { notice: { room: m.room, id: m.id, username: m.username, message: m.message } }).catch(() => {}),
    viewing: (room) => {
      inView = room;
      report();
    },
    title: (title) => tauri().window.getCurrentWindow().setTitle(title).catch(() => {}),
    roomMemory: {
      load: () => invoke("rooms_remembered"),
      save: (rooms) => invoke("rooms_remember", { rooms }).catch(() => {}),
    },
    extraTab: only === undefined ? { label: "Host server", render: (page) => {
      const card = h("section", { class: "card", "aria-labelledby": "host-title" });
      fill(page, card);
      renderHost(card);
    } } : undefined,
  }, session.user);
}

/** The login window. @param {HTMLElement} root @param {string} [why] */
async function showLogin(root, why = "") {
  /** @type {{ recent_servers: string[], remembered: { server: string, username: string } | null }} */
  const settings = await invoke("settings_get").catch(() => ({ recent_servers: [], remembered: null }));
  const error = h("p", { class: "error", role: "alert" }, why);
  const recent = h("datalist", { id: "recent-servers" }, settings.recent_servers.map((s) => h("option", { value: s })));
  const form = h("form", { class: "card", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "MultiChat"),
    h("label", {}, "Server",
      h("input", { name: "server", list: "recent-servers", required: true, placeholder: "192.168.1.20:8000",
        value: settings.recent_servers[0] ?? "", autocomplete: "url", spellcheck: "false" })),
    recent,
    lanServers((url) => {
      const input = /** @param {string} name */ (name) => /** @type {HTMLInputElement} */ (form.elements.namedItem(name));
      input("server").value = url;
      input(input("username").value ? "password" : "username").focus();
    }),
    h("label", {}, "Username",
      h("input", { name: "username", autocomplete: "username", required: true, value: settings.remembered?.username ?? "" })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("label", { class: "check" }, h("input", { name: "remember", type: "checkbox", checked: true }), "Remember me on this computer"),
    error,
    h("button", { type: "submit" }, "Log in"));
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector("button[type=submit]"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      /** @type {Session} */
      const session = await invoke("login", {
        server: field(form, "server"),
        username: field(form, "username"),
        password: field(form, "password"),
        remember: checked(form, "remember"),
      });
      showChat(root, session);
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401 ? "Wrong username or password." : errorText(e);
    } finally {
      submit.disabled = false;
    }
  });
  const host = h("section", { class: "card", "aria-labelledby": "host-title" });
  fill(root, h("main", { class: "desktop-start" }, form, host));
  renderHost(host, (server, username) => {
    const input = /** @param {string} name */ (name) => /** @type {HTMLInputElement} */ (form.elements.namedItem(name));
    input("server").value = server;
    input("username").value = username;
    input("password").focus();
  });
  const first = /** @type {HTMLInputElement} */ (form.elements.namedItem(field(form, "server") ? "username" : "server"));
  (first.value ? /** @type {HTMLInputElement} */ (form.elements.namedItem("password")) : first).focus();
}

/**
 * The servers announced on the LAN, kept current by the shell; a click picks one. Hidden while there are none
 * (typing an address works all the same).
 * @param {(url: string) => void} pick
 */
function lanServers(pick) {
  const list = h("ul", { class: "lan-servers", "aria-labelledby": "lan-title" });
  const box = h("div", { class: "lan", hidden: true }, h("p", { id: "lan-title", class: "note" }, "On your network:"), list);
  const channel = new (tauri().core.Channel)();
  /** @param {LanServer[]} servers */
  channel.onmessage = (servers) => {
    box.hidden = servers.length === 0;
    fill(list, ...servers.map((server) => h("li", {},
      h("button", {
        type: "button",
        class: "quiet lan-server",
        disabled: !server.compatible,
        title: server.compatible ? server.url : "This server needs another version of MultiChat.",
        onclick: () => pick(server.url),
      }, h("span", { class: "lan-name" }, server.name), " ",
      h("span", { class: "note" }, server.compatible ? server.url.replace(/^http:\/\//, "") : "another version")))));
  };
  // Discovery is best effort: without it, the list just stays hidden.
  invoke("lan_servers", { events: channel }).catch(() => {});
  return box;
}

/**
 * The "Host server" panel: the toggle, where to listen, where others reach it, and the first admin.
 * @param {HTMLElement} panel @param {(server: string, username: string) => void} [adminCreated]
 */
async function renderHost(panel, adminCreated) {
  /** @type {HostStatus} */
  let status;
  try {
    status = await invoke("host_status");
  } catch (e) {
    fill(panel, h("p", { role: "alert" }, errorText(e)));
    return;
  }
  const result = h("p", { class: "error", role: "alert" }, status.error ?? "");
  const toggle = h("input", { type: "checkbox", name: "enabled", checked: status.enabled });
  const advertise = h("input", { type: "checkbox", name: "advertise", checked: status.advertise });
  const form = h("form", { class: "inline" },
    h("label", {}, "Address", h("input", { name: "ip", value: status.ip, spellcheck: "false", "aria-describedby": "ip-hint" })),
    h("label", {}, "Port", h("input", { name: "port", type: "number", min: 1, max: 65535, value: status.port })),
    h("label", {}, "Name on the network",
      h("input", { name: "name", value: status.name, placeholder: status.default_name, spellcheck: "false", maxlength: 63 })),
    h("button", { type: "submit" }, "Apply"));
  /** @param {boolean} enabled */
  const apply = async (enabled) => {
    result.textContent = "";
    try {
      await invoke("host_set", {
        enabled, ip: field(form, "ip"), port: Number(field(form, "port")), advertise: advertise.checked, name: field(form, "name"),
      });
    } catch (e) {
      result.textContent = errorText(e);
      return;
    }
    renderHost(panel, adminCreated);
  };
  toggle.addEventListener("change", () => apply(toggle.checked));
  advertise.addEventListener("change", () => apply(toggle.checked));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply(toggle.checked);
  });

  const thisComputerOnly = status.addresses.every((a) => /^http:\/\/(127\.|\[::1\])/.test(a));
  const state = status.running
    ? h("div", {}, h("p", { class: "host-status running", role: "status" }, thisComputerOnly
      ? "Hosting, for this computer only (use the address 0.0.0.0 to serve your network):"
      : "Hosting. Others on your network can open:"),
      h("ul", { class: "addresses" }, status.addresses.map((a) => h("li", {}, a))),
      status.announced && h("p", { class: "note announced" },
        `Listed in the MultiChat apps on your network as “${status.name || status.default_name}”.`))
    : h("p", { class: "host-status", role: "status" }, status.enabled ? "Not running." : "Not hosting.");

  fill(panel,
    h("h2", { id: "host-title" }, "Host a server on this computer"),
    h("p", {}, "Others on your network can then log in to it from their MultiChat app or a browser. It keeps running while the app is open, and starts again with the app."),
    h("label", { class: "check" }, toggle, "Host server"),
    h("label", { class: "check" }, advertise, "List it in the MultiChat apps on my network"),
    form,
    h("p", { id: "ip-hint", class: "note" }, "0.0.0.0 serves every network this computer is on."),
    state,
    result,
    status.running && status.needs_admin && adminForm(status, () => renderHost(panel, adminCreated), adminCreated));
}

/**
 * The first start of a hosted server: its administrator is created here.
 * @param {HostStatus} status @param {() => void} done @param {(server: string, username: string) => void} [created]
 */
function adminForm(status, done, created) {
  return adminAccountForm({
    id: "admin-title",
    heading: h("h3", {}, "Create the administrator of your server"),
    text: "It can create rooms and the accounts of the people who will use your server.",
    button: "Create administrator",
    wide: true,
  }, async (username, password) => {
    await invoke("host_create_admin", { username, password });
    done();
    if (status.local) created?.(status.local, username);
  });
}
