// In-app notifications: alerts about accounts and the queue, marked read one by one
// or all at once.

import { get, post } from "../api.js";
import { h, clear, timeEl, plural, num, busy, notice, announce, words, capitalise } from "../dom.js";
import { badge } from "../status.js";
import { platformIcon } from "../icons.js";

const SEVERITY_TONE = { critical: "bad", warning: "warn", info: "neutral" };

/** A notification's link, kept to this site (it may be an absolute URL of the gateway). */
function sameSite(url) {
  try {
    const parsed = new URL(url, location.origin);
    return parsed.origin === location.origin ? parsed.pathname + parsed.search : null;
  } catch {
    return null;
  }
}

export async function render(main, ctx) {
  const unreadOnly = h("input", { type: "checkbox", id: "unread-only" });
  const markAll = h("button", { type: "button" }, "Mark all read");
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Notifications"), h("p", null, "What POSTD noticed and what, if anything, you need to do.")),
    h("div", { class: "toolbar" }, h("label", { class: "check", for: "unread-only" }, unreadOnly, "Unread only"), markAll)));
  const list = h("ul", { class: "conn-list", id: "notifications", "aria-label": "Notifications" });
  const summary = h("p", { role: "status" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  main.append(list, h("div", { class: "load-more" }, summary, more));
  let cursor = null;
  let shown = 0;
  let unread = 0;

  function item(n) {
    const unread = !n.read_at;
    const resolved = n.alert_state === "resolved";
    // Once its alert is resolved, a notification is a record; its link no longer helps.
    const action = n.action_url && !resolved ? sameSite(n.action_url) : null;
    const read = h("button", { type: "button", class: "small" }, "Mark read");
    read.addEventListener("click", () => busy(read, async () => {
      try {
        await post("/v1/notifications/read", { ids: [n.id] });
        li.replaceWith(item({ ...n, read_at: new Date().toISOString() }));
        announce("Marked read.");
        ctx.refreshUnread();
      } catch (err) {
        announce(err.message, { assertive: true });
      }
    }));
    const li = h("li", { class: ["card", "notification", unread ? "unread" : ""], "data-notification-id": n.id },
      h("div", null,
        h("h2", null, n.platform ? platformIcon(n.platform, { small: true }) : null, " ", n.title, " ",
          resolved ? badge("Resolved", "ok") : badge(capitalise(words(n.severity)), SEVERITY_TONE[n.severity] || "neutral"),
          unread ? h("span", { class: "visually-hidden" }, " (unread)") : null),
        h("p", { class: "small" }, n.message),
        h("p", { class: "small muted" }, timeEl(n.created_at), n.alert_state && !resolved ? ` · alert ${words(n.alert_state)}` : "")),
      h("div", { class: "conn-actions" },
        action ? h("a", { class: "button small primary", href: action }, action.includes("/v1/connect/") ? "Reconnect" : "Open") : null,
        unread ? read : null));
    return li;
  }

  async function load(reset) {
    if (reset) {
      cursor = null;
      shown = 0;
      clear(list);
    }
    summary.textContent = "Loading…";
    try {
      const page = await get("/v1/notifications", { limit: 50, cursor, unread_only: unreadOnly.checked || undefined });
      const items = page.items.map(item);
      list.append(...items);
      shown += items.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      unread = page.unread_count;
      markAll.disabled = unread === 0;
      summary.textContent = shown
        ? `Showing ${plural(shown, "notification", "notifications")}; ${num(page.unread_count)} unread.`
        : "No notifications.";
      if (!reset && items[0]) {
        const heading = items[0].querySelector("h2");
        heading.setAttribute("tabindex", "-1");
        heading.focus();
      }
    } catch (err) {
      summary.textContent = "";
      list.after(notice("error", `Notifications could not be loaded: ${err.message}`));
    }
  }
  markAll.addEventListener("click", () => busy(markAll, async () => {
    try {
      const out = await post("/v1/notifications/read", { all: true });
      announce(`${plural(out.marked_count || 0, "notification", "notifications")} marked read.`);
      ctx.refreshUnread();
      await load(true);
    } catch (err) {
      announce(err.message, { assertive: true });
    }
  }, () => { markAll.disabled = unread === 0; }));
  unreadOnly.addEventListener("change", () => load(true));
  more.addEventListener("click", () => busy(more, () => load(false)));
  await load(true);
}
