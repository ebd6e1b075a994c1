// The data pages: item tables (browse and filter), feature groups (schema, freshness, online
// lookup, offline counts and history), jobs with their logs, buckets with listing and download.
import { api, badge, errorBox, fill, h, hashQuery, json, link, table, when, withQuery } from "/static/ui.js";

function attr(v) {
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "");
}

export async function tables() {
  const node = h("div");
  async function refresh() {
    const d = await api("/api/tables");
    fill(node, h("h1", {}, "Tables"), table([
      ["table", (t) => link(`#/tables/${encodeURIComponent(t.name)}`, t.name)],
      ["keys", (t) => (t.keys || []).map((k) => `${k.AttributeName} (${k.KeyType})`).join(", ")],
      ["items", (t) => t.items ?? ""],
      ["created", (t) => (t.created ? when(t.created) : "")],
    ], d.items, { empty: "no item table yet" }));
  }
  await refresh();
  return { node, refresh };
}

export async function itemTable(name) {
  const q = hashQuery();
  const node = h("div");
  const filter = h("input", { id: "t-filter", type: "search", value: q.filter || "", placeholder: "status = :s", size: 30 });
  const values = h("input", { id: "t-values", value: q.values || "", placeholder: '{":s": "done"}', size: 30 });
  const form = h("form", { class: "filters", role: "search" },
    h("label", { for: "t-filter" }, "filter expression", filter),
    h("label", { for: "t-values" }, "values (JSON)", values),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = withQuery(`#/tables/${encodeURIComponent(name)}`, { filter: filter.value, values: values.value });
  });
  const box = h("div");
  const starts = [null];
  async function load() {
    let d;
    try {
      d = await api(withQuery(`/api/tables/${encodeURIComponent(name)}`, {
        filter: q.filter || "", values: q.values || "", limit: 50,
        start: starts[starts.length - 1] ? JSON.stringify(starts[starts.length - 1]) : "",
      }));
    } catch (err) { fill(box, errorBox(err)); return; }
    const columns = [...new Set(d.items.flatMap((i) => Object.keys(i)))].slice(0, 12);
    const prev = h("button", { type: "button", disabled: starts.length === 1 }, "First");
    const next = h("button", { type: "button", disabled: !d.next }, "Next");
    prev.onclick = () => { starts.length = 1; load(); };
    next.onclick = () => { starts.push(d.next); load(); };
    fill(box, table(columns.map((c) => [c, (i) => attr(i[c])]), d.items, { empty: "no item matches" }),
      h("div", { class: "pager" }, prev, next, h("span", { class: "muted" }, `${d.count} shown of ${d.scanned} scanned`)));
  }
  await load();
  fill(node, h("p", {}, link("#/tables", "← tables")), h("h1", {}, "Table ", h("code", {}, name)), form, box);
  return { node, refresh: async () => { if (starts.length === 1) await load(); } };
}

export async function features() {
  const node = h("div");
  const d = await api("/api/features");
  fill(node, h("h1", {}, "Feature groups"), table([
    ["group", (g) => link(`#/features/${encodeURIComponent(g.name)}`, g.name)],
    ["entity keys", (g) => g.entity_keys.join(", ")],
    ["event time", (g) => g.event_time],
    ["description", (g) => g.description || ""],
  ], d.items, { empty: "no feature group" }));
  return { node };
}

