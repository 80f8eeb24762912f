// Linked accounts: every connection with its status, and the actions on it.

import { get, post, capabilities, apiUrl } from "../api.js";
import { h, clear, announce, timeEl, when, plural, busy, notice, confirmDialog, nextId } from "../dom.js";
import { platformIcon, platformName } from "../icons.js";
import { connectionBadge, connectionState, needsPerson, can } from "../status.js";

const PAGE_SIZE = 50;
const STATUSES = [
  ["", "All statuses"],
  ["healthy", "Healthy"],
  ["expiring_soon", "Expiring soon"],
  ["attention", "Requires action"],
  ["revoked", "Revoked"],
  ["disconnected", "Disconnected"],
];

function connectUrl(platform, ctx, { reconnect, capabilities: caps } = {}) {
  return apiUrl(`/v1/connect/${encodeURIComponent(platform)}`, {
    reconnect,
    capability: caps && caps.length ? caps : undefined,
    return_to: ctx.href("/"),
  }).toString();
}

// What a new connection is for: publishing (or e-mail campaigns) and, where the
// platform reports any, analytics, so its figures can be collected from the start.
const CONNECT_FOR = ["publish", "email_campaigns", "analytics"];

function connectFor(platform) {
  const offered = new Set((platform.capability_scopes || []).map((c) => c.capability));
  return CONNECT_FOR.filter((c) => offered.has(c) && (c !== "analytics" || platform.supports_analytics));
}

function flash(ctx, caps) {
  const q = ctx.query;
  const outcome = q.get("connect");
  if (!outcome) return null;
  const name = platformName(q.get("platform") || "", caps);
  let box;
  if (outcome === "ok") {
    const n = Number(q.get("connections") || "0");
    const text = n > 0 ? `Connected ${plural(n, `${name} account`, `${name} accounts`)}.` : `${name} is connected.`;
    box = notice("ok", text);
    const missing = q.get("missing_scopes");
    if (missing) {
      box.querySelector("p").append(` Some permissions were not granted (${missing.split(",").join(", ")}); reconnect to grant them.`);
      box.classList.replace("ok", "warn");
    }
    announce(box.querySelector("p").textContent);
  } else {
    const message = q.get("message") || "The platform did not complete the connection.";
    box = notice("error", `${name} was not connected: ${message}`);
  }
  // The outcome is shown once; a reload should not show it again.
  history.replaceState(null, "", location.pathname);
  return box;
}

