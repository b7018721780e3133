// Release comparison (/releases): one service's operations in a baseline and a candidate release
// (service.version, or any attribute), judged by /api/v1/compare/releases: latency and error
// changes with their tests, overlaid histograms, and example traces (the candidate's slow tail
// beside a typical baseline trace, each pair opening /compare). Below, "what changed": the
// attribute values over-represented among the service's slow or failed spans.

import { formatDuration } from "./model.js";
import { clear, getJSON, h, link, navigate, svg } from "./util.js";

const RANGES = [["1h", 3600], ["6h", 6 * 3600], ["24h", 86400], ["7d", 7 * 86400]];
const VERDICT = { slower: "slower", faster: "faster", more: "more errors", fewer: "fewer errors", unchanged: "no change", "too few spans": "too few spans" };

const ms = (v) => formatDuration(Math.round(v * 1e6));
const pct = (v) => `${(v * 100).toFixed(1)}%`;

export async function renderReleases(root) {
  const params = new URLSearchParams(location.search);
  const lookback = RANGES.find(([k]) => k === params.get("lookback")) || RANGES[1];
  const services = (await getJSON("/api/services")).data || [];
  const service = params.get("service") || "";
  const field = (name, label, extra = {}) => h("label", {}, `${label} `, h("input", { id: `release-${name}`, name, value: params.get(name) || extra.value || "", size: extra.size || 14, list: extra.list, "aria-label": label }));
  const form = h("form", { class: "toolbar", id: "release-form" },
    h("label", {}, "Service ", h("select", { id: "release-service", name: "service", "aria-label": "Service" },
      h("option", { value: "" }, "choose…"), services.map((s) => h("option", { value: s, selected: s === service }, s)))),
    field("attribute", "Attribute", { value: "service.version", size: 16 }),
    field("baseline", "Baseline", { list: "release-values" }),
    field("candidate", "Candidate", { list: "release-values" }),
    h("select", { id: "release-lookback", name: "lookback", "aria-label": "Time range" }, RANGES.map(([k]) => h("option", { value: k, selected: k === lookback[0] }, `Last ${k}`))),
    h("button", { type: "submit" }, "Compare"),
    h("datalist", { id: "release-values" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) next.set(k, String(v));
    navigate(`/releases?${next}`);
  });
  const out = h("div", { id: "release-result" });
  const changed = h("div", { id: "what-changed" });
  clear(root).append(h("h1", {}, "Releases"), form, out, changed);
  if (!service) {
    out.append(h("p", { class: "muted" }, "Choose a service, then the release to compare against (baseline) and the new one (candidate)."));
    return;
  }
  const end = Date.now() / 1000;
  const query = { service, attribute: params.get("attribute") || "service.version", baseline: params.get("baseline") || "", candidate: params.get("candidate") || "", start: end - lookback[1], end };
  const [answer, what] = await Promise.all([
    getJSON("/api/v1/compare/releases", query),
    getJSON("/api/v1/compare/attributes", { service, start: query.start, end }),
  ]);
  form.querySelector("#release-values").append(...answer.values.map((v) => h("option", { value: v.value }, `${v.spans} spans`)));
  drawWhatChanged(changed, what);
  if (!query.baseline || !query.candidate) {
    out.append(h("p", { class: "muted", id: "release-status" }, `${answer.attribute} values of ${service}: `,
      answer.values.map((v, i) => [i ? ", " : "", h("strong", {}, v.value), ` (${v.spans} spans)`])));
    return;
  }
  out.append(
    h("p", { id: "release-status" }, `${answer.regressions} regression${answer.regressions === 1 ? "" : "s"} in ${answer.operations.length} operation${answer.operations.length === 1 ? "" : "s"} of ${service}, ${answer.attribute} ${answer.baseline} → ${answer.candidate}.`),
    h("p", { class: "muted" }, `Latency: ${answer.test.latency}. Errors: ${answer.test.errors}. A change is reported when its adjusted p-value is under ${answer.test.alpha} and it moves the median or p95 by ${pct(answer.test.minLatencyChange)} (errors: ${pct(answer.test.minErrorChange)} points); at least ${answer.test.minSpans} spans a release.`),
    h("table", { class: "stats", id: "release-table" },
      h("thead", {}, h("tr", {}, ["Operation", "Spans (base / cand)", "p50", "p95", "p99", "Error rate", "Verdict", "Distribution", "Examples"].map((t) => h("th", {}, t)))),
      h("tbody", {}, answer.operations.map(row))));
}

