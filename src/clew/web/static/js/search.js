// The search page: Jaeger's form (service, operation, tags, durations, time range) or a query in
// clew's language; results as a scatter plot of durations over time above a list. The URL holds the
// search, in Jaeger UI's parameter names, so a search can be shared and reloaded.

import { clear, getJSON, h, link, navigate, serviceColor, svg } from "./util.js";
import { formatDuration, formatTime } from "./model.js";
import { drawSeries } from "./chart.js";

export const LOOKBACKS = [["15m", "Last 15 minutes"], ["30m", "Last 30 minutes"], ["1h", "Last hour"], ["2h", "Last 2 hours"], ["6h", "Last 6 hours"], ["12h", "Last 12 hours"], ["24h", "Last 24 hours"], ["2d", "Last 2 days"], ["7d", "Last 7 days"], ["custom", "Custom range"]];
const UNIT_MS = { m: 60e3, h: 3600e3, d: 86400e3 };

export function lookbackMs(text) {
  const m = /^(\d+)([mhd])$/.exec(text || "1h");
  return m ? Number(m[1]) * UNIT_MS[m[2]] : 3600e3;
}

/** Jaeger UI shows tags as logfmt (`error=true http.status_code=500`) and keeps JSON in the URL. */
export function parseLogfmt(text) {
  const out = {};
  const re = /([^\s=]+)=("((?:[^"\\]|\\.)*)"|\S*)/g;
  let m;
  while ((m = re.exec(text || ""))) out[m[1]] = m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : m[2];
  return out;
}

