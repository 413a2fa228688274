// The admin tab: rooms (create, rename, staff-only, delete) and users (create, rights, reset password,
// delete). Every change goes through the server's admin API, which also tells connected users.

import { h, fill, field, checked } from "./dom.js";

/** @typedef {import("./api.js").Api} Api */
/** @typedef {import("./api.js").User} User */
/** @typedef {import("./api.js").RoomInfo} RoomInfo */

/**
 * Draws the admin tab into `page` and keeps it current after each change.
 * @param {HTMLElement} page @param {Api} api @param {(text: string) => void} notify
 */
export async function renderAdmin(page, api, notify) {
  page.dataset.tab = "admin";
  const status = h("p", { class: "admin-status", role: "status" });
  const rooms = h("section", { class: "card wide", "aria-labelledby": "admin-rooms" });
  const users = h("section", { class: "card wide", "aria-labelledby": "admin-users" });
  fill(page, h("h2", { class: "sr-only" }, "Admin"), status, rooms, users);

  /** Runs an admin action, then redraws; failures are said in the status line. @param {() => Promise<unknown>} action @param {string} done */
  async function act(action, done) {
    try {
      await action();
      status.textContent = done;
      await redraw();
    } catch (e) {
      status.textContent = e instanceof Error ? e.message : String(e);
    }
  }

  async function redraw() {
    try {
      const [roomList, userList] = await Promise.all([api.adminRooms(), api.users()]);
      drawRooms(roomList);
      drawUsers(userList);
    } catch (e) {
      notify(e instanceof Error ? e.message : String(e));
    }
  }

  /** @param {RoomInfo[]} list */
  function drawRooms(list) {
    const create = h("form", { class: "inline" },
      h("label", {}, "Title", h("input", { name: "title", required: true, maxlength: 255 })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "staff_only" }), "Staff only"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "ephemeral" }), "Ephemeral"),
      h("button", { type: "submit" }, "Create room"));
    create.addEventListener("submit", (event) => {
      event.preventDefault();
      const title = field(create, "title");
      const room = { title, staff_only: checked(create, "staff_only"), ephemeral: checked(create, "ephemeral") };
      act(() => api.createRoom(room), `Room “${title}” created.`);
    });
    fill(rooms, h("h2", { id: "admin-rooms" }, "Rooms"), create,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Title"), h("th", {}, "Staff only"), h("th", {}, "Ephemeral"), h("th", {}, ""))),
        h("tbody", {}, list.map((room) => {
          const title = h("input", { value: room.title, "aria-label": `Title of ${room.title}`, maxlength: 255 });
          return h("tr", {},
            h("td", {}, h("form", { class: "rename", onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); act(() => api.updateRoom(room.id, { title: title.value }), `Room renamed to “${title.value}”.`); } },
              title, h("button", { type: "submit", class: "quiet", "aria-label": `Rename ${room.title}` }, "Rename"))),
            h("td", {}, h("input", { type: "checkbox", checked: room.staff_only, "aria-label": `Staff only: ${room.title}`,
              onchange: (/** @type {Event} */ e) => act(() => api.updateRoom(room.id, { staff_only: /** @type {HTMLInputElement} */ (e.target).checked }), `“${room.title}” updated.`) })),
            h("td", {}, room.ephemeral ? "yes" : "no"),
            h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Delete ${room.title}`,
              onclick: () => act(() => api.deleteRoom(room.id), `Room “${room.title}” deleted.`) }, "Delete")));
        }))));
  }

  /** @param {User[]} list */
  function drawUsers(list) {
    const create = h("form", { class: "inline" },
      h("label", {}, "New username", h("input", { name: "username", required: true, autocomplete: "off" })),
      h("label", {}, "New password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "is_staff" }), "Staff"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "is_admin" }), "Admin"),
      h("button", { type: "submit" }, "Create user"));
    create.addEventListener("submit", (event) => {
      event.preventDefault();
      const username = field(create, "username");
      const user = { username, password: field(create, "password"), is_staff: checked(create, "is_staff"), is_admin: checked(create, "is_admin") };
      act(() => api.createUser(user), `User “${username}” created.`);
    });
    /** @param {User} user @param {"is_staff" | "is_admin" | "is_active"} flag @param {string} label */
    const toggle = (user, flag, label) => h("input", { type: "checkbox", checked: user[flag], "aria-label": `${label}: ${user.username}`,
      onchange: (/** @type {Event} */ e) => act(() => api.updateUser(user.id, { [flag]: /** @type {HTMLInputElement} */ (e.target).checked }), `“${user.username}” updated.`) });
    fill(users, h("h2", { id: "admin-users" }, "Users"), create,
      h("table", {}, h("thead", {}, h("tr", {}, ["Username", "Staff", "Admin", "Active", "Password", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, list.map((user) => {
          const password = h("input", { type: "password", "aria-label": `New password for ${user.username}`, autocomplete: "new-password" });
          return h("tr", {},
            h("td", {}, user.username),
            h("td", {}, toggle(user, "is_staff", "Staff")),
            h("td", {}, toggle(user, "is_admin", "Admin")),
            h("td", {}, toggle(user, "is_active", "Active")),
            h("td", {}, h("form", { class: "rename", onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); act(() => api.updateUser(user.id, { password: password.value }), `Password of “${user.username}” reset.`); } },
              password, h("button", { type: "submit", class: "quiet", "aria-label": `Reset password for ${user.username}` }, "Reset"))),
            h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Delete ${user.username}`,
              onclick: () => act(() => api.deleteUser(user.id), `User “${user.username}” deleted.`) }, "Delete")));
        }))));
  }

  await redraw();
}
