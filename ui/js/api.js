// The server's JSON HTTP API (README.md), with errors turned into sentences a person can act on.

/**
 * @typedef {{ id: number, username: string, is_staff: boolean, is_admin: boolean, is_active: boolean }} User
 * @typedef {{ id: number, title: string, staff_only: boolean, ephemeral: boolean, last_message_id: number }} RoomInfo
 * @typedef {{ status: number, body: any, retryAfter: number | null }} Answer  body: undefined when not JSON
 */

export const UNREACHABLE = "The server cannot be reached. Check your connection and try again.";

export class ApiError extends Error {
  /** @param {number} status 0 when the server could not be reached @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  /**
   * @param {string} base  the server's address ("" for the page's own origin)
   * @param {string | null} token  a session token (the desktop shell); else the browser's cookie
   */
  constructor(base = "", token = null) {
    this.base = base;
    this.token = token;
  }

  /**
   * Makes one HTTP call; any answer is returned, only no answer at all throws. The desktop shell puts its
   * own in place (the call goes through its Rust side).
   * @param {string} method @param {string} path @param {object} [body]
   * @returns {Promise<Answer>}
   */
  async exchange(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch {
      throw new ApiError(0, UNREACHABLE);
    }
    const retry = response.headers.get("retry-after");
    return {
      status: response.status,
      body: response.status === 204 ? null : await response.json().catch(() => undefined),
      retryAfter: retry === null ? null : Number(retry),
    };
  }

  /**
   * @param {string} method @param {string} path @param {object} [body]
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    const { status, body: data, retryAfter } = await this.exchange(method, path, body);
    if (status === 204) return null;
    if (status >= 200 && status < 300) {
      if (data === undefined || data === null) throw new ApiError(status, "That address answers, but not as a MultiChat server.");
      return data;
    }
    if (status === 429) {
      const seconds = retryAfter === 1 ? "1 second" : `${retryAfter ?? "a few"} seconds`;
      throw new ApiError(429, `Too many attempts. Try again in ${seconds}.`);
    }
    const message = typeof data?.error === "string" ? data.error : `The server answered ${status}.`;
    throw new ApiError(status, sentence(message));
  }

  /** @param {string} username @param {string} password @returns {Promise<{ token: string, user: User }>} */
  login(username, password) {
    return this.request("POST", "/api/login", { username, password });
  }
  logout() {
    return this.request("POST", "/api/logout", {});
  }
  /** @returns {Promise<User>} */
  me() {
    return this.request("GET", "/api/me");
  }
  /** @returns {Promise<boolean>} */
  async setupNeeded() {
    return (await this.request("GET", "/api/setup")).needed;
  }
  /** @param {string} username @param {string} password @returns {Promise<{ token: string, user: User }>} */
  setup(username, password) {
    return this.request("POST", "/api/setup", { username, password });
  }
  /** @param {string} oldPassword @param {string} newPassword */
  changePassword(oldPassword, newPassword) {
    return this.request("POST", "/api/me/password", { old_password: oldPassword, new_password: newPassword });
  }
  /** @returns {Promise<RoomInfo[]>} */
  rooms() {
    return this.request("GET", "/api/rooms");
  }

  /** @returns {Promise<RoomInfo[]>} */
  adminRooms() {
    return this.request("GET", "/api/admin/rooms");
  }
  /** @param {{ title: string, staff_only: boolean, ephemeral?: boolean }} room */
  createRoom(room) {
    return this.request("POST", "/api/admin/rooms", room);
  }
  /** @param {number} id @param {{ title?: string, staff_only?: boolean }} change */
  updateRoom(id, change) {
    return this.request("PATCH", `/api/admin/rooms/${id}`, change);
  }
  /** @param {number} id */
  deleteRoom(id) {
    return this.request("DELETE", `/api/admin/rooms/${id}`);
  }
  /** @returns {Promise<User[]>} */
  users() {
    return this.request("GET", "/api/admin/users");
  }
  /** @param {{ username: string, password: string, is_staff: boolean, is_admin: boolean }} user */
  createUser(user) {
    return this.request("POST", "/api/admin/users", user);
  }
  /** @param {number} id @param {{ is_staff?: boolean, is_admin?: boolean, is_active?: boolean, password?: string }} change */
  updateUser(id, change) {
    return this.request("PATCH", `/api/admin/users/${id}`, change);
  }
  /** @param {number} id */
  deleteUser(id) {
    return this.request("DELETE", `/api/admin/users/${id}`);
  }
}

/** The server's short error texts, as sentences. @param {string} message */
function sentence(message) {
  const text = message.charAt(0).toUpperCase() + message.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}
