// Charts over time, shared by the search page (a metrics query), the monitor page (their series as
// lines) and the logs page (its volume as stacked bars): one frame, the value axis up the left and
// the time axis along the foot.

import { clear, h, navigate, serviceColor, svg, valueText } from "./util.js";

function labelText(value) {  // an OTLP AnyValue, as Tempo's series labels carry them
  const v = value?.stringValue ?? value?.intValue ?? value?.doubleValue ?? value?.boolValue;
  return v === undefined ? valueText(value) : String(v);
}

function seriesName(series) {
  return series.labels.map((l) => `${l.key}=${labelText(l.value)}`).join(", ");
}

/** A time (ms) as local time, with the seconds over a short range and the day over a long one. */
function timeText(ms, span, seconds = span < 600e3) {
  return new Date(ms).toLocaleString([], {
    ...(span > 36 * 3600e3 ? { month: "short", day: "numeric" } : {}),
    hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}),
  });
}

/** The frame of a chart in `container`'s width: `most` at the top of the value axis, 0 at its foot,
 * and from `t0` to `t1` (ms) along it; `x` and `y` place a time and a value. */
function frame(container, t0, t1, most, format, { height = 200, ...attrs }) {
  const width = Math.max(container.clientWidth || 800, 400);
  const pad = 40;
  const left = pad;
  const right = width - pad / 2;
  const top = pad / 2;
  const bottom = height - pad / 2;
  const x = (ms) => left + ((ms - t0) / Math.max(t1 - t0, 1)) * (right - left);
  const y = (v) => bottom - (v / most) * (bottom - top);
  const chart = svg("svg", { width, height, class: "scatter-plot", role: "img", ...attrs },
    svg("line", { x1: left, y1: bottom, x2: right, y2: bottom, class: "axis" }),
    svg("text", { x: 4, y: 12, class: "axis-label" }, format(most)),
    svg("text", { x: 4, y: bottom, class: "axis-label" }, "0"),
    [t0, (t0 + t1) / 2, t1].map((t, i) => svg("text", { x: x(t), y: height - 2, class: "axis-label time-tick", "text-anchor": ["start", "middle", "end"][i] },
      timeText(t, t1 - t0))));
  return { chart, x, y, left, right, top, bottom };
}

/**
 * A metrics query's series over time (Tempo's answer to /api/v1/metrics/query_range): one line each
 * (stable colours by name), a legend, and each point's exemplar as a dot that opens its trace.
 * `format` writes a value for the axis (durations come in seconds).
 */
