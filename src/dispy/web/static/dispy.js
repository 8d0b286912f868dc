// dispy web pages: shared helpers (requests, live updates, sortable tables, SVG charts).
// No libraries, nothing from other sites: the pages work without internet access.
"use strict";

const Dispy = (() => {
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "cls") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
  }
  function pct(n) { return n === null || n === undefined ? "-" : n.toFixed(1) + " %"; }
  function secs(n) { return n === null || n === undefined ? "-" : Number(n).toFixed(2); }
  function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "-"; }

  // A request that changes something: JSON, from this page (the server checks Origin).
  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), credentials: "same-origin",
    });
    let data = {};
    try { data = await resp.json(); } catch (e) { /* empty answer */ }
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    return data;
  }

  async function get(path) {
    const resp = await fetch(path, {credentials: "same-origin"});
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    return data;
  }

  // Server-sent events: "init" once (state and history), "tick" when something changed.
  function live(handlers) {
    const status = document.getElementById("live");
    const src = new EventSource("events");
    for (const [name, fn] of Object.entries(handlers)) {
      src.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    }
    src.onopen = () => { if (status) { status.textContent = "live"; status.className = "ok"; } };
    src.onerror = () => { if (status) { status.textContent = "reconnecting"; status.className = "bad"; } };
    return src;
  }

  function message(text, bad) {
    const box = document.getElementById("message");
    if (!box) return;
    box.textContent = text;
    box.className = bad ? "bad" : "ok";
  }

  async function act(fn) {
    try {
      const answer = await fn();
      message(answer && answer.text ? answer.text : "done", false);
      return answer;
    } catch (e) {
      message(String(e.message || e), true);
      return null;
    }
  }

  // A table whose columns sort by clicking their header; rows keyed so selections stay.
  class Table {
    constructor(container, columns, opts) {
      this.columns = columns;
      this.opts = opts || {};
      this.sortKey = this.opts.sortKey || columns[0].key;
      this.sortDir = 1;
      this.selected = new Set();
      this.rows = [];
      this.table = el("table", {cls: "data", id: this.opts.id});
      container.replaceChildren(this.table);
    }
    render(rows, force) {
      const sig = JSON.stringify(rows) + this.sortKey + this.sortDir;
      if (!force && sig === this.sig) return;  // unchanged: keep the DOM (and clicks on it)
      this.rows = rows;
      const focus = document.activeElement;
      if (focus && focus.tagName === "INPUT" && focus.type !== "checkbox" && this.table.contains(focus)) {
        return;  // someone is typing in the table: the next update redraws it
      }
      this.sig = sig;
      const head = el("tr");
      if (this.opts.select) {
        const all = el("input", {type: "checkbox", cls: "select-all", title: "select all"});
        all.checked = rows.length > 0 && rows.every((r) => this.selected.has(r.key));
        all.addEventListener("change", () => {
          for (const r of this.rows) all.checked ? this.selected.add(r.key) : this.selected.delete(r.key);
          this.render(this.rows, true);
        });
        head.append(el("th", {}, all));
      }
      for (const c of this.columns) {
        const mark = c.key === this.sortKey ? (this.sortDir > 0 ? " \u25B2" : " \u25BC") : "";
        head.append(el("th", {cls: "sortable", "data-key": c.key, onclick: () => {
          this.sortDir = this.sortKey === c.key ? -this.sortDir : 1;
          this.sortKey = c.key;
          this.render(this.rows, true);
        }}, c.title + mark));
      }
      const col = this.columns.find((c) => c.key === this.sortKey) || this.columns[0];
      const val = col.sort || ((r) => r[col.key]);
      const sorted = [...rows].sort((a, b) => {
        const x = val(a), y = val(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * this.sortDir;
      });
      const body = sorted.map((r) => {
        const tr = el("tr", {"data-key": r.key});
        if (this.opts.select) {
          const box = el("input", {type: "checkbox", cls: "select", value: r.key});
          box.checked = this.selected.has(r.key);
          box.addEventListener("change", () => {
            box.checked ? this.selected.add(r.key) : this.selected.delete(r.key);
          });
          tr.append(el("td", {}, box));
        }
        for (const c of this.columns) {
          const v = c.cell ? c.cell(r) : (c.fmt ? c.fmt(r[c.key]) : r[c.key]);
          tr.append(el("td", {cls: c.cls || "", "data-col": c.key}, v === undefined || v === null ? "-" : v));
        }
        return tr;
      });
      const keys = new Set(rows.map((r) => r.key));
      for (const k of [...this.selected]) if (!keys.has(k)) this.selected.delete(k);
      this.table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
    }
    selection() { return [...this.selected]; }
  }

  // A line chart drawn as SVG: series = [{name, points: [[t, v], ...]}].
  class Chart {
    constructor(container, opts) {
      this.opts = Object.assign({width: 560, height: 200, window: 600, fmt: (v) => v.toFixed(1)}, opts);
      this.series = new Map();
      this.svg = document.createElementNS(SVGNS, "svg");
      this.svg.setAttribute("viewBox", `0 0 ${this.opts.width} ${this.opts.height}`);
      this.svg.setAttribute("class", "chart");
      if (this.opts.id) this.svg.setAttribute("id", this.opts.id);
      const box = el("figure", {cls: "chart"}, el("figcaption", {text: this.opts.title || ""}));
      box.append(this.svg);
      this.legend = el("div", {cls: "legend"});
      box.append(this.legend);
      container.append(box);
    }
    add(name, t, v) {
      if (!this.series.has(name)) this.series.set(name, []);
      const pts = this.series.get(name);
      pts.push([t, v]);
      const cut = t - this.opts.window;
      while (pts.length && pts[0][0] < cut) pts.shift();
    }
    set(name, points) { this.series.set(name, points.slice()); }
    draw() {
      const {width: W, height: H} = this.opts;
      const L = 52, R = 8, T = 8, B = 22;
      const svg = this.svg;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      let tmin = Infinity, tmax = -Infinity, vmax = this.opts.min || 0;
      for (const pts of this.series.values()) for (const [t, v] of pts) {
        tmin = Math.min(tmin, t); tmax = Math.max(tmax, t); vmax = Math.max(vmax, v);
      }
      vmax *= 1.1;  // headroom: a flat line does not hide under the top grid line
      if (this.opts.max) vmax = Math.min(Math.max(vmax, this.opts.max), this.opts.max);
      if (!isFinite(tmin)) { tmin = Date.now() / 1000 - 60; tmax = tmin + 60; }
      if (tmax - tmin < 30) tmin = tmax - 30;
      if (vmax <= 0) vmax = 1;
      const x = (t) => L + (t - tmin) / (tmax - tmin) * (W - L - R);
      const y = (v) => H - B - v / vmax * (H - T - B);
      const line = (x1, y1, x2, y2, cls) => {
        const l = document.createElementNS(SVGNS, "line");
        for (const [k, v] of Object.entries({x1, y1, x2, y2, class: cls})) l.setAttribute(k, v);
        svg.append(l);
      };
      const text = (tx, ty, s, anchor) => {
        const e = document.createElementNS(SVGNS, "text");
        e.setAttribute("x", tx); e.setAttribute("y", ty);
        e.setAttribute("text-anchor", anchor || "end");
        e.setAttribute("class", "axis");
        e.textContent = s;
        svg.append(e);
      };
      for (let i = 0; i <= 4; i++) {
        const v = vmax * i / 4;
        line(L, y(v), W - R, y(v), "grid");
        text(L - 4, y(v) + 4, this.opts.fmt(v));
      }
      text(L, H - 6, new Date(tmin * 1000).toLocaleTimeString(), "start");
      text(W - R, H - 6, new Date(tmax * 1000).toLocaleTimeString(), "end");
      this.legend.replaceChildren();
      let i = 0;
      for (const [name, pts] of this.series) {
        const color = COLORS[i++ % COLORS.length];
        if (pts.length) {
          const path = document.createElementNS(SVGNS, "polyline");
          path.setAttribute("points", pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
          path.setAttribute("fill", "none");
          path.setAttribute("stroke", color);
          path.setAttribute("stroke-width", "2");
          path.setAttribute("class", "series");
          path.setAttribute("data-name", name);
          svg.append(path);
          const [lt, lv] = pts[pts.length - 1];
          const dot = document.createElementNS(SVGNS, "circle");
          dot.setAttribute("cx", x(lt).toFixed(1)); dot.setAttribute("cy", y(lv).toFixed(1));
          dot.setAttribute("r", "3"); dot.setAttribute("fill", color);
          svg.append(dot);
        }
        const swatch = el("span", {cls: "swatch"});
        swatch.style.background = color;
        this.legend.append(el("span", {cls: "item"}, swatch, name));
      }
    }
  }

  function param(name) { return new URLSearchParams(location.search).get(name); }

  return {el, bytes, pct, secs, clock, post, get, live, message, act, Table, Chart, param};
})();