function toLogfmt(tags) {
  return Object.entries(tags).map(([k, v]) => (/[\s"]/.test(v) ? `${k}="${v.replace(/"/g, '\\"')}"` : `${k}=${v}`)).join(" ");
}

export function localInput(ms) {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

/** Summaries of traces in Jaeger's JSON, in the native API's shape. */
function summarizeJaeger(traces) {
  return traces.map((t) => {
    const services = {};
    let first = Infinity;
    let last = 0;
    let errors = 0;
    let root = null;
    for (const s of t.spans) {
      const service = (t.processes[s.processID] || {}).serviceName || "unknown";
      const isError = (s.tags || []).some((tag) => tag.key === "error" && (tag.value === true || tag.value === "true"));
      services[service] = services[service] || { spanCount: 0, errorCount: 0 };
      services[service].spanCount += 1;
      if (isError) {
        services[service].errorCount += 1;
        errors += 1;
      }
      first = Math.min(first, s.startTime);
      last = Math.max(last, s.startTime + s.duration);
      const hasParent = (s.references || []).some((r) => r.refType === "CHILD_OF" && r.traceID === t.traceID && t.spans.some((p) => p.spanID === r.spanID));
      if (!hasParent && (!root || s.startTime < root.startTime)) root = { ...s, service };
    }
    return {
      traceID: t.traceID.padStart(32, "0"),
      rootServiceName: root ? root.service : "",
      rootTraceName: root ? root.operationName : "",
      startTimeUnixNano: String(BigInt(first) * 1000n),
      durationNanos: String((last - first) * 1000),
      spanCount: t.spans.length,
      errorCount: errors,
      serviceStats: services,
    };
  });
}

export async function renderSearch(root) {
  const params = new URLSearchParams(location.search);
  const state = {
    service: params.get("service") || "",
    operation: params.get("operation") || "",
    tags: params.get("tags") || "",
    lookback: params.get("lookback") || "1h",
    start: params.get("start") || "",
    end: params.get("end") || "",
    minDuration: params.get("minDuration") || "",
    maxDuration: params.get("maxDuration") || "",
    limit: params.get("limit") || "20",
    q: params.get("q") || "",
    sort: params.get("sort") || "newest",
    live: params.get("live") === "1",
  };
  let tagText = "";
  try {
    tagText = state.tags ? toLogfmt(JSON.parse(state.tags)) : "";
  } catch {
    tagText = state.tags;
  }

  const serviceSelect = h("select", { name: "service", id: "service", "aria-label": "Service" }, h("option", { value: "" }, "Service…"));
  const operationSelect = h("select", { name: "operation", id: "operation", "aria-label": "Operation" }, h("option", { value: "" }, "All operations"));
  const tagsInput = h("input", { name: "tags", id: "tags", placeholder: "http.status_code=500 error=true", value: tagText, "aria-label": "Tags" });
  const lookbackSelect = h("select", { name: "lookback", id: "lookback", "aria-label": "Lookback" }, LOOKBACKS.map(([v, label]) => h("option", { value: v, selected: v === state.lookback }, label)));
  const now = Date.now();
  const startInput = h("input", { type: "datetime-local", id: "start", value: localInput(state.start ? Number(state.start) / 1000 : now - lookbackMs("1h")) });
  const endInput = h("input", { type: "datetime-local", id: "end", value: localInput(state.end ? Number(state.end) / 1000 : now) });
  const custom = h("span", { class: "custom-range", hidden: state.lookback !== "custom" }, startInput, " – ", endInput);
  lookbackSelect.addEventListener("change", () => { custom.hidden = lookbackSelect.value !== "custom"; });
  const minInput = h("input", { id: "minDuration", placeholder: "e.g. 100ms", value: state.minDuration, size: 8, "aria-label": "Min duration" });
  const maxInput = h("input", { id: "maxDuration", placeholder: "e.g. 1.5s", value: state.maxDuration, size: 8, "aria-label": "Max duration" });
  const limitInput = h("input", { id: "limit", type: "number", min: 1, max: 1000, value: state.limit, size: 5, "aria-label": "Limit" });
  const qInput = h("input", { id: "q", name: "q", class: "query", placeholder: '{ status = error && service = "checkout" }   (query language; leave empty to use the form)', value: state.q, "aria-label": "Query" });
  const form = h(
    "form",
    { class: "search-form", id: "search-form" },
    h("div", { class: "row" }, h("label", {}, "Query ", qInput)),
    h("div", { class: "row" }, serviceSelect, operationSelect, h("label", {}, "Tags ", tagsInput)),
    h("div", { class: "row" }, lookbackSelect, custom, h("label", {}, "Min ", minInput), h("label", {}, "Max ", maxInput), h("label", {}, "Limit ", limitInput), h("button", { type: "submit", id: "find" }, "Find traces")),
  );
  const status = h("div", { class: "status", id: "search-status" });
  const plot = h("div", { class: "scatter", id: "scatter" });
  const list = h("div", { class: "results", id: "results" });
  const compareButton = h("button", { id: "compare-selected", disabled: true, type: "button" }, "Compare 2 selected");
  clearTimeout(liveTimer);
  const liveBox = h("input", { type: "checkbox", id: "live", checked: state.live });
  liveBox.addEventListener("change", () => {
    const url = new URL(location.href);
    if (liveBox.checked) url.searchParams.set("live", "1");
    else url.searchParams.delete("live");
    history.replaceState(history.state, "", url);
    state.live = liveBox.checked;
    if (state.live) followLive();
    else clearTimeout(liveTimer);
  });
  const liveLabel = h("label", { class: "live", title: `search again every ${LIVE_MS / 1000} s` }, liveBox, " Live");
  clear(root).append(h("h1", {}, "Search"), form, status, plot, h("div", { class: "results-bar" }, compareButton, liveLabel), list);

  const services = await getJSON("/api/services").catch(() => ({ data: [] }));
  for (const name of services.data || []) serviceSelect.append(h("option", { value: name, selected: name === state.service }, name));
  async function loadOperations() {
    clear(operationSelect).append(h("option", { value: "" }, "All operations"));
    if (!serviceSelect.value) return;
    const ops = await getJSON(`/api/services/${encodeURIComponent(serviceSelect.value)}/operations`).catch(() => ({ data: [] }));
    for (const name of ops.data || []) operationSelect.append(h("option", { value: name, selected: name === state.operation }, name));
  }
  serviceSelect.addEventListener("change", loadOperations);
  await loadOperations();

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (qInput.value.trim()) next.set("q", qInput.value.trim());
    if (serviceSelect.value) next.set("service", serviceSelect.value);
    if (operationSelect.value) next.set("operation", operationSelect.value);
    const tags = parseLogfmt(tagsInput.value);
    if (Object.keys(tags).length) next.set("tags", JSON.stringify(tags));
    next.set("lookback", lookbackSelect.value);
    if (lookbackSelect.value === "custom") {
      next.set("start", String(new Date(startInput.value).getTime() * 1000));
      next.set("end", String(new Date(endInput.value).getTime() * 1000));
    }
    if (minInput.value) next.set("minDuration", minInput.value);
    if (maxInput.value) next.set("maxDuration", maxInput.value);
    next.set("limit", limitInput.value || "20");
    navigate(`/search?${next}`);
  });

  if (!state.q && !state.service) {
    status.textContent = "Pick a service or write a query, then Find traces.";
    return;
  }
  if (state.live) followLive();
  const endUs = state.lookback === "custom" && state.end ? Number(state.end) : Date.now() * 1000;
  const startUs = state.lookback === "custom" && state.start ? Number(state.start) : endUs - lookbackMs(state.lookback) * 1000;
  if (METRICS_STAGE.test(state.q)) {  // a TraceQL metrics query: a chart instead of traces
    status.textContent = "Computing…";
    try {
      const body = await getJSON("/api/v1/metrics/query_range", { q: state.q, start: startUs / 1e6, end: endUs / 1e6 });
      status.textContent = `${body.series.length} series`;
      drawSeries(plot, body.series, startUs / 1000, endUs / 1000);
    } catch (err) {
      status.textContent = "";
      status.append(h("span", { class: "error", id: "search-error" }, err.message));
    }
    return;
  }
  status.textContent = "Searching…";
  let summaries;
  try {
    if (state.q) {
      const body = await getJSON("/api/v1/search", { q: state.q, start: startUs / 1e6, end: endUs / 1e6, limit: state.limit });
      summaries = body.traces;
    } else {
      const body = await getJSON("/api/traces", {
        service: state.service, operation: state.operation, tags: state.tags, start: Math.floor(startUs), end: Math.floor(endUs),
        minDuration: state.minDuration, maxDuration: state.maxDuration, limit: state.limit,
      });
      summaries = summarizeJaeger(body.data || []);
    }
  } catch (err) {
    status.textContent = "";
    status.append(h("span", { class: "error", id: "search-error" }, err.message));
    return;
  }
  status.textContent = `${summaries.length} trace${summaries.length === 1 ? "" : "s"}`;
  drawScatter(plot, summaries);
  const sortSelect = h("select", { id: "sort", "aria-label": "Sort results" },
    Object.entries(SORTS).map(([value, [label]]) => h("option", { value, selected: value === (state.sort || "newest") }, label)));
  compareButton.parentElement.append(h("label", { class: "sort" }, "Sort ", sortSelect));
  sortSelect.addEventListener("change", () => {
    state.sort = sortSelect.value;
    const url = new URL(location.href);
    url.searchParams.set("sort", sortSelect.value);
    history.replaceState(history.state, "", url);
    const order = SORTS[sortSelect.value][1];
    const rows = [...list.querySelectorAll(".result")];
    const byId = new Map(summaries.map((t) => [t.traceID, t]));
    rows.sort((a, b) => order(byId.get(a.dataset.traceId), byId.get(b.dataset.traceId)));
    list.append(...rows);
  });
  summaries.sort(SORTS[SORTS[state.sort] ? state.sort : "newest"][1]);
  const selected = new Set();
  compareButton.addEventListener("click", () => {
    const [a, b] = [...selected];
    navigate(`/compare?a=${a}&b=${b}`);
  });
  for (const t of summaries) {
    const box = h("input", { type: "checkbox", "aria-label": `select ${t.traceID} to compare`, onchange: (e) => {
      if (e.target.checked) selected.add(t.traceID);
      else selected.delete(t.traceID);
      compareButton.disabled = selected.size !== 2;
    } });
    list.append(h(
      "div",
      { class: "result", dataset: { traceId: t.traceID } },
      box,
      h("div", { class: "result-main" },
        link(`/trace/${t.traceID}`, h("span", { class: "root" }, `${t.rootServiceName}: ${t.rootTraceName}`)),
        h("span", { class: "trace-id" }, t.traceID.slice(0, 7)),
        h("div", { class: "chips" }, Object.entries(t.serviceStats || {}).map(([name, st]) =>
          h("span", { class: "chip", style: { borderLeftColor: serviceColor(name) } }, `${name} (${st.spanCount})`)))),
      h("div", { class: "result-side" },
        h("div", { class: "duration" }, formatDuration(Number(t.durationNanos))),
        h("div", {}, `${t.spanCount} spans`, t.errorCount ? h("span", { class: "errors" }, ` · ${t.errorCount} errors`) : null),
        h("div", { class: "muted", title: formatTime(t.startTimeUnixNano) }, ago(t.startTimeUnixNano))),
    ));
  }
}

// Live: the page searches again every few seconds while it is shown and nobody is typing in the form.
const LIVE_MS = 5000;
let liveTimer = 0;

function followLive() {
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => {
    if (location.pathname !== "/search" || new URLSearchParams(location.search).get("live") !== "1") return;
    const active = document.activeElement;
    if (active && active.closest && active.closest("#search-form")) return followLive();
    window.dispatchEvent(new Event("clew:navigate"));
  }, LIVE_MS);
}

const start = (t) => BigInt(t.startTimeUnixNano);
const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
// the orders results can be shown in: label, comparator
const SORTS = {
  newest: ["Newest first", (a, b) => cmp(start(b), start(a))],
  oldest: ["Oldest first", (a, b) => cmp(start(a), start(b))],
  slowest: ["Slowest first", (a, b) => Number(b.durationNanos) - Number(a.durationNanos)],
  fastest: ["Fastest first", (a, b) => Number(a.durationNanos) - Number(b.durationNanos)],
  spans: ["Most spans", (a, b) => b.spanCount - a.spanCount],
  errors: ["Most errors", (a, b) => (b.errorCount || 0) - (a.errorCount || 0)],
};

/** "3 min ago": when a trace started, relative to now (the exact time is the element's title). */
export function ago(startNs) {
  const seconds = Math.max(0, (Date.now() - Number(BigInt(startNs) / 1000000n)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

const METRICS_STAGE = /\|\s*(rate|count_over_time|sum_over_time|avg_over_time|min_over_time|max_over_time|quantile_over_time|histogram_over_time)\s*\(/;

function drawScatter(container, summaries) {
  clear(container);
  if (!summaries.length) return;
  const width = Math.max(container.clientWidth || 800, 400);
  const height = 160;
  const pad = 36;
  const times = summaries.map((t) => Number(BigInt(t.startTimeUnixNano) / 1000000n));
  const durations = summaries.map((t) => Number(t.durationNanos));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const dMax = Math.max(...durations, 1);
  const x = (t) => pad + (t1 === t0 ? (width - 2 * pad) / 2 : ((t - t0) / (t1 - t0)) * (width - 2 * pad));
  const y = (d) => height - pad / 2 - (d / dMax) * (height - pad);
  const plot = svg("svg", { width, height, class: "scatter-plot", role: "img", "aria-label": "trace durations over time" },
    svg("line", { x1: pad, y1: height - pad / 2, x2: width - pad / 2, y2: height - pad / 2, class: "axis" }),
    svg("text", { x: 4, y: 12, class: "axis-label" }, formatDuration(dMax)),
    svg("text", { x: 4, y: height - pad / 2, class: "axis-label" }, "0"),
    svg("text", { x: 4, y: height / 2, class: "axis-label axis-title" }, "duration"),
    // the time axis: when the first, middle and last traces started (local time)
    (t1 === t0 ? [t0] : [t0, (t0 + t1) / 2, t1]).map((t, i, all) => svg("text", {
      x: x(t), y: height - 2, class: "axis-label time-tick", "text-anchor": all.length === 1 ? "middle" : ["start", "middle", "end"][i],
    }, new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }))));
  summaries.forEach((t, i) => {
    const dot = svg("circle", { cx: x(times[i]), cy: y(durations[i]), r: 5, class: t.errorCount ? "dot dot-error" : "dot", "data-trace-id": t.traceID, tabindex: 0, onclick: () => navigate(`/trace/${t.traceID}`), onkeydown: (e) => { if (e.key === "Enter") navigate(`/trace/${t.traceID}`); } },
      svg("title", {}, `${t.rootServiceName}: ${t.rootTraceName} · ${formatDuration(durations[i])}`));
    plot.append(dot);
  });
  container.append(plot);
}
