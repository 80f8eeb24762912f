// Analytics: what the platforms counted for your posts, over time, by platform and by
// content type (GET /v1/analytics), and what your own history says, in plain words
// with its sample sizes and confidence (GET /v1/analytics/insights). Days are the
// person's own (their browser's time zone).

import { get, capabilities } from "../api.js";
import { h, clear, num, notice } from "../dom.js";
import { lineChart, stackedBars } from "../chart.js";
import { platformIcon, platformName } from "../icons.js";
import { badge } from "../status.js";

const TIMEFRAMES = [[7, "Last 7 days"], [30, "Last 30 days"], [90, "Last 90 days"], [365, "Last 12 months"]];
const TYPES = { text: "Text", image: "Images", video: "Videos", carousel: "Carousels" };
const VERDICT = {
  finding: ["Finding", "ok"],
  no_clear_difference: ["No clear difference", "neutral"],
  not_enough_data: ["Not enough data yet", "warn"],
};
const KIND = {
  content_type: "Content types",
  best_hours: "Best time to post",
  week_over_week: "Week over week",
  standout_post: "Standout post",
};

function zone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

function isoDate(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

/** Every bucket's first day from `from` to `to` (local dates), so gaps show as zero. */
function periods(from, to, granularity) {
  const out = [];
  const day = new Date(`${from}T12:00:00`);
  const end = new Date(`${to}T12:00:00`);
  if (granularity === "week") day.setDate(day.getDate() - ((day.getDay() + 6) % 7));
  if (granularity === "month") day.setDate(1);
  while (day <= end) {
    out.push(isoDate(day));
    if (granularity === "week") day.setDate(day.getDate() + 7);
    else if (granularity === "month") day.setMonth(day.getMonth() + 1);
    else day.setDate(day.getDate() + 1);
  }
  return out;
}

/** Chart series, one per group, from rows {period, <key>, metrics}. */
function seriesBy(rows, key, metric, buckets, name) {
  const groups = [...new Set(rows.map((r) => r[key]))].sort();
  return groups.map((g, i) => {
    const values = new Map(rows.filter((r) => r[key] === g).map((r) => [r.period, r.metrics[metric] || 0]));
    return {
      name: name(g),
      colour: i % 8,
      points: buckets.map((p) => ({ time: `${p}T12:00:00`, value: values.get(p) || 0 })),
    };
  });
}

function totalsBy(rows, key) {
  const out = new Map();
  for (const r of rows) {
    const t = out.get(r[key]) || { posts: 0, impressions: 0, reach: 0, engagements: 0, video_views: 0 };
    for (const k of Object.keys(t)) t[k] += r.metrics[k] || 0;
    out.set(r[key], t);
  }
  return [...out.entries()].sort((a, b) => b[1].impressions - a[1].impressions);
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

function rate(t) {
  const base = t.impressions || t.reach || t.video_views;
  return base ? `${num((100 * t.engagements) / base, 1)} %` : "–";
}

function breakdownTable(caption, first, entries, label) {
  // A region a keyboard can reach, for when a narrow window makes it scroll sideways.
  return h("div", { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" }, h("table", { class: "data" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, first),
      h("th", { scope: "col", class: "num" }, "Posts"),
      h("th", { scope: "col", class: "num" }, "Impressions"),
      h("th", { scope: "col", class: "num" }, "Reach"),
      h("th", { scope: "col", class: "num" }, "Engagements"),
      h("th", { scope: "col", class: "num" }, "Engagement rate"))),
    h("tbody", null, entries.map(([key, t]) => h("tr", null,
      h("th", { scope: "row" }, label(key)),
      h("td", { class: "num" }, num(t.posts)),
      h("td", { class: "num" }, num(t.impressions)),
      h("td", { class: "num" }, num(t.reach)),
      h("td", { class: "num" }, num(t.engagements)),
      h("td", { class: "num" }, rate(t)))))));
}

function insightItem(i, caps) {
  const [verdict, tone] = VERDICT[i.verdict] || ["", "neutral"];
  // The sentence carries n, the interval and p; below it, how it was worked out.
  return h("li", { class: ["insight", i.verdict] },
    h("div", { class: "row" },
      i.platform ? platformIcon(i.platform, { small: true }) : null,
      h("strong", null, KIND[i.kind] || i.kind),
      i.platform ? h("span", { class: "muted small" }, platformName(i.platform, caps)) : null,
      badge(i.confidence && i.verdict === "finding" ? `${verdict} · ${i.confidence} confidence` : verdict, tone)),
    h("p", null, i.summary),
    i.method ? h("p", { class: "small muted" }, `${i.method}.`) : null);
}

