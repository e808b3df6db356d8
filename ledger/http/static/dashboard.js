// peerledger dashboard: vanilla JS, no build step, no third-party code.
// The token lives in this tab's sessionStorage and goes only to this origin.
"use strict";

const TOKEN_KEY = "peerledger.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 15000;
const $ = (id) => document.getElementById(id);

// -- the API ---------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status === 401) throw new Unauthorized("token refused");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${response.status} ${detail}`);
  }
  return response.json();
}

const platformPath = (suffix) => `/v1/platforms/${encodeURIComponent($("platform").value)}/${suffix}`;
const fmt = (n) => Number(n).toLocaleString("en-US");

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => el("option", { value: v }, v)));
  if (chosen !== undefined && values.includes(chosen)) select.value = chosen;
}

// -- the Sankey ------------------------------------------------------------
// Three columns of nodes (sold works, paying works, recipients), heights in
// proportion to minor units; each link is a cubic Bézier band whose width is
// its amount, stacked at both ends in the order of the nodes it joins.

const SANKEY = { nodeWidth: 14, padding: 10, marginX: 190, marginY: 10, labelGap: 6 };

function drawSankey(svg, flows, empty = "No sales in this period.") {
  svg.replaceChildren();
  const width = svg.clientWidth || 900;
  const height = svg.clientHeight || 520;
  if (!flows.nodes.length) {
    svg.append(el("svg:text", { x: 20, y: 30 }, empty));
    return;
  }
  const columns = [[], [], []];
  for (const n of flows.nodes) columns[n.column].push({ ...n, outs: [], ins: [] });
  const byId = new Map(columns.flat().map((n) => [n.id, n]));
  const usableH = height - 2 * SANKEY.marginY;
  const scale = Math.min(...columns.filter((c) => c.length).map((c) => {
    const total = c.reduce((s, n) => s + n.amount, 0);
    return (usableH - SANKEY.padding * (c.length - 1)) / Math.max(total, 1);
  }));
  const step = (width - 2 * SANKEY.marginX - SANKEY.nodeWidth) / 2;
  columns.forEach((column, i) => {
    const total = column.reduce((s, n) => s + n.amount * scale, 0) + SANKEY.padding * (column.length - 1);
    let y = SANKEY.marginY + (usableH - total) / 2;
    for (const n of column) {
      n.x = SANKEY.marginX + i * step;
      n.y = y;
      n.h = Math.max(n.amount * scale, 1);
      y += n.amount * scale + SANKEY.padding;
    }
  });
  const links = flows.links.map((l) => ({ ...l, s: byId.get(l.source), t: byId.get(l.target) }))
    .filter((l) => l.s && l.t);
  for (const l of links) { l.s.outs.push(l); l.t.ins.push(l); }
  for (const n of byId.values()) {
    let out = n.y;
    for (const l of n.outs.sort((a, b) => a.t.y - b.t.y)) { l.y0 = out + (l.amount * scale) / 2; out += l.amount * scale; }
    let inn = n.y;
    for (const l of n.ins.sort((a, b) => a.s.y - b.s.y)) { l.y1 = inn + (l.amount * scale) / 2; inn += l.amount * scale; }
  }
  const linkLayer = el("svg:g", { class: "links" });
  for (const l of links) {
    const x0 = l.s.x + SANKEY.nodeWidth, x1 = l.t.x, xm = (x0 + x1) / 2;
    const path = el("svg:path", {
      class: `link kind-${l.t.kind}`, d: `M${x0},${l.y0} C${xm},${l.y0} ${xm},${l.y1} ${x1},${l.y1}`,
      "stroke-width": Math.max(l.amount * scale, 1), "data-source": l.source, "data-target": l.target,
    });
    path.append(el("svg:title", {}, `${l.s.label} → ${l.t.label}: ${fmt(l.amount)}`));
    linkLayer.append(path);
  }
  const nodeLayer = el("svg:g", { class: "nodes" });
  for (const n of byId.values()) {
    const g = el("svg:g", { class: "node", "data-id": n.id });
    const rect = el("svg:rect", { class: `kind-${n.kind}`, x: n.x, y: n.y, width: SANKEY.nodeWidth, height: n.h });
    rect.append(el("svg:title", {}, `${n.label}: ${fmt(n.amount)}`));
    const left = n.column === 0;
    const label = el("svg:text", {
      x: left ? n.x - SANKEY.labelGap : n.x + SANKEY.nodeWidth + SANKEY.labelGap,
      y: n.y + n.h / 2, "dominant-baseline": "middle", "text-anchor": left ? "end" : "start",
    }, `${n.label} ${fmt(n.amount)}`);
    g.append(rect, label);
    nodeLayer.append(g);
  }
  svg.append(linkLayer, nodeLayer);
}

