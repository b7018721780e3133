// The trace page: header, waterfall (virtualised rows, collapsible tree, critical path) or flame graph,
// and the detail panel of the selected span. Works on a stored trace or on a file opened in the browser.

import { bodyText, breakable, logDetails, severityBadge } from "./logs.js";
import { attachLogs, buildSkeleton, buildTrace, formatDuration, formatOffset, formatTime, logBodyText, logTimeNs, mergeDetails, severityLabel, severityLevel } from "./model.js";
import { authHeaders, clear, getJSON, h, link, navigate, serviceColor, sortableTable, valueText } from "./util.js";


const ROW = 26;
const VIEWS = ["waterfall", "flamegraph", "spans", "stats", "json"];
const OVERSCAN = 10;

export async function renderTrace(root, traceId) {
  const params = new URLSearchParams(location.search);
  const view = VIEWS.includes(params.get("view")) ? params.get("view") : "waterfall";
  let doc = null;
  let trace = null;
  let fromFile = null;
  const local = window.clewLocalTrace;
  let logs = null;
  if (location.hash === "#file" && local && local.traceId === traceId) {
    doc = local.doc;
    fromFile = local.name;
  } else {
    clear(root).append(h("div", { class: "status" }, "Loading trace…"));
    // the trace's logs, by its id whatever its size, fetched beside the trace
    logs = getJSON(`/api/v1/traces/${encodeURIComponent(traceId)}/logs`).catch((err) => ({ error: err }));
    try {
      // the skeleton first: a trace up to the server's size (`full_trace_spans`) is then fetched
      // whole; a bigger one opens from its skeleton and fetches each span's details when shown
      const skeleton = await getJSON(`/api/v1/traces/${encodeURIComponent(traceId)}/skeleton`);
      if (skeleton.full) doc = await getJSON(`/api/v1/traces/${encodeURIComponent(traceId)}`);
      else trace = buildSkeleton(skeleton);
    } catch (err) {
      clear(root).append(h("h1", {}, "Trace"), h("div", { class: "error", id: "trace-error" }, err.status === 404 ? `Trace ${traceId} not found.` : err.message));
      return;
    }
  }
  try {
    trace = trace || buildTrace(doc);
  } catch (err) {
    clear(root).append(h("div", { class: "error" }, err.message));
    return;
  }
  if (!fromFile) {
    // spans of other traces linking here, from a day around this one (back-references)
    const s = Number(trace.startNs / 1000000000n);
    try {
      const body = await getJSON(`/api/v1/traces/${encodeURIComponent(trace.traceId)}/linked-from`, { start: Math.max(0, s - 86400), end: s + 86400 });
      trace.linkedFrom = body.linkedFrom || [];
    } catch {
      trace.linkedFrom = [];
    }
  }
  // the trace is drawn now; its logs fill in when they come (the timeline, the badges, the details)
  trace.logsPending = Boolean(logs);
  const shown = showTrace(root, trace, doc, view, fromFile);
  if (logs) {
    const answer = await logs;
    trace.logsPending = false;
    if (answer.error) trace.logsError = answer.error.message;
    else attachLogs(trace, answer);
    shown.logsArrived();
  }
}

