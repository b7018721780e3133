// Alerts and SLOs (/alerts): the alerts firing, pending or resolved in the last day, each with the
// example traces that broke its objective, and every SLO with its error budget left and burn rates.

import { formatTime } from "./model.js";
import { clear, getJSON, h, link, svg } from "./util.js";

const pct = (v) => `${(v * 100).toFixed(2)}%`;

export async function renderAlerts(root) {
  const [alerts, slos] = await Promise.all([getJSON("/api/v1/alerts"), getJSON("/api/v1/slos")]);
  const when = (s) => formatTime(BigInt(Math.round(s * 1e3)) * 1000000n);
  clear(root).append(
    h("h1", {}, "Alerts"),
    alerts.alerts.length
      ? h("table", { class: "stats", id: "alerts-table" },
        h("thead", {}, h("tr", {}, ["State", "Alert", "What", "Since", "Example traces"].map((t) => h("th", {}, t)))),
        h("tbody", {}, alerts.alerts.map((a) => h("tr", { class: `alert-${a.state}`, dataset: { name: a.name, state: a.state } },
          h("td", {}, h("span", { class: `alert-state ${a.state}` }, a.state)),
          h("td", {}, a.name),
          h("td", {}, a.summary),
          h("td", {}, a.state === "resolved" && a.resolvedAt ? `resolved ${when(a.resolvedAt)}` : when(a.since)),
          h("td", {}, a.examples.map((t, i) => [i ? " · " : "", link(`/trace/${t}`, h("span", { class: "mono" }, t.slice(0, 12)))]))))))
      : h("p", { class: "muted", id: "alerts-none" }, "No alert fired in the last day."),
    h("h2", {}, "SLOs"),
    slos.slos.length
      ? h("table", { class: "stats", id: "slo-table" },
        h("thead", {}, h("tr", {}, ["SLO", "Service", "Objective", "Now", "Error budget left", "Burn rate (long / short)", "Burn rate over time", "Examples"].map((t) => h("th", {}, t)))),
        h("tbody", {}, slos.slos.map((s) => h("tr", { dataset: { name: s.name } },
          h("td", {}, s.name),
          h("td", {}, link(`/monitor?service=${encodeURIComponent(s.service)}`, s.service), s.operation ? ` ${s.operation}` : ""),
          h("td", {}, `${s.objective}% ${s.sli}${s.sli === "latency" ? ` ≤ ${s.effectiveThresholdMs ?? s.threshold_ms} ms` : ""} over ${s.window}`),
          h("td", { class: "num" }, s.sliValue === null ? "no spans" : pct(s.sliValue)),
          h("td", {}, budget(s.errorBudgetRemaining)),
          h("td", {}, s.burnRates.map((b) => h("div", { class: b.long > b.threshold && b.short > b.threshold ? "errors" : "" },
            `${b.severity}: ${b.long.toFixed(1)}x / ${b.short.toFixed(1)}x (alerts past ${b.threshold}x)`))),
          h("td", {}, burnChart(s)),
          h("td", {}, s.examples.map((t, i) => [i ? " · " : "", link(`/trace/${t}`, h("span", { class: "mono" }, t.slice(0, 12)))]))))))
      : h("p", { class: "muted" }, "No SLOs: add [[slos]] to clew.toml, or PUT /api/v1/slos."));
}

/** The error budget left as a bar: full is untouched, empty or below is spent. */
function budget(left) {
  const shown = Math.max(0, Math.min(1, left));
  return h("span", { class: "budget", title: pct(left) },
    h("span", { class: `budget-bar${left <= 0 ? " spent" : ""}`, style: { width: `${Math.round(shown * 100)}px` } }),
    ` ${pct(left)}`);
}

/** The burn rate per step (the API's burnHistory) as a line, with the lowest alert threshold dashed:
 * above it, the budget goes faster than an alert allows. */
function burnChart(slo) {
  const width = 160;
  const height = 36;
  const points = slo.burnHistory || [];
  const threshold = Math.min(...slo.burnRates.map((b) => b.threshold), Infinity);
  const most = Math.max(...points.map((p) => p.burnRate), Number.isFinite(threshold) ? threshold * 1.2 : 1, 1e-9);
  const step = points.length > 1 ? width / (points.length - 1) : 0;
  const y = (v) => (height - 2 - (v / most) * (height - 4)).toFixed(1);
  const line = points.map((p, i) => `${(i * step).toFixed(1)},${y(p.burnRate)}`).join(" ");
  return svg("svg", { width, height, class: "burn-chart", role: "img", "aria-label": "burn rate over time" },
    Number.isFinite(threshold) ? svg("line", { x1: 0, x2: width, y1: y(threshold), y2: y(threshold), class: "burn-threshold" }) : null,
    svg("polyline", { points: line, fill: "none", stroke: "#e15759", "stroke-width": 1.5 }),
    svg("title", {}, points.map((p) => `${new Date(p.time * 1000).toLocaleTimeString()}: ${p.burnRate.toFixed(1)}x`).join("\n")));
}