export async function feature(name) {
  const node = h("div");
  const lookupBox = h("div", { id: "lookup-result" });
  async function refresh() {
    const d = await api(`/api/features/${encodeURIComponent(name)}`);
    const inputs = d.entity_keys.map((k) => h("input", { id: `k-${k}`, name: k, required: true }));
    const form = h("form", { class: "filters", "aria-label": "online lookup" },
      d.entity_keys.map((k, i) => h("label", { for: `k-${k}` }, k, inputs[i])),
      h("button", { type: "submit" }, "Look up online"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const query = Object.fromEntries(d.entity_keys.map((k, i) => [k, inputs[i].value]));
      try {
        const out = await api(withQuery(`/api/features/${encodeURIComponent(name)}/online`, query));
        fill(lookupBox, out.row ? json(out.row) : h("p", { class: "muted" }, "no row for this entity"));
      } catch (err) { fill(lookupBox, errorBox(err)); }
    });
    fill(node,
      h("p", {}, link("#/features", "← feature groups")),
      h("h1", {}, "Feature group ", h("code", {}, name)),
      h("section", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "muted" }, "offline rows"), h("div", { class: "n", id: "offline-rows" }, d.counts.offline_rows)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "offline files"), h("div", { class: "n" }, d.counts.offline_files)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "online entities"), h("div", { class: "n" }, d.counts.online_entities)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "last written"), h("div", {}, d.freshness ? when(d.freshness) : "never"))),
      h("h2", {}, "Schema"),
      table([["column", (c) => h("code", {}, c.name)], ["type", (c) => c.type],
        ["role", (c) => (d.entity_keys.includes(c.name) ? "entity key" : c.name === d.event_time ? "event time" : "feature")]], d.schema),
      h("h2", {}, "Online lookup"), form, lookupBox,
      h("h2", {}, "Offline history"),
      table([["version", (c) => c.version ?? ""], ["when", (c) => (c.timestamp ? when(c.timestamp / 1000) : "")],
        ["operation", (c) => c.operation || ""], ["details", (c) => h("code", {}, JSON.stringify(c.operationMetrics || c.operationParameters || {}).slice(0, 200))]],
      d.history, { empty: "not written yet" }));
  }
  await refresh();
  return { node };
}

export async function jobs() {
  const node = h("div");
  async function refresh() {
    const d = await api("/api/jobs");
    fill(node, h("h1", {}, "Jobs"), table([
      ["job", (j) => link(`#/jobs/${encodeURIComponent(j.id)}`, j.name)],
      ["definition", (j) => j.definition],
      ["runner", (j) => j.runner],
      ["status", (j) => badge(j.status)],
      ["attempts", (j) => j.attempts],
      ["created", (j) => when(j.created_at)],
      ["reason", (j) => j.reason || "", "err"],
    ], d.items, { empty: "no job yet" }));
  }
  await refresh();
  return { node, refresh };
}

export async function job(id) {
  const node = h("div");
  let timer = null;
  async function refresh() {
    const d = await api(`/api/jobs/${encodeURIComponent(id)}`);
    const j = d.job;
    // the log grows without a ledger change: follow it every second until the job ends
    clearTimeout(timer);
    if (!["SUCCEEDED", "FAILED"].includes(j.status)) {
      timer = setTimeout(() => { if (node.isConnected) refresh().catch(() => {}); }, 1000);
    }
    fill(node, h("p", {}, link("#/jobs", "← jobs")),
      h("h1", {}, "Job ", h("code", {}, j.jobName || id), " ", badge(j.status)),
      h("h2", {}, "Log (live)"), h("pre", { class: "log", id: "job-log" }, d.log || "(no output yet)"),
      h("details", {}, h("summary", {}, "Description"), json(j)));
  }
  await refresh();
  return { node, refresh };
}

export async function buckets() {
  const node = h("div");
  const d = await api("/api/buckets");
  fill(node, h("h1", {}, "Buckets"), table([
    ["bucket", (b) => link(`#/buckets/${encodeURIComponent(b)}`, b)],
  ], d.items.map((b) => b), { empty: "no bucket" }));
  return { node };
}

export async function bucket(name) {
  const q = hashQuery();
  const node = h("div");
  const prefix = h("input", { id: "b-prefix", type: "search", value: q.prefix || "", placeholder: "key prefix" });
  const form = h("form", { class: "filters", role: "search" }, h("label", { for: "b-prefix" }, "prefix", prefix), h("button", { type: "submit" }, "List"));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = withQuery(`#/buckets/${encodeURIComponent(name)}`, { prefix: prefix.value }); });
  const box = h("div");
  async function refresh() {
    const d = await api(withQuery(`/api/buckets/${encodeURIComponent(name)}`, { prefix: q.prefix || "" }));
    fill(box, table([
      ["key", (o) => h("a", { href: withQuery(`/api/buckets/${encodeURIComponent(name)}/object`, { key: o.key }), download: "" }, o.key)],
      ["size", (o) => o.size],
      ["modified", (o) => when(o.last_modified)],
      ["etag", (o) => h("code", {}, o.etag.slice(0, 12))],
    ], d.items, { empty: "no object" }), d.truncated ? h("p", { class: "muted" }, "the first 1,000 objects: narrow the prefix") : null);
  }
  await refresh();
  fill(node, h("p", {}, link("#/buckets", "← buckets")), h("h1", {}, "Bucket ", h("code", {}, name)), form, box);
  return { node, refresh };
}
