// Small charts over time, drawn as inline SVG. Each chart is redrawn at its box's
// real width (so text stays crisp), names its series in a legend, summarises itself
// for screen readers and offers its numbers as a table.

import { h, s, num } from "./dom.js";

const PAD = { left: 48, right: 14, top: 10, bottom: 26 };

function niceStep(max, ticks) {
  const rough = Math.max(max, 1e-9) / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * magnitude >= rough) return m * magnitude;
  }
  return 10 * magnitude;
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs <= 2 * 86400 * 1000) return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

function seriesTimes(series) {
  const longest = series.reduce((a, b) => ((b.points || []).length > (a.points || []).length ? b : a), series[0] || { points: [] });
  return (longest.points || []).map((p) => new Date(p.time).getTime());
}

function frame(width, height, maxValue, times, format, integer) {
  const plotW = Math.max(width - PAD.left - PAD.right, 10);
  const plotH = Math.max(height - PAD.top - PAD.bottom, 10);
  const step = integer ? Math.max(1, Math.ceil(niceStep(maxValue || 1, 4))) : niceStep(maxValue || 1, 4);
  const top = Math.max(step * Math.ceil((maxValue || 1) / step), step);
  const t0 = times[0] ?? 0;
  const t1 = times[times.length - 1] ?? 1;
  const span = Math.max(t1 - t0, 1);
  const x = (t) => PAD.left + ((t - t0) / span) * plotW;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const grid = s("g", { class: "grid" });
  const labels = s("g", { class: "labels" });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(s("line", { x1: PAD.left, x2: PAD.left + plotW, y1: y(v), y2: y(v) }));
    labels.append(s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const count = Math.min(times.length, Math.max(2, Math.floor(plotW / 90)));
  for (let i = 0; i < count && times.length > 1; i += 1) {
    const t = times[Math.round((i * (times.length - 1)) / (count - 1))];
    const anchor = i === 0 ? "start" : i === count - 1 ? "end" : "middle";
    labels.append(s("text", { x: x(t), y: height - 6, "text-anchor": anchor }, timeLabel(t, span)));
  }
  const axis = s("g", { class: "axis" }, s("line", { x1: PAD.left, x2: PAD.left + plotW, y1: y(0), y2: y(0) }));
  return { x, y, plotW, plotH, grid, labels, axis, span };
}

function summary(title, series, format) {
  const parts = series.map((ser) => {
    const values = (ser.points || []).map((p) => p.value || 0);
    const peak = values.length ? Math.max(...values) : 0;
    const now = ser.current ?? values[values.length - 1] ?? 0;
    return `${ser.name}: now ${format(now)}, peak ${format(peak)}`;
  });
  return `${title}. ${parts.join("; ")}.`;
}

function legend(series) {
  return h("ul", { class: "legend" },
    series.map((ser, i) => h("li", null, h("span", { class: `swatch s${ser.colour ?? i}`, "aria-hidden": "true" }), ser.name)));
}

function dataTable(title, series, format, times) {
  const rows = times.map((t, i) => h("tr", null,
    h("th", { scope: "row" }, new Date(t).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })),
    series.map((ser) => h("td", { class: "num" }, format((ser.points[i] || {}).value || 0)))));
  return h("details", { class: "more" },
    h("summary", null, `${title} as a table`),
    h("div", { class: "table-wrap" },
      h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, title),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "Time"), series.map((ser) => h("th", { scope: "col", class: "num" }, ser.name)))),
        h("tbody", null, rows))));
}

function responsive(box, draw) {
  let width = 0;
  const observer = new ResizeObserver((entries) => {
    const next = Math.round(entries[0].contentRect.width);
    if (next && next !== width) {
      width = next;
      box.replaceChildren(draw(width));
    }
  });
  observer.observe(box);
}

/**
 * A line chart. series: [{name, points: [{time, value}], current?, colour?}].
 * options: title, format (value -> text), height, area (fill under the first line),
 * integer (counts: ticks on whole numbers).
 */
