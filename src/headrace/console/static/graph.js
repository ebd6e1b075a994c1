// The state graph as inline SVG: states in rows by their distance from the start, each Map
// processor and Parallel branch a dashed box to the right of its state, coloured by status.
const NS = "http://www.w3.org/2000/svg";
const W = 190, H = 58, GX = 28, GY = 34, PAD = 14;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function cut(text, n) {
  text = String(text ?? "");
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

// -> {w, h, pos: Map(id -> {x, y}), boxes: [{x, y, w, h, label}]} relative to (0, 0)
function layout(cluster, edges, top) {
  const ids = new Set(cluster.nodes.map((n) => n.id));
  const out = new Map();
  for (const e of edges) {
    if (e.style === "dotted" || !ids.has(e.src) || !ids.has(e.dst)) continue;
    if (!out.has(e.src)) out.set(e.src, []);
    out.get(e.src).push(e.dst);
  }
  const incoming = new Set(edges.filter((e) => ids.has(e.dst) && ids.has(e.src) && e.style !== "dotted").map((e) => e.dst));
  let first = cluster.nodes.find((n) => n.kind === "start") ||
    cluster.nodes.find((n) => !incoming.has(n.id) && n.kind !== "end") || cluster.nodes[0];
  // ranks by breadth-first distance from the start; back edges (loops) do not push ranks
  const rank = new Map();
  if (first) rank.set(first.id, 0);
  const queue = first ? [first.id] : [];
  while (queue.length) {
    const id = queue.shift();
    for (const next of out.get(id) || []) {
      if (!rank.has(next)) { rank.set(next, rank.get(id) + 1); queue.push(next); }
    }
  }
  let maxRank = Math.max(0, ...rank.values());
  for (const n of cluster.nodes) if (!rank.has(n.id)) rank.set(n.id, ++maxRank);
  const end = cluster.nodes.find((n) => n.kind === "end");
  if (end) {
    const others = cluster.nodes.filter((n) => n !== end).map((n) => rank.get(n.id));
    rank.set(end.id, Math.max(0, ...others) + 1);
  }
  const rows = [];
  for (const n of cluster.nodes) {
    const r = rank.get(n.id);
    (rows[r] = rows[r] || []).push(n);
  }
  const pos = new Map();
  const dense = rows.filter(Boolean);
  let width = 0;
  dense.forEach((row, i) => {
    row.forEach((n, j) => pos.set(n.id, { x: PAD + j * (W + GX), y: PAD + (top ? 0 : 16) + i * (H + GY) }));
    width = Math.max(width, row.length * (W + GX) - GX);
  });
  let height = PAD * 2 + (top ? 0 : 16) + dense.length * (H + GY) - GY;
  width += PAD * 2;
  // sub-clusters to the right, each starting at the row of the state that owns it
  const boxes = [];
  let x = width + GX;
  let lowest = 0;
  for (const sub of cluster.clusters) {
    const inner = layout(sub, edges, false);
    const owner = edges.find((e) => e.style === "dotted" && sub.nodes.some((n) => n.id === e.dst));
    const y = Math.max(owner && pos.has(owner.src) ? pos.get(owner.src).y - 16 : PAD, lowest);
    for (const [id, p] of inner.pos) pos.set(id, { x: p.x + x, y: p.y + y });
    boxes.push({ x, y, w: inner.w, h: inner.h, label: sub.label });
    for (const b of inner.boxes) boxes.push({ ...b, x: b.x + x, y: b.y + y });
    lowest = y + inner.h + GY;
    height = Math.max(height, y + inner.h + PAD);
    width = Math.max(width, x + inner.w + PAD);
  }
  return { w: width, h: height, pos, boxes };
}

function allNodes(cluster, into = []) {
  into.push(...cluster.nodes);
  for (const c of cluster.clusters) allNodes(c, into);
  return into;
}

function noteOf(n) {
  if (n.items) {
    const parts = Object.entries(n.items).filter(([, v]) => v).map(([k, v]) => `${v} ${k}`);
    if (parts.length) return parts.join(" · ");
  }
  return n.note || "";
}

export function drawGraph(graph, { onSelect, selected } = {}) {
  const { w, h, pos, boxes } = layout(graph.root, graph.edges, true);
  const svg = s("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "group", "aria-label": "state graph" });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "currentColor" }))));
  for (const b of boxes) {
    svg.append(s("g", { class: "cluster" }, s("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 8 }),
      s("text", { x: b.x + 8, y: b.y + 13 }, b.label)));
  }
  for (const e of graph.edges) {
    const a = pos.get(e.src), b = pos.get(e.dst);
    if (!a || !b) continue;
    let d, lx, ly;
    if (e.style === "dotted") {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      d = `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 - 4;
    } else if (b.y > a.y) {
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
      d = `M${x1},${y1} C${x1},${y1 + 20} ${x2},${y2 - 20} ${x2},${y2}`;
      lx = (x1 + x2) / 2 + 4; ly = (y1 + y2) / 2;
    } else {  // a loop back up, or sideways: around the right
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x + W, y2 = b.y + H / 2;
      const bend = Math.max(x1, x2) + 40;
      d = `M${x1},${y1} C${bend},${y1} ${bend},${y2} ${x2},${y2}`;
      lx = bend - 10; ly = (y1 + y2) / 2;
    }
    svg.append(s("path", { d, class: `edge ${e.style}`, "marker-end": "url(#arrow)" }));
    if (e.label) svg.append(s("text", { x: lx, y: ly, class: "elabel" }, cut(e.label, 30)));
  }
  for (const n of allNodes(graph.root)) {
    const p = pos.get(n.id);
    if (!p) continue;
    const status = (n.status || "none").replace(" ", "");
    const terminal = n.kind === "start" || n.kind === "end";
    const label = `${n.name} (${n.kind}): ${n.status || "no status"}${noteOf(n) ? `, ${noteOf(n)}` : ""}`;
    const g = s("g", {
      class: `node g-${terminal ? "none" : status}${selected === n.path ? " sel" : ""}`,
      tabindex: terminal ? null : 0, role: terminal ? null : "button", "aria-label": label,
      "data-path": n.path, "data-status": n.status || "",
    },
      s("rect", { x: p.x, y: p.y, width: W, height: H, rx: terminal ? 29 : 6 }),
      s("text", { x: p.x + 10, y: p.y + 18 }, cut(n.name, 26)),
      s("text", { x: p.x + 10, y: p.y + 33, class: "kind" }, terminal ? "" : `${n.kind}${n.caught ? " · caught" : ""}`),
      s("text", { x: p.x + 10, y: p.y + 48, class: "note" }, cut(noteOf(n), 34)),
      s("title", {}, label));
    if (!terminal && onSelect) {
      g.addEventListener("click", () => onSelect(n));
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onSelect(n); } });
    }
    svg.append(g);
  }
  return svg;
}
