// Health: token expiries, API performance per platform, error distribution and
// queue health, now and over time (GET /v1/health/dashboard), refreshed every minute.

import { get, capabilities, apiUrl } from "../api.js";
import { h, clear, num, when, timeEl, notice } from "../dom.js";
import { lineChart, stackedBars, sparkline } from "../chart.js";
import { platformIcon, platformName } from "../icons.js";
import { connectionBadge } from "../status.js";

const TIMEFRAMES = [[24, "Last 24 hours"], [168, "Last 7 days"], [720, "Last 30 days"]];
const REFRESH_MS = 60000;

function stat(label, value, { tone = "", hint = "" } = {}) {
  return h("div", { class: ["stat", tone] },
    h("div", { class: "value" }, value),
    h("div", { class: "label" }, label),
    hint ? h("div", { class: "label" }, hint) : null);
}

/** A gauge's series ending at "now" with its current value (the last bucket may be older). */
function untilNow(series, generatedAt) {
  const points = [...(series.points || [])];
  const last = points[points.length - 1];
  if (series.current !== undefined && (!last || new Date(last.time) < new Date(generatedAt))) {
    points.push({ time: generatedAt, value: series.current });
  }
  return { ...series, points };
}

const ms = (v) => (v >= 10000 ? `${num(v / 1000, 1)} s` : `${num(v)} ms`);
const pct = (v) => `${num(v, 1)} %`;

