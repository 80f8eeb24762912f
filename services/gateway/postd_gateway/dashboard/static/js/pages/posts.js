// Posts, newest first, paged with a cursor.

import { get } from "../api.js";
import { h, clear, when, plural, words, capitalise, busy, notice } from "../dom.js";
import { platformIcon } from "../icons.js";
import { jobBadge } from "../status.js";

const STATUSES = ["", "scheduled", "awaiting_approval", "publishing", "published", "partially_published", "failed", "cancelled", "rejected"];

export async function render(main, ctx) {
  const statusSelect = h("select", { id: "posts-status" },
    STATUSES.map((s) => h("option", { value: s }, s ? capitalise(words(s)) : "All statuses")));
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Posts"), h("p", null, "Everything sent or scheduled, with the status of each account.")),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "posts-status" }, "Status"), statusSelect),
      h("a", { class: "button primary", href: ctx.href("/posts/new"), "data-nav": "" }, "Create post"))));
  const tbody = h("tbody");
  const table = h("div", { class: "card table-wrap" }, h("table", { class: "data" },
    h("caption", { class: "visually-hidden" }, "Posts"),
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Post"), h("th", { scope: "col" }, "Accounts"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "When"))),
    tbody));
  const summary = h("p", { role: "status" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  main.append(table, h("div", { class: "load-more" }, summary, more));
  let cursor = null;
  let shown = 0;

  async function load(reset) {
    if (reset) {
      cursor = null;
      shown = 0;
      clear(tbody);
    }
    summary.textContent = "Loading…";
    try {
      const page = await get("/v1/posts", { limit: 50, cursor, status: statusSelect.value || undefined });
      const rows = page.items.map((p) => {
        const text = (p.content.text || p.content.title || p.content.link || "(media only)").slice(0, 120);
        return h("tr", null,
          h("td", { class: "wrap" }, h("a", { href: ctx.href(`/posts/${encodeURIComponent(p.id)}`), "data-nav": "" }, text)),
          h("td", null, h("span", { class: "row" }, p.jobs.map((j) => platformIcon(j.platform, { small: true, label: `${j.platform}: ${words(j.state)}` })))),
          h("td", null, jobBadge(p.status)),
          h("td", null, when(p.publish_at || p.created_at)));
      });
      tbody.append(...rows);
      shown += rows.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = shown ? `Showing ${plural(shown, "post", "posts")}.` : "No posts yet.";
      if (!reset && rows[0]) rows[0].querySelector("a").focus();
    } catch (err) {
      summary.textContent = "";
      table.after(notice("error", `Posts could not be loaded: ${err.message}`));
    }
  }
  statusSelect.addEventListener("change", () => load(true));
  more.addEventListener("click", () => busy(more, () => load(false)));
  await load(true);
}