export function lineChart({ title, series, format = (v) => num(v, 1), height = 170, area = false, integer = false }) {
  const times = seriesTimes(series);
  const label = summary(title, series, format);
  const box = h("div", { class: "chart-box" });
  const draw = (width) => {
    if (times.length < 2) return h("p", { class: "empty" }, "No data in this timeframe yet.");
    const max = Math.max(0, ...series.flatMap((ser) => (ser.points || []).map((p) => p.value || 0)));
    const f = frame(width, height, max, times, format, integer);
    const svg = s("svg", { class: "chart", role: "img", "aria-label": label, viewBox: `0 0 ${width} ${height}`, width, height },
      f.grid, f.axis, f.labels);
    series.forEach((ser, i) => {
      const pts = (ser.points || []).map((p) => [f.x(new Date(p.time).getTime()), f.y(p.value || 0)]);
      if (!pts.length) return;
      const d = pts.map(([px, py], j) => `${j ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      const cls = `s${ser.colour ?? i}`;
      if (area && i === 0) {
        svg.append(s("path", { class: `area ${cls}`, d: `${d}L${pts[pts.length - 1][0].toFixed(1)},${f.y(0)}L${pts[0][0].toFixed(1)},${f.y(0)}Z` }));
      }
      svg.append(s("path", { class: `line ${cls}`, d }));
      const [lx, ly] = pts[pts.length - 1];
      svg.append(s("circle", { class: `dot ${cls}`, cx: lx, cy: ly, r: 3 }));
    });
    return svg;
  };
  responsive(box, draw);
  return h("figure", { class: "chart-figure" },
    box, series.length > 1 ? legend(series) : null, dataTable(title, series, format, times));
}

/** A stacked bar chart over time, same series shape as lineChart. */
export function stackedBars({ title, series, format = (v) => num(v), height = 170 }) {
  const times = seriesTimes(series);
  const label = summary(title, series, format);
  const box = h("div", { class: "chart-box" });
  const draw = (width) => {
    if (times.length < 2) return h("p", { class: "empty" }, "No data in this timeframe yet.");
    const totals = times.map((_, i) => series.reduce((sum, ser) => sum + ((ser.points[i] || {}).value || 0), 0));
    const f = frame(width, height, Math.max(0, ...totals), times, format, true);
    const svg = s("svg", { class: "chart", role: "img", "aria-label": label, viewBox: `0 0 ${width} ${height}`, width, height },
      f.grid, f.axis, f.labels);
    const slot = f.plotW / times.length;
    const barW = Math.max(1, slot * 0.7);
    times.forEach((t, i) => {
      let base = 0;
      series.forEach((ser, k) => {
        const v = (ser.points[i] || {}).value || 0;
        if (!v) return;
        const yTop = f.y(base + v);
        svg.append(s("rect", { class: `bar s${ser.colour ?? k}`, x: (PAD.left + i * slot + (slot - barW) / 2).toFixed(1), y: yTop.toFixed(1), width: barW.toFixed(1), height: Math.max(f.y(base) - yTop, 0.5).toFixed(1) }));
        base += v;
      });
    });
    return svg;
  };
  responsive(box, draw);
  return h("figure", { class: "chart-figure" }, box, legend(series), dataTable(title, series, format, times));
}

/** A tiny line without axes, beside a number that says the same (hidden from readers). */
export function sparkline(points, colour = 0) {
  const values = (points || []).map((p) => p.value || 0);
  const width = 112;
  const height = 28;
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true", focusable: "false" });
  if (values.length < 2) return svg;
  const max = Math.max(...values, 1e-9);
  const d = values.map((v, i) => `${i ? "L" : "M"}${((i / (values.length - 1)) * (width - 4) + 2).toFixed(1)},${(height - 3 - (v / max) * (height - 6)).toFixed(1)}`).join("");
  svg.append(s("g", { class: `chart s${colour}` }, s("path", { class: `line s${colour}`, d })));
  return svg;
}
