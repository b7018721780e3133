// The monitor page (Jaeger's SPM tab): per service, or per operation of one service, the request
// rate, error rate and p95 latency over a time range, from the span-derived RED metrics that
// /api/metrics/* serves; "impact" is latency times rate, what a slow path costs its callers in total.

import { drawSeries } from "./chart.js";
import { formatDuration } from "./model.js";
import { clear, getJSON, h, link, navigate, sortableTable, svg } from "./util.js";

const RANGES = [["15m", 15], ["1h", 60], ["6h", 360], ["24h", 1440]];
const COLUMNS = [["name", "Name"], ["rate", "Requests/s"], ["errorRate", "Error rate"], ["p95", "p95"], ["impact", "Impact (ms/s)"],
  ["trend", "Requests over time"], ["errorTrend", "Errors over time"], ["p95Trend", "p95 over time"]];

export async function renderMonitor(root) {
  const params = new URLSearchParams(location.search);
  const range = RANGES.find(([v]) => v === params.get("range")) || RANGES[1];
  const service = params.get("service") || "";
  const rangeSelect = h("select", { id: "monitor-range", "aria-label": "Time range" },
    RANGES.map(([v]) => h("option", { value: v, selected: v === range[0] }, `Last ${v}`)));
  rangeSelect.addEventListener("change", () => {
    const next = new URLSearchParams(location.search);
    next.set("range", rangeSelect.value);
    navigate(`/monitor?${next}`);
  });
  const live = h("input", { type: "checkbox", id: "monitor-live", checked: params.get("live") === "1" });
  live.addEventListener("change", () => {
    const url = new URL(location.href);
    if (live.checked) url.searchParams.set("live", "1");
    else url.searchParams.delete("live");
    history.replaceState(history.state, "", url);
    if (live.checked) follow();
    else clearTimeout(liveTimer);
  });
  if (live.checked) follow();  // armed now, so a failed load below still refreshes
  const status = h("div", { class: "status", id: "monitor-status" }, "Loading…");
  const table = h("table", { class: "stats", id: "monitor-table" });
  const chart = h("div", { class: "metrics-plot", id: "monitor-latency" });
  clear(root).append(
    h("h1", {}, service ? h("span", {}, link("/monitor", "Monitor"), ` › ${service}`) : "Monitor"),
    h("div", { class: "toolbar" }, rangeSelect, h("label", { class: "live", title: `refresh every ${LIVE_MS / 1000} s` }, live, " Live")),
    status,
    table,
    h("h2", {}, service ? "p95 latency of each operation" : "p95 latency of each service"),
    h("p", { class: "muted" }, "Server spans; each dot is an example trace (the slowest of its step): click it to open the trace."),
    chart,
  );
  const services = service ? [service] : ((await getJSON("/api/services")).data || []);
  if (!services.length) {
    status.textContent = "No services yet.";
    return;
  }
  const minutes = range[1];
  const step = Math.max(60, Math.floor((minutes * 60) / 30 / 60) * 60); // about 30 points, whole minutes
  const query = { service: services, endTs: Date.now(), lookback: minutes * 60000, step: step * 1000, spanKind: "server" };
  if (service) query.groupByOperation = "true";
  const fetchMetric = (which, extra = {}) => {
    const url = new URL(`/api/metrics/${which}`, location.origin);
    for (const [k, v] of Object.entries({ ...query, ...extra })) {
      for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
    }
    return getJSON(url.pathname + url.search);
  };
  const [calls, errors, latencies] = await Promise.all([fetchMetric("calls"), fetchMetric("errors"), fetchMetric("latencies", { quantile: 0.95 })]);
  const rows = summarize(calls, errors, latencies, service);
  status.textContent = `${rows.length} ${service ? "operation" : "service"}${rows.length === 1 ? "" : "s"}, server spans, last ${range[0]}`;
  const row = (r) => h("tr", { dataset: { name: r.name } },
    h("td", {}, service
      ? link(`/search?${new URLSearchParams({ service, operation: r.name, lookback: "1h" })}`, r.name)
      : link(`/monitor?${new URLSearchParams({ service: r.name, range: range[0] })}`, r.name)),
    h("td", { class: "num" }, r.rate.toFixed(2)),
    h("td", { class: `num${r.errorRate > 0 ? " errors" : ""}` }, `${(r.errorRate * 100).toFixed(1)}%`),
    h("td", { class: "num" }, `${r.p95.toFixed(1)} ms`),
    h("td", { class: "num" }, r.impact.toFixed(1)),
    h("td", {}, sparkline(r.points, "requests over time", "#4e79a7")),
    h("td", {}, sparkline(r.errorPoints, "error rate over time", "#e15759")),
    h("td", {}, sparkline(r.p95Points, "p95 latency over time", "#f28e2b")));
  table.replaceWith(sortableTable("monitor-table", COLUMNS, rows, "impact", row));
  await latencyChart(chart, service, minutes, step);
  status.dataset.updated = String(Date.now());
  if (live.checked) follow();
}