function showTrace(root, trace, doc, view, fromFile) {
  const rootSpan = trace.roots[0];
  const header = h("div", { class: "trace-header", id: "trace-header" },
    h("h1", {}, h("span", { class: "svc-dot", style: { background: serviceColor(rootSpan.service) } }), `${rootSpan.service}: ${rootSpan.name}`),
    h("dl", { class: "facts" },
      fact("Trace ID", trace.traceId, "fact-trace-id"),
      fact("Start", formatTime(trace.startNs), "fact-start"),
      fact("Duration", formatDuration(trace.duration), "fact-duration"),
      fact("Services", String(trace.services.length), "fact-services"),
      fact("Depth", String(trace.depth), "fact-depth"),
      fact("Spans", String(trace.spans.length), "fact-spans"),
      fact("Errors", String(trace.errors), "fact-errors"),
      trace.logs || trace.logsPending ? fact("Logs", trace.logs ? logsFact(trace, view) : "…", "fact-logs") : null,
      fromFile ? null : fact("Sampling", "…", "fact-sampling")));
  if (!fromFile) showSampling(header.querySelector("#fact-sampling"), trace.traceId);
  const permalink = `${location.origin}/trace/${trace.traceId}${view !== "waterfall" ? `?view=${view}` : ""}`;
  const download = h("a", { class: "button", id: "download-json", download: `trace-${trace.traceId}.json`, href: doc ? jsonBlob(doc) : "#" }, "Download JSON");
  if (!doc) {  // a skeleton: the whole document is fetched when asked for
    download.addEventListener("click", async (e) => {
      if (download.getAttribute("href") !== "#") return;
      e.preventDefault();
      download.textContent = "Preparing…";
      try {
        download.href = jsonBlob(await wholeTrace(trace));
        download.textContent = "Download JSON";
        download.click();
      } catch (err) {
        download.textContent = err.message;
      }
    });
  }
  const collapseSelect = h("select", { id: "collapse-service", "aria-label": "Collapse by service" }, h("option", { value: "" }, "Collapse service…"), trace.services.map((s) => h("option", { value: s }, s)));
  const expandAll = h("button", { type: "button", id: "expand-all" }, "Expand all");
  const depthSelect = h("select", { id: "collapse-depth", "aria-label": "Show down to depth" }, h("option", { value: "" }, "All depths"),
    Array.from({ length: Math.max(0, Math.min(trace.depth - 1, 12)) }, (_, i) => h("option", { value: String(i + 1) }, `Down to depth ${i + 1}`)));
  const criticalOnly = h("label", { class: "check" }, h("input", { type: "checkbox", id: "critical-only" }), " Critical path only");
  const find = h("input", { type: "search", id: "find", placeholder: "Find in trace", "aria-label": "Find in trace", value: new URLSearchParams(location.search).get("uiFind") || "" });
  const findCount = h("span", { class: "muted", id: "find-count" });
  const toolbar = h("div", { class: "toolbar" },
    link(`/trace/${trace.traceId}${fromFile ? "#file" : ""}`, h("span", { class: view === "waterfall" ? "tab active" : "tab", id: "tab-waterfall" }, "Waterfall")),
    link(`/trace/${trace.traceId}?view=flamegraph${fromFile ? "#file" : ""}`, h("span", { class: view === "flamegraph" ? "tab active" : "tab", id: "tab-flamegraph" }, "Flame graph")),
    link(`/trace/${trace.traceId}?view=spans${fromFile ? "#file" : ""}`, h("span", { class: view === "spans" ? "tab active" : "tab", id: "tab-spans" }, "Spans")),
    link(`/trace/${trace.traceId}?view=stats${fromFile ? "#file" : ""}`, h("span", { class: view === "stats" ? "tab active" : "tab", id: "tab-stats" }, "Statistics")),
    link(`/trace/${trace.traceId}?view=json${fromFile ? "#file" : ""}`, h("span", { class: view === "json" ? "tab active" : "tab", id: "tab-json" }, "JSON")),
    view === "waterfall" ? collapseSelect : null,
    view === "waterfall" ? expandAll : null,
    view === "waterfall" ? depthSelect : null,
    view === "waterfall" ? criticalOnly : null,
    view === "waterfall" ? find : null,
    view === "waterfall" ? findCount : null,
    h("a", { class: "button", id: "permalink", href: permalink }, "Permalink"),
    download,
    link(`/compare?a=${trace.traceId}`, h("span", { class: "button" }, "Compare…")),
    h("span", { class: "legend" }, h("span", { class: "legend-critical" }), "critical path"));
  const banner = fromFile ? h("div", { class: "banner", id: "file-banner" }, `Opened from ${fromFile}: shown in this browser only, not stored.`)
    : trace.skeleton ? h("div", { class: "banner", id: "skeleton-banner" }, `${trace.spans.length.toLocaleString("en")} spans: the trace opened from its skeleton (names, times, status); each span's attributes and events load when you select it, and find-in-trace looks at names, services and ids.`)
    : null;
  const warnings = trace.warnings.length ? h("ul", { class: "warnings", id: "warnings" }, trace.warnings.map((w) => h("li", {}, w))) : null;
  // shown once a span is selected: until then the waterfall has the whole width
  const detail = h("aside", { class: "detail empty", id: "span-detail" });
  const main = h("div", { class: "trace-main" });
  clear(root).append(...[header, banner, toolbar, warnings, h("div", { class: "trace-body" }, main, detail)].filter(Boolean));

  // the selected span is in the address (`?span=`), so a link can point at it
  let timeline = null;
  let shown = null;  // the span in the details
  const select = (span) => {
    shown = span;
    if (trace.currentLog && trace.currentLog.span !== span) trace.currentLog = null;
    showDetail(detail, span, trace);
    if (timeline) timeline.showSpan(span);
    if (!span.details) {
      getJSON(`/api/v1/traces/${encodeURIComponent(trace.traceId)}/spans/${span.spanId}`).then((one) => {
        mergeDetails(trace, span, one);
        if (detail.dataset.spanId === span.spanId) showDetail(detail, span, trace);
      }).catch((err) => {
        if (detail.dataset.spanId === span.spanId) detail.append(h("p", { class: "error" }, err.message));
      });
    }
    const url = new URL(location.href);
    url.searchParams.set("span", span.spanId);
    history.replaceState(history.state, "", url);
  };
  let wf = null;
  let drawTimeline = null;
  if (view === "flamegraph") {
    drawFlame(main, trace, select);
  } else if (view === "spans") {
    drawSpanTable(main, trace, fromFile);
  } else if (view === "stats") {
    drawStats(main, trace);
  } else if (view === "json") {
    drawJson(main, trace, doc, fromFile);
  } else {
    wf = waterfall(main, trace, select);
    drawTimeline = () => {
      timeline = logsTimeline(trace, (log) => {
        trace.currentLog = log;
        wf.reveal(log.span);
        document.getElementById("waterfall").scrollIntoView({ block: "nearest" });
      });
      return timeline.element;
    };
    if (trace.logs || trace.logsError) main.append(drawTimeline());
    else if (trace.logsPending) main.append(h("section", { class: "trace-logs", id: "trace-logs" }, h("p", { class: "status", id: "trace-logs-loading" }, "Loading logs…")));
    collapseSelect.addEventListener("change", () => { if (collapseSelect.value) wf.collapseService(collapseSelect.value); });
    expandAll.addEventListener("click", () => { collapseSelect.value = ""; depthSelect.value = ""; wf.expandAll(); });
    depthSelect.addEventListener("change", () => wf.collapseBelow(Number(depthSelect.value) || Infinity));
    criticalOnly.querySelector("input").addEventListener("change", (e) => wf.criticalOnly(e.target.checked));
    // a linked span, else the first error: a trace with errors opens on what went wrong
    const wanted = (new URLSearchParams(location.search).get("span") || "").toLowerCase();
    const first = trace.byId.get(wanted) || trace.spans.find((s) => s.error);
    if (first) wf.reveal(first);
    // find in trace (Jaeger's `uiFind`): matching rows marked, Enter goes to the next one
    let found = [];
    let at = -1;
    const search = () => {
      const text = find.value.trim().toLowerCase();
      found = text ? trace.spans.filter((s) => spanText(s).includes(text)) : [];
      at = -1;
      wf.mark(new Set(found));
      findCount.textContent = text ? `${found.length} match${found.length === 1 ? "" : "es"}` : "";
      const url = new URL(location.href);
      if (text) url.searchParams.set("uiFind", find.value.trim());
      else url.searchParams.delete("uiFind");
      history.replaceState(history.state, "", url);
    };
    find.addEventListener("input", search);
    find.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || !found.length) return;
      e.preventDefault();
      at = (at + (e.shiftKey ? found.length - 1 : 1)) % found.length;
      wf.reveal(found[at]);
      findCount.textContent = `${at + 1} of ${found.length}`;
    });
    if (find.value) search();
  }
  return {
    /** The trace's logs came (`trace.logs`), or could not (`trace.logsError`): fill them in. */
    logsArrived() {
      if (!root.contains(header)) return;  // another page is up
      const dd = header.querySelector("#fact-logs");
      if (dd && trace.logs) clear(dd).append(logsFact(trace, view));
      else if (dd) dd.parentElement.remove();
      if (wf) {
        wf.refresh();  // each span's count of logs
        const waiting = main.querySelector("#trace-logs");
        if (waiting) waiting.replaceWith(drawTimeline());
        if (shown) timeline.showSpan(shown);
      }
      if (shown) showDetail(detail, shown, trace);
    },
  };
}

