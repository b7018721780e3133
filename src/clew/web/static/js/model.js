// A trace as the UI needs it, built from OTLP/JSON: spans in tree order with times relative to the
// trace start, plus the analyses (critical path, warnings, structural alignment of two traces).
// Pure functions, no DOM: the same code serves a stored trace and a file opened in the browser.

const STATUS_ERROR = new Set([2, "STATUS_CODE_ERROR"]);
const KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];
const KIND_NAMES = { SPAN_KIND_UNSPECIFIED: 0, SPAN_KIND_INTERNAL: 1, SPAN_KIND_SERVER: 2, SPAN_KIND_CLIENT: 3, SPAN_KIND_PRODUCER: 4, SPAN_KIND_CONSUMER: 5 };

export function anyValue(v) {
  if (v == null) return null;
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return Number(v.intValue);
  if ("doubleValue" in v) return v.doubleValue;
  if ("boolValue" in v) return v.boolValue;
  if ("bytesValue" in v) return v.bytesValue;
  if ("arrayValue" in v) return (v.arrayValue.values || []).map(anyValue);
  if ("kvlistValue" in v) return Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, anyValue(kv.value)]));
  return null;
}

export function attributes(list) {
  return (list || []).map((kv) => ({ key: kv.key, value: anyValue(kv.value) }));
}

function ns(text) {
  return BigInt(text || "0");
}

/** The spans of an OTLP/JSON TracesData document, each beside its resource, service and scope. */
function otlpRecords(doc) {
  const raw = [];
  for (const rs of doc.resourceSpans || []) {
    const resource = attributes(rs.resource && rs.resource.attributes);
    const serviceAttr = resource.find((a) => a.key === "service.name");
    const service = serviceAttr ? String(serviceAttr.value) : "unknown";
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        raw.push({ s, resource, service, scope: ss.scope || {} });
      }
    }
  }
  return raw;
}

/** One span of the UI's model from an OTLP/JSON record, times relative to `t0` (BigInt ns). */
function otlpSpan({ s, resource, service, scope }, index, t0) {
  const start = Number(ns(s.startTimeUnixNano) - t0);
  const end = Math.max(start, Number(ns(s.endTimeUnixNano) - t0));
  const status = s.status || {};
  const kind = typeof s.kind === "string" ? (KIND_NAMES[s.kind] ?? 0) : (s.kind || 0);
  return newSpan({
    index,
    traceId: (s.traceId || "").toLowerCase(),
    spanId: (s.spanId || "").toLowerCase(),
    parentId: (s.parentSpanId || "").toLowerCase(),
    name: s.name || "",
    kind: KINDS[kind] || "unspecified",
    service,
    start,
    end,
    statusCode: status.code === undefined ? "unset" : (STATUS_ERROR.has(status.code) ? "error" : (status.code === 1 || status.code === "STATUS_CODE_OK" ? "ok" : "unset")),
    statusMessage: status.message || "",
    attributes: attributes(s.attributes),
    resource,
    scope: { name: scope.name || "", version: scope.version || "", attributes: attributes(scope.attributes) },
    events: (s.events || []).map((e) => ({ name: e.name || "", time: Number(ns(e.timeUnixNano) - t0), attributes: attributes(e.attributes) })),
    links: (s.links || []).map((l) => ({ traceId: (l.traceId || "").toLowerCase(), spanId: (l.spanId || "").toLowerCase(), attributes: attributes(l.attributes) })),
  });
}

function newSpan(fields) {
  return {
    ...fields,
    duration: fields.end - fields.start,
    error: fields.statusCode === "error",
    details: true,
    children: [],
    parent: null,
    depth: 0,
    orphan: false,
    skew: false,
    critical: false,
    criticalSegments: [],
    selfTime: 0,
  };
}

