// Logs: the /logs page (a search over every stored log record, newest first, each linked to its trace
// and span) and the pieces the trace page draws a trace's logs with. Bodies and attributes are the
// senders' data: they go into the page as text only.

import { drawStacks } from "./chart.js";
import { formatTime, logBodyText, logTimeNs, severityLabel, severityLevel } from "./model.js";
import { LOOKBACKS, localInput, lookbackMs } from "./search.js";
import { clear, getJSON, h, link, navigate, serviceColor, valueText } from "./util.js";

/** A record's severity, coloured by its level. */
export function severityBadge(log) {
  const level = severityLevel(log);
  return h("span", { class: `sev sev-${level}`, title: log.severityNumber ? `severity ${log.severityNumber}` : "no severity" }, severityLabel(log) || "—");
}

/** The body as one line (structured bodies as compact JSON), as text. */
export function bodyText(log) {
  const text = logBodyText(log);
  return h("span", { class: `log-body${typeof log.body === "string" ? "" : " log-body-structured"}`, title: log.bodyType || "" }, text);
}

/** An attribute key that may wrap after its dots, underscores and slashes (never inside a word). */
export function breakable(key) {
  const parts = key.split(/(?<=[._/-])/);
  return parts.flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}

function kvRows(obj) {
  return Object.entries(obj || {}).map(([key, value]) => h("tr", {}, h("th", {}, breakable(key)), h("td", {}, valueText(value))));
}

/** The record's attributes (and, with `whole`, its resource and scope), folded until asked for and
 * drawn only then: a trace may show thousands of records. */
export function logDetails(log, whole = false) {
  const attrs = Object.keys(log.attributes || {}).length;
  if (!attrs && !whole && !log.eventName && !log.droppedAttributesCount) return null;
  const sections = () => [
    log.eventName ? h("p", { class: "log-event" }, `event ${log.eventName}`) : null,
    attrs ? h("table", { class: "kv log-attributes" }, h("tbody", {}, kvRows(log.attributes))) : h("p", { class: "muted" }, "no attributes"),
    log.droppedAttributesCount ? h("p", { class: "muted" }, `${log.droppedAttributesCount} attributes dropped by the sender`) : null,
    whole ? [h("h4", {}, "Resource"), h("table", { class: "kv log-resource" }, h("tbody", {}, kvRows(log.resource)))] : null,
    whole && log.scope && log.scope.name ? h("p", { class: "muted log-scope" }, `scope ${log.scope.name}${log.scope.version ? ` ${log.scope.version}` : ""}`) : null,
  ];
  const label = `${attrs} attribute${attrs === 1 ? "" : "s"}${whole ? ", resource" : ""}`;
  const details = h("details", { class: "log-more" }, h("summary", {}, label));
  details.addEventListener("toggle", () => {
    if (details.open && details.children.length === 1) details.append(h("div", { class: "log-more-body" }, sections()));
  });
  return details;
}

