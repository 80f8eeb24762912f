// The dead-letter queue: jobs that could not be published, with their reasons, and
// replay (selected, or everything matching the filters) with progress.

import { get, post, capabilities, allPages } from "../api.js";
import { h, clear, timeEl, words, capitalise, plural, num, busy, notice, confirmDialog, announce } from "../dom.js";
import { platformIcon, platformName } from "../icons.js";
import { progressBox, inBatches } from "../bulk.js";
import { can } from "../status.js";

const CATEGORIES = ["auth_revoked", "auth_expired", "permission_missing", "rate_limited", "content_rejected", "transient",
  "platform_outage", "invalid_request", "quota_exceeded", "not_found", "unknown"];
const BATCH = 100;

export async function render(main, ctx) {
  const caps = await capabilities().catch(() => []);
  // Account names for the rows (the first 500 connections; others show the platform).
  const names = new Map();
  const namesLoaded = get("/v1/connections", { limit: 500 }).then((page) => {
    for (const c of page.items) names.set(c.id, c.account_name);
  }).catch(() => {});

  const platform = h("select", { id: "dlq-platform" }, h("option", { value: "" }, "All platforms"),
    caps.map((p) => h("option", { value: p.platform }, p.display_name)));
  const category = h("select", { id: "dlq-category" }, h("option", { value: "" }, "All reasons"),
    CATEGORIES.map((c) => h("option", { value: c }, capitalise(words(c)))));
  const replaySelected = h("button", { type: "button", class: "primary", disabled: true }, "Replay selected");
  const replayAll = h("button", { type: "button" }, "Replay all matching");
  const progress = progressBox("Replay progress");
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Dead letters"),
      h("p", null, "Posts that could not go out, and why. A replay keeps each job's idempotency key, so nothing is posted twice.")),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "dlq-platform" }, "Platform"), platform),
      h("div", { class: "field" }, h("label", { for: "dlq-category" }, "Reason"), category))));
  const selectAll = h("input", { type: "checkbox", id: "dlq-all", "aria-label": "Select every dead letter shown" });
  const tbody = h("tbody");
  const messages = h("div");
  const mayReplay = can(ctx.me, "editor");
  main.append(messages,
    mayReplay ? h("div", { class: "row" }, replaySelected, replayAll) : null,
    progress.el,
    h("div", { class: "card table-wrap" }, h("table", { class: "data", id: "dlq-table" },
      h("caption", { class: "visually-hidden" }, "Dead letters"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, selectAll),
        h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Why it failed"),
        h("th", { scope: "col" }, "Reason"), h("th", { scope: "col" }, "Failed"), h("th", { scope: "col", class: "num" }, "Replays"))),
      tbody)));
  const summary = h("p", { role: "status" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  main.append(h("div", { class: "load-more" }, summary, more));

  const chosen = new Set();
  let cursor = null;
  let shown = 0;

  function filter() {
    return { platform: platform.value || undefined, category: category.value ? [category.value] : undefined };
  }

  function syncButtons() {
    replaySelected.disabled = chosen.size === 0;
    replayAll.disabled = shown === 0;
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
      const [page] = await Promise.all([get("/v1/dlq", { ...filter(), limit: 50, cursor }), namesLoaded]);
      const rows = page.items.map((d) => {
        const job = d.job;
        const box = h("input", { type: "checkbox", value: job.id, "aria-label": `Select the ${platformName(job.platform, caps)} job of ${timeEl(d.dead_lettered_at).textContent}` });
        box.addEventListener("change", () => {
          if (box.checked) chosen.add(job.id);
          else chosen.delete(job.id);
          syncButtons();
        });
        const error = job.last_error;
        return h("tr", { "data-job-id": job.id },
          h("td", null, box),
          h("td", null, h("span", { class: "row" }, platformIcon(job.platform, { small: true }),
            names.get(job.connection_id) || platformName(job.platform, caps)),
          h("div", { class: "small" }, h("a", { href: ctx.href(`/posts/${encodeURIComponent(job.post_id)}`), "data-nav": "" }, "Open the post"))),
          h("td", { class: "wrap" }, (error && error.message) || d.reason, error && error.action_message ? h("div", { class: "small muted" }, error.action_message) : null),
          h("td", null, capitalise(words((error && error.category) || "unknown"))),
          h("td", null, timeEl(d.dead_lettered_at)),
          h("td", { class: "num" }, num(d.replay_count)));
      });
      tbody.append(...rows);
      shown += rows.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = shown ? `Showing ${plural(shown, "dead letter", "dead letters")}${cursor ? "; more are available" : ""}.` : "The dead-letter queue is empty.";
      if (!reset && rows[0]) rows[0].querySelector("input").focus();
      syncButtons();
    } catch (err) {
      summary.textContent = "";
      messages.append(notice("error", `The dead letters could not be loaded: ${err.message}`));
    }
  }

  async function replay(ids) {
    let replayed = 0;
    progress.set(0, ids.length, `Replaying ${plural(ids.length, "job", "jobs")}…`);
    await inBatches(ids, BATCH, async (batch) => {
      const out = await post("/v1/dlq/replay", { job_ids: batch });
      replayed += out.replayed_count || 0;
    }, (done, total) => progress.set(done, total, `${num(done)} of ${num(total)} sent back to the queue.`));
    const text = `${plural(replayed, "job", "jobs")} put back on schedule.`;
    progress.finish(text);
    announce(text);
    await load(true);
  }

  replaySelected.addEventListener("click", () => busy(replaySelected, async () => {
    try {
      await replay([...chosen]);
    } catch (err) {
      progress.finish(`Replay stopped: ${err.message}`);
    }
  }, syncButtons));
  replayAll.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: "Replay every matching dead letter?",
      body: "Every job that matches the filters goes back on the queue, in batches. You can follow the progress here.",
      confirm: "Replay all",
    });
    if (!ok) return;
    await busy(replayAll, async () => {
      try {
        progress.start("Collecting the matching jobs…");
        const ids = [];
        for await (const items of allPages("/v1/dlq", filter())) {
          ids.push(...items.map((d) => d.job.id));
          progress.start(`Collecting the matching jobs… ${num(ids.length)} so far.`);
        }
        if (!ids.length) {
          progress.finish("Nothing matches; nothing to replay.");
          return;
        }
        await replay(ids);
      } catch (err) {
        progress.finish(`Replay stopped: ${err.message}`);
      }
    }, syncButtons);
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
  category.addEventListener("change", () => load(true));
  more.addEventListener("click", () => busy(more, () => load(false)));
  await load(true);
}
