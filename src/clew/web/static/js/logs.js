// Logs: the /logs page (a search over every stored log record, newest first, each linked to its trace
// and span) and the pieces the trace page draws a trace's logs with. Bodies and attributes are the
// senders' data: they go into the page as text only.

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
  const results = h("div", { class: "results", id: "logs-results" });
  clear(root).append(h("h1", {}, "Logs"), form, status, results);

  const address = (q) => {
    const next = new URLSearchParams();
    if (q.trim()) next.set("q", q.trim());
    next.set("lookback", lookbackSelect.value);
    if (lookbackSelect.value === "custom") {
      next.set("start", String(new Date(startInput.value).getTime() * 1000));
      next.set("end", String(new Date(endInput.value).getTime() * 1000));
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
  status.textContent = "Searching…";
  let body;
  try {
    body = await getJSON("/api/v1/logs", { q: state.q, start: startUs / 1e6, end: endUs / 1e6, limit: state.limit });
  } catch (err) {
    if (err.status === 401) throw err;
    clear(status).append(h("span", { class: "error", id: "logs-error" }, err.message));
    return;
  }
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
