// The screens: first-run setup, login, chat (rooms, messages, composer), account, and the admin tab.
// Regions are redrawn in place on every change; the composer is never rebuilt, so typing is not disturbed.

import { Api, ApiError } from "./api.js";
import { ChatClient } from "./client.js";
import { h, fill, field, adminAccountForm, errorText } from "./dom.js";
import { renderAdmin } from "./admin.js";

/** @typedef {import("./api.js").User} User */
/** @typedef {import("./api.js").RoomInfo} RoomInfo */
/** @typedef {import("./transport.js").Transport} Transport */

/**
 * What the app needs from where it runs: the browser gives the defaults, the desktop shell its own.
 * @typedef {object} Environment
 * @property {Api} api
 * @property {(api: Api) => Transport} transport
 * @property {(root: HTMLElement, why?: string) => void} [signedOut]  what to show once logged out (else the login page)
 * @property {number} [only]  show just this room, with no room list or tabs (a room's own window)
 * @property {(room: RoomInfo) => void} [openWindow]  opens a room in a window of its own
 * @property {(room: RoomInfo | undefined, message: import("./protocol.js").ChatMessage) => void} [notify]  a new message from someone else
 * @property {(room: number | null) => void} [viewing]  which room is in view (for notifications)
 * @property {(title: string) => void} [title]  shows the window title (the unread count)
 * @property {{ label: string, render: (page: HTMLElement) => void }} [extraTab]  a section of the shell's own
 * @property {string[]} [notices]  things to tell the person when the chat opens
 * @property {RoomMemory} [roomMemory]  where the rooms open now are kept for next time (else this browser's storage)
 */

/**
 * @typedef {object} RoomMemory
 * @property {() => Promise<number[]>} load
 * @property {(rooms: number[]) => void} save
 */

/** The browser's: its local storage. @type {RoomMemory} */
const browserMemory = {
  load: async () => JSON.parse(localStorage.getItem(REMEMBERED) ?? "[]"),
  save: (rooms) => localStorage.setItem(REMEMBERED, JSON.stringify(rooms)),
};

const REMEMBERED = "multichat.rooms";

/**
 * Starts the client in `root`.
 * @param {HTMLElement} root @param {Environment} env
 */
export async function start(root, env) {
  const { api } = env;
  try {
    if (await api.setupNeeded()) return showSetup(root, env);
    const me = await api.me().catch((e) => (e instanceof ApiError && e.status === 401 ? null : Promise.reject(e)));
    return me ? showChat(root, env, me) : showLogin(root, env);
  } catch (e) {
    fill(root, h("main", { class: "card" }, h("h1", {}, "MultiChat"), h("p", { role: "alert" }, errorText(e)),
      h("button", { type: "button", onclick: () => start(root, env) }, "Try again")));
  }
}

/** @param {HTMLElement} root @param {Environment} env */
function showSetup(root, env) {
  const form = adminAccountForm({
    id: "setup-title",
    heading: h("h1", {}, "Welcome to MultiChat"),
    text: "No account exists yet. Create the administrator account: it can create rooms and other users.",
    button: "Create admin account",
  }, async (username, password) => {
    const { user } = await env.api.setup(username, password);
    showChat(root, env, user);
  });
  fill(root, h("main", { class: "center" }, form));
}