export function drawSeries(container, series, t0, t1, { id = "metrics-chart", format = (v) => v.toPrecision(3) } = {}) {
  clear(container);
  if (!series.length) return;
  const values = series.flatMap((s) => s.samples.map((p) => p.value));
  const most = Math.max(...values, 1e-9);
  const { chart, x, y } = frame(container, t0, t1, most, format, { id, "aria-label": "metrics over time" });
  const legend = h("ul", { class: "series-legend", id: `${id.replace(/-chart$/, "")}-legend` });
  const dots = [];  // drawn over every line, so each can be clicked
  for (const s of series) {
    const name = seriesName(s);
    const colour = serviceColor(name);
    const points = s.samples.map((p) => `${x(Number(p.timestampMs)).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, fill: "none", stroke: colour, "stroke-width": 2, class: "series", "data-series": name }, svg("title", {}, name)));
    for (const e of s.exemplars || []) {
      const trace = e.labels.find((l) => l.key === "trace:id");
      const sample = s.samples.find((p) => p.timestampMs === e.timestampMs);
      if (!trace || !sample) continue;
      const id = labelText(trace.value);
      dots.push(svg("circle", { cx: x(Number(e.timestampMs)), cy: y(sample.value), r: 3.5, fill: colour, class: "exemplar", "data-trace-id": id, tabindex: 0,
        onclick: () => navigate(`/trace/${id}`), onkeydown: (ev) => { if (ev.key === "Enter") navigate(`/trace/${id}`); } },
        svg("title", {}, `${name}: an example trace`)));
    }
    legend.append(h("li", {}, h("span", { class: "swatch", style: { background: colour } }), name));
  }
  chart.append(...dots);
  container.append(chart, legend);
}

/**
 * Counts over time as stacked bars (the logs page's volume). Bucket i counts [start + i·step,
 * start + (i+1)·step) ms, drawn clipped to [t0, t1]; `stacks` go bottom first, each
 * `{ key, counts, className }`. A bucket's title gives its time and counts. A click on a bucket, or
 * a drag across the chart, calls `onRange(fromMs, toMs)`.
 */
export function drawStacks(container, { start, step, buckets, stacks }, t0, t1, { id = "stacks-chart", label = "counts over time", height = 120, onRange = null } = {}) {
  clear(container);
  const totals = Array.from({ length: buckets }, (_, i) => stacks.reduce((n, s) => n + (s.counts[i] || 0), 0));
  const most = totals.reduce((a, b) => Math.max(a, b), 1);
  const { chart, x, y, left, right, top, bottom } = frame(container, t0, t1, most, (v) => v.toLocaleString("en"), { id, height, "aria-label": label });
  chart.dataset.from = String(t0);
  chart.dataset.to = String(t1);
  const area = svg("rect", { class: "plot-area", x: left, y: top, width: right - left, height: bottom - top });
  const brush = svg("rect", { class: "brush", x: left, y: top, width: 0, height: bottom - top, visibility: "hidden" });
  chart.append(area);
  const span = (i) => [Math.max(t0, start + i * step), Math.min(t1, start + (i + 1) * step)];
  for (let i = 0; i < buckets; i++) {
    if (!totals[i]) continue;
    const [a, b] = span(i);
    const x0 = x(a);
    const w = Math.max(1, x(b) - x0 - (x(b) - x0 > 3 ? 1 : 0));  // a pixel between neighbours
    const lines = stacks.filter((s) => s.counts[i]).map((s) => `${s.counts[i].toLocaleString("en")} ${s.key}`);
    const bucket = svg("g", { class: "stack-bucket", tabindex: 0, "data-start": a, "data-end": b, "data-total": totals[i],
      onkeydown: (e) => { if (e.key === "Enter" && onRange) onRange(a, b); } },
    svg("title", {}, `${timeText(a, t1 - t0, true)} – ${timeText(b, t1 - t0, true)}\n${lines.join("\n")}`),
    svg("rect", { class: "stack-hit", x: x0, y: top, width: w, height: bottom - top }));
    let base = 0;
    for (const s of stacks) {
      const n = s.counts[i] || 0;
      if (!n) continue;
      const y0 = y(base);
      const y1 = Math.min(y(base + n), y0 - 1);  // one record still shows
      bucket.append(svg("rect", { class: `stack-bar ${s.className || ""}`, x: x0, y: y1, width: w, height: y0 - y1, "data-stack": s.key, "data-count": n }));
      base += n;
    }
    chart.append(bucket);
  }
  chart.append(brush);
  container.append(chart);
  if (!onRange) return;
  // a drag across the chart chooses a range; a click, the bucket under it
  const at = (clientX) => {
    const box = area.getBoundingClientRect();
    return t0 + Math.max(0, Math.min(1, (clientX - box.left) / box.width)) * (t1 - t0);
  };
  chart.addEventListener("mousedown", (down) => {
    if (down.button !== 0) return;
    down.preventDefault();
    const from = at(down.clientX);
    const move = (e) => {
      const [a, b] = [from, at(e.clientX)].sort((p, q) => p - q);
      brush.setAttribute("x", x(a));
      brush.setAttribute("width", x(b) - x(a));
      brush.setAttribute("visibility", "visible");
    };
    const up = (e) => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      brush.setAttribute("visibility", "hidden");
      if (Math.abs(e.clientX - down.clientX) >= 4) {
        const [a, b] = [from, at(e.clientX)].sort((p, q) => p - q);
        onRange(a, b);
        return;
      }
      const i = Math.floor((at(e.clientX) - start) / step);
      if (totals[i]) onRange(...span(i));
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  });
}