function jsonBlob(doc) {
  return URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
}

/** The whole trace as OTLP/JSON, for a trace that opened from its skeleton. */
function wholeTrace(trace) {
  return getJSON(`/api/v1/traces/${encodeURIComponent(trace.traceId)}`);
}

/** What find-in-trace looks through: name, service, ids, attribute keys and values, resource, events. */
function spanText(s) {
  if (s.findText === undefined) {
    const kv = (rows) => rows.map((r) => `${r.key}=${valueText(r.value)}`).join(" ");
    s.findText = [s.name, s.service, s.spanId, kv(s.attributes), kv(s.resource), s.events.map((e) => e.name).join(" "), s.statusMessage]
      .join(" ").toLowerCase();
  }
  return s.findText;
}

// The tail sampler's decision: every trace is kept in full for the first hour, then only if a policy
// kept it (docs/sampling.md).
async function showSampling(dd, traceId) {
  try {
    const d = await getJSON(`/api/v1/traces/${encodeURIComponent(traceId)}/sampling`);
    dd.textContent = !d.decided ? "pending (every span is kept for the first hour)"
      : d.kept ? `kept by ${d.policies.join(", ")}`
      : "not kept: goes when the full-fidelity hour ends";
  } catch (err) {
    dd.textContent = "unknown";
  }
}

function fact(label, value, id) {
  return h("div", { class: "fact" }, h("dt", {}, label), h("dd", { id }, value));
}