export async function render(main, ctx) {
  const caps = await capabilities().catch(() => []);
  const frame = h("select", { id: "timeframe" }, TIMEFRAMES.map(([v, t]) => h("option", { value: v }, t)));
  const updated = h("p", { class: "muted small", role: "status" });
  const body = h("div", { id: "health-body" });
  main.append(h("div", { class: "page-head" },
    h("div", null, h("h1", null, "Health"), h("p", null, "Whether every account keeps working, how the platforms answer, and how the queue is doing.")),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "timeframe" }, "Timeframe"), frame), updated)),
  body);

  let timer = 0;
  let stopped = false;

  async function load() {
    clearTimeout(timer);
    updated.textContent = "Updating…";
    const hours = Number(frame.value);
    const [dash, people, alerts] = await Promise.allSettled([
      get("/v1/health/dashboard", { timeframe_hours: hours }),
      get("/v1/connections", { status: ["expiring_soon", "attention", "revoked"], limit: 8 }),
      get("/v1/alerts", { state: ["firing"], limit: 10 }),
    ]);
    if (stopped) return;
    if (dash.status !== "fulfilled") {
      updated.textContent = "";
      clear(body).append(notice("error", `The health figures could not be loaded: ${dash.reason.message}`));
    } else {
      paint(dash.value, people, alerts);
      updated.textContent = `Updated ${when(dash.value.generated_at, { timeStyle: "short" })}`;
    }
    timer = setTimeout(load, REFRESH_MS);
  }

  function paint(d, people, alerts) {
    const t = Object.fromEntries(Object.entries(d.token_health).map(([k, v]) => [k, untilNow(v, d.generated_at)]));
    const q = Object.fromEntries(Object.entries(d.queue_health).map(([k, v]) => [k, untilNow(v, d.generated_at)]));
    const tokens = h("section", { class: "card", "aria-labelledby": "tokens-h" },
      h("h2", { id: "tokens-h" }, "Tokens and connections"),
      h("div", { class: "stats" },
        stat("Connections", num(t.total.current)),
        stat("Healthy", num(t.healthy.current)),
        stat("Expire within 7 days", num(t.expiring_within_7d.current), { tone: t.expiring_within_7d.current ? "warn" : "" }),
        stat("Expire within 24 hours", num(t.expiring_within_24h.current), { tone: t.expiring_within_24h.current ? "bad" : "" }),
        stat("Require action", num(t.attention.current), { tone: t.attention.current ? "bad" : "" }),
        stat("Revoked", num(t.revoked.current), { tone: t.revoked.current ? "bad" : "" }),
        stat("Failed refreshes, 24\u00a0h", num(t.failed_refreshes_24h.current), { tone: t.failed_refreshes_24h.current ? "warn" : "" })),
      h("div", { class: "grid-2" },
        h("div", null, h("h3", null, "Over time"), lineChart({
          title: "Connections by status",
          format: (v) => num(v),
          integer: true,
          series: [
            { name: "Healthy", colour: 3, ...t.healthy },
            { name: "Expire within 7 days", colour: 2, ...t.expiring_within_7d },
            { name: "Require action", colour: 6, ...t.attention },
            { name: "Revoked", colour: 1, ...t.revoked },
          ],
        })),
        h("div", null, h("h3", null, "Needs a person"), needsPerson(people))));

    const perf = d.api_performance || [];
    const performance = h("section", { class: "card", "aria-labelledby": "perf-h" },
      h("h2", { id: "perf-h" }, "API performance per platform"),
      perf.length ? [
        h("div", { class: "table-wrap" }, h("table", { class: "data" },
          h("caption", { class: "visually-hidden" }, "API performance per platform"),
          h("thead", null, h("tr", null,
            h("th", { scope: "col" }, "Platform"), h("th", { scope: "col", class: "num" }, "Requests"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Requests trend")),
            h("th", { scope: "col", class: "num" }, "Success rate"), h("th", { scope: "col", class: "num" }, "Median latency"),
            h("th", { scope: "col", class: "num" }, "95th percentile"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Latency trend")))),
          h("tbody", null, perf.map((p, i) => h("tr", null,
            h("th", { scope: "row" }, h("span", { class: "row" }, platformIcon(p.platform, { small: true }), platformName(p.platform, caps))),
            h("td", { class: "num" }, num(p.request_count.current)),
            h("td", null, sparkline(p.request_count.points, i % 8)),
            h("td", { class: "num" }, pct(p.success_rate_percent.current)),
            h("td", { class: "num" }, ms(p.p50_latency_ms.current)),
            h("td", { class: "num" }, ms(p.p95_latency_ms.current)),
            h("td", null, sparkline(p.p95_latency_ms.points, i % 8))))))),
        h("h3", null, "95th percentile latency over time"),
        lineChart({
          title: "95th percentile latency per platform",
          format: ms,
          series: perf.map((p, i) => ({ name: platformName(p.platform, caps), colour: i % 8, ...p.p95_latency_ms })),
        }),
      ] : h("p", { class: "empty" }, "No platform calls in this timeframe yet."));

    const dist = d.error_distribution || [];
    const total = dist.find((x) => !x.platform) || dist[0];
    const kinds = [["unauthorized", "Unauthorised"], ["rate_limited", "Rate limited"], ["server_errors", "Server errors"], ["timeouts", "Timeouts"], ["other_client_errors", "Other client errors"]];
    const perPlatform = dist.filter((x) => x.platform);
    // Kinds down the side and platforms across: a few columns, however many kinds.
    const errors = h("section", { class: "card", "aria-labelledby": "errors-h" },
      h("h2", { id: "errors-h" }, "Error distribution"),
      h("div", { class: "grid-2" },
        h("div", null, total ? stackedBars({
          title: "Errors over time by kind",
          series: kinds.map(([key, name], i) => ({ name, colour: [1, 2, 6, 4, 5][i], ...total[key] })),
        }) : h("p", { class: "empty" }, "No errors recorded.")),
        h("div", { class: "table-wrap" }, h("table", { class: "data" },
          h("caption", { class: "visually-hidden" }, "Errors per platform in the timeframe"),
          h("thead", null, h("tr", null, h("th", { scope: "col" }, "Kind"),
            total ? h("th", { scope: "col", class: "num" }, "All platforms") : null,
            perPlatform.map((x) => h("th", { scope: "col", class: "num" }, platformName(x.platform, caps))))),
          h("tbody", null, kinds.map(([key, name]) => h("tr", null,
            h("th", { scope: "row" }, name),
            total ? h("td", { class: "num" }, num(total[key].current)) : null,
            perPlatform.map((x) => h("td", { class: "num" }, num(x[key].current))))))))));

    const queue = h("section", { class: "card", "aria-labelledby": "queue-h" },
      h("h2", { id: "queue-h" }, "Queue health"),
      h("div", { class: "stats" },
        stat("Waiting", num(q.pending.current)),
        stat("Published, 24\u00a0h", num(q.published_24h.current)),
        stat("Failed, 24\u00a0h", num(q.failed_24h.current), { tone: q.failed_24h.current ? "bad" : "" }),
        h("a", { class: ["stat", q.dlq_size.current ? "bad" : ""], href: ctx.href("/dlq"), "data-nav": "" },
          h("div", { class: "value" }, num(q.dlq_size.current)), h("div", { class: "label" }, "Dead letters")),
        stat("Dispatch lag, p99", ms(q.dispatch_lag_p99_ms.current))),
      h("h3", null, "Over time"),
      lineChart({
        title: "Queue over time",
        format: (v) => num(v),
        integer: true,
        series: [
          { name: "Waiting", colour: 0, ...q.pending },
          { name: "Dead letters", colour: 1, ...q.dlq_size },
        ],
      }));

    const firing = alerts.status === "fulfilled" ? alerts.value.items : [];
    const alertBox = h("section", { class: "card", "aria-labelledby": "alerts-h" },
      h("h2", { id: "alerts-h" }, "Open alerts"),
      firing.length ? h("ul", { class: "stack" }, firing.map((a) => h("li", null,
        h("strong", null, a.title), " ", h("span", { class: "muted small" }, "since ", timeEl(a.started_at)),
        h("p", { class: "small" }, a.message)))) : h("p", { class: "muted" }, "No open alerts."));

    clear(body).append(tokens, performance, errors, queue, alertBox);
  }

  function needsPerson(result) {
    if (result.status !== "fulfilled") return h("p", { class: "error-text" }, result.reason.message);
    const items = result.value.items;
    if (!items.length) return h("p", { class: "muted" }, "Every account works on its own. Nothing needs you.");
    return h("ul", { class: "stack", "aria-label": "Accounts that need a person" }, items.map((c) => h("li", null,
      h("span", { class: "row" }, platformIcon(c.platform, { small: true }), h("strong", null, c.account_name), connectionBadge(c)),
      h("p", { class: "small muted" }, c.status_reason || ""),
      h("a", { class: "button small", href: apiUrl(`/v1/connect/${encodeURIComponent(c.platform)}`, { reconnect: c.id, capability: c.capabilities, return_to: ctx.href("/health") }).toString() }, `Reconnect ${c.account_name}`))));
  }

  frame.addEventListener("change", load);
  await load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
