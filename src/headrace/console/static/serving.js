// Serving: the app's HTTP endpoint with its routes (requests, errors, latency), the replicas
// answering them and the model version they run; the model registry's models, their versions
// and the moves of their aliases.
import { api, badge, fill, h, json, link, table, when } from "/static/ui.js";

const ms = (v) => (v === null || v === undefined ? "" : `${Number(v).toLocaleString()} ms`);

function served(d) {
  if (!d.routes.length) return [h("p", { class: "muted" }, "the app declares no HTTP route")];
  const model = d.model;
  return [
    h("p", {}, d.serving
      ? ["Endpoint ", h("code", { id: "endpoint" }, d.url), ` · ${d.replicas.length} of ${d.replicas_wanted} replicas taking requests`]
      : "The routes are not served: the setting serve is empty (HEADRACE_SERVE)."),
    h("h2", {}, "Routes"),
    table([
      ["route", (r) => h("code", {}, r.key)],
      ["function", (r) => r.function],
      ["model", (r) => r.model || ""],
      ["requests", (r) => Object.entries(r.requests).map(([code, n]) => `${n} × ${code}`).join(", ")],
      ["5xx", (r) => r.errors],
      ["mean", (r) => (r.latency ? ms(r.latency.mean_ms) : "")],
      ["p50 ≤", (r) => (r.latency ? ms(r.latency.p50_ms_at_most) : "")],
      ["p95 ≤", (r) => (r.latency ? ms(r.latency.p95_ms_at_most) : "")],
    ], d.routes, { caption: "latency percentiles are the upper bound of the histogram bucket they fall in" }),
    h("h2", {}, "Replicas"),
    table([
      ["replica", (r) => r.number],
      ["pid", (r) => r.pid],
      ["state", (r) => badge(r.state === "ready" ? "ok" : r.state)],
      ["in flight", (r) => r.in_flight],
      ["model version", (r) => r.model || ""],
    ], d.replicas, { empty: d.serving ? "no replica is ready" : "not serving" }),
    model ? h("p", { id: "bound-model" }, "Bound model ", h("code", {}, model.ref), " · replicas run ",
      model.serving.length ? model.serving.map((m) => h("code", {}, m)) : "none yet",
      model.refused.length ? ` · versions refused after a failed roll-over: ${model.refused.join(", ")}` : "") : null,
  ];
}

export async function serving() {
  const node = h("div");
  async function refresh() {
    const [d, m] = await Promise.all([api("/api/serving"), api("/api/models")]);
    fill(node, h("h1", {}, "Serving"), ...served(d),
      h("h2", {}, "Models"),
      table([
        ["model", (x) => link(`#/serving/${encodeURIComponent(x.name)}`, x.name)],
        ["versions", (x) => x.versions],
        ["latest", (x) => x.latest ?? ""],
        ["aliases", (x) => Object.entries(x.aliases).map(([a, v]) => `${a} → ${v}`).join(", ")],
        ["updated", (x) => when(x.updated_at ?? x.created_at)],
      ], m.items, { empty: "no model in the registry" }));
  }
  await refresh();
  return { node, refresh };
}

export async function model(name) {
  const node = h("div");
  async function refresh() {
    const d = await api(`/api/models/${encodeURIComponent(name)}`);
    fill(node, h("p", {}, link("#/serving", "← serving")), h("h1", {}, "Model ", h("code", {}, name)),
      h("h2", {}, "Versions"),
      table([
        ["version", (v) => v.version],
        ["aliases", (v) => v.aliases.join(", ")],
        ["format", (v) => v.format],
        ["framework", (v) => v.framework || ""],
        ["size", (v) => `${v.size.toLocaleString()} B`],
        ["metrics", (v) => Object.entries(v.metrics).map(([k, x]) => `${k} ${x}`).join(", ")],
        ["created", (v) => `${when(v.created_at)} by ${v.created_by}`],
        ["details", (v) => h("details", {}, h("summary", {}, "more"), json({ tags: v.tags, signature: v.signature, libraries: v.libraries, sha256: v.sha256, uri: v.uri, description: v.description }))],
      ], d.versions, { empty: "no version" }),
      h("h2", {}, "Alias moves"),
      table([
        ["alias", (a) => a.alias],
        ["to", (a) => a.version ?? "(removed)"],
        ["from", (a) => a.previous ?? "(new)"],
        ["when", (a) => when(a.moved_at)],
        ["by", (a) => a.moved_by],
      ], d.alias_moves, { empty: "no alias yet" }));
  }
  await refresh();
  return { node, refresh };
}
