// The single-page app: one shell, routes with Jaeger UI's addresses, no build step.

import { renderAlerts } from "./alerts.js";
import { renderCompare } from "./compare.js";
import { renderLogs } from "./logs.js";
import { renderMap } from "./map.js";
import { renderMonitor } from "./monitor.js";
import { renderReleases } from "./releases.js";
import { renderSearch } from "./search.js";
import { openTraceFile, renderTrace } from "./trace.js";
import { apiKey, authHeaders, clear, h, link, seedColors, setApiKey } from "./util.js";

const main = document.getElementById("main");

function nav() {
  const fileInput = h("input", { type: "file", id: "open-file", accept: ".json,application/json", "aria-label": "Open a trace file" });
  const error = h("span", { class: "error", id: "open-error" });
  fileInput.addEventListener("change", async () => {
    error.textContent = "";
    const file = fileInput.files && fileInput.files[0];
    if (!file) return;
    try {
      await openTraceFile(file);
    } catch (err) {
      error.textContent = err.message;
    }
    fileInput.value = "";
  });
  return h("nav", { class: "topnav" },
    h("span", { class: "brand" }, "clew"),
    link("/search", "Search"),
    link("/logs", "Logs"),
    link("/dependencies", "Service map"),
    link("/monitor", "Monitor"),
    link("/releases", "Releases"),
    link("/alerts", "Alerts"),
    link("/compare", "Compare"),
    h("label", { class: "open-file" }, "Open file ", fileInput),
    error);
}

/** The sign-in form: the key stays in this tab's sessionStorage, sent only to this server. */
function renderSignIn(message) {
  const input = h("input", { type: "password", id: "api-key", autocomplete: "off", "aria-label": "API key", placeholder: "clew_..." });
  const form = h("form", { id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, message || "This clew server needs an API key (clew keys create --role read --tenant NAME)."),
    h("label", {}, "API key ", input),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey(input.value.trim());
    const back = new URLSearchParams(location.search).get("next") || "/search";
    history.pushState({}, "", back.startsWith("/") && !back.startsWith("//") ? back : "/search");
    route();
  });
  clear(main).append(form);
  input.focus();
}

async function route() {
  const path = location.pathname;
  delete document.body.dataset.ready;
  try {
    if (path === "/signin") renderSignIn();
    else if (path === "/" || path === "/search") await renderSearch(main);
    else if (path.startsWith("/trace/")) await renderTrace(main, decodeURIComponent(path.slice("/trace/".length)));
    else if (path === "/logs") await renderLogs(main);
    else if (path === "/dependencies") await renderMap(main);
    else if (path === "/compare") await renderCompare(main);
    else if (path === "/monitor") await renderMonitor(main);
    else if (path === "/releases") await renderReleases(main);
    else if (path === "/alerts") await renderAlerts(main);
    else clear(main).append(h("h1", {}, "Not found"), h("p", {}, link("/search", "Search traces")));
  } catch (err) {
    if (err.status === 401) return; // the sign-in page is up (clew:unauthorized)
    clear(main).append(h("div", { class: "error" }, `Something went wrong: ${err.message}`));
  }
  document.body.dataset.ready = path;
}

document.getElementById("nav").replaceWith(nav());
window.addEventListener("popstate", route);
window.addEventListener("clew:unauthorized", () => {
  const rejected = apiKey() !== "";
  setApiKey("");
  if (!document.getElementById("signin")) {
    renderSignIn(rejected ? "That key was not accepted: check it, or ask for a new one." : undefined);
    document.body.dataset.ready = location.pathname;
  }
});
window.addEventListener("clew:navigate", route);
// The keyboard shortcuts, as `?` lists them.
const SHORTCUTS = [
  ["/", "focus the query (search and logs pages)"],
  ["↑ / ↓", "previous / next span (trace waterfall)"],
  ["← / →", "collapse / expand the selected span"],
  ["Enter / Shift+Enter", "next / previous match (find in trace)"],
  ["?", "show or hide this list"],
  ["Esc", "close this list"],
];

function toggleShortcuts(show) {
  const open = document.getElementById("shortcuts");
  if (open) open.remove();
  if (!show || open) return;
  document.body.append(h("div", { id: "shortcuts", class: "shortcuts", role: "dialog", "aria-label": "Keyboard shortcuts" },
    h("h2", {}, "Keyboard shortcuts"),
    h("table", {}, h("tbody", {}, SHORTCUTS.map(([key, what]) => h("tr", {}, h("th", {}, h("kbd", {}, key)), h("td", {}, what)))))));
}

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLSelectElement;
  if (e.key === "/" && !typing) {
    const q = document.getElementById("q");
    if (q) {
      e.preventDefault();
      q.focus();
    }
  } else if (e.key === "?" && !typing) {
    e.preventDefault();
    toggleShortcuts(true);
  } else if (e.key === "Escape") {
    toggleShortcuts(false);
  }
});
// the services' colours, before any page draws one (see seedColors); a failure only leaves them unseeded
fetch("/api/services", { headers: authHeaders() })
  .then((r) => (r.ok ? r.json() : { data: [] }))
  .then((body) => seedColors(Array.isArray(body.data) ? body.data : []))
  .catch(() => {})
  .finally(route);