/** Spans of an OTLP/JSON TracesData document, in tree order, with depth and analysis. */
export function buildTrace(doc) {
  const raw = otlpRecords(doc);
  if (!raw.length) throw new Error("the document holds no spans");
  let t0 = null;
  let t1 = null;
  for (const { s } of raw) {
    const a = ns(s.startTimeUnixNano);
    const b = ns(s.endTimeUnixNano);
    if (t0 === null || a < t0) t0 = a;
    if (t1 === null || b > t1) t1 = b;
  }
  return assemble(raw.map((r, index) => otlpSpan(r, index, t0)), t0, t1);
}

const STATUS_NAMES = ["unset", "ok", "error"];

/**
 * A trace from its skeleton (`/api/v1/traces/{id}/skeleton`: one array a field): names, times,
 * status and in-trace links of every span, without attributes, events or resources, which
 * `loadDetails` fetches span by span. How a huge trace opens without a 20 MB document.
 */
export function buildSkeleton(sk) {
  const c = sk.spans;
  const t0 = BigInt(sk.startTimeUnixNano);
  const traceId = sk.traceID;
  const spans = new Array(sk.spanCount);
  let last = 0;
  for (let i = 0; i < sk.spanCount; i++) {
    const start = c.start[i];
    const end = start + c.duration[i];
    if (end > last) last = end;
    const span = newSpan({
      index: i, traceId, spanId: c.spanId[i], parentId: c.parentId[i], name: sk.names[c.name[i]],
      kind: KINDS[c.kind[i]] || "unspecified", service: sk.services[c.service[i]], start, end,
      statusCode: STATUS_NAMES[c.status[i]] || "unset", statusMessage: "", attributes: [], resource: [],
      scope: { name: "", version: "", attributes: [] }, events: [],
      links: c.links[i].map((spanId) => ({ traceId, spanId, attributes: [] })),
    });
    span.details = false;
    span.counts = { events: c.events[i], attributes: c.attributes[i], exception: c.exception[i] };
    spans[i] = span;
  }
  const trace = assemble(spans, t0, t0 + BigInt(last));
  trace.skeleton = true;
  return trace;
}

/** Fill a skeleton span with what its own document (`/api/v1/traces/{id}/spans/{spanId}`) holds. */
export function mergeDetails(trace, span, doc) {
  const [record] = otlpRecords(doc);
  if (!record) return;
  const full = otlpSpan(record, span.index, trace.startNs);
  for (const key of ["attributes", "resource", "scope", "events", "statusMessage"]) span[key] = full[key];
  span.links = full.links;
  span.details = true;
  span.findText = undefined;
}

function assemble(spans, t0, t1) {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const roots = [];
  for (const s of spans) {
    const parent = s.parentId ? byId.get(s.parentId) : undefined;
    if (parent && parent !== s) {
      s.parent = parent;
      parent.children.push(s);
    } else {
      if (s.parentId) s.orphan = true;
      roots.push(s);
    }
  }
  const byStart = (a, b) => a.start - b.start || a.spanId.localeCompare(b.spanId);
  roots.sort(byStart);
  const order = [];
  const stack = roots.slice().reverse();
  const seen = new Set();
  while (stack.length) {
    const s = stack.pop();
    if (seen.has(s)) continue;
    seen.add(s);
    s.depth = s.parent ? s.parent.depth + 1 : 0;
    order.push(s);
    s.children.sort(byStart);
    for (let i = s.children.length - 1; i >= 0; i--) stack.push(s.children[i]);
  }
  for (const s of spans) {
    s.skewNs = s.parent ? outsideParent(s) : 0;
    s.skew = s.skewNs > 0;
    s.selfTime = selfTime(s);
  }
  const trace = {
    traceId: spans[0].traceId,
    spans: order,
    byId,
    roots,
    duration: Number(t1 - t0),
    startNs: t0,
    services: [...new Set(spans.map((s) => s.service))].sort(),
    depth: spans.reduce((m, s) => Math.max(m, s.depth), 0) + 1,
    errors: spans.filter((s) => s.error).length,
    warnings: [],
  };
  const orphans = spans.filter((s) => s.orphan);
  if (orphans.length) trace.warnings.push(`${orphans.length} orphan span${orphans.length > 1 ? "s" : ""}: the parent is not in this trace (broken propagation or a span still missing)`);
  const skewed = spans.filter((s) => s.skew);
  if (skewed.length) {
    const named = skewed.slice(0, 3).map((s) => `${s.service}: ${s.name}`).join(", ") + (skewed.length > 3 ? ", ..." : "");
    trace.warnings.push(`${skewed.length} span${skewed.length > 1 ? "s" : ""} outside the parent's time by more than 25 ms + 10% of the parent's duration (clock skew between hosts?): ${named}`);
  }
  markCriticalPath(trace);
  return trace;
}