function waterfall(container, trace, onSelect) {
  const collapsed = new Set();
  let visible = [];
  let selected = null;
  let marked = new Set();
  let onlyCritical = false;
  // the time window shown (ns from the trace's start): the whole trace, or what the minimap's
  // drag chose
  let from = 0;
  let to = Math.max(trace.duration, 1);
  const ticks = h("div", { class: "ruler-ticks" });
  const ruler = h("div", { class: "ruler" }, h("div", { class: "ruler-label" }, "Service / operation"), ticks);
  const reset = h("button", { type: "button", id: "zoom-reset", disabled: true, onclick: () => zoom(0, Math.max(trace.duration, 1)) }, "Reset zoom");
  const map = minimap(trace, (a, b) => zoom(a, b));
  const spacer = h("div", { class: "spacer" });
  const viewport = h("div", { class: "waterfall", id: "waterfall", tabindex: 0, role: "tree", "aria-label": "spans" }, spacer);
  container.append(h("div", { class: "minimap-bar" }, map.element, reset), ruler, viewport);
  const drawTicks = () => {
    clear(ticks).append(...[0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { class: "tick", style: { left: `${f * 100}%` } }, formatDuration(Math.round(from + (to - from) * f)))));
  };
  const zoom = (a, b) => {
    from = Math.max(0, Math.min(a, b));
    to = Math.max(from + 1, Math.max(a, b));
    reset.disabled = from === 0 && to >= trace.duration;
    map.show(from, to);
    drawTicks();
    paint(true);
  };
  drawTicks();

  const hidden = (span) => {
    for (let p = span.parent; p; p = p.parent) if (collapsed.has(p)) return true;
    return false;
  };
  const recompute = () => {
    visible = trace.spans.filter((s) => !hidden(s) && (!onlyCritical || s.critical));
    spacer.style.height = `${visible.length * ROW}px`;
    // with logs under it (or on their way), a short trace's waterfall is no taller than its rows
    if (trace.logsPending || (trace.logs && trace.logs.length)) {
      const fits = Math.max(visible.length, 4) * ROW + 2;
      viewport.style.height = `min(calc(100vh - 312px), ${fits}px)`;
      viewport.style.minHeight = `${Math.min(300, fits)}px`;
    } else {
      viewport.style.height = "";
      viewport.style.minHeight = "";
    }
    paint(true);
  };
  let first = -1;
  let last = -1;
  const paint = (force = false) => {
    const top = viewport.scrollTop;
    const height = viewport.clientHeight || 600;
    const from = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const to = Math.min(visible.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    if (!force && from === first && to === last) return;
    first = from;
    last = to;
    clear(spacer);
    for (let i = from; i < to; i++) spacer.append(row(visible[i], i));
  };
  const pct = (v) => `${((v - from) / (to - from)) * 100}%`;
  const width = (v) => `${(v / (to - from)) * 100}%`;
  const row = (span, i) => {
    const toggle = span.children.length
      ? h("button", { class: "toggle", type: "button", "aria-label": collapsed.has(span) ? "expand" : "collapse", onclick: (e) => { e.stopPropagation(); toggleSpan(span); } }, collapsed.has(span) ? "▸" : "▾")
      : h("span", { class: "toggle-space" });
    const bar = h("div", { class: `bar${span.error ? " bar-error" : ""}`, style: { left: pct(span.start), width: `max(2px, ${width(span.duration)})`, background: serviceColor(span.service) } });
    const critical = span.criticalSegments.map(([a, b]) => h("div", { class: "critical-seg", style: { left: pct(a), width: `max(2px, ${width(b - a)})` } }));
    // follows-from: a link to a span of this trace, drawn as a dashed line from where that span
    // ended to where this one starts
    const follows = span.links.map((l) => (l.traceId === trace.traceId ? trace.byId.get(l.spanId) : null)).filter(Boolean);
    const followLines = follows.map((f) => h("div", {
      class: "follows", title: `follows from ${f.service}: ${f.name}`,
      style: { left: pct(Math.min(f.end, span.start)), width: width(Math.abs(span.start - f.end)) },
    }));
    const events = span.events.map((e) => h("div", { class: "event-tick", style: { left: pct(e.time) }, title: e.name }));
    const duration = from <= span.end && span.end <= to ? h("span", { class: "span-duration", style: { left: `calc(${pct(span.end)} + 4px)` } }, formatDuration(span.duration)) : null;
    const classes = ["span-row"];
    if (span.critical) classes.push("critical");
    if (span.error) classes.push("error-row");
    if (selected === span) classes.push("selected");
    if (marked.has(span)) classes.push("match");
    return h("div", {
      class: classes.join(" "), role: "treeitem", style: { top: `${i * ROW}px` },
      dataset: { spanId: span.spanId, service: span.service, depth: String(span.depth) },
      onclick: () => choose(span),
    },
    h("div", { class: "span-label", style: { paddingLeft: `${Math.min(span.depth, 30) * 14 + 4}px` } },
      toggle,
      span.error ? h("span", { class: "error-mark", title: "error" }, "!") : null,
      h("span", { class: "svc", style: { borderLeftColor: serviceColor(span.service) } }, span.service),
      h("span", { class: "span-name" }, span.name),
      logBadge(trace, span),
      follows.map((f) => h("button", { type: "button", class: "follows-mark", title: `follows from ${f.service}: ${f.name}`, onclick: (e) => { e.stopPropagation(); api.reveal(f); } }, "↪ follows"))),
    h("div", { class: "span-timeline" }, h("div", { class: "span-track" }, followLines, bar, critical, events), duration));
  };
  const choose = (span) => {
    selected = span;
    paint(true);
    onSelect(span);
  };
  const toggleSpan = (span) => {
    if (collapsed.has(span)) collapsed.delete(span);
    else collapsed.add(span);
    recompute();
  };
  viewport.addEventListener("scroll", () => paint());
  viewport.addEventListener("keydown", (e) => {
    const at = selected ? visible.indexOf(selected) : -1;
    if (e.key === "ArrowDown" && at < visible.length - 1) choose(visible[at + 1]);
    else if (e.key === "ArrowUp" && at > 0) choose(visible[at - 1]);
    else if (e.key === "ArrowLeft" && selected && selected.children.length && !collapsed.has(selected)) toggleSpan(selected);
    else if (e.key === "ArrowRight" && selected && collapsed.has(selected)) toggleSpan(selected);
    else return;
    e.preventDefault();
    const y = visible.indexOf(selected) * ROW;
    if (y < viewport.scrollTop || y > viewport.scrollTop + viewport.clientHeight - ROW) viewport.scrollTop = y - viewport.clientHeight / 2;
  });
  recompute();
  const api = {
    /** Select `span`, expanding what hides it and scrolling it into view. */
    reveal(span) {
      for (let p = span.parent; p; p = p.parent) collapsed.delete(p);
      recompute();
      choose(span);
      const y = visible.indexOf(span) * ROW;
      viewport.scrollTop = Math.max(0, y - (viewport.clientHeight || 600) / 2);
    },
    /** Show spans down to `depth` (1: the roots), their deeper descendants collapsed. */
    collapseBelow(depth) {
      collapsed.clear();
      for (const s of trace.spans) if (s.depth >= depth - 1 && s.children.length) collapsed.add(s);
      recompute();
    },
    /** Only the spans on the critical path, or every span again. */
    criticalOnly(on) {
      onlyCritical = on;
      recompute();
    },
    /** Mark `spans` (find-in-trace matches). */
    mark(spans) {
      marked = spans;
      paint(true);
    },
    collapseService(service) {
      for (const s of trace.spans) if (s.service === service && s.children.length) collapsed.add(s);
      recompute();
    },
    expandAll() {
      collapsed.clear();
      recompute();
    },
    /** Draw the rows again (the trace's logs came: their counts). */
    refresh: recompute,
    zoom,
  };
  return api;
}