/** @param {HTMLElement} root @param {Environment} env @param {string} [why] */
function showLogin(root, env, why = "") {
  const error = h("p", { class: "error", role: "alert" }, why);
  const form = h("form", { class: "card", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "MultiChat"),
    h("label", {}, "Username", h("input", { name: "username", autocomplete: "username", required: true, autofocus: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    error,
    h("button", { type: "submit" }, "Log in"));
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector("button[type=submit]"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    // One attempt at a time: a second click would only race the first one's answer.
    submit.disabled = true;
    try {
      const { user } = await env.api.login(field(form, "username"), field(form, "password"));
      showChat(root, env, user);
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401 ? "Wrong username or password." : errorText(e);
    } finally {
      submit.disabled = false;
    }
  });
  fill(root, h("main", { class: "center" }, form));
}

/**
 * Starts the chat for a person already logged in (the desktop shell logs in by itself).
 * @param {HTMLElement} root @param {Environment} env @param {User} me
 */
export function startChat(root, env, me) {
  return showChat(root, env, me);
}

/** @param {HTMLElement} root @param {Environment} env @param {User} me */
async function showChat(root, env, me) {
  const { api } = env;
  const client = new ChatClient(env.transport(api), me.username);
  /** @type {RoomInfo[]} */
  let rooms = [];
  /** @type {"chat" | "admin" | "account" | "extra"} */
  let tab = "chat";
  const only = env.only;

  const status = h("p", { class: "status", role: "status" });
  const notices = h("div", { class: "notices" });
  const roomList = h("ul", { class: "room-list" });
  const roomHeader = h("header", { class: "room-header" });
  const messages = h("ol", { class: "messages", "aria-label": "Messages", tabindex: 0 });
  const input = h("textarea", { id: "message", name: "message", rows: 1, "aria-label": "Message", placeholder: "Write a message…" });
  const composer = h("form", { class: "composer" }, input, h("button", { type: "submit" }, "Send"));
  const members = h("aside", { class: "members", "aria-label": "In this room" });
  // Announced politely: a screen reader hears "bob is typing…" without losing its place.
  const typing = h("p", { class: "typing", "aria-live": "polite" });
  const roomView = h("section", { class: "room-view" }, roomHeader, h("div", { class: "room-body" }, messages, members), typing, composer);
  const chat = h("div", { class: "chat" }, h("nav", { class: "sidebar", "aria-label": "Rooms" }, h("h2", {}, "Rooms"), roomList), roomView);
  const other = h("div", { class: "page" });
  const tabs = h("nav", { class: "tabs", "aria-label": "Sections" });
  const body = h("main", { class: "body" }, notices, chat, other);
  fill(root, h("div", { class: "app" },
    h("header", { class: "topbar" }, h("span", { class: "brand" }, "MultiChat"), status, tabs,
      h("span", { class: "me" }, me.username),
      h("button", { type: "button", class: "quiet", onclick: () => logout() }, "Log out")),
    body));

  const send = () => {
    if (client.active !== null && input.value.trim()) {
      client.say(client.active, input.value);
      input.value = "";
    }
  };
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener("input", () => {
    if (client.active !== null && input.value.trim()) client.typing(client.active);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  // Older messages load when the person scrolls up to the top; the client's own scrolling (to the newest
  // message) only ever goes down.
  let lastScrollTop = 0;
  messages.addEventListener("scroll", () => {
    const up = messages.scrollTop < lastScrollTop;
    lastScrollTop = messages.scrollTop;
    if (up && messages.scrollTop < 40 && client.active !== null) client.loadOlder(client.active);
  });

  /** @param {string} [why] */
  function signedOut(why) {
    if (env.signedOut) env.signedOut(root, why);
    else showLogin(root, env, why);
  }

  async function logout() {
    client.stop();
    await api.logout().catch(() => {});
    signedOut();
  }

  async function refreshRooms() {
    try {
      rooms = await api.rooms();
      for (const room of rooms) {
        const joined = client.rooms.get(room.id);
        if (joined) joined.title = room.title;
      }
      draw();
    } catch (e) {
      client.notify(errorText(e));
    }
  }

  function drawTabs() {
    /** @param {"chat" | "admin" | "account" | "extra"} name @param {string} label */
    const button = (name, label) =>
      h("button", { type: "button", "aria-pressed": String(tab === name), onclick: () => { tab = name; draw(); } }, label);
    if (only !== undefined) return fill(tabs);
    fill(tabs, button("chat", "Chat"), me.is_admin && button("admin", "Admin"), button("account", "Account"),
      env.extraTab && button("extra", env.extraTab.label));
  }

  function drawRooms() {
    fill(roomList, rooms.map((info) => {
      const room = client.rooms.get(info.id);
      const unread = room && room.unread > 0 ? h("span", { class: "unread", id: `unread-${info.id}` }, `${room.unread} unread`) : null;
      return h("li", {},
        h("button", {
          type: "button",
          class: `room${room ? " joined" : ""}${client.active === info.id ? " active" : ""}`,
          "aria-label": info.title,
          "aria-current": client.active === info.id ? "true" : null,
          "aria-describedby": unread ? `unread-${info.id}` : null,
          onclick: () => { tab = "chat"; client.open(info.id, info.title, info.last_message_id); },
        }, h("span", { class: "title" }, info.title), info.staff_only && h("span", { class: "tag" }, "staff"), unread));
    }), rooms.length === 0 && h("li", { class: "hint" }, "No rooms yet."));
  }

  /** @type {number | null} */
  let drawnRoom = null;
  /** @type {number | null} */
  let drawnOldest = null;

  function drawRoom() {
    const room = client.active === null ? undefined : client.rooms.get(client.active);
    composer.hidden = !room;
    // Busy until the server has confirmed the join: only then does this person hear what happens in the room.
    messages.setAttribute("aria-busy", String(Boolean(room && !room.joined)));
    drawPresence(room);
    if (!room) {
      fill(roomHeader, h("h2", {}, "No room open"));
      fill(messages, h("li", { class: "hint" }, "Choose a room on the left to join it. You can be in several at once."));
      drawnRoom = null;
      return;
    }
    const info = rooms.find((r) => r.id === room.id);
    const openWindow = env.openWindow;
    fill(roomHeader, h("h2", {}, room.title),
      room.members && h("span", { class: "online", id: "online-count" }, `${room.members.size} online`),
      openWindow && only === undefined && info &&
        h("button", { type: "button", class: "quiet", onclick: () => openWindow(info) }, "Open in new window"),
      only === undefined && h("button", { type: "button", class: "quiet", onclick: () => client.leave(room.id) }, "Leave"));
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    const heightBefore = messages.scrollHeight;
    const oldest = room.oldest();
    fill(messages,
      (room.atStart || oldest === 1) && h("li", { class: "hint" }, "This is the start of the room."),
      room.presence.filter((p) => oldest === null || p.after < oldest).map(presenceLine),
      room.ordered().flatMap((m) => [h("li", { class: `message${m.username === me.username ? " own" : ""}` },
        h("span", { class: "who" }, m.username),
        h("time", { datetime: new Date(m.ts).toISOString() }, new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
        h("p", { class: "text" }, m.message)),
        ...room.presence.filter((p) => p.after === m.id).map(presenceLine)]),
      [...room.pending.values()].map((p) => h("li", { class: `message own pending ${p.state}` },
        h("span", { class: "who" }, me.username),
        h("span", { class: "state" }, p.state === "sending" ? "sending…" : "not sent"),
        h("p", { class: "text" }, p.text),
        p.state === "failed" && h("p", { class: "error", role: "alert" }, p.error))));
    if (drawnRoom !== room.id || atBottom) {
      messages.scrollTop = messages.scrollHeight;
    } else if (oldest !== drawnOldest) {
      messages.scrollTop += messages.scrollHeight - heightBefore; // older messages came in above
    }
    drawnRoom = room.id;
    drawnOldest = oldest;
    lastScrollTop = messages.scrollTop;
  }

  /** The room's member list and who is typing there. @param {import("./rooms.js").Room | undefined} room */
  function drawPresence(room) {
    members.hidden = !room?.members;
    if (room?.members) {
      const names = room.memberList();
      fill(members, h("h3", {}, `In this room (${names.length})`),
        h("ul", {}, names.map((name) => h("li", { class: name === me.username ? "self" : null }, name))));
    }
    const typists = room ? client.typists(room.id) : [];
    typing.textContent = typists.length === 0 ? ""
      : typists.length === 1 ? `${typists[0]} is typing…`
      : typists.length === 2 ? `${typists[0]} and ${typists[1]} are typing…`
      : `${typists.length} people are typing…`;
  }

  function drawNotices() {
    fill(notices, client.notices.map((n) => h("div", { class: "notice", role: "alert" },
      h("span", {}, n.text),
      h("button", { type: "button", class: "quiet", "aria-label": "Dismiss", onclick: () => client.dismiss(n.id) }, "×"))));
  }

  function draw() {
    status.textContent = client.state === "open" ? "" : client.state === "connecting" ? "Connecting…" : "Reconnecting…";
    status.hidden = client.state === "open";
    drawTabs();
    drawNotices();
    chat.hidden = tab !== "chat";
    other.hidden = tab === "chat";
    drawRooms();
    drawRoom();
    drawTitle();
    // A room's own window does not change which rooms the main window reopens.
    if (only === undefined) rememberRooms();
    if (tab === "admin" && other.dataset.tab !== "admin") renderAdmin(other, api, (text) => client.notify(text));
    if (tab === "account" && other.dataset.tab !== "account") renderAccount(other, api);
    if (tab === "extra" && other.dataset.tab !== "extra" && env.extraTab) {
      other.dataset.tab = "extra";
      env.extraTab.render(other);
    }
    if (tab === "chat") other.dataset.tab = "";
  }

  const memory = env.roomMemory ?? browserMemory;
  /** @type {string | undefined} */
  let remembered;
  /** Set until the rooms open last time are open again: until then, no room list is worth keeping. */
  let reopening = true;
  /** Keeps the open rooms for next time, when they change. */
  function rememberRooms() {
    if (reopening) return;
    const rooms = [...client.rooms.keys()];
    if (JSON.stringify(rooms) === remembered) return;
    remembered = JSON.stringify(rooms);
    memory.save(rooms);
  }

  /** @type {number | null | undefined} */
  let viewed;
  /** @type {string | undefined} */
  let titled;

  /** The window's title carries the unread count; the shell hears which room is in view. */
  function drawTitle() {
    let unread = 0;
    for (const room of client.rooms.values()) unread += room.unread;
    const name = only === undefined ? "MultiChat" : `${client.rooms.get(only)?.title ?? "Room"} — MultiChat`;
    const title = unread > 0 ? `(${unread}) ${name}` : name;
    if (title !== titled) {
      titled = title;
      document.title = title;
      env.title?.(title);
    }
    const inView = tab === "chat" ? client.active : null;
    if (inView !== viewed) {
      viewed = inView;
      env.viewing?.(inView);
    }
  }

  client.onchange = draw;
  client.onroomschanged = refreshRooms;
  client.onended = () => signedOut("Your session has ended. Log in again.");
  client.onfresh = (room, message) => env.notify?.(rooms.find((r) => r.id === room.id), message);
  await refreshRooms();
  // The rooms open last time come back (in a room's own window, just that room).
  /** @type {number[]} */
  /** @type {number[]} */
  const reopen = only === undefined ? await memory.load().catch(() => []) : [only];
  remembered = JSON.stringify(reopen);
  if (only !== undefined) chat.classList.add("single");
  for (const id of reopen) {
    const info = rooms.find((r) => r.id === id);
    if (info) client.open(info.id, info.title, info.last_message_id);
  }
  reopening = false;
  for (const text of env.notices ?? []) client.notify(text);
  client.start();
  draw();
  input.focus();
}

/** @param {{ text: string }} note */
function presenceLine(note) {
  return h("li", { class: "presence" }, note.text);
}

/** @param {HTMLElement} page @param {Api} api */
function renderAccount(page, api) {
  page.dataset.tab = "account";
  const result = h("p", { role: "status" });
  const form = h("form", { class: "card" },
    h("h2", {}, "Change your password"),
    h("label", {}, "Current password", h("input", { name: "old", type: "password", autocomplete: "current-password", required: true })),
    h("label", {}, "New password", h("input", { name: "new", type: "password", autocomplete: "new-password", required: true })),
    result,
    h("button", { type: "submit" }, "Change password"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.changePassword(field(form, "old"), field(form, "new"));
      form.reset();
      result.textContent = "Your password was changed. Your other sessions were logged out.";
    } catch (e) {
      result.textContent = e instanceof ApiError && e.status === 401 ? "The current password is not right." : errorText(e);
    }
  });
  fill(page, form);
}