// How far a child may lie outside its parent's time before it is called clock skew: 25 ms for the
// network and scheduling (a server span routinely ends a few ms after its client's, on one clock) plus
// a tenth of the parent's duration. /api/v1/completeness applies the same rule (SKEW_SLACK_NS).
export const SKEW_SLACK_NS = 25e6;

/** Nanoseconds a span lies outside its parent's time beyond the tolerance, or 0. */
export function outsideParent(s) {
  const p = s.parent;
  const out = Math.max(p.start - s.start, s.end - p.end);
  return out > SKEW_SLACK_NS + (p.end - p.start) / 10 ? out : 0;
}

/** Time of a span not covered by any child. */
function selfTime(span) {
  const parts = span.children.map((c) => [Math.max(c.start, span.start), Math.min(c.end, span.end)]).filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let cur = null;
  for (const [a, b] of parts) {
    if (!cur || a > cur[1]) {
      if (cur) covered += cur[1] - cur[0];
      cur = [a, b];
    } else cur[1] = Math.max(cur[1], b);
  }
  if (cur) covered += cur[1] - cur[0];
  return span.duration - covered;
}

/**
 * The critical path: walking back from the end of the root, the child that finished last before
 * the current moment is what the parent waited for; the parent's own time fills the gaps.
 */
export function criticalPathSegments(root) {
  const segments = [];
  const visit = (span, until) => {
    let t = Math.min(span.end, until);
    const children = span.children.slice().sort((a, b) => b.end - a.end);
    for (const child of children) {
      if (child.start >= t || child.end <= span.start) continue;
      const childEnd = Math.min(child.end, t);
      if (childEnd < t) segments.push({ span, start: childEnd, end: t });
      visit(child, childEnd);
      t = Math.max(child.start, span.start);
      if (t <= span.start) break;
    }
    if (t > span.start) segments.push({ span, start: span.start, end: t });
  };
  visit(root, root.end);
  return segments.sort((a, b) => a.start - b.start);
}

function markCriticalPath(trace) {
  const root = trace.roots.slice().sort((a, b) => b.end - a.end || a.start - b.start)[0];
  trace.criticalPath = criticalPathSegments(root);
  for (const seg of trace.criticalPath) {
    seg.span.critical = true;
    seg.span.criticalSegments.push([seg.start, seg.end]);
  }
}

/** Stable structural keys: service + name along the path from the root, with an occurrence number. */
function structuralKeys(trace) {
  const keys = new Map();
  const visit = (span, prefix) => {
    const counts = new Map();
    for (const child of span.children) {
      const base = `${child.service}\u0000${child.name}`;
      const n = counts.get(base) || 0;
      counts.set(base, n + 1);
      const key = `${prefix}\u0001${base}#${n}`;
      keys.set(child, key);
      visit(child, key);
    }
  };
  const rootCounts = new Map();
  for (const root of trace.roots) {
    const base = `${root.service}\u0000${root.name}`;
    const n = rootCounts.get(base) || 0;
    rootCounts.set(base, n + 1);
    const key = `${base}#${n}`;
    keys.set(root, key);
    visit(root, key);
  }
  return keys;
}

/**
 * Two traces aligned by structure. Rows in tree order of the union: spans only in A, only in B,
 * and in both with their durations; `changed` when the duration moved by more than `threshold`
 * (a fraction) and 1 ms.
 */