/**
 * The whole trace in miniature above the waterfall (every span a line, in tree order, in its
 * service's colour) with the shown window framed; dragging across it chooses the window, as in
 * Jaeger's. A canvas: 100,000 spans draw in one pass.
 */
function minimap(trace, onRange) {
  const canvas = h("canvas", { class: "minimap", id: "minimap", height: 48, "aria-label": "Trace minimap: drag to zoom into a time range" });
  const frame = h("div", { class: "minimap-window", id: "minimap-window" });
  const element = h("div", { class: "minimap-box" }, canvas, frame);
  const total = Math.max(trace.duration, 1);
  let shown = [0, total];
  const draw = () => {
    const w = canvas.clientWidth || 900;
    canvas.width = w;
    const ctx = canvas.getContext("2d");
    const n = trace.spans.length;
    const rowHeight = Math.max(48 / n, 0.5);
    trace.spans.forEach((s, i) => {
      ctx.fillStyle = serviceColor(s.service);
      ctx.fillRect((s.start / total) * w, (i / n) * 48, Math.max(1, (s.duration / total) * w), Math.max(rowHeight, 1));
    });
    place();
  };
  const place = () => {
    frame.style.left = `${(shown[0] / total) * 100}%`;
    frame.style.width = `${((shown[1] - shown[0]) / total) * 100}%`;
  };
  let dragFrom = null;
  const at = (e) => {
    const box = canvas.getBoundingClientRect();
    return Math.max(0, Math.min(1, (e.clientX - box.left) / box.width)) * total;
  };
  let before = shown;
  canvas.addEventListener("mousedown", (e) => { dragFrom = at(e); before = shown; e.preventDefault(); });
  canvas.addEventListener("mousemove", (e) => {
    if (dragFrom === null) return;
    shown = [Math.min(dragFrom, at(e)), Math.max(dragFrom, at(e))];
    place();
  });
  const finish = (e) => {
    if (dragFrom === null) return;
    const a = dragFrom;
    const b = at(e);
    dragFrom = null;
    if (Math.abs(b - a) > total / 1000) onRange(a, b);
    else {  // a click, not a drag: the frame goes back to the window shown
      shown = before;
      place();
    }
  };
  canvas.addEventListener("mouseup", finish);
  canvas.addEventListener("mouseleave", finish);
  requestAnimationFrame(draw);
  return {
    element,
    show(a, b) {
      shown = [a, b];
      place();
    },
  };
}

/** Jaeger's trace statistics: per service and operation, how many spans, their total, average,
 * shortest and longest duration, their self time and its share of the trace, and errors. Sortable. */
export function traceStats(trace) {
  const rows = new Map();
  for (const s of trace.spans) {
    const key = `${s.service}\u0000${s.name}`;
    let r = rows.get(key);
    if (!r) rows.set(key, (r = { service: s.service, operation: s.name, count: 0, total: 0, min: Infinity, max: 0, self: 0, errors: 0 }));
    r.count += 1;
    r.total += s.duration;
    r.min = Math.min(r.min, s.duration);
    r.max = Math.max(r.max, s.duration);
    r.self += s.selfTime;
    if (s.error) r.errors += 1;
  }
  const whole = Math.max(trace.duration, 1);
  return [...rows.values()].map((r) => ({ ...r, avg: r.total / r.count, share: r.self / whole }));
}

const STAT_COLUMNS = [
  ["service", "Service"], ["operation", "Operation"], ["count", "Spans"], ["total", "Total"], ["avg", "Avg"],
  ["min", "Min"], ["max", "Max"], ["self", "Self time"], ["share", "Self % of trace"], ["errors", "Errors"],
];

function drawStats(container, trace) {
  const cell = (r, key) => {
    if (key === "service") return h("td", {}, h("span", { class: "svc", style: { borderLeftColor: serviceColor(r.service) } }, r.service));
    if (key === "operation") return h("td", {}, r.operation);
    if (key === "count" || key === "errors") return h("td", { class: "num" }, String(r[key]));
    if (key === "share") return h("td", { class: "num" }, `${(r.share * 100).toFixed(1)}%`);
    return h("td", { class: "num" }, formatDuration(r[key]));
  };
  container.append(sortableTable("trace-stats", STAT_COLUMNS, traceStats(trace), "self", (r) => h("tr", {}, STAT_COLUMNS.map(([key]) => cell(r, key)))));
}

const SPAN_COLUMNS = [["service", "Service"], ["name", "Operation"], ["start", "Start"], ["duration", "Duration"], ["selfTime", "Self time"], ["error", "Error"]];

/** Every span as a row, sortable by service, start, duration or self time; a row opens the span. */
function drawSpanTable(container, trace, fromFile) {
  container.append(sortableTable("span-table", SPAN_COLUMNS, trace.spans.slice(), "selfTime", (s) => h("tr", { dataset: { spanId: s.spanId } },
    h("td", {}, h("span", { class: "svc", style: { borderLeftColor: serviceColor(s.service) } }, s.service)),
    h("td", {}, link(`/trace/${trace.traceId}?span=${s.spanId}${fromFile ? "#file" : ""}`, s.name)),
    h("td", { class: "num" }, `+${formatDuration(s.start)}`),
    h("td", { class: "num" }, formatDuration(s.duration)),
    h("td", { class: "num" }, formatDuration(s.selfTime)),
    h("td", { class: s.error ? "errors" : "" }, s.error ? "error" : ""))));
}

