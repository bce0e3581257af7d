// tritonfleet dashboard: fleet map, per-model latency against the SLO, the decision stream and
// usage per tenant. No framework, no chart library, nothing from a CDN: plain DOM and SVG.
//
// Everything the server sends is put in the page with textContent / setAttribute, never as
// HTML, so a model name like "<img onerror=...>" stays text. The API token (optional today:
// reads are open) is kept in sessionStorage and sent as an Authorization header on every call,
// the event stream included: it is read with fetch(), not EventSource, so the token never
// appears in a URL.
"use strict";

(() => {
  const POLL_MS = 2000;
  const USAGE_MS = 30000;
  const WINDOW_S = 300; // what the charts show
  const KEEP_POINTS = 1200; // per model, in the page
  const MAX_EVENTS = 200; // rows kept in the decision list
  const MAX_STREAM_BUFFER = 1 << 20; // an event larger than this ends the stream
  const TOKEN_KEY = "tritonfleet.token";
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["READY", "LOADING", "PENDING", "UNLOADING", "FAILED", "EVICTED"];
  const HEALTH = ["LIVE", "STARTING", "DOWN"];
  const KINDS = ["autopilot", "placement", "replica", "fleet"];

  const $ = (id) => document.getElementById(id);
  const series = new Map(); // model -> {points: [], slo: {}, state, card}
  let columns = [];
  let lastAt = null; // newest point time seen: the next poll asks only for newer ones
  let lastSeq = null; // newest event id seen: a reconnect resumes after it
  let streamAbort = null;
  let notices = new Map();

  // --- small helpers -------------------------------------------------------------------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function known(value, allowed, fallback) {
    return allowed.includes(value) ? value : fallback;
  }
  function fmtMs(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return "–";
    const ms = s * 1000;
    const text = ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
    return text.replace(/\.0+$/, "") + " ms";
  }
  function num(v) {
    if (v >= 100) return Math.round(v).toLocaleString();
    const t = v.toPrecision(3);
    return t.includes(".") ? t.replace(/\.?0+$/, "") : t;
  }
  function fmtBytes(n) {
    if (!Number.isFinite(n)) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(n >= 10 || i === 0 ? 0 : 1) + " " + units[i];
  }
  function fmtTime(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString();
  }
  function notice(key, text) {
    if (text) notices.set(key, text); else notices.delete(key);
    const n = $("notice");
    n.textContent = [...notices.values()].join(" · ");
    n.hidden = notices.size === 0;
  }
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }
  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = token();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }
  async function getJson(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-store", credentials: "omit" });
    if (r.status === 401 || r.status === 403) {
      notice("auth", "the API refused this token (" + r.status + "): enter the right one above");
      const err = new Error("unauthorized");
      err.status = r.status;
      throw err;
    }
    notice("auth", null);
    if (!r.ok) {
      const err = new Error(path + ": HTTP " + r.status);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  // --- fleet map -----------------------------------------------------------------------
  function renderFleet(fleet) {
    const box = $("fleet");
    box.replaceChildren();
    const servers = Array.isArray(fleet.servers) ? fleet.servers : [];
    let used = 0, cap = 0;
    for (const s of servers) {
      const card = el("div", "server");
      card.dataset.server = String(s.id);
      const h = el("h3");
      h.append(el("span", "server-id", s.id));
      const health = known(s.health, HEALTH, "DOWN");
      h.append(el("span", "chip health-" + health, s.health));
      card.append(h);
      const u = Number(s.used_bytes) || 0, c = Number(s.capacity_bytes) || 0;
      used += u; cap += c;
      const bar = svg("svg", { class: "mem", viewBox: "0 0 100 10", preserveAspectRatio: "none" });
      bar.append(svg("rect", { class: "cap", x: 0, y: 0, width: 100, height: 10, rx: 2 }));
      const frac = c > 0 ? Math.min(1, u / c) : 0;
      bar.append(svg("rect", {
        class: "used" + (frac >= 0.95 ? " full" : ""), x: 0, y: 0, width: (frac * 100).toFixed(2), height: 10, rx: 2,
      }));
      card.append(bar);
      card.append(el("div", "muted mem-text", fmtBytes(u) + " of " + fmtBytes(c) + " in use (" + (frac * 100).toFixed(0) + "%)"));
      const chips = el("div", "chips");
      for (const m of s.models || []) {
        const st = known(m.state, STATES, "PENDING");
        const chip = el("span", "chip model-chip state-" + st, m.name + " · " + m.state);
        chip.dataset.model = String(m.name);
        chips.append(chip);
      }
      if (!(s.models || []).length) chips.append(el("span", "empty", "no models"));
      card.append(chips);
      box.append(card);
    }
    if (!servers.length) box.append(el("p", "empty", fleet.note || "no servers"));
    $("fleet-summary").textContent = servers.length + " server(s), " + fmtBytes(used) + " of " + fmtBytes(cap) + " in use";
    const unplaced = $("unplaced");
    unplaced.replaceChildren();
    for (const [name, why] of Object.entries(fleet.unplaced || {})) {
      unplaced.append(el("div", null, "unplaced: " + name + " — " + why));
    }
  }

  // --- latency charts ------------------------------------------------------------------
  function col(name) {
    return columns.indexOf(name);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function pathOf(points, xi, yi, x, y) {
    let d = "", pen = false, n = 0;
    for (const p of points) {
      const v = p[yi];
      if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(p[xi]).toFixed(1) + " " + y(v).toFixed(1);
      pen = true; n++;
    }
    return { d, n };
  }
  function drawChart(svgEl, points, lines, now, opts) {
    const W = 400, H = opts.height, L = 40, R = 6, T = 6, B = 16;
    svgEl.replaceChildren();
    svgEl.setAttribute("viewBox", "0 0 " + W + " " + H);
    svgEl.setAttribute("preserveAspectRatio", "none");
    const ati = col("at");
    // The last WINDOW_S seconds, or less while there is less history (at least a minute).
    const first = points.length ? points[0][ati] : now;
    const span = Math.min(WINDOW_S, Math.max(60, now - first));
    const shown = points.filter((p) => p[ati] >= now - span);
    let top = 0;
    for (const ln of lines) for (const p of shown) if (Number.isFinite(p[ln.i])) top = Math.max(top, p[ln.i] * ln.scale);
    for (const g of opts.guides || []) if (Number.isFinite(g.value)) top = Math.max(top, g.value * 1.15);
    top = niceMax(top);
    const x = (t) => L + ((t - (now - span)) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    svgEl.append(svg("rect", { class: "frame", x: L, y: T, width: W - L - R, height: H - T - B }));
    for (const f of [0.5]) {
      svgEl.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(top * f), y2: y(top * f) }));
    }
    const lbl = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; svgEl.append(t); };
    lbl(opts.label(top), { x: L - 4, y: T + 8, "text-anchor": "end" });
    lbl(opts.label(top / 2), { x: L - 4, y: y(top / 2) + 3, "text-anchor": "end" });
    lbl("0", { x: L - 4, y: H - B, "text-anchor": "end" });
    lbl(span >= 120 ? "-" + Math.round(span / 60) + " min" : "-" + Math.round(span) + " s", { x: L, y: H - 3 });
    lbl("now", { x: W - R, y: H - 3, "text-anchor": "end" });
    for (const g of opts.guides || []) {
      if (!Number.isFinite(g.value)) continue;
      svgEl.append(svg("line", { class: "slo " + g.cls, x1: L, x2: W - R, y1: y(g.value), y2: y(g.value) }));
      lbl(g.text, { x: W - R - 2, y: y(g.value) - 2, "text-anchor": "end" });
    }
    for (const ln of lines) {
      const { d, n } = pathOf(shown, ati, ln.i, x, (v) => y(v * ln.scale));
      const path = svg("path", { class: "series " + ln.cls, d: d || "M0 0" });
      path.dataset.points = String(n);
      svgEl.append(path);
    }
  }
  function modelCard(name) {
    let s = series.get(name);
    if (s) return s;
    const card = el("div", "model");
    card.dataset.model = name;
    const h = el("h3");
    h.append(el("span", "model-name", name));
    const state = el("span", "chip state");
    h.append(state);
    const replicas = el("span", "muted replicas");
    h.append(replicas);
    card.append(h);
    const stats = el("div", "stats");
    const stat = (cls, label) => {
      const span = el("span", "stat " + cls);
      span.append(label + " ");
      const b = el("b", null, "–");
      span.append(b);
      stats.append(span);
      return b;
    };
    const refs = {
      rate: stat("stat-rate", "rate"), p50: stat("stat-p50", "p50"),
      p95: stat("stat-p95", "p95"), p99: stat("stat-p99", "p99"), err: stat("stat-err", "errors"),
    };
    card.append(stats);
    const slo = el("div", "muted slo-text");
    card.append(slo);
    const lat = svg("svg", { class: "chart latency", role: "img", "aria-label": "latency of " + name });
    const rate = svg("svg", { class: "chart rate", role: "img", "aria-label": "request rate of " + name });
    card.append(lat, rate);
    $("models").append(card);
    s = { points: [], slo: {}, state: "PENDING", card, refs, lat, rate, stateEl: state, replicas, sloEl: slo };
    series.set(name, s);
    return s;
  }
  function renderModel(name, s, now) {
    const last = s.points[s.points.length - 1];
    const st = known(s.state, STATES, "PENDING");
    s.stateEl.className = "chip state state-" + st;
    s.stateEl.textContent = s.state;
    const v = (c) => (last ? last[col(c)] : null);
    s.refs.rate.textContent = last ? Number(v("rate_rps")).toFixed(1) + " req/s" : "–";
    s.refs.p50.textContent = fmtMs(v("p50_s"));
    s.refs.p95.textContent = fmtMs(v("p95_s"));
    s.refs.p99.textContent = fmtMs(v("p99_s"));
    s.refs.err.textContent = last ? (100 * Number(v("error_rate"))).toFixed(2) + "%" : "–";
    s.replicas.textContent = last ? v("ready") + " ready / " + v("desired") + " wanted" : "";
    const slo = s.slo || {};
    const parts = [];
    if (Number.isFinite(slo.p95_s)) parts.push("p95 ≤ " + fmtMs(slo.p95_s));
    if (Number.isFinite(slo.p99_s)) parts.push("p99 ≤ " + fmtMs(slo.p99_s));
    s.sloEl.textContent = parts.length ? "SLO " + parts.join(", ") : "no latency SLO (set slo: in the spec, or --slo-p99-ms)";
    drawChart(s.lat, s.points, [
      { i: col("p50_s"), cls: "p50", scale: 1000 },
      { i: col("p95_s"), cls: "p95", scale: 1000 },
      { i: col("p99_s"), cls: "p99", scale: 1000 },
    ], now, {
      height: 150,
      label: (v) => num(v) + " ms",
      guides: [
        { value: slo.p95_s * 1000, cls: "p95", text: "SLO p95" },
        { value: slo.p99_s * 1000, cls: "p99", text: "SLO p99" },
      ],
    });
    drawChart(s.rate, s.points, [{ i: col("rate_rps"), cls: "rate", scale: 1 }], now, {
      height: 70,
      label: (v) => num(v) + "/s",
    });
  }
  function renderLatency(body) {
    if (Array.isArray(body.columns) && body.columns.length) columns = body.columns;
    const ati = col("at");
    let now = Date.now() / 1000;
    const seen = new Set();
    for (const [name, m] of Object.entries(body.models || {})) {
      seen.add(name);
      const s = modelCard(name);
      s.state = m.state;
      s.slo = m.slo || {};
      for (const p of m.points || []) {
        if (!s.points.length || p[ati] > s.points[s.points.length - 1][ati]) s.points.push(p);
        if (lastAt === null || p[ati] > lastAt) lastAt = p[ati];
      }
      if (s.points.length > KEEP_POINTS) s.points.splice(0, s.points.length - KEEP_POINTS);
    }
    for (const [name, s] of series) {
      if (!seen.has(name)) { s.card.remove(); series.delete(name); }
    }
    if (lastAt !== null) now = Math.max(now, lastAt);
    for (const [name, s] of series) renderModel(name, s, now);
    $("models-summary").textContent = body.autopilot === false
      ? "(autopilot off: no measurements)"
      : "(rate and percentiles over the last " + body.window_s + " s, per autopilot tick)";
    if (!series.size) $("models").replaceChildren(el("p", "empty", "no models registered"));
    else for (const p of $("models").querySelectorAll("p.empty")) p.remove();
  }

  // --- polling -------------------------------------------------------------------------
  async function pollOnce() {
    try {
      const q = lastAt === null ? "" : "?since=" + encodeURIComponent(lastAt);
      const [fleet, lat] = await Promise.all([getJson("/v1/fleet"), getJson("/v1/latency" + q)]);
      renderFleet(fleet);
      renderLatency(lat);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      notice("poll", null);
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) notice("poll", "cannot reach the control API: " + e.message);
    }
  }
  async function pollLoop() {
    for (;;) {
      await pollOnce();
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  // --- usage ---------------------------------------------------------------------------
  function rowsOf(body) {
    if (Array.isArray(body)) return body;
    if (body && typeof body === "object") {
      for (const v of Object.values(body)) if (Array.isArray(v)) return v;
      for (const v of Object.values(body)) {
        if (v && typeof v === "object" && !Array.isArray(v)) {
          const rows = Object.entries(v).map(([k, o]) => Object.assign({ name: k }, o && typeof o === "object" ? o : { value: o }));
          if (rows.length) return rows;
        }
      }
    }
    return [];
  }
  function cell(v) {
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toLocaleString(undefined, { maximumFractionDigits: 3 });
    if (v === null || v === undefined) return "";
    if (typeof v === "object") return JSON.stringify(v).slice(0, 120);
    return String(v).slice(0, 200);
  }
  async function pollUsage() {
    const box = $("usage");
    try {
      const body = await getJson("/v1/usage?by=tenant");
      const rows = rowsOf(body).filter((r) => r && typeof r === "object").slice(0, 200);
      if (!rows.length) { box.replaceChildren(el("p", "empty", "no usage recorded yet")); return; }
      const keys = [];
      for (const r of rows) for (const k of Object.keys(r)) if (!keys.includes(k) && keys.length < 12) keys.push(k);
      const table = el("table", "usage");
      const head = el("tr");
      for (const k of keys) head.append(el("th", null, k));
      table.append(head);
      for (const r of rows) {
        const tr = el("tr");
        for (const k of keys) tr.append(el("td", null, k === "tenant" && r[k] === null ? "(no tenant)" : cell(r[k])));
        table.append(tr);
      }
      box.replaceChildren(table);
    } catch (e) {
      const text = e.status === 404 || e.status === 501
        ? "usage not available (this control plane does no usage accounting)"
        : e.status === 401 || e.status === 403 ? "usage needs a token: enter the admin or a tenant token above"
        : "usage not available: " + e.message;
      box.replaceChildren(el("p", "empty usage-unavailable", text));
    }
  }

  // --- the decision stream (server-sent events over fetch) -----------------------------
  function addEvent(ev) {
    const list = $("events");
    const li = el("li");
    li.dataset.seq = String(ev.seq);
    const t = el("time", null, fmtTime(ev.at));
    li.append(t);
    const kind = known(ev.kind, KINDS, "fleet");
    li.append(el("span", "kind kind-" + kind, ev.kind));
    if (ev.model) li.append(el("span", "model-name", ev.model));
    li.append(el("span", "summary", ev.summary));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    $("events-summary").textContent = "(newest first; last id " + ev.seq + ")";
  }
  function addNote(text) {
    const li = el("li", "note");
    li.append(el("span", "summary muted", text));
    $("events").prepend(li);
  }
  function handleBlock(block, state) {
    let event = "message", data = "", id = null;
    for (const raw of block.split("\n")) {
      if (!raw || raw.startsWith(":")) continue;
      const i = raw.indexOf(":");
      const field = i < 0 ? raw : raw.slice(0, i);
      const value = i < 0 ? "" : raw.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
      else if (field === "id") id = value;
      else if (field === "retry" && /^\d+$/.test(value)) state.retryMs = Math.min(60000, Number(value));
    }
    if (event === "decision" && data) {
      const ev = JSON.parse(data);
      addEvent(ev);
      if (id !== null) lastSeq = id;
    } else if (event === "gap" && data) {
      addNote("missed " + JSON.parse(data).missed + " older decision(s): the feed no longer holds them");
    } else if (event === "bye") {
      state.bye = true;
    }
  }
  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }
  async function streamOnce(signal, state) {
    const extra = { Accept: "text/event-stream" };
    if (lastSeq !== null) extra["Last-Event-ID"] = lastSeq;
    const r = await fetch("/v1/events?backlog=100", { headers: headers(extra), cache: "no-store", credentials: "omit", signal });
    if (r.status === 401 || r.status === 403) { notice("auth", "the event stream refused this token (" + r.status + ")"); throw new Error("unauthorized"); }
    if (r.status === 503) { state.retryMs = 5000; throw new Error("the control plane has too many event streams open"); }
    if (!r.ok || !r.body) throw new Error("event stream: HTTP " + r.status);
    setConn("live", "live");
    notice("stream", null);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, "\n");
      if (buf.length > MAX_STREAM_BUFFER) throw new Error("event too large");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        handleBlock(block, state);
      }
    }
  }
  async function streamLoop() {
    for (;;) {
      const ctrl = new AbortController();
      streamAbort = ctrl;
      const state = { retryMs: 2000, bye: false };
      try {
        await streamOnce(ctrl.signal, state);
      } catch (e) {
        if (!ctrl.signal.aborted) {
          setConn("down", "reconnecting");
          notice("stream", "decision stream: " + e.message);
        }
      }
      if (!state.bye) await new Promise((r) => setTimeout(r, state.retryMs));
      setConn("connecting", "connecting");
    }
  }

  // --- token ---------------------------------------------------------------------------
  function setupToken() {
    const input = $("token");
    input.placeholder = token() ? "(set for this tab)" : "(not set)";
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      input.value = "";
      input.placeholder = token() ? "(set for this tab)" : "(not set)";
      if (streamAbort) streamAbort.abort();
      pollOnce();
      pollUsage();
    });
    $("token-clear").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      input.placeholder = "(not set)";
      if (streamAbort) streamAbort.abort();
    });
  }

  function start() {
    setupToken();
    pollLoop();
    pollUsage();
    setInterval(pollUsage, USAGE_MS);
    streamLoop();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