export function compareTraces(a, b, threshold = 0.2) {
  const keysA = structuralKeys(a);
  const keysB = structuralKeys(b);
  const byKeyB = new Map([...keysB].map(([span, key]) => [key, span]));
  const rows = [];
  const matchedB = new Set();
  for (const span of a.spans) {
    const key = keysA.get(span);
    const other = byKeyB.get(key);
    if (other) matchedB.add(other);
    rows.push({ key, depth: span.depth, service: span.service, name: span.name, a: span, b: other || null });
  }
  for (const span of b.spans) {
    if (matchedB.has(span)) continue;
    rows.push({ key: keysB.get(span), depth: span.depth, service: span.service, name: span.name, a: null, b: span });
  }
  for (const row of rows) {
    if (!row.a) row.state = "only-b";
    else if (!row.b) row.state = "only-a";
    else {
      const delta = row.b.duration - row.a.duration;
      row.delta = delta;
      const base = Math.max(row.a.duration, 1);
      row.state = Math.abs(delta) > 1e6 && Math.abs(delta) / base > threshold ? (delta > 0 ? "slower" : "faster") : "same";
    }
  }
  // keep B-only spans next to their structural parent
  rows.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
  return rows;
}

export function formatDuration(nsValue) {
  const v = Math.max(0, nsValue);
  if (v === 0) return "0";
  if (v < 1e3) return `${v}ns`;
  if (v < 1e6) return `${(v / 1e3).toFixed(v < 1e4 ? 1 : 0)}µs`;
  if (v < 1e9) return `${(v / 1e6).toFixed(v < 1e7 ? 2 : 1)}ms`;
  return `${(v / 1e9).toFixed(2)}s`;
}

export function formatTime(nsBig) {
  const ms = Number(BigInt(nsBig) / 1000000n);
  return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
}

// --- logs (`/api/v1/traces/{id}/logs`, `/api/v1/logs`): OTLP log records in clew's JSON ---

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];

/** A record's level from its severity number (OpenTelemetry's ranges of four: 17-20 is error), or
 * "unset" when the sender gave none. */
export function severityLevel(log) {
  const n = Number(log.severityNumber) || 0;
  return n >= 1 && n <= 24 ? LEVELS[Math.floor((n - 1) / 4)] : "unset";
}

/** The severity as the sender wrote it, else its level's name. */
export function severityLabel(log) {
  const level = severityLevel(log);
  return log.severityText || (level === "unset" ? "" : level.toUpperCase());
}

/** When a record happened (BigInt ns): its time, or when the collector saw it if it had none. */
export function logTimeNs(log) {
  const time = BigInt(log.timeUnixNano || "0");
  return time > 0n ? time : BigInt(log.observedTimeUnixNano || "0");
}

/** A body as one line of text: a string as it is, a structured body as compact JSON. */
export function logBodyText(log) {
  const body = log.body;
  if (body === null || body === undefined) return "";
  return typeof body === "string" ? body : JSON.stringify(body);
}

/** Put a trace's logs (oldest first) on it: each with its offset from the trace's start (ns) and its
 * span when the trace has it; `trace.logsBySpan` by span id. */
export function attachLogs(trace, answer) {
  const logs = (answer && Array.isArray(answer.logs) ? answer.logs : []).map((log) => ({
    ...log,
    offset: Number(logTimeNs(log) - trace.startNs),
    span: (log.spanId && trace.byId.get(log.spanId.toLowerCase())) || null,
  }));
  logs.sort((a, b) => a.offset - b.offset);
  trace.logs = logs;
  trace.logsTruncated = Boolean(answer && answer.truncated);
  trace.logsBySpan = new Map();
  for (const log of logs) {
    if (!log.span) continue;
    const list = trace.logsBySpan.get(log.span.spanId);
    if (list) list.push(log);
    else trace.logsBySpan.set(log.span.spanId, [log]);
  }
  return trace;
}

/** A signed offset from the trace's start: "+12.0ms", or "-3.00ms" for a record before it. */
export function formatOffset(offset) {
  return offset < 0 ? `-${formatDuration(-offset)}` : `+${formatDuration(offset)}`;
}
