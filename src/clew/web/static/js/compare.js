// Two traces side by side, aligned by structure (service and operation along the path from the
// root): spans only in one trace, and spans that got slower or faster, stand out; each row draws
// the span's bar in A and in B on one time scale, a waterfall diff.

import { buildTrace, compareTraces, formatDuration } from "./model.js";
import { clear, getJSON, h, link, navigate, serviceColor } from "./util.js";

async function load(id) {
  return buildTrace(await getJSON(`/api/v1/traces/${encodeURIComponent(id)}`));
}

export async function renderCompare(root) {
  const params = new URLSearchParams(location.search);
  const a = params.get("a") || "";
  const b = params.get("b") || "";
  const inputA = h("input", { id: "compare-a", value: a, placeholder: "trace id A", size: 34, "aria-label": "Trace A" });
  const inputB = h("input", { id: "compare-b", value: b, placeholder: "trace id B", size: 34, "aria-label": "Trace B" });
  const form = h("form", { class: "toolbar", id: "compare-form" }, inputA, " vs ", inputB, h("button", { type: "submit" }, "Compare"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    navigate(`/compare?a=${encodeURIComponent(inputA.value.trim())}&b=${encodeURIComponent(inputB.value.trim())}`);
  });
  const out = h("div", { id: "compare-result" });
  clear(root).append(h("h1", {}, "Compare traces"), form, out);
  if (!a || !b) {
    out.append(h("p", { class: "muted" }, "Give two trace ids, or tick two traces in the search results."));
    return;
  }
  let ta;
  let tb;
  try {
    [ta, tb] = await Promise.all([load(a), load(b)]);
  } catch (err) {
    out.append(h("div", { class: "error", id: "compare-error" }, err.message));
    return;
  }
  const rows = compareTraces(ta, tb);
  const scale = Math.max(ta.duration, tb.duration, 1);
  const pct = (v) => `${(v / scale) * 100}%`;
  const track = (span, side, state) => h("td", { class: "cmp-track-cell" }, h("div", { class: "cmp-track" },
    span ? h("div", {
      class: `cmp-bar cmp-bar-${side}${state === "slower" || state === "faster" ? ` cmp-bar-${state}` : ""}`,
      title: `${side.toUpperCase()}: +${formatDuration(span.start)}, ${formatDuration(span.duration)}`,
      style: { left: pct(span.start), width: `max(2px, ${pct(span.duration)})`, background: serviceColor(span.service) },
    }) : null));
  const counts = { "only-a": 0, "only-b": 0, slower: 0, faster: 0, same: 0 };
  for (const r of rows) counts[r.state] += 1;
  out.append(
    h("p", { id: "compare-summary" },
      "A ", link(`/trace/${ta.traceId}`, ta.traceId.slice(0, 12)), ` ${formatDuration(ta.duration)}, ${ta.spans.length} spans · `,
      "B ", link(`/trace/${tb.traceId}`, tb.traceId.slice(0, 12)), ` ${formatDuration(tb.duration)}, ${tb.spans.length} spans · `,
      `${counts["only-a"]} only in A, ${counts["only-b"]} only in B, ${counts.slower} slower, ${counts.faster} faster`),
    h("table", { class: "compare", id: "compare-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "span"), h("th", {}, "A"), h("th", {}, "B"), h("th", {}, "change"),
        h("th", { class: "cmp-track-cell" }, `A (0 – ${formatDuration(scale)})`), h("th", { class: "cmp-track-cell" }, `B (0 – ${formatDuration(scale)})`))),
      h("tbody", {}, rows.map((r) => h("tr", { class: `cmp-${r.state}`, dataset: { state: r.state, name: r.name, service: r.service } },
        h("td", { style: { paddingLeft: `${r.depth * 14 + 6}px` } }, h("span", { class: "svc", style: { borderLeftColor: serviceColor(r.service) } }, r.service), " ", r.name),
        h("td", {}, r.a ? formatDuration(r.a.duration) : "—"),
        h("td", {}, r.b ? formatDuration(r.b.duration) : "—"),
        h("td", {}, r.state === "only-a" ? "only in A" : r.state === "only-b" ? "only in B" : `${r.delta >= 0 ? "+" : "−"}${formatDuration(Math.abs(r.delta))}${r.state === "same" ? "" : ` (${r.state})`}`),
        track(r.a, "a", r.state),
        track(r.b, "b", r.state)))))
  );
}