// -- the ingest-rate bars --------------------------------------------------

function drawRate(svg, rate) {
  svg.replaceChildren();
  const width = svg.clientWidth || 400, height = svg.clientHeight || 160, bottom = height - 18;
  const max = Math.max(1, ...rate.minutes.map((m) => m.accepted + m.rejected));
  const w = width / rate.minutes.length;
  svg.append(el("svg:line", { class: "axis", x1: 0, x2: width, y1: bottom, y2: bottom }));
  rate.minutes.forEach((m, i) => {
    const ha = (m.accepted / max) * (bottom - 14), hr = (m.rejected / max) * (bottom - 14);
    const bar = el("svg:rect", { class: "bar-accepted", x: i * w + 1, y: bottom - ha, width: Math.max(w - 2, 1), height: ha });
    bar.append(el("svg:title", {}, `${m.minute}Z: ${fmt(m.accepted)} accepted, ${fmt(m.rejected)} rejected`));
    const rej = el("svg:rect", { class: "bar-rejected", x: i * w + 1, y: bottom - ha - hr, width: Math.max(w - 2, 1), height: hr });
    svg.append(bar, rej);
  });
  svg.append(el("svg:text", { x: 2, y: 12 }, `max ${fmt(max)}/min`));
  svg.append(el("svg:text", { x: 2, y: height - 4 }, `${rate.minutes[0].minute.slice(11)}Z`));
  svg.append(el("svg:text", { x: width - 2, y: height - 4, "text-anchor": "end" }, "now"));
  const last = rate.minutes[rate.minutes.length - 1];
  const total = rate.minutes.reduce((s, m) => s + m.accepted, 0);
  $("rate-caption").textContent = `${fmt(total)} accepted in the last hour; this minute ${fmt(last.accepted)} accepted, ${fmt(last.rejected)} rejected`;
}

// -- panels ------------------------------------------------------------------

async function loadFlows(keepChoice) {
  const q = new URLSearchParams();
  if (keepChoice && $("period").value) q.set("period", $("period").value);
  if (keepChoice && $("currency").value) q.set("currency", $("currency").value);
  const flows = await api(platformPath(`flows?${q}`));
  const periods = [...new Set(flows.available.map((a) => a.period))].sort().reverse();
  fillSelect($("period"), periods, flows.period ?? undefined);
  const currencies = flows.available.filter((a) => a.period === flows.period).map((a) => a.currency);
  fillSelect($("currency"), currencies, flows.currency ?? undefined);
  $("flow-caption").textContent = flows.period
    ? `${flows.period}, ${flows.currency}: ${fmt(flows.realized)} realized in ${fmt(flows.values)} sales, ${fmt(flows.reversed)} reversed (log seq ${fmt(flows.seq)})`
    : "no sales yet";
  drawSankey($("flow"), flows);
  return flows;
}

async function loadEarners(flows) {
  const body = $("earners").tBodies[0];
  if (!flows.period) { body.replaceChildren(); return; }
  const q = new URLSearchParams({ period: flows.period, currency: flows.currency, limit: "10" });
  const doc = await api(platformPath(`earners?${q}`));
  $("earners-caption").textContent = `${doc.period}, ${doc.currency}`;
  body.replaceChildren(...doc.earners.map((e) => {
    const tr = el("tr");
    tr.append(el("td", {}, e.prosumer), ...["earned", "reversed", "paid", "net"].map((k) => el("td", { class: "num" }, fmt(e[k]))));
    return tr;
  }));
}

// A usage pool: its flows as booked, and the two methods side by side.
const ratio = (r) => (r ? Number(r.decimal) : null);
const pct = (r) => (r ? `${(ratio(r) * 100).toFixed(2)} %` : "-");

function numCell(n, signed) {
  const cls = signed ? (n > 0 ? "num gain" : n < 0 ? "num lose" : "num") : "num";
  return el("td", { class: cls }, signed && n > 0 ? `+${fmt(n)}` : fmt(n));
}

async function loadPools() {
  const { pools } = await api(platformPath("pools"));
  $("pools").hidden = !pools.length;
  if (!pools.length) return;
  const chosen = $("pool").value;
  fillSelect($("pool"), pools.map((p) => p.pool), chosen || (pools.find((p) => p.closed) || pools[0]).pool);
  await loadPool();
}

