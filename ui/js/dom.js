// Building DOM nodes. Text is always set as text: nothing a user wrote is ever parsed as HTML.

/**
 * @typedef {string | number | Node | null | undefined | false} Child
 * @typedef {Record<string, string | number | boolean | EventListener | null | undefined>} Attributes
 */

/**
 * Creates an element. Attributes named `on…` become listeners; `true` sets a boolean attribute, `false`,
 * null and undefined leave it out; children that are strings become text nodes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag @param {Attributes} [attributes] @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replaces the children of `parent`. @param {Element} parent @param {...(Child | Child[])} children */
export function fill(parent, ...children) {
  parent.replaceChildren(...h("div", {}, ...children).childNodes);
}

/** The value of a named field of a form. @param {HTMLFormElement} form @param {string} name */
export function field(form, name) {
  const input = form.elements.namedItem(name);
  return input instanceof HTMLInputElement || input instanceof HTMLTextAreaElement ? input.value : "";
}

/** Whether a named checkbox of a form is ticked. @param {HTMLFormElement} form @param {string} name */
export function checked(form, name) {
  const input = form.elements.namedItem(name);
  return input instanceof HTMLInputElement && input.checked;
}

/**
 * The username and password fields of a form that logs in (or, with `newPassword`, creates an account).
 * @param {boolean} [newPassword] @returns {HTMLLabelElement[]}
 */
export function accountFields(newPassword = false) {
  return [
    h("label", {}, "Username", h("input", { name: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password",
      h("input", { name: "password", type: "password", autocomplete: newPassword ? "new-password" : "current-password", required: true })),
  ];
}

/**
 * A card that creates an administrator (a server's first account): a heading, a sentence, username and new
 * password, and a button. `create` gets the two fields; what it throws is shown in the card.
 * @param {{ id: string, heading: HTMLElement, text: string, button: string, wide?: boolean }} look
 * @param {(username: string, password: string) => Promise<void>} create
 */
export function adminAccountForm({ id, heading, text, button, wide = false }, create) {
  const error = h("p", { class: "error", role: "alert" });
  heading.id = id;
  const form = h("form", { class: wide ? "card wide" : "card", "aria-labelledby": id },
    heading, h("p", {}, text), accountFields(true), error, h("button", { type: "submit" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await create(field(form, "username"), field(form, "password"));
    } catch (e) {
      error.textContent = errorText(e);
    }
  });
  return form;
}

/** What to tell the person about an error. @param {unknown} e */
export function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}
