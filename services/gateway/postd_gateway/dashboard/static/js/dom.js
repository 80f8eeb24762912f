// DOM building and formatting. Everything is built with createElement and text
// nodes, never innerHTML, so text from the API (account names, platform messages)
// can never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(parent, c);
    return;
  }
  parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
}

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style") {
      Object.assign(el.style, value); // CSSOM: allowed by the style-src policy
    } else if (key in el && !(el instanceof SVGElement) && typeof value !== "string") {
      el[key] = value; // properties such as checked, disabled, value
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  return el;
}

/** h("button", {class: "primary", onClick}, "Save") */
export function h(tag, attrs, ...children) {
  const el = apply(document.createElement(tag), attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = apply(document.createElementNS(SVG_NS, tag), attrs);
  append(el, children);
  return el;
}

/** parent.append(...children), skipping null/false and flattening arrays. */
export function add(parent, ...children) {
  append(parent, children);
  return parent;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

let uid = 0;
export function nextId(prefix = "id") {
  uid += 1;
  return `${prefix}-${uid}`;
}

// ---------------------------------------------------------------- announcements

let announceTimer = 0;
/** Say something to screen readers (polite), e.g. "Sandbox Bakery refreshed". */
export function announce(text, { assertive = false } = {}) {
  const region = document.getElementById(assertive ? "alert-announcer" : "announcer");
  if (!region) return;
  clearTimeout(announceTimer);
  region.textContent = "";
  // A fresh text node after a tick, so the same sentence twice is read twice.
  announceTimer = setTimeout(() => { region.textContent = text; }, 60);
}

// ---------------------------------------------------------------- formatting

const numberFormat = new Intl.NumberFormat();
export function num(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return digits ? new Intl.NumberFormat(undefined, { maximumFractionDigits: digits }).format(n) : numberFormat.format(Math.round(n));
}

export function plural(n, one, many) {
  return `${num(n)} ${n === 1 ? one : many}`;
}

export function when(iso, options) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, options || { dateStyle: "medium", timeStyle: "short" });
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
/** "3 minutes ago", "in 5 days". */
export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = (new Date(iso).getTime() - now) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return relative.format(Math.round(seconds), "second");
  if (abs < 2700) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 64800) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 86400 * 45) return relative.format(Math.round(seconds / 86400), "day");
  return relative.format(Math.round(seconds / (86400 * 30)), "month");
}

/** A <time> element showing relative time, with the exact time as its title. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  return h("time", { datetime: iso, title: when(iso) }, ago(iso));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${num(seconds * 1000)} ms`;
  if (seconds < 120) return `${num(seconds, 1)} s`;
  if (seconds < 7200) return `${num(seconds / 60)} min`;
  if (seconds < 172800) return `${num(seconds / 3600, 1)} h`;
  return `${num(seconds / 86400, 1)} days`;
}

export function bytes(n) {
  if (!n) return "any size";
  if (n >= 1 << 30) return `${num(n / (1 << 30), 1)} GB`;
  if (n >= 1 << 20) return `${num(n / (1 << 20), 1)} MB`;
  return `${num(n / 1024)} KB`;
}

/** Characters as the platforms (and POSTD's validator) count them: code points. */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

export function words(enumValue) {
  return String(enumValue || "").replaceAll("_", " ");
}

export function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

export function debounce(fn, ms) {
  let timer = 0;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/**
 * Mark a button busy while `work` runs; returns work's result. Afterwards the
 * button is enabled again unless `after` (run last) decides otherwise.
 */
export async function busy(button, work, after) {
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.removeAttribute("aria-busy");
    button.disabled = false;
    if (after) after();
  }
}

/** A notice box (role=status or alert) that a person can dismiss. */
export function notice(kind, text, { role } = {}) {
  const box = h("div", { class: ["notice", kind], role: role || (kind === "error" ? "alert" : "status") },
    h("p", null, text));
  box.append(h("button", { type: "button", class: "small", "aria-label": "Dismiss message", onClick: () => box.remove() }, "Dismiss"));
  return box;
}

/** A modal confirmation built on <dialog>: resolves true when confirmed. */
export function confirmDialog({ title, body, confirm = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    const titleId = nextId("dlg");
    const ok = h("button", { type: "button", class: danger ? "danger" : "primary" }, confirm);
    const cancel = h("button", { type: "button" }, "Cancel");
    const dialog = h("dialog", { "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      Array.isArray(body) ? body : h("p", null, body),
      h("div", { class: "actions" }, cancel, ok));
    let answer = false;
    ok.addEventListener("click", () => { answer = true; dialog.close(); });
    cancel.addEventListener("click", () => dialog.close());
    const opener = document.activeElement;
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus(); // the safe choice has the focus
  });
}