// the volume chart's step: the shortest of these (seconds) that gives no more than 120 bars
const STEPS = [1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/** A step in whole seconds giving 60 to 120 bars over `seconds` (fewer only under a minute). */
export function volumeStep(seconds) {
  return STEPS.find((s) => seconds / s <= 120) || Math.ceil(seconds / 120 / 86400) * 86400;
}

/** How many records match, per step and level (/api/v1/logs/volume), as bars stacked by level, most
 * severe at the foot, in the severities' colours; a bar or a dragged range narrows the search. */
function drawVolume(container, body, t0, t1, onRange) {
  const levels = body.levels || [];
  if (!levels.some((l) => l.counts.some(Boolean))) {
    clear(container);
    return;
  }
  const stacks = levels.map((l) => ({ key: l.level, counts: l.counts, className: `volume-${l.level}` }));
  drawStacks(container, { start: Number(body.start) / 1e6, step: Number(body.step) / 1e6, buckets: body.buckets, stacks }, t0, t1,
    { id: "logs-volume-chart", label: "matching log records over time, by level: drag across it or click a bar to narrow the search", onRange });
  const total = (l) => l.counts.reduce((a, b) => a + b, 0);
  container.append(h("div", { class: "log-levels volume-legend", id: "logs-volume-legend" },
    levels.map((l) => h("span", { class: `sev sev-${l.level}`, dataset: { level: l.level } }, `${total(l).toLocaleString("en")} ${l.level}`))));
}

const HINT = 'words or "a phrase" match the body · service:checkout · severity:error · severity>=warn · trace:ID · span:ID · key=value · key!=value · key>3';

export async function renderLogs(root) {
  const params = new URLSearchParams(location.search);
  const state = {
    q: params.get("q") || "",
    lookback: params.get("lookback") || "1h",
    start: params.get("start") || "",
    end: params.get("end") || "",
    limit: params.get("limit") || "100",
  };
  const qInput = h("input", { id: "q", name: "q", class: "query", placeholder: "payment declined service:checkout severity>=warn", value: state.q, "aria-label": "Log query", autocomplete: "off" });
  const lookbackSelect = h("select", { id: "lookback", "aria-label": "Lookback" }, LOOKBACKS.map(([v, label]) => h("option", { value: v, selected: v === state.lookback }, label)));
  const now = Date.now();
  const startInput = h("input", { type: "datetime-local", id: "start", value: localInput(state.start ? Number(state.start) / 1000 : now - lookbackMs("1h")) });
  const endInput = h("input", { type: "datetime-local", id: "end", value: localInput(state.end ? Number(state.end) / 1000 : now) });
  const custom = h("span", { class: "custom-range", hidden: state.lookback !== "custom" }, startInput, " – ", endInput);
  lookbackSelect.addEventListener("change", () => { custom.hidden = lookbackSelect.value !== "custom"; });
  const limitInput = h("input", { id: "limit", type: "number", min: 1, max: 1000, value: state.limit, size: 5, "aria-label": "Limit" });
  const form = h("form", { class: "search-form", id: "logs-form" },
    h("div", { class: "row" }, h("label", {}, "Query ", qInput), h("button", { type: "submit", id: "find-logs" }, "Find logs")),
    h("div", { class: "row muted query-hint", id: "logs-hint" }, HINT),
    h("div", { class: "row" }, lookbackSelect, custom, h("label", {}, "Limit ", limitInput)));
  const status = h("div", { class: "status", id: "logs-status" });
  const volume = h("div", { class: "scatter volume", id: "logs-volume" });
  const results = h("div", { class: "results", id: "logs-results" });
  clear(root).append(h("h1", {}, "Logs"), form, status, volume, results);

  // a custom range's inputs show minutes: one left as it was keeps the range's own µs (a range
  // narrowed on the chart stays as narrow when the query changes)
  const shownStart = startInput.value;
  const shownEnd = endInput.value;
  const address = (q, range) => {
    const next = new URLSearchParams();
    if (q.trim()) next.set("q", q.trim());
    next.set("lookback", range ? "custom" : lookbackSelect.value);
    if (range) {
      next.set("start", String(range[0]));
      next.set("end", String(range[1]));
    } else if (lookbackSelect.value === "custom") {
      const kept = state.lookback === "custom" && state.start && state.end;
      next.set("start", kept && startInput.value === shownStart ? state.start : String(new Date(startInput.value).getTime() * 1000));
      next.set("end", kept && endInput.value === shownEnd ? state.end : String(new Date(endInput.value).getTime() * 1000));
    }
    next.set("limit", limitInput.value || "100");
    return `/logs?${next}`;
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    navigate(address(qInput.value));
  });

  // the range in µs, as the search page keeps it in its address (Jaeger UI's unit)
  const endUs = state.lookback === "custom" && state.end ? Number(state.end) : Date.now() * 1000;
  const startUs = state.lookback === "custom" && state.start ? Number(state.start) : endUs - lookbackMs(state.lookback) * 1000;
  // the volume is asked for beside the search, and each is drawn when it comes
  const range = { q: state.q, start: startUs / 1e6, end: endUs / 1e6 };
  const narrowTo = (fromMs, toMs) => navigate(address(state.q, [Math.round(fromMs * 1000), Math.round(toMs * 1000)]));
  const volumeDrawn = getJSON("/api/v1/logs/volume", { ...range, step: volumeStep((endUs - startUs) / 1e6) }).then(
    (body) => drawVolume(volume, body, startUs / 1000, endUs / 1000, narrowTo),
    (err) => {
      if (err.status === 401) throw err;
      // a query the server cannot read: the search's answer says why
      if (err.status !== 400) clear(volume).append(h("p", { class: "muted", id: "logs-volume-error" }, `Log volume: ${err.message}`));
    });
  status.textContent = "Searching…";
  const searched = getJSON("/api/v1/logs", { ...range, limit: state.limit }).then(
    (body) => showResults(body),
    (err) => {
      if (err.status === 401) throw err;
      clear(status).append(h("span", { class: "error", id: "logs-error" }, err.message));
    });
  await Promise.all([searched, volumeDrawn]);

  function showResults(body) {
    const logs = body.logs || [];
    status.textContent = `${logs.length} log record${logs.length === 1 ? "" : "s"}${body.truncated ? ` (the newest ${body.limit}: narrow the query or the time range, or raise the limit, to see more)` : ""}`;
    if (!logs.length) return;
    // a service or trace in a row narrows the query to it, as a click does in Grafana's log lines
    const narrow = (term) => address(`${state.q} ${term}`.trim());
    const quoted = (text) => (/^[^\s"]+$/.test(text) ? text : `"${text.replace(/["\\]/g, "\\$&")}"`);
    results.append(h("table", { class: "stats logs-table", id: "logs-table" },
      h("thead", {}, h("tr", {}, ["Time", "Severity", "Service", "Body", "Trace"].map((t) => h("th", {}, t)))),
      h("tbody", {}, logs.map((log) => h("tr", { class: `log-row level-${severityLevel(log)}`, dataset: { traceId: log.traceId || "", spanId: log.spanId || "", service: log.service || "" } },
        h("td", { class: "log-time mono shrink" }, formatTime(logTimeNs(log))),
        h("td", { class: "shrink" }, severityBadge(log)),
        h("td", { class: "shrink" }, log.service ? link(narrow(`service:${quoted(log.service)}`), h("span", { class: "svc", style: { borderLeftColor: serviceColor(log.service) } }, log.service)) : ""),
        h("td", { class: "log-body-cell" }, bodyText(log), logDetails(log, true)),
        h("td", { class: "mono log-trace shrink" }, log.traceId
          ? link(`/trace/${log.traceId}${log.spanId ? `?span=${log.spanId}` : ""}`, h("span", { title: `trace ${log.traceId}${log.spanId ? `, span ${log.spanId}` : ""}` }, log.traceId.slice(0, 12)))
          : h("span", { class: "muted" }, "—")))))));
  }
}
