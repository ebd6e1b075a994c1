// The console's shell: hash routes to pages, live updates, keyboard shortcuts.
import { errorBox, h } from "/static/ui.js";
import { overview } from "/static/overview.js";
import { invocations, invocation } from "/static/invocations.js";
import { executions, execution } from "/static/executions.js";
import { streams } from "/static/streams.js";
import { bucket, buckets, feature, features, itemTable, job, jobs, tables } from "/static/data.js";
import { model, serving } from "/static/serving.js";
import { dataset, datasets } from "/static/datasets.js";

const routes = [
  [/^#\/overview$/, "overview", overview],
  [/^#\/invocations$/, "invocations", invocations],
  [/^#\/invocations\/(.+)$/, "invocations", invocation],
  [/^#\/executions$/, "executions", executions],
  [/^#\/executions\/(.+)$/, "executions", execution],
  [/^#\/streams$/, "streams", streams],
  [/^#\/tables$/, "tables", tables],
  [/^#\/tables\/(.+)$/, "tables", itemTable],
  [/^#\/features$/, "features", features],
  [/^#\/features\/(.+)$/, "features", feature],
  [/^#\/jobs$/, "jobs", jobs],
  [/^#\/jobs\/(.+)$/, "jobs", job],
  [/^#\/datasets$/, "datasets", datasets],
  [/^#\/datasets\/(.+)$/, "datasets", dataset],
  [/^#\/buckets$/, "buckets", buckets],
  [/^#\/buckets\/(.+)$/, "buckets", bucket],
  [/^#\/serving$/, "serving", serving],
  [/^#\/serving\/(.+)$/, "serving", model],
];

const main = document.getElementById("main");
let current = null; // {page, refresh}
let renderSeq = 0;

// Each page is async (params) -> {node, refresh?}; refresh() re-reads data in place on a
// live change, so what the user is looking at (focus, scroll, selection) stays.
async function render() {
  const seq = ++renderSeq;
  const started = performance.now();
  const hash = location.hash.split("?")[0] || "#/overview";
  const found = routes.find(([re]) => re.test(hash));
  if (!found) { location.hash = "#/overview"; return; }
  const [re, name, page] = found;
  const params = hash.match(re).slice(1).map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.body.dataset.ready = "";
  let node;
  try {
    const out = await page(...params);
    if (seq !== renderSeq) return;
    current = out;
    node = out.node;
  } catch (err) {
    if (seq !== renderSeq) return;
    current = null;
    node = h("div", {}, h("h1", {}, "Could not load this page"), errorBox(err));
  }
  main.replaceChildren(node);
  const took = performance.now() - started;
  window.__pageTimes = window.__pageTimes || [];
  window.__pageTimes.push({ page: hash, ms: took });
  document.body.dataset.ready = hash;
}

window.addEventListener("hashchange", render);
render();

// live updates: the server says when something changed; the page re-reads what it shows
const live = document.getElementById("live");
function connect() {
  const source = new EventSource("/api/live");
  source.addEventListener("change", async () => {
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    if (current && current.refresh) {
      try { await current.refresh(); } catch (err) { /* the next change retries */ }
    }
  });
  source.onopen = () => { if (!live.textContent.startsWith("live")) live.textContent = "live"; };
  source.onerror = () => { live.textContent = "reconnecting…"; };
}
connect();

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  // keys 1 to 9, then 0 for the tenth page
  const pages = ["overview", "invocations", "executions", "streams", "tables", "features", "jobs", "datasets", "buckets", "serving"];
  if (/^[0-9]$/.test(e.key)) {
    location.hash = `#/${pages[(Number(e.key) + 9) % 10]}`;
    e.preventDefault();
  } else if (e.key === "/") {
    const f = main.querySelector("form.filters input, form.filters select");
    if (f) { f.focus(); e.preventDefault(); }
  } else if (e.key === "r") {
    render();
  }
});
