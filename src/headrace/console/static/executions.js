// Executions: list and search; one execution's state graph (live), Map item counts, caught
// errors, each state's input and output, the history table; stop and redrive.
import { api, badge, errorBox, h, hashQuery, json, link, table, when, withQuery, fill, pagerButtons } from "/static/ui.js";
import { drawGraph } from "/static/graph.js";

const STATUSES = ["", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"];

export async function executions() {
  const q = hashQuery();
  const node = h("div");
  const first = await api(withQuery("/api/executions", { limit: 1, counts: 1 }));
  const machines = Object.keys(first.counts || {}).sort();
  const machine = h("select", { id: "e-machine" }, h("option", { value: "" }, "all state machines"),
    machines.map((m) => h("option", { value: m, selected: m === q.state_machine }, m)));
  const status = h("select", { id: "e-status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (q.status || "") }, s || "any status")));
  const search = h("input", { id: "e-search", type: "search", value: q.q || "", placeholder: "name starts with…" });
  const form = h("form", { class: "filters", role: "search" },
    h("label", { for: "e-machine" }, "state machine", machine),
    h("label", { for: "e-status" }, "status", status),
    h("label", { for: "e-search" }, "name", search),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = withQuery("#/executions", { state_machine: machine.value, status: status.value, q: search.value });
  });
  machine.addEventListener("change", () => form.requestSubmit());
  status.addEventListener("change", () => form.requestSubmit());
  const listBox = h("div");
  const cursors = [null];
  async function load() {
    const page = await api(withQuery("/api/executions", {
      state_machine: q.state_machine || "", status: q.status || "", q: q.q || "", limit: 50,
      cursor: cursors[cursors.length - 1] || "",
    }));
    const [prev, next] = pagerButtons(cursors, page.next, load);
    fill(listBox, 
      table([
        ["name", (r) => link(`#/executions/${encodeURIComponent(r.id)}`, r.name)],
        ["state machine", (r) => r.state_machine],
        ["status", (r) => badge(r.status)],
        ["started", (r) => when(r.started_at)],
        ["stopped", (r) => when(r.stopped_at)],
        ["error", (r) => [r.error || "", r.cause ? `: ${r.cause}` : ""].join(""), "err"],
      ], page.items, { empty: "no execution matches" }),
      h("div", { class: "pager" }, prev, next, h("span", { class: "muted" }, `page ${cursors.length}`)));
  }
  await load();
  const totals = Object.entries(first.counts || {}).map(([m, c]) =>
    h("div", { class: "card" }, h("div", { class: "muted" }, m),
      Object.entries(c).map(([s, n]) => [badge(s), ` ${n} `])));
  node.append(h("h1", {}, "Executions"), h("section", { class: "cards" }, totals), form, listBox);
  return { node, refresh: async () => { if (cursors.length === 1) await load(); } };
}

export async function execution(id) {
  const node = h("div");
  let selected = null;
  const graphBox = h("div", { class: "graph" });
  const stateBox = h("div", { id: "state-panel" }, h("p", { class: "muted" }, "Select a state (click, or Tab then Enter) to see its input and output."));
  const head = h("div");
  const historyBox = h("div");
  let data = null;
  let repaint = null;

  async function showState(n, index = "") {
    selected = n.path;
    graphBox.querySelectorAll(".node").forEach((g) => g.classList.toggle("sel", g.dataset.path === n.path));
    const io = await api(withQuery(`/api/executions/${encodeURIComponent(data.execution.id)}/state`, { path: n.path, index }));
    const last = io.last;
    // a state inside a Map ran once per item: pick the item to see its input and output
    let picker = null;
    if (n.path.includes("[*]")) {
      const item = h("input", { id: "map-item", type: "number", min: 0, value: index, placeholder: "latest", size: 8 });
      picker = h("form", { class: "filters", "aria-label": "Map item" },
        h("label", { for: "map-item" }, "Map item (index)", item), h("button", { type: "submit" }, "Show"));
      picker.addEventListener("submit", (e) => { e.preventDefault(); showState(n, item.value); });
    }
    fill(stateBox,
      h("h2", {}, n.name, " ", badge(n.status || "not run")),
      h("p", { class: "muted" }, `${n.kind} · ${n.path}`),
      n.items ? table([["outcome", (r) => badge(r[0])], ["items", (r) => r[1]]], Object.entries(n.items), { caption: n.total !== undefined ? `${n.total} items` : "items that reached this state" }) : null,
      n.error ? h("p", {}, n.caught ? "Caught error: " : "Error: ", h("code", {}, n.error)) : null,
      picker,
      h("p", { class: "muted", id: "state-runs" }, index !== "" ? `item ${index}: ${io.runs} run(s)` : `${io.runs} run(s)${io.runs > 1 ? "; the latest is shown" : ""}`),
      last ? [h("h2", {}, "Input"), json(last.input), last.output !== undefined ? [h("h2", {}, "Output"), json(last.output)] : h("p", { class: "muted" }, "no output yet")] : null);
  }

  const cursors = [0];
  async function loadHistory() {
    const page = await api(withQuery(`/api/executions/${encodeURIComponent(data.execution.id)}/history`, { after: cursors[cursors.length - 1], limit: 100 }));
    const [prev, next] = pagerButtons(cursors, page.next, loadHistory, ["Earlier", "Later"]);
    fill(historyBox, 
      h("h2", { id: "history" }, `History (${data.execution.history_length} events)`),
      table([
        ["#", (e) => e.id],
        ["type", (e) => e.type],
        ["scope", (e) => e.scope || ""],
        ["time", (e) => when(e.timestamp)],
        ["state / details", (e) => h("code", {}, JSON.stringify(e.details).slice(0, 300))],
      ], page.items, { empty: "no events" }),
      h("div", { class: "pager" }, prev, next));
  }

  async function act(what) {
    try {
      await api(`/api/executions/${encodeURIComponent(data.execution.id)}/${what}`, { method: "POST", body: "{}" });
      await refresh();
    } catch (err) { head.append(errorBox(err)); }
  }

  async function refresh(withHistory = true) {
    data = await api(`/api/executions/${encodeURIComponent(id)}`);
    const ex = data.execution;
    const actions = [];
    if (ex.status === "RUNNING") actions.push(h("button", { type: "button", class: "danger", id: "stop", onclick: () => act("stop") }, "Stop"));
    if (["FAILED", "TIMED_OUT", "ABORTED"].includes(ex.status)) actions.push(h("button", { type: "button", id: "redrive", onclick: () => act("redrive") }, "Redrive"));
    fill(head, 
      h("p", {}, link(withQuery("#/executions", { state_machine: ex.state_machine }), `← ${ex.state_machine}`)),
      h("h1", {}, ex.name, " ", badge(ex.status), " ", ...actions),
      table([["field", (r) => r[0]], ["value", (r) => r[1]]], [
        ["ARN", h("code", {}, ex.id)],
        ["started", when(ex.started_at)],
        ["stopped", when(ex.stopped_at)],
        ["error", ex.error ? `${ex.error}${ex.cause ? `: ${ex.cause}` : ""}` : ""],
      ]),
      h("details", {}, h("summary", {}, "Input"), json(ex.input)),
      ex.output !== null && ex.output !== undefined ? h("details", {}, h("summary", {}, "Output"), json(ex.output)) : null,
      h("div", { class: "legend", "aria-label": "colours" }, ["succeeded", "caught", "failed", "running", "not run"].map((s) => badge(s))));
    // a live re-read redraws the graph: the state that had the keyboard focus keeps it
    const focused = graphBox.contains(document.activeElement) ? document.activeElement.dataset.path : null;
    const svg = drawGraph(data.graph, { onSelect: showState, selected });
    const folded = data.folded || 0;
    fill(graphBox, data.painting
      ? h("p", { class: "muted", role: "status" }, folded
        ? `Painted as of event ${folded.toLocaleString()} of ${ex.history_length.toLocaleString()}; reading the rest…`
        : `Reading ${ex.history_length.toLocaleString()} history events to paint the states…`)
      : null, svg);
    // "partial": painted as far as the background fold got; "yes": the whole history
    graphBox.dataset.painted = data.painting ? (folded ? "partial" : "") : "yes";
    if (focused) {
      const again = [...graphBox.querySelectorAll(".node")].find((g) => g.dataset.path === focused);
      if (again) again.focus();
    }
    clearTimeout(repaint);
    // a long history is folded in the background the first time: ask again shortly
    if (data.painting) repaint = setTimeout(() => { if (graphBox.isConnected) refresh(false).catch(() => {}); }, 250);
    if (withHistory && cursors.length === 1) await loadHistory();
  }
  await refresh();
  node.append(head, h("div", { class: "split" }, graphBox, stateBox), historyBox);
  return { node, refresh: () => refresh(true) };
}
