// Streams: per pipeline and stage, records and bytes per minute as charts; lag, watermark,
// late records per partition and per window; source health; a browser of the late streams.
import { api, badge, fill, h, table, when, withQuery } from "/static/ui.js";

const NS = "http://www.w3.org/2000/svg";

function chart(title, series, minutes) {
  const w = 320, hgt = 120, left = 36, bottom = 16;
  const max = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const first = minutes[0], last = minutes[1];
  const x = (m) => left + ((m - first) / Math.max(1, last - first)) * (w - left - 6);
  const y = (v) => hgt - bottom - (v / max) * (hgt - bottom - 8);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${series.map((s) => `${s.name} total ${s.points.reduce((a, p) => a + p[1], 0)}`).join(", ")}`);
  const text = (tx, ty, t) => { const e = document.createElementNS(NS, "text"); e.setAttribute("x", tx); e.setAttribute("y", ty); e.textContent = t; return e; };
  svg.append(text(2, 12, String(max)), text(2, hgt - bottom, "0"), text(left, hgt - 2, "per minute, last hour"));
  for (const sr of series) {
    const pl = document.createElementNS(NS, "polyline");
    pl.setAttribute("class", sr.cls);
    pl.setAttribute("points", sr.points.map(([m, v]) => `${x(m).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    svg.append(pl);
  }
  return h("figure", { class: "chart" }, h("figcaption", {}, title, " ", series.map((s) => h("span", { class: "muted" }, ` ${s.name}`))), svg);
}

// a page of records of one stream (by default a window's late stream), newest first
function recordBrowser(names, lateNames) {
  const box = h("div");
  const pick = h("select", { id: "s-stream" }, names.map((n) => h("option", { value: n, selected: n === lateNames[0] }, lateNames.includes(n) ? `${n} (late records)` : n)));
  const out = h("div", { id: "records" });
  let offset = null;
  async function load() {
    const d = await api(withQuery(`/api/streams/${encodeURIComponent(pick.value)}/records`, { limit: 20, offset: offset ?? "" }));
    const cols = [...new Set(d.items.flatMap((r) => Object.keys(r)))].slice(0, 10);
    const older = h("button", { type: "button", disabled: d.offset <= d.start }, "Older");
    const newer = h("button", { type: "button", disabled: d.offset + d.items.length >= d.end }, "Newer");
    older.onclick = () => { offset = Math.max(d.start, d.offset - 20); load(); };
    newer.onclick = () => { offset = d.offset + 20; load(); };
    fill(out, h("p", { class: "muted" }, `offsets ${d.offset}–${d.offset + d.items.length} of ${d.start}–${d.end}`),
      table(cols.map((c) => [c, (r) => (typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : String(r[c] ?? ""))]), d.items, { empty: "no record in this stream" }),
      h("div", { class: "pager" }, older, newer));
  }
  pick.addEventListener("change", () => { offset = null; load(); });
  fill(box, h("h2", { id: "stream-browser" }, "Stream records"), h("label", { for: "s-stream" }, "stream", pick), out);
  return { box, load };
}

export async function streams() {
  const node = h("div");
  let browser = null;
  async function refresh() {
    const d = await api("/api/streams?minutes=60");
    if (!browser && d.streams.length) {
      browser = recordBrowser(d.streams, d.late_streams);
      await browser.load();
    }
    const now = Math.floor(Date.now() / 60000);
    const span = [d.since_minute, now];
    const stages = new Map();
    for (const r of d.stats) {
      const key = `${r.pipeline} · ${r.stage}`;
      if (!stages.has(key)) stages.set(key, []);
      stages.get(key).push(r);
    }
    const charts = [];
    for (const [key, rows] of stages) {
      charts.push(chart(`${key}: records`, [
        { name: "in", cls: "in", points: rows.map((r) => [r.minute, r.records_in]) },
        { name: "out", cls: "out", points: rows.map((r) => [r.minute, r.records_out]) },
        { name: "late", cls: "late", points: rows.map((r) => [r.minute, r.late]) },
      ], span));
      charts.push(chart(`${key}: bytes`, [
        { name: "in", cls: "in", points: rows.map((r) => [r.minute, r.bytes_in]) },
        { name: "out", cls: "out", points: rows.map((r) => [r.minute, r.bytes_out]) },
      ], span));
    }
    fill(node, 
      h("h1", {}, "Streams"),
      h("h2", {}, "Pipelines: lag, watermark, late records"),
      table([
        ["pipeline", (c) => c.pipeline],
        ["partition", (c) => c.partition],
        ["batches", (c) => c.seq],
        ["records", (c) => c.records],
        ["lag", (c) => Math.max(0, (c.log_end || 0) - c.offset)],
        ["watermark", (c) => when(c.watermark)],
        ["late", (c) => c.late],
        ["state", (c) => badge(c.failures ? "failing" : "ok")],
        ["error", (c) => c.last_error || "", "err"],
      ], d.checkpoints, { empty: "no pipeline has run yet" }),
      h("h2", { id: "late-windows" }, "Late records per window"),
      table([
        ["pipeline", (c) => c.pipeline],
        ["stage", (c) => c.stage],
        ["window", (c) => (c.window_start === null ? "no event time" : `${when(c.window_start)} – ${when(c.window_end)}`)],
        ["late records", (c) => c.records],
        ["reason", (c) => c.reason],
        ["last seen", (c) => when(c.updated_at)],
      ], d.late_windows, { empty: "no window has missed a record" }),
      h("h2", {}, "Records and bytes per minute"),
      charts.length ? h("div", { class: "charts" }, charts) : h("p", { class: "muted" }, "no records in the last hour"),
      h("h2", {}, "Sources and stream threads"),
      table([
        ["component", (c) => c.component],
        ["status", (c) => badge(c.status)],
        ["failures", (c) => c.failures],
        ["rejected", (c) => c.rejected],
        ["since", (c) => when(c.since)],
        ["error", (c) => c.last_error || "", "err"],
      ], d.health, { empty: "no source" }),
      browser ? browser.box : null);
  }
  await refresh();
  return { node, refresh };
}