// Live: the page loads again every few seconds while it is shown with live=1, as a team watching a
// rollout would leave it.
const LIVE_MS = 10000;
let liveTimer = 0;

function follow() {
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => {
    if (location.pathname === "/monitor" && new URLSearchParams(location.search).get("live") === "1") {
      window.dispatchEvent(new Event("clew:navigate"));
    }
  }, LIVE_MS);
}

/** p95 latency over time per service (or per operation of one), with exemplars: TraceQL metrics
 * over the stored spans, as Grafana would chart them from the Tempo API. */
async function latencyChart(container, service, minutes, step) {
  const end = Date.now() / 1000;
  const start = end - minutes * 60;
  const q = service
    ? `{ resource.service.name = ${JSON.stringify(service)} && kind = server } | quantile_over_time(duration, .95) by (name)`
    : "{ kind = server } | quantile_over_time(duration, .95) by (resource.service.name)";
  try {
    const body = await getJSON("/api/v1/metrics/query_range", { q, start, end, step: `${step}s` });
    drawSeries(container, body.series, start * 1000, end * 1000, { id: "monitor-chart", format: (v) => formatDuration(Math.round(v * 1e9)) });
  } catch (err) {
    container.append(h("p", { class: "error" }, err.message));
  }
}

/** One row per service (or operation): mean rate, error rate weighted by calls, worst p95, impact. */
export function summarize(calls, errors, latencies, service) {
  const key = (m) => (service ? (m.labels.find((l) => l.name === "operation") || {}).value : (m.labels.find((l) => l.name === "service_name") || {}).value) || "";
  const values = (m) => m.metricPoints.map((p) => p.gaugeValue.doubleValue);
  const rows = new Map();
  for (const m of calls.metrics || []) {
    const points = values(m);
    const total = points.reduce((a, b) => a + b, 0);
    rows.set(key(m), { name: key(m), rate: points.length ? total / points.length : 0, points, errorRate: 0, p95: 0, impact: 0, errorPoints: [], p95Points: [] });
  }
  for (const m of errors.metrics || []) {
    const row = rows.get(key(m));
    if (!row) continue;
    const shares = values(m);
    row.errorPoints = shares;
    const weights = row.points.slice(0, shares.length);
    const weight = weights.reduce((a, b) => a + b, 0);
    row.errorRate = weight ? shares.reduce((a, s, i) => a + s * (weights[i] || 0), 0) / weight : 0;
  }
  for (const m of latencies.metrics || []) {
    const row = rows.get(key(m));
    if (!row) continue;
    row.p95Points = values(m);
    row.p95 = Math.max(0, ...row.p95Points);
  }
  for (const row of rows.values()) row.impact = row.p95 * row.rate;
  return [...rows.values()];
}

function sparkline(points, label, colour) {
  const width = 100;
  const height = 24;
  const most = Math.max(...points, 1e-9);
  const step = points.length > 1 ? width / (points.length - 1) : 0;
  const coords = points.map((p, i) => `${(i * step).toFixed(1)},${(height - 2 - (p / most) * (height - 4)).toFixed(1)}`).join(" ");
  return svg("svg", { width, height, class: "sparkline", role: "img", "aria-label": label },
    svg("polyline", { points: coords, fill: "none", stroke: colour, "stroke-width": 1.5 }));
}
