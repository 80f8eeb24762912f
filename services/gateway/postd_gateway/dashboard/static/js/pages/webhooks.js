// Webhooks: events the platforms sent (verified, deduplicated), replay with progress,
// and the tenant's outbound endpoints.

import { get, post, capabilities } from "../api.js";
import { h, clear, timeEl, words, capitalise, plural, num, busy, notice, announce } from "../dom.js";
import { platformIcon, platformName } from "../icons.js";
import { badge, can } from "../status.js";
import { progressBox, inBatches } from "../bulk.js";

const VERDICTS = ["accepted", "duplicate", "challenge_answered", "rejected_signature", "rejected_stale",
  "rejected_unknown", "rejected_too_large", "rejected_malformed", "rejected_challenge"];
const BATCH = 100;

function verdictBadge(verdict) {
  const tone = verdict === "accepted" ? "ok" : verdict && verdict.startsWith("rejected") ? "bad" : "neutral";
  return badge(capitalise(words(verdict)), tone);
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export async function render(main, ctx) {
  const caps = await capabilities().catch(() => []);
  const platform = h("select", { id: "wh-platform" }, h("option", { value: "" }, "All platforms"),
    caps.map((p) => h("option", { value: p.platform }, p.display_name)));
  const verdict = h("select", { id: "wh-verdict" }, h("option", { value: "" }, "All verdicts"),
    VERDICTS.map((v) => h("option", { value: v }, capitalise(words(v)))));
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Webhooks"),
      h("p", null, "What the platforms told POSTD, whether it was genuine, and where POSTD sends events on.")),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "wh-platform" }, "Platform"), platform),
      h("div", { class: "field" }, h("label", { for: "wh-verdict" }, "Verdict"), verdict))));

  // ---------------------------------------------------------------- received events
  const chosen = new Set();
  const replaySelected = h("button", { type: "button", class: "primary", disabled: true }, "Replay selected");
  const progress = progressBox("Replay progress");
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select every event shown" });
  const tbody = h("tbody");
  const summary = h("p", { role: "status" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  const messages = h("div");

  const rangePlatform = h("select", { id: "range-platform" }, caps.map((p) => h("option", { value: p.platform }, p.display_name)));
  const rangeFrom = h("input", { type: "datetime-local", id: "range-from", value: localInput(new Date(Date.now() - 3600 * 1000)) });
  const rangeButton = h("button", { type: "submit" }, "Replay this range");
  const rangeForm = h("form", { class: "inline-fields", "aria-label": "Replay a time range" },
    h("div", { class: "field" }, h("label", { for: "range-platform" }, "Platform"), rangePlatform),
    h("div", { class: "field" }, h("label", { for: "range-from" }, "Received since"), rangeFrom),
    rangeButton);

  main.append(h("section", { class: "card", "aria-labelledby": "events-h" },
    h("h2", { id: "events-h" }, "Received events"),
    messages,
    can(ctx.me, "admin") ? h("div", { class: "row" }, replaySelected) : null,
    progress.el,
    h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("caption", { class: "visually-hidden" }, "Received webhook events"),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, selectAll),
        h("th", { scope: "col" }, "Received"), h("th", { scope: "col" }, "Platform"), h("th", { scope: "col" }, "Events"),
        h("th", { scope: "col" }, "Verdict"), h("th", { scope: "col" }, "Processing"), h("th", { scope: "col", class: "num" }, "Replays"))),
      tbody)),
    h("div", { class: "load-more" }, summary, more),
    can(ctx.me, "admin") ? h("details", { class: "more" }, h("summary", null, "Replay everything a platform sent in a time range"), rangeForm) : null));

  let cursor = null;
  let shown = 0;

  function syncButtons() {
    replaySelected.disabled = chosen.size === 0;
    replaySelected.textContent = chosen.size ? `Replay selected (${num(chosen.size)})` : "Replay selected";
    const boxes = [...tbody.querySelectorAll("input[type=checkbox]")];
    selectAll.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    selectAll.indeterminate = !selectAll.checked && boxes.some((b) => b.checked);
  }

  async function load(reset) {
    if (reset) {
      cursor = null;
      shown = 0;
      chosen.clear();
      clear(tbody);
      syncButtons();
    }
    summary.textContent = "Loading…";
    try {
      const page = await get("/v1/webhook-events", {
        limit: 50, cursor, platform: platform.value || undefined, verdict: verdict.value ? [verdict.value] : undefined,
      });
      const rows = page.items.map((e) => {
        const box = h("input", { type: "checkbox", value: e.id, "aria-label": `Select the ${platformName(e.platform, caps)} event ${e.platform_event_id || e.id}` });
        box.addEventListener("change", () => {
          if (box.checked) chosen.add(e.id);
          else chosen.delete(e.id);
          syncButtons();
        });
        return h("tr", null,
          h("td", null, box),
          h("td", null, timeEl(e.received_at)),
          h("td", null, h("span", { class: "row" }, platformIcon(e.platform, { small: true }), platformName(e.platform, caps))),
          h("td", { class: "wrap" }, (e.types || []).length ? e.types.join(", ") : h("span", { class: "muted" }, "none"),
            e.verdict_reason ? h("div", { class: "small muted" }, e.verdict_reason) : null),
          h("td", null, verdictBadge(e.verdict)),
          h("td", null, capitalise(words(e.processing_state))),
          h("td", { class: "num" }, num(e.replay_count)));
      });
      tbody.append(...rows);
      shown += rows.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = shown ? `Showing ${plural(shown, "event", "events")}${cursor ? "; more are available" : ""}.` : "No webhook events received yet.";
      if (!reset && rows[0]) rows[0].querySelector("input").focus();
      syncButtons();
    } catch (err) {
      summary.textContent = "";
      messages.append(notice("error", `Events could not be loaded: ${err.message}`));
    }
  }

  replaySelected.addEventListener("click", () => busy(replaySelected, async () => {
    const ids = [...chosen];
    let replayed = 0;
    try {
      progress.set(0, ids.length, `Replaying ${plural(ids.length, "event", "events")}…`);
      await inBatches(ids, BATCH, async (batch) => {
        const out = await post("/v1/webhook-events/replay", { event_ids: batch });
        replayed += out.replayed_count || 0;
      }, (done, total) => progress.set(done, total, `${num(done)} of ${num(total)} re-emitted.`));
      const text = `${plural(replayed, "event", "events")} re-emitted.`;
      progress.finish(text);
      announce(text);
      await load(true);
    } catch (err) {
      progress.finish(`Replay stopped: ${err.message}`);
    }
  }, syncButtons));
  rangeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(rangeButton, async () => {
      try {
        progress.start(`Replaying what ${platformName(rangePlatform.value, caps)} sent since ${new Date(rangeFrom.value).toLocaleString()}…`);
        const out = await post("/v1/webhook-events/replay", {
          platform: rangePlatform.value,
          received_after: new Date(rangeFrom.value).toISOString(),
        });
        const text = `${plural(out.replayed_count || 0, "event", "events")} re-emitted.`;
        progress.finish(text);
        announce(text);
        await load(true);
      } catch (err) {
        progress.finish(`Replay failed: ${err.message}`);
      }
    });
  });
  selectAll.addEventListener("change", () => {
    for (const box of tbody.querySelectorAll("input[type=checkbox]")) {
      box.checked = selectAll.checked;
      if (box.checked) chosen.add(box.value);
      else chosen.delete(box.value);
    }
    syncButtons();
  });
  platform.addEventListener("change", () => load(true));
  verdict.addEventListener("change", () => load(true));
  more.addEventListener("click", () => busy(more, () => load(false)));

  // ---------------------------------------------------------------- outbound endpoints
  const endpoints = h("section", { class: "card", "aria-labelledby": "endpoints-h" },
    h("h2", { id: "endpoints-h" }, "Outbound endpoints"), h("p", { class: "muted" }, "Loading…"));
  main.append(endpoints);

  await Promise.all([load(true), (async () => {
    try {
      const page = await get("/v1/webhook-endpoints", { limit: 100 });
      const list = page.items;
      endpoints.lastChild.remove();
      if (!list.length) {
        endpoints.append(h("p", { class: "muted" }, "No outbound endpoints. Register one through the API (POST /v1/webhook-endpoints)."));
        return;
      }
      endpoints.append(h("div", { class: "table-wrap" }, h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Outbound endpoints"),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "URL"), h("th", { scope: "col" }, "State"),
          h("th", { scope: "col" }, "Events"), h("th", { scope: "col" }, "Last success"), h("th", { scope: "col", class: "num" }, "Failures in a row"))),
        h("tbody", null, list.map((ep) => h("tr", null,
          h("td", { class: "wrap mono" }, ep.url, ep.description ? h("div", { class: "small muted" }, ep.description) : null),
          h("td", null, badge(capitalise(words(ep.state)), ep.state === "enabled" ? "ok" : "bad"),
            ep.disabled_reason ? h("div", { class: "small muted" }, ep.disabled_reason) : null),
          h("td", null, (ep.event_types || []).length ? ep.event_types.join(", ") : "all"),
          h("td", null, timeEl(ep.last_success_at)),
          h("td", { class: "num" }, num(ep.consecutive_failures))))))));
    } catch (err) {
      endpoints.lastChild.replaceWith(h("p", { class: "error-text" }, err.message));
    }
  })()]);
}
