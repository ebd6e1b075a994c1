// Dataset runs: the list (search by script or job id, filter by status) and one run with its
// plan's steps, its stages and its progress, re-read live while it runs.
import { api, badge, errorBox, fill, h, hashQuery, link, table, when, withQuery, pagerButtons } from "/static/ui.js";

const STATUSES = ["", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED", "LOST"];

function steps(run) {
  return h("span", { class: "steps" }, run.steps.map((s, i) => [i ? " → " : "", h("code", {}, s)]));
}

function progressText(run) {
  const blocks = run.tasks_total !== null && run.tasks_total !== undefined
    ? `${run.tasks_done} of ${run.tasks_total} blocks` : `${run.tasks_done} blocks`;
  return `${blocks} · ${Number(run.rows_out).toLocaleString("en")} rows`;
}

function progressBar(run) {
  const total = run.tasks_total;
  if (!total) return null;
  const done = Math.min(run.tasks_done, total);
  return h("progress", { max: total, value: done, "aria-label": `${done} of ${total} blocks` });
}

function took(run) {
  const end = run.finished_at || Date.now() / 1000;
  const s = Math.max(0, end - run.started_at);
  return s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

export async function datasets() {
  const q = hashQuery();
  const node = h("div");
  const status = h("select", { id: "d-status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (q.status || "") }, s || "any status")));
  const search = h("input", { id: "d-search", type: "search", value: q.q || "", placeholder: "script or job id" });
  // the text search first: "/" jumps to it, and typing goes where a stranger expects
  const form = h("form", { class: "filters", role: "search" },
    h("label", { for: "d-search" }, "script or job", search),
    h("label", { for: "d-status" }, "status", status),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = withQuery("#/datasets", { status: status.value, q: search.value });
  });
  status.addEventListener("change", () => form.requestSubmit());
  const listBox = h("div");
  const cursors = [null];
  async function load() {
    const page = await api(withQuery("/api/datasets", {
      status: q.status || "", q: q.q || "", limit: 50, cursor: cursors[cursors.length - 1] || "",
    }));
    const [prev, next] = pagerButtons(cursors, page.next, load);
    fill(listBox,
      table([
        ["run", (r) => link(`#/datasets/${encodeURIComponent(r.id)}`, `${r.name} · ${r.action}`)],
        ["job", (r) => (r.job_id ? link(`#/jobs/${encodeURIComponent(r.job_id)}`, r.job_id.slice(0, 8)) : "")],
        ["engine", (r) => r.engine],
        ["status", (r) => badge(r.status)],
        ["steps", steps],
        ["progress", (r) => [progressBar(r), " ", progressText(r)]],
        ["started", (r) => when(r.started_at)],
        ["took", took],
        ["error", (r) => (r.error || "").split("\n")[0], "err"],
      ], page.items, { empty: "no dataset run yet: datasets run in a project's scripts and jobs are listed here" }),
      h("div", { class: "pager" }, prev, next, h("span", { class: "muted" }, `page ${cursors.length}`)));
  }
  await load();
  node.append(h("h1", {}, "Datasets"), form, listBox);
  return { node, refresh: async () => { if (cursors.length === 1) await load(); } };
}

export async function dataset(id) {
  const node = h("div");
  async function refresh() {
    let d;
    try {
      d = await api(`/api/datasets/${encodeURIComponent(id)}`);
    } catch (err) {
      fill(node, h("p", {}, link("#/datasets", "← datasets")), errorBox(err));
      return;
    }
    const r = d.run;
    fill(node,
      h("p", {}, link("#/datasets", "← datasets")),
      h("h1", {}, "Dataset run ", h("code", {}, `${r.name} · ${r.action}`), " ", badge(r.status)),
      h("p", { id: "d-steps" }, steps(r)),
      h("section", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "muted" }, "progress"),
          h("div", { class: "n", id: "d-progress" }, progressText(r)), progressBar(r)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "engine"), h("div", { class: "n" }, r.engine)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "started"), h("div", {}, when(r.started_at))),
        h("div", { class: "card" }, h("div", { class: "muted" }, r.finished_at ? "took" : "running for"), h("div", {}, took(r))),
        h("div", { class: "card" }, h("div", { class: "muted" }, "output"), h("div", {}, r.output ? h("code", {}, r.output) : "none (read by the script)")),
        h("div", { class: "card" }, h("div", { class: "muted" }, "job"),
          h("div", {}, r.job_id ? link(`#/jobs/${encodeURIComponent(r.job_id)}`, r.job_id) : "not run as a job"))),
      r.error ? [h("h2", {}, "Error"), h("pre", { class: "err", id: "d-error" }, r.error)] : null,
      h("h2", {}, "Stages"),
      table([
        ["stage", (s) => h("code", {}, s.name || "(in the caller)")],
        ["tasks", (s) => (s.total !== null && s.total !== undefined ? `${s.tasks} of ${s.total}` : s.tasks)],
        // a stage ending in a write gives one row per file it wrote
        ["rows out", (s) => `${Number(s.rows).toLocaleString("en")}${/Write(Parquet|CSV|Json)$/.test(s.name) ? " files" : ""}`],
        ["seconds", (s) => s.seconds.toFixed(3)],
      ], r.stages, { empty: "no stage has started yet" }),
      h("p", { class: "muted" }, `process ${r.pid} on ${r.host} · run id `, h("code", {}, r.id)));
  }
  await refresh();
  return { node, refresh };
}
