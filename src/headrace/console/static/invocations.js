// Functions and invocations: filter by function, status and time; one invocation with its
// triggering event, attempts, errors and log lines; the dead-letter list with redrive.
import { api, badge, errorBox, h, hashQuery, json, link, ms, table, when, withQuery, fill, pagerButtons } from "/static/ui.js";

const STATUSES = ["", "pending", "running", "succeeded", "dead"];
const WINDOWS = [["", "any time"], ["900", "last 15 min"], ["3600", "last hour"], ["86400", "last day"]];

export async function invocations() {
  const q = hashQuery();
  const node = h("div");
  const fns = await api("/api/functions");
  const fnSelect = h("select", { name: "function", id: "f-function" },
    h("option", { value: "" }, "all functions"),
    fns.items.map((f) => h("option", { value: f.name, selected: f.name === q.function }, f.name)));
  const statusSelect = h("select", { name: "status", id: "f-status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (q.status || "") }, s || "any status")));
  const windowSelect = h("select", { name: "window", id: "f-window" },
    WINDOWS.map(([v, t]) => h("option", { value: v, selected: v === (q.window || "") }, t)));
  const form = h("form", { class: "filters", role: "search" },
    h("label", { for: "f-function" }, "function", fnSelect),
    h("label", { for: "f-status" }, "status", statusSelect),
    h("label", { for: "f-window" }, "created", windowSelect),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = withQuery("#/invocations", {
      function: fnSelect.value, status: statusSelect.value, window: windowSelect.value,
    });
  });
  for (const s of [fnSelect, statusSelect, windowSelect]) s.addEventListener("change", () => form.requestSubmit());

  const listBox = h("div");
  const deadBox = h("div");
  // outside deadBox, which is rebuilt: the outcome of a redrive stays on screen
  const status = h("p", { role: "status", class: "muted", id: "redrive-status" });
  const cursors = [null]; // the cursor of each page shown so far: Back pops one
  async function load() {
    const query = {
      function: q.function || "", status: q.status || "", limit: 50,
      cursor: cursors[cursors.length - 1] || "",
    };
    if (q.window) query.since = String(Date.now() / 1000 - Number(q.window));
    const page = await api(withQuery("/api/invocations", query));
    const [prev, next] = pagerButtons(cursors, page.next, load);
    fill(listBox, 
      table([
        ["invocation", (r) => link(`#/invocations/${encodeURIComponent(r.id)}`, r.id.slice(0, 8))],
        ["function", (r) => r.function],
        ["triggered by", (r) => (r.trigger ? h("code", {}, r.trigger) : r.source)],
        ["status", (r) => badge(r.status)],
        ["attempts", (r) => `${r.attempts}/${r.max_attempts}`],
        ["created", (r) => when(r.created_at)],
        // the last attempt's duration, as `headrace invocations` shows: not the time queued or dead-lettered
        ["took", (r) => (r.finished_at && r.last_attempt_ms != null ? ms(r.last_attempt_ms) : "")],
        ["execution", (r) => (r.execution_id ? link(`#/executions/${encodeURIComponent(r.execution_id)}`, "execution") : "")],
        ["error", (r) => r.error || "", "err"],
      ], page.items, { empty: "no invocation matches" }),
      h("div", { class: "pager" }, prev, next, h("span", { class: "muted" }, `page ${cursors.length}`)));
  }
  // the ticked dead letters outlive a live re-read of the list, which redraws its checkboxes
  const ticked = new Set();
  async function loadDead() {
    const page = await api(withQuery("/api/dead-letters", { function: q.function || "", limit: 50 }));
    const shown = new Set(page.items.map((r) => r.invocation_id));
    for (const id of [...ticked]) if (!shown.has(id)) ticked.delete(id);
    const redrive = h("button", { type: "button", class: "danger", id: "redrive" }, "Redrive selected");
    redrive.onclick = async () => {
      const ids = [...ticked];
      if (!ids.length) { status.textContent = "select dead letters first"; return; }
      try {
        const out = await api("/api/dead-letters/redrive", { method: "POST", body: JSON.stringify({ ids }) });
        status.textContent = `redriven: ${out.redriven.length}`;
        await Promise.all([load(), loadDead()]);
      } catch (err) { fill(status, errorBox(err)); }
    };
    fill(deadBox, 
      h("h2", { id: "dead-letters" }, "Dead letters"),
      table([
        ["", (r) => {
          const c = h("input", { type: "checkbox", "aria-label": `select ${r.invocation_id}` });
          c.checked = ticked.has(r.invocation_id);
          c.addEventListener("change", () => { if (c.checked) ticked.add(r.invocation_id); else ticked.delete(r.invocation_id); });
          return c;
        }],
        ["invocation", (r) => link(`#/invocations/${encodeURIComponent(r.invocation_id)}`, r.invocation_id.slice(0, 8))],
        ["function", (r) => r.function],
        ["attempts", (r) => r.attempts],
        ["parked", (r) => when(r.created_at)],
        ["error", (r) => r.error || "", "err"],
      ], page.items, { empty: "the dead-letter list is empty" }),
      page.items.length ? h("div", { class: "pager" }, redrive) : null);
  }
  await Promise.all([load(), loadDead()]);
  node.append(h("h1", {}, "Functions and invocations"), form, listBox, deadBox, status);
  // a live change re-reads the first page only when the user is on it (paging stays put)
  return { node, refresh: async () => { if (cursors.length === 1) await load(); await loadDead(); } };
}

export async function invocation(id) {
  const node = h("div");
  async function refresh() {
    const d = await api(`/api/invocations/${encodeURIComponent(id)}`);
    const inv = d.invocation;
    fill(node, 
      h("p", {}, link(withQuery("#/invocations", { function: inv.function }), `← ${inv.function}`)),
      h("h1", {}, "Invocation ", h("code", {}, inv.id), " ", badge(inv.status)),
      table([["field", (r) => r[0]], ["value", (r) => r[1]]], [
        ["function", inv.function],
        ["source", inv.source],
        ["attempts", `${inv.attempts} of ${inv.max_attempts}`],
        ["created", when(inv.created_at)],
        ["finished", when(inv.finished_at)],
        ["execution", inv.execution_id ? link(`#/executions/${encodeURIComponent(inv.execution_id)}`, inv.execution_id) : ""],
        ["error", inv.error || ""],
      ]),
      h("h2", {}, "Triggered by"),
      d.event
        ? h("div", {}, h("p", {}, h("code", {}, d.event.detail_type), " from ", h("code", {}, d.event.source),
            d.event.subject ? [" · ", h("code", { id: "subject" }, d.event.subject)] : "",
            " at ", when(d.event.created_at)), json(d.event.payload))
        : h("p", { class: "muted" }, `invoked directly (${inv.source})`),
      h("h2", {}, "Event (payload)"), json(inv.payload),
      inv.result !== null && inv.result !== undefined ? [h("h2", {}, "Result"), json(inv.result)] : null,
      h("h2", {}, "Attempts"),
      table([
        ["#", (a) => a.number],
        ["status", (a) => badge(a.status)],
        ["worker", (a) => a.worker || ""],
        ["started", (a) => when(a.started_at)],
        ["duration", (a) => ms(a.duration_ms)],
        ["max RSS", (a) => (a.max_rss_mb ? `${a.max_rss_mb.toFixed(0)} MB` : "")],
        ["error", (a) => a.error || "", "err"],
      ], d.attempts, { empty: "not run yet" }),
      d.attempts.map((a) => h("details", { open: a === d.attempts[d.attempts.length - 1] },
        h("summary", {}, `Attempt ${a.number}: log lines${a.traceback ? " and traceback" : ""}`),
        h("pre", { class: "log" }, a.log || "(no log lines)"),
        a.traceback ? h("pre", {}, a.traceback) : null)),
    );
  }
  await refresh();
  return { node, refresh };
}
