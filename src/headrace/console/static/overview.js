// Overview: coordinators, settings and their origins, buckets and triggers, sources and
// pipelines, errors of the last hour.
import { ago, api, badge, h, link, table, when, fill } from "/static/ui.js";

export async function overview() {
  const node = h("div");
  async function refresh() {
    const d = await api("/api/overview");
    fill(node, ...build(d));
  }
  await refresh();
  return { node, refresh };
}

function sum(counts) {
  return Object.values(counts || {}).reduce((a, b) => a + b, 0);
}

function build(d) {
  const totals = {};
  for (const c of Object.values(d.invocation_counts)) {
    for (const [s, n] of Object.entries(c)) totals[s] = (totals[s] || 0) + n;
  }
  const card = (label, n, href) => h("div", { class: "card" },
    h("div", { class: "muted" }, label), h("div", { class: "n" }, href ? link(href, n) : n));
  return [
    h("h1", {}, `Overview · ${d.app}`),
    h("section", { class: "cards", "aria-label": "Totals" },
      card("coordinators", d.coordinators.length),
      card("invocations", sum(totals), "#/invocations"),
      card("running", (totals.running || 0) + (totals.pending || 0), "#/invocations?status=running"),
      card("dead letters", d.dead_letters, "#/invocations"),
      card("errors, last hour", d.errors.length + d.stream_errors.length + d.dataset_errors.length),
    ),
    h("h2", { id: "coordinators" }, "Coordinators"),
    table([
      ["id", (c) => h("code", {}, c.id)],
      ["host", (c) => c.host],
      ["pid", (c) => c.pid],
      ["started", (c) => when(c.started_at)],
      ["heartbeat", (c) => ago(c.heartbeat_at, d.now)],
      ["executor", (c) => c.info.executor || ""],
      ["health", (c) => badge(d.now - c.heartbeat_at < 30 ? "ok" : "failing")],
      ["", (c) => (c.me ? "this console" : "")],
    ], d.coordinators, { empty: "no live coordinator" }),
    h("h2", { id: "errors" }, "Errors of the last hour"),
    table([
      ["when", (e) => when(e.finished_at)],
      ["function", (e) => link(`#/invocations?function=${encodeURIComponent(e.function)}`, e.function)],
      ["invocation", (e) => link(`#/invocations/${encodeURIComponent(e.invocation_id)}`, e.invocation_id.slice(0, 8))],
      ["attempt", (e) => e.number],
      ["status", (e) => badge(e.status)],
      ["error", (e) => e.error || "", "err"],
    ], d.errors, { empty: "no failed attempt in the last hour" }),
    d.stream_errors.length ? table([
      ["component", (e) => e.component],
      ["since", (e) => when(e.since)],
      ["error", (e) => e.error || "", "err"],
    ], d.stream_errors) : null,
    d.dataset_errors.length ? table([
      ["when", (e) => when(e.finished_at)],
      ["dataset run", (e) => link(`#/datasets/${encodeURIComponent(e.id)}`, `${e.name} · ${e.action}`)],
      ["error", (e) => (e.error || "").split("\n")[0], "err"],
    ], d.dataset_errors, { caption: "failed dataset runs" }) : null,
    h("h2", { id: "buckets" }, "Buckets and their triggers"),
    table([
      ["bucket", (b) => b.name],
      ["triggers", (b) => h("ul", {}, b.triggers.map((r) =>
        h("li", {}, h("code", {}, r.target), " ", h("span", { class: "muted" }, r.pattern.map((p) => JSON.stringify(p.detail || p)).join(" and ")))))],
    ], d.buckets, { empty: "no bucket is watched" }),
    h("h2", { id: "functions" }, "Functions"),
    table([
      ["function", (f) => link(`#/invocations?function=${encodeURIComponent(f)}`, f)],
      ["invocations", (f) => sum(d.invocation_counts[f])],
      ["by status", (f) => Object.entries(d.invocation_counts[f] || {}).map(([s, n]) => [badge(s), ` ${n} `])],
    ], d.functions),
    d.state_machines.length ? h("p", {}, "State machines: ",
      d.state_machines.map((m) => [link(`#/executions?state_machine=${encodeURIComponent(m)}`, m), " "])) : null,
    h("h2", { id: "sources" }, "Sources and pipelines"),
    table([
      ["source", (s) => s.name],
      ["kind", (s) => s.kind],
      ["health", (s) => badge(s.health ? s.health.status : "not started")],
      ["error", (s) => (s.health && s.health.last_error) || "", "err"],
    ], d.sources, { empty: "no stream source" }),
    table([
      ["pipeline", (p) => link("#/streams", p.name)],
      ["stream", (p) => p.stream],
      ["state", (p) => badge(p.state)],
      ["partitions", (p) => p.partitions],
      ["records", (p) => p.records],
      ["lag", (p) => p.lag],
      ["error", (p) => p.last_error || "", "err"],
    ], d.pipelines, { empty: "no pipeline" }),
    h("h2", { id: "settings" }, "Settings"),
    table([
      ["setting", (s) => h("code", {}, s.name)],
      ["value", (s) => h("code", {}, s.value ?? "")],
      ["from", (s) => s.origin],
      ["variable", (s) => (s.env ? h("code", {}, s.env) : "")],
    ], d.settings),
  ];
}
