// Charts of TraceQL metrics series, shared by the search page (a metrics query) and the monitor page.

import { clear, h, navigate, serviceColor, svg, valueText } from "./util.js";

function labelText(value) {  // an OTLP AnyValue, as Tempo's series labels carry them
  const v = value?.stringValue ?? value?.intValue ?? value?.doubleValue ?? value?.boolValue;
  return v === undefined ? valueText(value) : String(v);
}

function seriesName(series) {
  return series.labels.map((l) => `${l.key}=${labelText(l.value)}`).join(", ");
}

/**
 * A metrics query's series over time (Tempo's answer to /api/v1/metrics/query_range): one line each
 * (stable colours by name), a legend, and each point's exemplar as a dot that opens its trace.
 * `format` writes a value for the axis (durations come in seconds).
 */
export function drawSeries(container, series, t0, t1, { id = "metrics-chart", format = (v) => v.toPrecision(3) } = {}) {
  clear(container);
  if (!series.length) return;
  const width = Math.max(container.clientWidth || 800, 400);
  const height = 200;
  const pad = 40;
  const values = series.flatMap((s) => s.samples.map((p) => p.value));
  const most = Math.max(...values, 1e-9);
  const x = (ms) => pad + ((ms - t0) / Math.max(t1 - t0, 1)) * (width - 1.5 * pad);
  const y = (v) => height - pad / 2 - (v / most) * (height - pad);
  const chart = svg("svg", { width, height, id, class: "scatter-plot", role: "img", "aria-label": "metrics over time" },
    svg("line", { x1: pad, y1: height - pad / 2, x2: width - pad / 2, y2: height - pad / 2, class: "axis" }),
    svg("text", { x: 4, y: 12, class: "axis-label" }, format(most)),
    svg("text", { x: 4, y: height - pad / 2, class: "axis-label" }, "0"),
    [t0, (t0 + t1) / 2, t1].map((t, i) => svg("text", { x: x(t), y: height - 2, class: "axis-label time-tick", "text-anchor": ["start", "middle", "end"][i] },
      new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }))));
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