/** The trace as stored, as text: OTLP/JSON (what Download saves) or Jaeger's JSON (its API's). */
function drawJson(container, trace, doc, fromFile) {
  const pre = h("pre", { class: "raw-json", id: "raw-json" });
  const format = h("select", { id: "json-format", "aria-label": "JSON format" },
    h("option", { value: "otlp" }, "OTLP/JSON"),
    fromFile ? null : h("option", { value: "jaeger" }, "Jaeger JSON"));
  const show = async () => {
    if (format.value === "otlp") {
      if (!doc) {
        pre.textContent = "Loading…";
        try {
          doc = await wholeTrace(trace);
        } catch (err) {
          pre.textContent = err.message;
          return;
        }
      }
      pre.textContent = JSON.stringify(doc, null, 2);
      return;
    }
    pre.textContent = "Loading…";
    try {
      pre.textContent = JSON.stringify(await getJSON(`/api/traces/${encodeURIComponent(trace.traceId)}`), null, 2);
    } catch (err) {
      pre.textContent = err.message;
    }
  };
  format.addEventListener("change", show);
  container.append(h("div", { class: "toolbar" }, format), pre);
  show();
}

function drawFlame(container, trace, onSelect) {
  const total = Math.max(trace.duration, 1);
  const levelHeight = 22;
  const box = h("div", { class: "flame", id: "flamegraph", style: { height: `${trace.depth * levelHeight + 4}px` } });
  const width = container.clientWidth || 900;
  for (const span of trace.spans) {
    const w = (span.duration / total) * width;
    if (w < 0.5) continue;
    box.append(h("div", {
      class: `flame-block${span.error ? " flame-error" : ""}${span.critical ? " critical" : ""}`,
      dataset: { spanId: span.spanId },
      title: `${span.service}: ${span.name}\n${formatDuration(span.duration)} (self ${formatDuration(span.selfTime)})`,
      style: { left: `${(span.start / total) * 100}%`, width: `${(span.duration / total) * 100}%`, top: `${span.depth * levelHeight}px`, background: serviceColor(span.service) },
      onclick: () => onSelect(span),
    }, w > 40 ? `${span.service}: ${span.name} · self ${formatDuration(span.selfTime)}` : ""));
  }
  container.append(h("p", { class: "muted" }, "Widths by duration; each block's own (self) time is in its label and tooltip. Click a block for details."), box);
}

function kvTable(rows, id) {
  if (!rows.length) return h("p", { class: "muted" }, "none");
  return h("table", { class: "kv", id }, h("tbody", {}, rows.map(({ key, value }) => h("tr", {}, h("th", {}, breakable(key)), h("td", {}, valueText(value))))));
}

function showDetail(panel, span, trace) {
  const linkItems = span.links.map((l) => {
    const item = h("li", {}, h("span", { class: "mono" }, `${l.traceId} / ${l.spanId}`), kvTable(l.attributes));
    // clickable, and named by the span it points at, only when the linked trace is stored
    if (l.traceId !== trace.traceId) {
      fetch(`/api/v1/traces/${l.traceId}/spans/${l.spanId}`, { method: "GET", headers: authHeaders() }).then(async (r) => {
        if (!r.ok) return;
        let named = null;
        try {
          const target = buildTrace(await r.json()).spans[0];
          if (target) named = `${target.service}: ${target.name}`;
        } catch {
          named = null;
        }
        const label = h("span", {}, h("span", { class: "mono" }, `${l.traceId} / ${l.spanId}`), named ? h("span", { class: "link-name" }, ` ${named}`) : null);
        item.replaceChild(link(`/trace/${l.traceId}?span=${l.spanId}`, label), item.firstChild);
      }).catch(() => {});
    }
    return item;
  });
  const backs = (trace.linkedFrom || []).filter((b) => b.linkedSpanID === span.spanId);
  panel.dataset.spanId = span.spanId;
  panel.classList.remove("empty");
  clear(panel).append(...[
    h("h2", { id: "detail-name" }, span.name),
    h("dl", { class: "facts small" },
      fact("Service", span.service, "detail-service"),
      fact("Kind", span.kind, "detail-kind"),
      fact("Span ID", span.spanId, "detail-span-id"),
      fact("Parent", span.parentId || "(root)", "detail-parent"),
      fact("Start", `+${formatDuration(span.start)}`, "detail-start"),
      fact("Duration", formatDuration(span.duration), "detail-duration"),
      fact("Self time", formatDuration(span.selfTime), "detail-self"),
      fact("Status", span.statusMessage ? `${span.statusCode}: ${span.statusMessage}` : span.statusCode, "detail-status"),
      span.critical ? fact("Critical path", "yes", "detail-critical") : null),
    span.orphan ? h("p", { class: "warning" }, "Orphan: its parent is not in this trace.") : null,
    span.skew ? h("p", { class: "warning" }, `Outside its parent's time by ${formatDuration(span.skewNs)}: clock skew between hosts?`) : null,
    span.details ? null : h("p", { class: "status", id: "detail-loading" }, `Loading ${span.counts.attributes} attributes and ${span.counts.events} events…`),
    ...span.events.filter((e) => e.name === "exception").map(exceptionBlock),
    h("h3", {}, "Attributes"), kvTable(span.attributes, "detail-attributes"),
    h("h3", {}, "Resource"), kvTable(span.resource, "detail-resource"),
    h("h3", {}, `Events (${span.events.length})`),
    span.events.length ? h("ul", { class: "events", id: "detail-events" }, span.events.map((e) => h("li", {}, h("strong", {}, e.name), ` +${formatDuration(e.time)}`, kvTable(e.attributes)))) : h("p", { class: "muted" }, "none"),
    ...spanLogs(trace, span),
    h("h3", {}, `Links (${span.links.length})`),
    span.links.length ? h("ul", { class: "links", id: "detail-links" }, linkItems) : h("p", { class: "muted" }, "none"),
    backs.length ? h("h3", {}, `Linked from (${backs.length})`) : null,
    backs.length ? h("ul", { class: "links", id: "detail-linked-from" }, backs.map((b) =>
      h("li", {}, link(`/trace/${b.traceID}?span=${b.spanID}`, h("span", {}, `${b.service}: ${b.name}`)), h("span", { class: "mono muted" }, ` ${b.traceID.slice(0, 7)}`)))) : null,
    h("h3", {}, "Instrumentation scope"),
    h("p", { id: "detail-scope", class: span.scope.name ? "" : "muted" }, span.scope.name ? `${span.scope.name}${span.scope.version ? ` ${span.scope.version}` : ""}` : "not named by the sender"),
    span.scope.attributes.length ? kvTable(span.scope.attributes) : null,
  ].filter(Boolean));
  const current = panel.querySelector(".log-item.current");
  if (current) panel.scrollTop = Math.max(0, current.offsetTop - panel.clientHeight / 3);
}