export async function render(main, ctx) {
  const caps = await capabilities().catch(() => []);
  const head = h("div", { class: "page-head" },
    h("div", null,
      h("h1", null, "Linked accounts"),
      h("p", null, "Every account POSTD publishes to, whether its access still works, and what to do when it does not.")));
  main.append(head);
  const message = flash(ctx, caps);
  if (message) main.append(message);

  // ---------------------------------------------------------------- connect
  const connectList = h("ul", { class: "connect-list" },
    [...caps].sort((a, b) => a.display_name.localeCompare(b.display_name)).map((p) => h("li", null,
      h("a", { class: "button", href: connectUrl(p.platform, ctx, { capabilities: connectFor(p) }), "data-platform": p.platform },
        platformIcon(p.platform, { small: true }), h("span", { class: "visually-hidden" }, "Connect "), p.display_name))));
  if (can(ctx.me, "editor")) main.append(h("section", { class: "card connect", "aria-labelledby": "connect-h", "aria-describedby": "connect-hint" },
    h("div", { class: "row" },
      h("h2", { id: "connect-h" }, "Connect an account"),
      h("p", { class: "muted small", id: "connect-hint" }, "You approve access on the platform, then come back here.")),
    connectList));

  // ---------------------------------------------------------------- list
  const statusSelect = h("select", { id: "filter-status" }, STATUSES.map(([v, t]) => h("option", { value: v }, t)));
  const platformSelect = h("select", { id: "filter-platform" },
    h("option", { value: "" }, "All platforms"),
    caps.map((p) => h("option", { value: p.platform }, p.display_name)));
  const list = h("ul", { class: "conn-list", id: "connections", "aria-label": "Connections" });
  const summary = h("p", { class: "muted small", role: "status" });
  const more = h("button", { type: "button", class: "small" }, "Load more");
  const footer = h("div", { class: "load-more" }, summary, more);
  main.append(h("section", { "aria-labelledby": "accounts-h" },
    h("div", { class: "page-head" },
      h("h2", { id: "accounts-h" }, "Your accounts"),
      h("div", { class: "toolbar" },
        h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
        h("div", { class: "field" }, h("label", { for: "filter-platform" }, "Platform"), platformSelect))),
    list, footer));

  let cursor = null;
  let shown = 0;
  let loading = null;

  async function load({ reset = false, focusNew = false } = {}) {
    if (reset) {
      cursor = null;
      shown = 0;
      clear(list);
    }
    more.hidden = true;
    summary.textContent = "Loading accounts…";
    const query = { limit: PAGE_SIZE, cursor, status: statusSelect.value || undefined, platform: platformSelect.value || undefined };
    try {
      const page = await get("/v1/connections", query);
      const items = page.items.map((c) => row(c));
      list.append(...items);
      shown += page.items.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (shown === 0) {
        summary.textContent = statusSelect.value || platformSelect.value
          ? "No account matches these filters."
          : "No accounts yet. Connect one above.";
      } else {
        summary.textContent = `Showing ${plural(shown, "account", "accounts")}${cursor ? "; more are available" : ""}.`;
      }
      if (focusNew && items[0]) items[0].querySelector("h3").focus();
    } catch (err) {
      summary.textContent = "";
      list.after(notice("error", `The accounts could not be loaded: ${err.message}`));
      more.hidden = !cursor;
    }
  }

  function row(c) {
    const headingId = nextId("conn");
    const li = h("li", { class: "conn", "data-connection-id": c.id, "data-platform": c.platform });
    const state = connectionState(c);
    const meta = h("div", { class: "conn-meta" },
      h("span", null, [platformName(c.platform, caps), c.account_kind ? ` ${c.account_kind}` : "", c.username ? ` · @${c.username}` : ""].join("")),
      h("span", null, "Last refresh: ", c.last_refreshed_at ? timeEl(c.last_refreshed_at) : "not yet"),
      h("span", null, c.expires_at ? ["Token expires ", h("time", { datetime: c.expires_at, title: when(c.expires_at) }, when(c.expires_at, { dateStyle: "medium" }))] : "Token does not expire"));

    const actions = h("div", { class: "conn-actions" });
    const result = h("p", { class: "small muted", role: "status" });
    if (c.status !== "disconnected" && can(ctx.me, "editor")) {
      const refresh = h("button", { type: "button", class: "small", "aria-describedby": headingId }, "Refresh now");
      refresh.addEventListener("click", () => busy(refresh, () => refreshNow(c, li, result)));
      actions.append(refresh);
      if (needsPerson(c) || (c.missing_scopes || []).length) {
        actions.append(h("a", {
          class: "button small primary",
          href: connectUrl(c.platform, ctx, { reconnect: c.id, capabilities: c.capabilities }),
          "aria-describedby": headingId,
        }, "Reconnect"));
      }
      if (can(ctx.me, "admin")) {
        const disconnect = h("button", { type: "button", class: "small", "aria-describedby": headingId }, "Disconnect");
        disconnect.addEventListener("click", () => disconnectConnection(c, li, disconnect));
        actions.append(disconnect);
      }
    }

    const body = h("div", { class: "conn-body" });
    const sameWords = c.last_error && c.last_error.message && c.status_reason &&
      c.status_reason.slice(0, 40) === c.last_error.message.slice(0, 40);
    if (c.status !== "healthy" && c.status_reason && !sameWords) body.append(h("p", { class: "small" }, c.status_reason));
    if (c.last_error && c.last_error.message) {
      const e = c.last_error;
      body.append(h("div", { class: ["conn-error", needsPerson(c) ? "" : "quiet"] },
        h("p", null, h("strong", null, "Last error: "), e.message),
        e.action_message ? h("p", null, e.action_message) : null));
    }
    if ((c.missing_scopes || []).length) {
      body.append(h("p", { class: "small" }, "Missing permissions: ", c.missing_scopes.map((sc) => h("code", { class: "chip" }, sc))));
    }
    body.append(h("div", { class: "scopes small" },
      h("span", { class: "muted" }, "Scopes: "),
      (c.scopes || []).length ? c.scopes.map((sc) => h("code", { class: "chip" }, sc)) : h("span", { class: "muted" }, "none recorded")));
    body.append(result);
    body.append(details(c));

    li.append(
      h("div", { class: "icon" }, platformIcon(c.platform)),
      h("div", null, h("h3", { id: headingId, tabindex: "-1" }, c.account_name || c.external_id, " ", connectionBadge(c)), meta),
      actions,
      body);
    li.dataset.status = c.status;
    li.dataset.badge = state.label;
    return li;
  }

  function details(c) {
    const box = h("details", { class: "more" }, h("summary", null, "Health, history and missed posts"));
    const content = h("div", { class: "stack small" }, h("p", { class: "muted" }, "Loading…"));
    box.append(content);
    let loaded = false;
    box.addEventListener("toggle", async () => {
      if (!box.open || loaded) return;
      loaded = true;
      const [health, missed] = await Promise.allSettled([
        get(`/v1/connections/${encodeURIComponent(c.id)}/health`, { history_limit: 10, checks_limit: 5 }),
        get(`/v1/connections/${encodeURIComponent(c.id)}/missed-jobs`),
      ]);
      clear(content);
      if (health.status === "fulfilled") {
        const hv = health.value;
        const f = hv.forecast || {};
        content.append(h("p", null, f.explanation || "Nothing foreseeable needs a person.",
          f.next_refresh_at ? [" POSTD refreshes the token itself ", timeEl(f.next_refresh_at), "."] : ""));
        if (hv.next_check_at) content.append(h("p", { class: "muted" }, "Next check ", timeEl(hv.next_check_at), "."));
        if ((hv.history || []).length) {
          content.append(h("h4", null, "Status history"), h("ul", null, hv.history.map((x) => h("li", null,
            timeEl(x.occurred_at), ` — ${connectionState({ status: x.status }).label}: ${x.reason}`))));
        }
        if ((hv.recent_checks || []).length) {
          content.append(h("h4", null, "Recent checks"), h("ul", null, hv.recent_checks.map((k) => h("li", null,
            timeEl(k.checked_at), ` — ${k.ok ? "passed" : `failed: ${(k.error && k.error.message) || "unknown error"}`}`))));
        }
      } else {
        content.append(h("p", { class: "error-text" }, `Health could not be loaded: ${health.reason.message}`));
      }
      if (missed.status === "fulfilled" && missed.value.missed_count > 0 && can(ctx.me, "editor")) {
        content.append(backfill(c, missed.value));
      } else if (missed.status === "fulfilled") {
        content.append(h("p", { class: "muted" }, missed.value.paused ? "Publishing is paused; no post has been missed yet." : "No missed posts."));
      }
    });
    return box;
  }

  function backfill(c, missed) {
    const status = h("p", { role: "status" });
    const publish = h("button", { type: "button", class: "small primary" }, "Publish them now");
    const cancel = h("button", { type: "button", class: "small" }, "Cancel them");
    let done = false;
    const run = async (action, button) => {
      await busy(button, async () => {
        status.textContent = action === "publish" ? "Publishing the missed posts…" : "Cancelling the missed posts…";
        try {
          const out = await post(`/v1/connections/${encodeURIComponent(c.id)}/backfill`, { action });
          const n = out.affected_count ?? out.job_count ?? 0;
          status.textContent = action === "publish" ? `${plural(n, "post", "posts")} queued again.` : `${plural(n, "post", "posts")} cancelled.`;
          done = true;
        } catch (err) {
          status.textContent = err.message;
        }
      }, () => {
        publish.disabled = done;
        cancel.disabled = done;
      });
    };
    publish.addEventListener("click", () => run("publish", publish));
    cancel.addEventListener("click", () => run("cancel", cancel));
    return h("div", { class: "notice warn" },
      h("div", null,
        h("p", null, `${plural(missed.missed_count, "post was", "posts were")} missed while this account was paused` +
          (missed.oldest_due_at ? ` (since ${when(missed.oldest_due_at)}).` : ".")),
        h("div", { class: "row" }, publish, cancel), status));
  }

  async function refreshNow(c, li, result) {
    result.textContent = "Refreshing…";
    try {
      const out = await post(`/v1/connections/${encodeURIComponent(c.id)}/check`, { refresh: true });
      const fresh = await get(`/v1/connections/${encodeURIComponent(c.id)}`);
      if (out.status && out.status !== "unspecified") {
        fresh.status = out.status;
        fresh.status_reason = out.status_reason || fresh.status_reason;
      }
      const next = row(fresh);
      li.replaceWith(next);
      const label = connectionState(fresh).label;
      const text = out.check && out.check.ok
        ? `${fresh.account_name}: ${out.refreshed ? "token refreshed" : "check passed"}. Status: ${label}.`
        : `${fresh.account_name}: ${label}. ${out.status_reason || ""}`.trim();
      next.querySelector(".conn-body [role=status]").textContent = text;
      announce(text);
      const again = [...next.querySelectorAll("button")].find((b) => b.textContent === "Refresh now");
      if (again) again.focus();
    } catch (err) {
      result.textContent = `Refresh failed: ${err.message}`;
      announce(`Refresh failed: ${err.message}`);
    }
  }

  async function disconnectConnection(c, li, button) {
    const ok = await confirmDialog({
      title: `Disconnect ${c.account_name}?`,
      body: [
        h("p", null, `POSTD will destroy the tokens of this ${platformName(c.platform, caps)} account (they cannot be recovered) and ask the platform to revoke them.`),
        h("p", null, "Posts scheduled for it will not be published. You can connect it again later."),
      ],
      confirm: "Disconnect",
      danger: true,
    });
    if (!ok) return;
    await busy(button, async () => {
      try {
        const out = await post(`/v1/connections/${encodeURIComponent(c.id)}/disconnect`, {});
        const next = row(out.connection || { ...c, status: "disconnected" });
        li.replaceWith(next);
        next.querySelector("h3").focus();
        announce(`${c.account_name} disconnected.`);
      } catch (err) {
        announce(`Disconnect failed: ${err.message}`, { assertive: true });
        li.querySelector(".conn-body [role=status]").textContent = `Disconnect failed: ${err.message}`;
      }
    });
  }

  statusSelect.addEventListener("change", () => load({ reset: true }));
  platformSelect.addEventListener("change", () => load({ reset: true }));
  more.addEventListener("click", () => busy(more, () => load({ focusNew: true })));
  await load();
}
