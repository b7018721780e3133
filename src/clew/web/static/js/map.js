// The service map: the service graph for a time range (/api/v1/servicegraph), laid out by dagre inside
// Cytoscape (vendored). Nodes sized by span rate and coloured by error rate, uninstrumented peers
// dashed; edges labelled with call counts, red when calls failed, dashed for messaging. Rates are
// over the time the data covers (the API's `rateSeconds`); a filter keeps the services matching it
// and their neighbours; the canvas grows with the services so labels stay readable.

import { clear, getJSON, h, navigate } from "./util.js";

const READABLE_ZOOM = 0.85;
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
  const filter = h("input", { type: "search", id: "map-filter", placeholder: "Filter services", "aria-label": "Filter services", value: params.get("focus") || "" });
  const graph = h("div", { class: "service-map", id: "service-map" });
  const table = h("div", { id: "map-table" });
  clear(root).append(h("h1", {}, "Service map"), h("div", { class: "toolbar" }, picker, filter, h("span", { class: "legend" }, "size: spans/s · colour: error rate (green < 1%, orange < 5%, red)")), status, graph, table);

  const end = Date.now();
  const sg = await getJSON("/api/v1/servicegraph", { start: end / 1000 - seconds, end: end / 1000 });
  const links = sg.edges.map((e) => ({ ...e, callCount: e.calls }));
  const byService = new Map(sg.nodes.map((n) => [n.service, n]));
  const names = new Set([...byService.keys(), ...links.flatMap((l) => [l.parent, l.child])]);
  if (!names.size) {
    status.textContent = "No spans in this time range.";
    return;
  }
  const minutes = sg.rateSeconds / 60;
  status.textContent = `${names.size} services, ${links.length} dependencies · rates over the ${minutes >= 1 ? `${minutes.toFixed(minutes < 10 ? 1 : 0)} min` : `${Math.round(sg.rateSeconds)} s`} the data covers`;
  // room for every service: the layout is not shrunk until labels are unreadable
  graph.style.height = `${Math.min(1600, Math.max(480, 36 * names.size))}px`;
  const maxRate = Math.max(...[...byService.values()].map((s) => s.spans), 1);
  const elements = [];
  for (const name of names) {
    const s = byService.get(name) || { spans: 0, errors: 0 };
    const rate = s.spansPerSecond || 0;
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
    minZoom: 0.2,
    container: graph,
    elements,
    layout: { name: "dagre", rankDir: "LR", nodeSep: 50, rankSep: 120, fit: true, padding: 20 },
    style: [
      { selector: "node", style: { "background-color": "data(color)", width: "data(size)", height: "data(size)", label: "data(label)", "text-wrap": "wrap", "text-valign": "bottom", "text-margin-y": 6, "font-size": 13, color: "#222" } },
      { selector: "node[?virtual]", style: { "border-width": 2, "border-style": "dashed", "border-color": "#6b7280" } },
      // orthogonal edges leave a rank rightwards and enter the next from the left, not through nodes
      { selector: "edge", style: { width: 2, "line-color": "#999", "target-arrow-color": "#999", "target-arrow-shape": "triangle", "curve-style": "taxi", "taxi-direction": "rightward", label: "data(label)", "font-size": 11, "text-background-color": "#fff", "text-background-opacity": 1 } },
      { selector: ".faded", style: { display: "none" } },
      { selector: "edge[errors > 0]", style: { "line-color": "#d62728", "target-arrow-color": "#d62728" } },
      { selector: "edge[type = 'messaging']", style: { "line-style": "dashed" } },
    ],
    userZoomingEnabled: true,
    wheelSensitivity: 0.2,
  });
  // never shrunk past readable labels (13 px at 0.85: 11 px); a bigger map pans instead
  if (cy.zoom() < READABLE_ZOOM) {
    cy.zoom(READABLE_ZOOM);
    cy.center();
  }
  cy.on("tap", "node", (e) => navigate(`/search?service=${encodeURIComponent(e.target.data("service"))}&lookback=${range}`));
  // the filter: services whose name contains the text, their callers and callees, and the calls
  // between those; the table follows
  const applyFilter = () => {
    const text = filter.value.trim().toLowerCase();
    const url = new URL(location.href);
    if (text) url.searchParams.set("focus", filter.value.trim());
    else url.searchParams.delete("focus");
    history.replaceState(history.state, "", url);
    cy.elements().removeClass("faded");
    for (const tr of table.querySelectorAll("tbody tr")) tr.hidden = false;
    if (!text) {
      cy.fit(undefined, 20);
      return;
    }
    const hits = cy.nodes().filter((n) => n.data("service").toLowerCase().includes(text));
    const kept = hits.union(hits.neighborhood());
    cy.elements().difference(kept).addClass("faded");
    for (const tr of table.querySelectorAll("tbody tr")) {
      tr.hidden = !(tr.dataset.parent.toLowerCase().includes(text) || tr.dataset.child.toLowerCase().includes(text));
    }
    cy.fit(kept, 30);
  };
  filter.addEventListener("input", applyFilter);
  if (filter.value) applyFilter();
  window.clewServiceMap = cy; // for tests and the console
}