async function loadPool() {
  const pool = await api(platformPath(`pools/${encodeURIComponent($("pool").value)}`));
  const c = pool.comparison;
  $("pool-caption").textContent = pool.closed
    ? `${pool.method}, closed at seq ${fmt(pool.closed_seq)}: ${fmt(pool.funded)} ${pool.currency} from ${fmt(pool.funders)} subscribers` +
      `, ${fmt(c.works_used)} works used, ${fmt(pool.reversed)} refunded`
    : `${pool.method}, open: ${fmt(pool.funded)} ${pool.currency} from ${fmt(pool.funders)} subscribers so far`;
  drawSankey($("pool-flow"), pool, pool.closed ? "Nothing was funded: the pool booked nothing." : "Open: nothing is split before the close.");
  const bodies = ["pool-methods", "pool-recipients", "pool-works"].map((id) => $(id).tBodies[0]);
  if (!c) { bodies.forEach((b) => b.replaceChildren()); return; }
  const label = (m) => (m === pool.method ? `${m} (booked)` : m);
  bodies[0].replaceChildren(...["pro_rata", "user_centric"].map((m) => {
    const tr = el("tr");
    tr.append(el("td", {}, label(m)), el("td", { class: "num" }, c[m].gini ? ratio(c[m].gini).toFixed(3) : "-"),
      el("td", { class: "num" }, pct(c[m].top_1pct_share)), el("td", { class: "num" }, pct(c[m].top_10pct_share)),
      el("td", { class: "num" }, `${fmt(c[m].paid)} of ${fmt(c.prosumers)}`));
    return tr;
  }));
  const moved = c.under_other_method;
  const summary = el("tr");
  summary.append(el("td", { colspan: 5, class: "hint" },
    `under ${pool.other_method}: ${fmt(moved.gain)} prosumers would get more, ${fmt(moved.lose)} less, ${fmt(moved.same)} the same`));
  bodies[0].append(summary);
  for (const id of ["pool-booked-head", "pool-works-booked-head"]) $(id).textContent = `${pool.method} (booked)`;
  for (const id of ["pool-other-head", "pool-works-other-head"]) $(id).textContent = pool.other_method;
  bodies[1].replaceChildren(...c.recipients.map((r) => {
    const tr = el("tr");
    tr.append(el("td", {}, r.recipient), numCell(r.booked), numCell(r.alternative), numCell(r.alternative - r.booked, true));
    return tr;
  }));
  bodies[2].replaceChildren(...c.works.map((w) => {
    const tr = el("tr");
    tr.append(el("td", {}, w.work), numCell(w.booked), numCell(w.alternative));
    return tr;
  }));
}

async function loadRejects() {
  const rows = await api(platformPath("rejects?order=desc&limit=10"));
  $("rejects").tBodies[0].replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    tr.append(el("td", { class: "num" }, r.reject_id), el("td", {}, r.received_at), el("td", {}, r.id ?? "?"),
      el("td", {}, r.code), el("td", { class: "msg", title: r.raw }, r.message), el("td", {}, r.source));
    return tr;
  }));
}

async function loadRate() {
  drawRate($("rate"), await api(platformPath("ingest-rate?minutes=60")));
}

async function refresh(keepChoice) {
  $("status").textContent = "";
  try {
    const flows = await loadFlows(keepChoice);
    await Promise.all([loadEarners(flows), loadRejects(), loadRate(), loadPools()]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) return signOut("the token was refused (revoked?)");
    $("status").textContent = String(e.message || e);
  }
}

// -- session -----------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("board").hidden = true;
  $("choose").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function start() {
  try {
    const who = await api("/v1/whoami");
    const { platforms } = await api("/v1/platforms");
    $("who").textContent = `token ${who.token_id} · ${who.role} · ${who.platform ?? "every platform"}`;
    fillSelect($("platform"), platforms);
    $("login").hidden = true;
    $("choose").hidden = false;
    $("board").hidden = false;
    if (!platforms.length) { $("status").textContent = "no platform has events yet"; return; }
    await refresh(false);
  } catch (e) {
    signOut(e instanceof Unauthorized ? "that token was refused" : String(e.message || e));
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("platform").addEventListener("change", () => { $("pool").replaceChildren(); refresh(false); });
$("period").addEventListener("change", () => { $("currency").value = ""; refresh(true); });
$("currency").addEventListener("change", () => refresh(true));
$("refresh").addEventListener("click", () => refresh(true));
$("pool").addEventListener("change", () => loadPool().catch((e) => { $("status").textContent = String(e.message || e); }));
$("signout").addEventListener("click", () => signOut());
setInterval(() => { if (!$("board").hidden) loadRate().catch(() => {}); }, REFRESH_MS);

if (sessionStorage.getItem(TOKEN_KEY)) start(); else signOut();
