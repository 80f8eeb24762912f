// One post: each target's status, followed live by polling until every job is done.

import { get, post, capabilities } from "../api.js";
import { h, add, clear, announce, when, timeEl, words, capitalise, busy, confirmDialog } from "../dom.js";
import { platformIcon, platformName } from "../icons.js";
import { jobBadge, can, TERMINAL_JOB_STATES, TERMINAL_POST_STATES } from "../status.js";

export async function render(main, ctx) {
  const id = ctx.params.id;
  const caps = await capabilities().catch(() => []);
  const names = new Map(); // connection id -> account name
  const heading = h("h1", null, "Post");
  const status = h("p", { class: "muted", id: "post-status" });
  const list = h("ul", { class: "targets-status", id: "post-targets", "aria-label": "Targets" });
  const live = h("p", { class: "visually-hidden", "aria-live": "polite", id: "post-live" });
  const actions = h("div", { class: "row" });
  const textBox = h("div", { class: "preview" });
  main.append(
    h("div", { class: "page-head" }, h("div", null, heading, status), actions),
    h("section", { class: "card", "aria-labelledby": "targets-h" }, h("h2", { id: "targets-h" }, "Where it goes"), list, live),
    h("section", { class: "card", "aria-labelledby": "content-h" }, h("h2", { id: "content-h" }, "Content"), textBox),
    h("p", null, h("a", { href: ctx.href("/posts"), "data-nav": "" }, "All posts"), " · ",
      h("a", { href: ctx.href("/posts/new"), "data-nav": "" }, "Create another post")));

  const seen = new Map(); // job id -> state, to announce changes
  let timer = 0;
  let delay = 1000;
  let stopped = false;

  async function names_(jobs) {
    const missing = [...new Set(jobs.map((j) => j.connection_id))].filter((c) => !names.has(c));
    await Promise.all(missing.map(async (c) => {
      try {
        names.set(c, (await get(`/v1/connections/${encodeURIComponent(c)}`)).account_name);
      } catch {
        names.set(c, c);
      }
    }));
  }

  function paint(p) {
    ctx.setTitle(`Post · ${capitalise(words(p.status))}`);
    status.textContent = `${capitalise(words(p.status))} · created ${when(p.created_at)}` +
      (p.publish_at ? ` · publishes ${when(p.publish_at)}` : "");
    clear(list);
    for (const job of p.jobs) {
      const account = names.get(job.connection_id) || job.connection_id;
      const detail = [];
      if (job.state === "published" && job.url) detail.push(h("a", { href: job.url, rel: "noopener noreferrer", target: "_blank" }, "View on the platform"));
      if (job.state_reason && job.state !== "published") detail.push(h("span", null, job.state_reason));
      if (job.last_error && job.state !== "published") detail.push(h("span", { class: "error-text" }, ` ${job.last_error.message}`));
      if (job.next_attempt_at && job.state === "retrying") detail.push(h("span", null, " Next attempt ", timeEl(job.next_attempt_at), "."));
      list.append(h("li", { "data-job-id": job.id, "data-platform": job.platform, "data-state": job.state },
        platformIcon(job.platform),
        h("div", null,
          h("strong", null, account), h("span", { class: "muted" }, ` · ${platformName(job.platform, caps)}`),
          h("div", { class: "small" }, detail)),
        jobBadge(job.state)));
      const before = seen.get(job.id);
      if (before && before !== job.state) {
        live.textContent = `${account} on ${platformName(job.platform, caps)}: ${words(job.state)}.`;
      }
      seen.set(job.id, job.state);
    }
    add(clear(textBox), h("div", { class: "body" }, p.content.text || "(no text)"),
      p.content.link ? h("p", { class: "link" }, p.content.link) : null);
    clear(actions);
    if ((p.status === "scheduled" || p.status === "awaiting_approval") && can(ctx.me, "editor")) {
      const cancel = h("button", { type: "button" }, "Cancel post");
      cancel.addEventListener("click", async () => {
        if (!(await confirmDialog({ title: "Cancel this post?", body: "Jobs that have not gone out yet are cancelled.", confirm: "Cancel post", danger: true }))) return;
        await busy(cancel, async () => {
          try {
            await post(`/v1/posts/${encodeURIComponent(p.id)}/cancel`, {});
            announce("Post cancelled.");
            await tick();
          } catch (err) {
            announce(err.message, { assertive: true });
          }
        });
      });
      actions.append(cancel);
    }
  }

  async function tick() {
    clearTimeout(timer);
    try {
      const p = await get(`/v1/posts/${encodeURIComponent(id)}`);
      await names_(p.jobs);
      if (stopped) return;
      paint(p);
      const done = TERMINAL_POST_STATES.has(p.status) && p.jobs.every((j) => TERMINAL_JOB_STATES.has(j.state) || j.state === "paused");
      if (done) {
        live.textContent = `Finished: ${words(p.status)}.`;
        return;
      }
      // Quick while the post is going out, calmer once it only waits for its time.
      delay = p.status === "scheduled" && p.publish_at && new Date(p.publish_at) > Date.now() + 60000 ? 15000 : Math.min(delay * 1.3, 5000);
    } catch (err) {
      if (stopped) return;
      status.textContent = `Could not load the post: ${err.message}`;
      if (err.status === 404) return;
      delay = 10000;
    }
    timer = setTimeout(tick, delay);
  }
  await tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