export async function render(main) {
  const caps = await capabilities().catch(() => []);
  const tz = zone();
  const frame = h("select", { id: "analytics-timeframe" }, TIMEFRAMES.map(([v, t]) => h("option", { value: v, selected: v === 30 }, t)));
  const status = h("p", { class: "muted small", role: "status" });
  const body = h("div", { id: "analytics-body" });
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Analytics"),
      h("p", null, `What the platforms counted for your posts, and what your own history says. Days in ${tz}.`)),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "analytics-timeframe" }, "Timeframe"), frame), status)),
  body);
  let stopped = false;

  async function load() {
    status.textContent = "Loading…";
    const days = Number(frame.value);
    const to = isoDate(new Date());
    const start = new Date();
    start.setDate(start.getDate() - (days - 1));
    const from = isoDate(start);
    const granularity = days > 120 ? "month" : days > 31 ? "week" : "day";
    const range = { time_zone: tz, from, to, granularity };
    const [byPlatform, byType, insights] = await Promise.allSettled([
      get("/v1/analytics", { ...range, group_by: "platform" }),
      get("/v1/analytics", { ...range, group_by: "content_type" }),
      get("/v1/analytics/insights", { time_zone: tz }),
    ]);
    if (stopped) return;
    if (byPlatform.status !== "fulfilled") {
      status.textContent = "";
      clear(body).append(notice("error", `The analytics could not be loaded: ${byPlatform.reason.message}`));
      return;
    }
    paint(byPlatform.value, byType.status === "fulfilled" ? byType.value : null,
      insights.status === "fulfilled" ? insights.value : null, granularity);
    const posts = byPlatform.value.totals.posts;
    status.textContent = `Showing ${num(posts)} ${posts === 1 ? "post" : "posts"} from ${from} to ${to}.`;
  }

  function paint(platforms, types, insights, granularity) {
    const totals = platforms.totals;
    const buckets = periods(platforms.from_date, platforms.to_date, granularity);
    const name = (p) => platformName(p, caps);
    const typeName = (t) => TYPES[t] || t;
    const overview = h("section", { class: "card", "aria-labelledby": "overview-h" },
      h("h2", { id: "overview-h" }, "Overview"),
      h("div", { class: "stats" },
        stat("Posts published", num(totals.posts)),
        stat("Impressions", num(totals.impressions)),
        stat("Reach", num(totals.reach)),
        stat("Engagements", num(totals.engagements)),
        stat("Engagement rate", rate({ impressions: totals.impressions || 0, reach: totals.reach || 0, video_views: totals.video_views || 0, engagements: totals.engagements || 0 })),
        stat("Link clicks", num(totals.clicks))),
      h("h3", null, "Impressions over time, by platform"),
      lineChart({
        title: "Impressions per " + granularity + " by platform",
        format: (v) => num(v),
        integer: true,
        series: seriesBy(platforms.rows, "platform", "impressions", buckets, name),
      }));

    const byPlatform = h("section", { class: "card", "aria-labelledby": "platforms-h" },
      h("h2", { id: "platforms-h" }, "By platform"),
      platforms.rows.length
        ? breakdownTable("Figures by platform", "Platform", totalsBy(platforms.rows, "platform"),
          (p) => h("span", { class: "row" }, platformIcon(p, { small: true }), name(p)))
        : h("p", { class: "empty" }, "No figures in this timeframe yet."));

    const typeRows = types ? types.rows : [];
    const byType = h("section", { class: "card", "aria-labelledby": "types-h" },
      h("h2", { id: "types-h" }, "By content type"),
      typeRows.length ? [
        h("h3", null, "Engagements over time, by content type"),
        stackedBars({
          title: "Engagements per " + granularity + " by content type",
          series: seriesBy(typeRows, "content_type", "engagements", buckets, typeName),
        }),
        breakdownTable("Figures by content type", "Content type", totalsBy(typeRows, "content_type"), typeName),
      ] : h("p", { class: "empty" }, "No figures in this timeframe yet."));

    const list = insights ? insights.insights : [];
    const findings = list.filter((i) => i.verdict === "finding").length;
    const insightBox = h("section", { class: "card", "aria-labelledby": "insights-h" },
      h("h2", { id: "insights-h" }, "Insights"),
      insights ? h("p", { class: "small muted" },
        `${findings ? `${num(findings)} ${findings === 1 ? "finding" : "findings"}` : "No findings yet"} from ${num(insights.posts_considered)} posts of the last 90 days. ${insights.rules}`) : null,
      list.length ? h("ul", { class: "stack insights", "aria-label": "Insights" }, list.map((i) => insightItem(i, caps)))
        : h("p", { class: "muted" }, insights ? "Nothing to say yet." : "The insights could not be loaded."));

    clear(body).append(overview, insightBox, byPlatform, byType);
  }

  frame.addEventListener("change", load);
  await load();
  return () => {
    stopped = true;
  };
}