function row(op) {
  const b = op.baseline;
  const c = op.candidate;
  const delta = (x, y) => `${ms(x)} → ${ms(y)}`;
  const verdicts = [op.latency.verdict, op.errors.verdict].filter((v) => v !== "unchanged" && v !== "too few spans");
  const verdict = verdicts.length ? verdicts.map((v) => VERDICT[v]).join(", ") : VERDICT[op.latency.verdict];
  return h("tr", { class: op.regression ? "regression" : "", dataset: { operation: op.operation, regression: String(op.regression) } },
    h("td", {}, op.operation),
    h("td", { class: "num" }, `${b.spans} / ${c.spans}`),
    h("td", { class: "num" }, delta(b.p50Ms, c.p50Ms)),
    h("td", { class: "num" }, delta(b.p95Ms, c.p95Ms)),
    h("td", { class: "num" }, delta(b.p99Ms, c.p99Ms)),
    h("td", { class: "num" }, `${pct(b.errorRate)} → ${pct(c.errorRate)}`),
    h("td", { class: op.regression ? "errors" : "", title: `latency p = ${op.latency.pValue.toPrecision(2)}, errors p = ${op.errors.pValue.toPrecision(2)} (Holm-adjusted)` }, verdict),
    h("td", {}, histogram(b.histogram, c.histogram)),
    h("td", {}, op.examples ? examples(op.examples) : ""));
}

/** The two releases' log2 duration histograms overlaid: the baseline as outlined bars, the
 * candidate filled. */
function histogram(base, cand) {
  const buckets = [...new Set([...base, ...cand].map((x) => x.leMs))].sort((x, y) => x - y);
  const width = 180;
  const height = 44;
  const w = width / Math.max(buckets.length, 1);
  const share = (list, le) => (list.find((x) => x.leMs === le) || { share: 0 }).share;
  const most = Math.max(...buckets.flatMap((le) => [share(base, le), share(cand, le)]), 1e-9);
  const bar = (le, i, list, cls) => {
    const v = share(list, le);
    const hgt = (v / most) * (height - 12);
    return svg("rect", { x: i * w + 1, y: height - 10 - hgt, width: Math.max(w - 2, 1), height: hgt, class: cls }, svg("title", {}, `≤ ${ms(le)}: ${pct(v)}`));
  };
  return svg("svg", { width, height, class: "release-histogram", role: "img", "aria-label": "duration histograms, baseline and candidate" },
    buckets.map((le, i) => bar(le, i, cand, "hist-candidate")),
    buckets.map((le, i) => bar(le, i, base, "hist-baseline")),
    svg("text", { x: 0, y: height - 1, class: "axis-label" }, buckets.length ? ms(buckets[0]) : ""),
    svg("text", { x: width, y: height - 1, class: "axis-label", "text-anchor": "end" }, buckets.length ? ms(buckets[buckets.length - 1]) : ""));
}

function examples(ex) {
  const typical = ex.baseline[0];
  return h("ul", { class: "release-examples" }, ex.candidate.map((e) => h("li", {},
    link(`/trace/${e.traceID}?span=${e.spanID}`, ms(e.durationMs)),
    typical ? [" · ", link(`/compare?a=${typical.traceID}&b=${e.traceID}`, h("span", { class: "compare-example" }, `vs typical ${ms(typical.durationMs)}`))] : null)));
}

function drawWhatChanged(container, what) {
  clear(container).append(
    h("h2", {}, "What changed"),
    h("p", { class: "muted" }, `Attribute values over-represented among ${what.service}'s ${what.selected} slow (over ${ms(what.slowerThanMs)}, its p95) or failed spans, against its ${what.rest} others.`),
    what.values.length ? h("table", { class: "stats", id: "what-changed-table" },
      h("thead", {}, h("tr", {}, ["Attribute", "Value", "Slow or failed", "Others", "Difference"].map((t) => h("th", {}, t)))),
      h("tbody", {}, what.values.map((v) => h("tr", { dataset: { attribute: v.attribute, value: v.value } },
        h("td", {}, v.attribute), h("td", {}, v.value),
        h("td", { class: "num" }, `${pct(v.selectedShare)} (${v.selected})`),
        h("td", { class: "num" }, `${pct(v.restShare)} (${v.rest})`),
        h("td", {}, h("span", { class: "diff-bar", style: { width: `${Math.round(v.difference * 120)}px` } }), ` +${pct(v.difference)}`)))))
      : h("p", { class: "muted" }, "Nothing stands out."));
}
