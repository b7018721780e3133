// DOM building without HTML strings: text always goes in as text, so span data cannot become markup.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "style") Object.assign(el.style, value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child instanceof Node) el.appendChild(child);
    else if (child !== null && child !== undefined) el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

// Tableau's 20 categorical colours, ordered so that neighbours differ in hue.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac",
  "#a0cbe8", "#ffbe7d", "#8cd17d", "#ff9d9a", "#d4a6c8", "#86bcb6", "#f1ce63", "#fabfd2", "#d7b5a6", "#79706e",
];
const assigned = new Map();
const taken = new Set();

function hashOf(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash;
}

/** Give the known services their colours first, in name order, each its hash's slot or the next free
 * one: the same set of services gets the same colours on every page and every load, and no two of
 * them share a colour while there are no more than 20. */
export function seedColors(names) {
  for (const name of [...names].sort()) serviceColor(name);
}

/** A colour per service name: stable, and distinct from the colours already given out. Past the
 * palette's 20, hues step by the golden angle, which keeps any two as far apart as it can. */
export function serviceColor(name) {
  const known = assigned.get(name);
  if (known) return known;
  let slot = hashOf(name) % PALETTE.length;
  for (let i = 0; i < PALETTE.length && taken.has(PALETTE[slot]); i++) slot = (slot + 1) % PALETTE.length;
  const extra = taken.size - PALETTE.length;
  const colour = extra < 0 ? PALETTE[slot] : `hsl(${((extra * 137.508) % 360).toFixed(1)}, ${extra % 2 ? 45 : 60}%, ${extra % 3 ? 48 : 58}%)`;
  taken.add(colour);
  assigned.set(name, colour);
  return colour;
}

const KEY = "clew.key";

/** The API key of this browser session (sign-in page), kept in sessionStorage only: gone with the tab. */
export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** Headers for calls to clew's API: the session's key, when there is one. */
export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function getJSON(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const response = await fetch(url, { headers: authHeaders() });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    // a page may swallow its errors: the app shows the sign-in page whatever the page does
    window.dispatchEvent(new CustomEvent("clew:unauthorized"));
  }
  if (!response.ok) {
    const message = (body && (body.error || (body.errors && body.errors[0] && body.errors[0].msg))) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

export function valueText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function navigate(url) {
  history.pushState(null, "", url);
  window.dispatchEvent(new Event("clew:navigate"));
}

/** Plain links that stay inside the app. */
export function link(href, ...children) {
  return h("a", { href, onclick: (e) => { if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; e.preventDefault(); navigate(href); } }, ...children);
}

/** A table sorted by `by`, re-sorted by a click on a column's head (again: the other way). Strings
 * sort A to Z first, numbers largest first; `row(r)` draws one row; a column whose key the rows do
 * not have (a chart) cannot be sorted by. */
export function sortableTable(id, columns, rows, by, row) {
  let descending = typeof (rows[0] || {})[by] !== "string";
  const table = h("table", { class: "stats", id });
  const paint = () => {
    rows.sort((a, b) => {
      const x = a[by];
      const y = b[by];
      const order = typeof x === "string" ? x.localeCompare(y) : Number(x) - Number(y);
      return descending ? -order : order;
    });
    clear(table).append(
      h("thead", {}, h("tr", {}, columns.map(([key, label]) => h("th", {
        dataset: { key }, class: key === by ? (descending ? "sorted desc" : "sorted asc") : "",
        onclick: rows.length && key in rows[0] ? () => { descending = key === by ? !descending : typeof rows[0][key] !== "string"; by = key; paint(); } : undefined,
      }, label)))),
      h("tbody", {}, rows.map(row)));
  };
  paint();
  return table;
}
