// The service map: the service graph for a time range (/api/v1/servicegraph), laid out by dagre inside
// Cytoscape (vendored). Nodes sized by span rate and coloured by error rate, uninstrumented peers
// dashed; edges labelled with call counts, red when calls failed, dashed for messaging.

import { clear, getJSON, h, navigate } from "./util.js";

const RANGES = [["1h", 3600], ["6h", 6 * 3600], ["24h", 86400], ["7d", 7 * 86400]];

function errorColor(rate) {
  if (rate >= 0.05) return "#d62728";
  if (rate >= 0.01) return "#ff9f1c";
  return "#2ca02c";
}

export async function renderMap(root) {
  const params = new URLSearchParams(location.search);
  const range = params.get("lookback") || "1h";
  const seconds = (RANGES.find(([k]) => k === range) || RANGES[0])[1];
  const picker = h("select", { id: "map-range", "aria-label": "Time range" }, RANGES.map(([k]) => h("option", { value: k, selected: k === range }, `Last ${k}`)));
  picker.addEventListener("change", () => navigate(`/dependencies?lookback=${picker.value}`));
  const status = h("div", { class: "status", id: "map-status" }, "Loading…");
  const graph = h("div", { class: "service-map", id: "service-map" });
  const table = h("div", { id: "map-table" });
  clear(root).append(h("h1", {}, "Service map"), h("div", { class: "toolbar" }, picker, h("span", { class: "legend" }, "size: spans/s · colour: error rate (green < 1%, orange < 5%, red)")), status, graph, table);

  const end = Date.now();
  const sg = await getJSON("/api/v1/servicegraph", { start: end / 1000 - seconds, end: end / 1000 });
  const links = sg.edges.map((e) => ({ ...e, callCount: e.calls }));
  const byService = new Map(sg.nodes.map((n) => [n.service, n]));
  const names = new Set([...byService.keys(), ...links.flatMap((l) => [l.parent, l.child])]);
  if (!names.size) {
    status.textContent = "No spans in this time range.";
    return;
  }
  status.textContent = `${names.size} services, ${links.length} dependencies`;
  const maxRate = Math.max(...[...byService.values()].map((s) => s.spans), 1);
  const elements = [];
  for (const name of names) {
    const s = byService.get(name) || { spans: 0, errors: 0 };
    const rate = s.spans / seconds;
    const errorRate = s.spans ? s.errors / s.spans : 0;
    const virtual = Boolean(s.virtual);
    const label = virtual ? `${name}\n(not traced)` : `${name}\n${rate.toFixed(2)}/s · ${(errorRate * 100).toFixed(1)}% err`;
    elements.push({ data: { id: `n:${name}`, service: name, label, virtual, size: virtual ? 30 : 40 + 50 * Math.sqrt(s.spans / maxRate), color: virtual ? "#9ca3af" : errorColor(errorRate) } });
  }
  for (const l of links) {
    elements.push({ data: { id: `e:${l.parent}->${l.child}:${l.type}`, source: `n:${l.parent}`, target: `n:${l.child}`, label: String(l.callCount), errors: l.errors, type: l.type, p95: l.p95Ms } });
  }
  table.append(h("table", { class: "kv", id: "dependency-table" }, h("thead", {}, h("tr", {}, h("th", {}, "parent"), h("th", {}, "child"), h("th", {}, "calls"), h("th", {}, "errors"), h("th", {}, "p95"))),
    h("tbody", {}, links.map((l) => h("tr", { dataset: { parent: l.parent, child: l.child } }, h("td", {}, l.parent), h("td", {}, l.child), h("td", {}, String(l.callCount)), h("td", {}, String(l.errors)), h("td", {}, `${l.p95Ms.toFixed(1)} ms`))))));

  const cy = window.cytoscape({
    container: graph,
    elements,
    layout: { name: "dagre", rankDir: "LR", nodeSep: 40, rankSep: 90 },
    style: [
      { selector: "node", style: { "background-color": "data(color)", width: "data(size)", height: "data(size)", label: "data(label)", "text-wrap": "wrap", "text-valign": "bottom", "text-margin-y": 6, "font-size": 11, color: "#222" } },
      { selector: "node[?virtual]", style: { "border-width": 2, "border-style": "dashed", "border-color": "#6b7280" } },
      { selector: "edge", style: { width: 2, "line-color": "#999", "target-arrow-color": "#999", "target-arrow-shape": "triangle", "curve-style": "bezier", label: "data(label)", "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 1 } },
      { selector: "edge[errors > 0]", style: { "line-color": "#d62728", "target-arrow-color": "#d62728" } },
      { selector: "edge[type = 'messaging']", style: { "line-style": "dashed" } },
    ],
    userZoomingEnabled: true,
    wheelSensitivity: 0.2,
  });
  cy.on("tap", "node", (e) => navigate(`/search?service=${encodeURIComponent(e.target.data("service"))}&lookback=${range}`));
  window.clewServiceMap = cy; // for tests and the console
}