// --- the trace's logs (/api/v1/traces/{id}/logs): a count on each span that has some, a section in
// the span's details, and the timeline of them all under the waterfall ---

const LEVEL_RANK = { unset: 0, trace: 1, debug: 2, info: 3, warn: 4, error: 5, fatal: 6 };
const DETAIL_LOGS = 500;  // drawn in a span's details; the timeline has them all
const TIMELINE_ROWS = 1000;  // drawn at first; "Show all" draws the rest
const FILTER_AT_ONCE = 300;  // up to this many logs, the filter redraws at every key

function logsFact(trace, view) {
  const text = `${trace.logs.length.toLocaleString("en")}${trace.logsTruncated ? "+" : ""}`;
  if (!trace.logs.length || view !== "waterfall") return text;
  return h("a", { href: "#trace-logs", onclick: (e) => { e.preventDefault(); document.getElementById("trace-logs").scrollIntoView({ block: "start" }); } }, text);
}

/** How many log records a span has, in the waterfall: red when one of them is an error. */
function logBadge(trace, span) {
  const logs = trace.logsBySpan && trace.logsBySpan.get(span.spanId);
  if (!logs) return null;
  const loud = logs.some((l) => LEVEL_RANK[severityLevel(l)] >= LEVEL_RANK.error);
  const label = `${logs.length} log${logs.length === 1 ? "" : "s"}`;
  return h("span", { class: `log-badge${loud ? " log-badge-error" : ""}`, title: `${label}${loud ? ", with errors" : ""}` }, label);
}

/** The span's own logs, oldest first, in its details. */
function spanLogs(trace, span) {
  if (trace.logsPending) return [h("h3", { id: "detail-logs-title" }, "Logs"), h("p", { class: "status", id: "detail-logs-loading" }, "Loading…")];
  if (!trace.logs) return [];
  const logs = trace.logsBySpan.get(span.spanId) || [];
  if (!logs.length) return [h("h3", { id: "detail-logs-title" }, "Logs (0)"), h("p", { class: "muted", id: "detail-logs-none" }, "none")];
  return [
    h("h3", { id: "detail-logs-title" }, `Logs (${logs.length})`),
    h("ul", { class: "span-logs", id: "detail-logs" }, logs.slice(0, DETAIL_LOGS).map((log) => h("li", {
      class: `log-item level-${severityLevel(log)}${trace.currentLog === log ? " current" : ""}`,
      title: formatTime(logTimeNs(log)),
    }, h("span", { class: "log-offset mono" }, formatOffset(log.offset)), " ", severityBadge(log), " ", bodyText(log), logDetails(log)))),
    logs.length > DETAIL_LOGS ? h("p", { class: "muted" }, `and ${logs.length - DETAIL_LOGS} more: the trace's Logs under the waterfall has them all`) : null,
  ].filter(Boolean);
}

function logText(log) {
  if (log.findText === undefined) {
    log.findText = [logBodyText(log), log.service, severityLabel(log), log.span ? log.span.name : "", log.spanId,
      ...Object.entries(log.attributes || {}).map(([k, v]) => `${k}=${valueText(v)}`)].join(" ").toLowerCase();
  }
  return log.findText;
}

