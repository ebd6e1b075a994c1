// Small DOM helpers shared by the pages: elements, tables, badges, times, API calls.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export async function api(path, options = {}) {
  const init = { headers: { Accept: "application/json" }, ...options };
  if (options.method && options.method !== "GET") {
    init.headers = { ...init.headers, "Content-Type": "application/json", "X-Headrace": "1" };
  }
  const res = await fetch(path, init);
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

export function badge(status) {
  const s = String(status ?? "none");
  return h("span", { class: `badge s-${s.replace(/ /g, "")}` }, s);
}

export function when(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

export function ago(t, now = Date.now() / 1000) {
  if (!t) return "";
  const s = Math.max(0, now - t);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function ms(v) {
  return v === null || v === undefined ? "" : `${Number(v).toFixed(v < 10 ? 1 : 0)} ms`;
}

export function json(v) {
  return h("pre", {}, JSON.stringify(v, null, 2));
}

export function table(columns, rows, { caption, empty = "nothing yet", rowAttrs } = {}) {
  const t = h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c[0])))),
    h("tbody", {}, rows.length
      ? rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {}, columns.map((c) => {
          const v = c[1](r);
          return h("td", c[2] ? { class: c[2] } : {}, v);
        })))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))),
  );
  return t;
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, String(err.message || err));
}

// The query part of the hash (#/page?x=1) as an object, and back.
export function hashQuery() {
  const i = location.hash.indexOf("?");
  return Object.fromEntries(new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : ""));
}

export function withQuery(path, query) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// replaceChildren that, like h(), flattens arrays and skips null, undefined and false
export function fill(node, ...children) {
  const flat = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  node.replaceChildren(...flat.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

// Buttons over a keyset-paged list: `cursors` is the stack of cursors of the pages seen (the
// first is the start), `next` the cursor the server gave for the page after this one.
export function pagerButtons(cursors, next, load, [back, forward] = ["Newer", "Older"]) {
  const prev = h("button", { type: "button", disabled: cursors.length === 1 }, back);
  const more = h("button", { type: "button", disabled: next === null || next === undefined || next === "" }, forward);
  prev.onclick = () => { cursors.pop(); load(); };
  more.onclick = () => { cursors.push(next); load(); };
  return [prev, more];
}