/** Every log of the trace in time order, across its spans; a row selects its span. */
function logsTimeline(trace, onPick) {
  const section = h("section", { class: "trace-logs", id: "trace-logs" });
  const api = { element: section, showSpan() {} };
  if (trace.logsError) {
    section.append(h("p", { class: "error", id: "trace-logs-error" }, `Logs could not be loaded: ${trace.logsError}`));
    return api;
  }
  const logs = trace.logs;
  if (!logs.length) {
    section.append(h("p", { class: "muted", id: "trace-logs-none" }, "No logs for this trace."));
    return api;
  }
  const levels = new Map();
  for (const log of logs) levels.set(severityLevel(log), (levels.get(severityLevel(log)) || 0) + 1);
  const summary = Object.keys(LEVEL_RANK).reverse().filter((l) => levels.has(l))
    .map((l) => h("span", { class: `sev sev-${l}` }, `${levels.get(l)} ${l}`));
  const filter = h("input", { type: "search", id: "trace-logs-filter", placeholder: "Filter logs", "aria-label": "Filter logs" });
  const least = h("select", { id: "trace-logs-level", "aria-label": "Lowest severity shown" },
    h("option", { value: "" }, "All levels"),
    ["debug", "info", "warn", "error"].map((l) => h("option", { value: l }, `${l} and above`)));
  const count = h("span", { class: "muted", id: "trace-logs-count" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", id: "trace-logs-more", hidden: true });
  let limit = TIMELINE_ROWS;
  let selectedSpan = null;
  const row = (log) => h("tr", {
    class: `log-row level-${severityLevel(log)}${log.span ? " linked" : ""}${log.span && log.span === selectedSpan ? " of-selected" : ""}`,
    dataset: { spanId: log.spanId || "", service: log.service || "" },
    title: log.span ? `${log.span.service}: ${log.span.name} (click to select the span)` : undefined,
    tabindex: log.span ? 0 : undefined,
    onclick: log.span ? (e) => { if (!e.target.closest("details")) onPick(log); } : undefined,
    onkeydown: log.span ? (e) => { if (e.key === "Enter" && e.target === e.currentTarget) onPick(log); } : undefined,
  },
  h("td", { class: "num mono log-offset shrink", title: formatTime(logTimeNs(log)) }, formatOffset(log.offset)),
  h("td", { class: "shrink" }, severityBadge(log)),
  h("td", { class: "shrink" }, log.service ? h("span", { class: "svc", style: { borderLeftColor: serviceColor(log.service) } }, log.service) : ""),
  h("td", { class: "log-span" }, log.span ? log.span.name
    : log.spanId ? h("span", { class: "muted mono", title: "this span is not in the trace" }, log.spanId)
    : h("span", { class: "muted", title: "no span: logged outside one" }, "—")),
  h("td", { class: "log-body-cell" }, bodyText(log), logDetails(log)));
  const paint = () => {
    const text = filter.value.trim().toLowerCase();
    const floor = LEVEL_RANK[least.value] || 0;
    const shown = logs.filter((l) => LEVEL_RANK[severityLevel(l)] >= floor && (!text || logText(l).includes(text)));
    clear(tbody).append(...shown.slice(0, limit).map(row));
    count.textContent = shown.length === logs.length ? "" : `${shown.length} of ${logs.length}`;
    more.hidden = shown.length <= limit;
    more.textContent = `Show all ${shown.length.toLocaleString("en")}`;
  };
  // a long trace's timeline is drawn again once the typing pauses, not at every key: after "Show
  // all", thousands of rows take a second or more to draw
  let typing = 0;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    if (logs.length <= FILTER_AT_ONCE) paint();
    else typing = setTimeout(paint, 250);
  });
  least.addEventListener("change", () => { clearTimeout(typing); paint(); });
  more.addEventListener("click", () => { clearTimeout(typing); limit = Infinity; paint(); });
  section.append(
    h("h2", { class: "trace-logs-title" }, `Logs (${logs.length.toLocaleString("en")}${trace.logsTruncated ? ", the first" : ""})`, h("span", { class: "log-levels" }, summary)),
    h("div", { class: "toolbar" }, filter, least, count),
    h("table", { class: "stats logs-table", id: "trace-logs-table" },
      h("thead", {}, h("tr", {}, ["Offset", "Severity", "Service", "Span", "Body"].map((t) => h("th", {}, t)))),
      tbody),
    more);
  paint();
  api.showSpan = (span) => {
    selectedSpan = span;
    for (const tr of tbody.children) tr.classList.toggle("of-selected", tr.dataset.spanId === span.spanId && Boolean(span.spanId));
  };
  return api;
}

/** An exception event (OpenTelemetry's semantic conventions) as the error it was: type, message and
 * the stack trace as preformatted text. */
function exceptionBlock(event) {
  const value = (key) => {
    const found = event.attributes.find((a) => a.key === key);
    return found ? valueText(found.value) : "";
  };
  const type = value("exception.type");
  const message = value("exception.message");
  const stack = value("exception.stacktrace");
  return h("div", { class: "exception" },
    h("p", {}, h("strong", {}, type || "exception"), message ? `: ${message}` : ""),
    stack ? h("pre", { class: "stacktrace" }, stack) : null);
}

/** "Open file": show an OTLP/JSON trace from disk without storing it. */
export async function openTraceFile(file) {
  let doc;
  try {
    doc = JSON.parse(await file.text());
  } catch (err) {
    throw new Error(`${file.name}: not JSON (${err.message})`);
  }
  let trace;
  try {
    trace = buildTrace(doc);
  } catch (err) {
    throw new Error(`${file.name}: not an OTLP/JSON trace (${err.message})`);
  }
  window.clewLocalTrace = { doc, name: file.name, traceId: trace.traceId };
  navigate(`/trace/${trace.traceId}#file`);
}
