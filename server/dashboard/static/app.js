// The ratesync dashboard: polls the JSON API beside this script and draws
// the traffic chart on a canvas. No framework, no network but its origin.
"use strict";

(function () {
  const api = new URL("../api/", document.currentScript.src);
  const $ = (id) => document.getElementById(id);
  const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const state = { interval: 1, history: 300, series: null, limiters: [], names: "", selected: "" };

  async function getJSON(path) {
    const res = await fetch(new URL(path, api), { cache: "no-store" });
    const body = await res.json();
    if (!res.ok) {
      throw new Error(body.detail || body.title || res.statusText);
    }
    return body;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function setStatus(kind, text) {
    const s = $("status");
    s.dataset.state = kind;
    s.textContent = text;
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  // --- limiters, stores, selects -----------------------------------------

  function renderLimiters(list) {
    const box = $("limiter-list");
    $("limiters-empty").hidden = list.length > 0;
    const names = list.map((l) => l.name).join("\u0000");
    if (names !== state.names) {
      state.names = names;
      box.replaceChildren(...list.map(limiterCard));
      fillSelect($("series-limiter"), list, "All limiters");
      fillSelect($("inspect-limiter"), list, null);
      if (state.selected && !list.some((l) => l.name === state.selected)) select("");
    }
    list.forEach((l, i) => {
      const c = box.children[i];
      c.querySelector(".a").textContent = num.format(l.rate.admitted) + " admitted/s";
      c.querySelector(".d").textContent = num.format(l.rate.denied) + " denied/s";
      const t = l.totals;
      c.querySelector(".t-admitted").textContent = num.format(t.admitted);
      c.querySelector(".t-denied").textContent = num.format(t.denied + t.timeouts);
      const extra = [];
      if (t.shadow_denials) extra.push(num.format(t.shadow_denials) + " shadow denials");
      if (t.errors) extra.push(num.format(t.errors) + " store errors");
      if (t.fallbacks) extra.push(num.format(t.fallbacks) + " fallbacks");
      if (t.concurrent) extra.push(num.format(t.concurrent) + " leases held");
      if (t.waiting) extra.push(num.format(t.waiting) + " waiting");
      c.querySelector(".t-extra").textContent = extra.join(", ") || "none";
      c.setAttribute("aria-pressed", String(l.name === state.selected));
    });
  }

  function limiterCard(l) {
    const head = el("div", { class: "card-head" }, el("h3", {}, l.name));
    if (l.shadow) head.append(el("span", { class: "tag" }, "shadow"));
    const card = el("article", { class: "card limiter", tabindex: "0", "data-name": l.name, "aria-pressed": "false" },
      head,
      el("p", { class: "policy" }, l.policy || "no limit"),
      el("p", { class: "rates" }, el("span", { class: "a" }), el("span", { class: "d" })),
      el("dl", {},
        el("dt", {}, "store"), el("dd", {}, l.store + (l.engine ? " (" + l.engine + ")" : "")),
        el("dt", {}, "on store error"), el("dd", {}, l.on_store_error),
        el("dt", {}, "admitted"), el("dd", { class: "t-admitted" }),
        el("dt", {}, "denied"), el("dd", { class: "t-denied" }),
        el("dt", {}, "other"), el("dd", { class: "t-extra" })));
    const pick = () => select(state.selected === l.name ? "" : l.name);
    card.addEventListener("click", pick);
    card.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); }
    });
    return card;
  }

  function fillSelect(sel, list, allLabel) {
    const keep = sel.value;
    const opts = list.map((l) => el("option", { value: l.name }, l.name));
    if (allLabel !== null) opts.unshift(el("option", { value: "" }, allLabel));
    sel.replaceChildren(...opts);
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }

  function select(name) {
    state.selected = name;
    $("series-limiter").value = name;
    for (const c of $("limiter-list").children) c.setAttribute("aria-pressed", String(c.dataset.name === name));
    refreshSeries().catch(() => {});
  }

  function renderStores(list, now) {
    $("store-list").replaceChildren(...list.map((s) => {
      const badge = el("span", { class: "breaker", "data-state": s.breaker }, "breaker " + s.breaker);
      if (s.since && s.breaker !== "closed") badge.textContent += " for " + ago(now - s.since);
      return el("li", { "data-name": s.name },
        el("span", {}, el("span", { class: "store-name" }, s.name), " ", el("span", { class: "engine" }, s.engine)),
        badge);
    }));
  }

  // --- chart --------------------------------------------------------------

  // step returns a round step (1, 2 or 5 times a power of ten) of at
  // least v.
  function roundStep(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const spans = [60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const timeSteps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600];

  function timeLabel(s) {
    if (s === 0) return "now";
    return s < 120 ? "−" + s + " s" : s < 7200 ? "−" + s / 60 + " min" : "−" + s / 3600 + " h";
  }

  function drawChart() {
    const canvas = $("chart");
    const s = state.series;
    const css = getComputedStyle(document.documentElement);
    const color = (n) => css.getPropertyValue(n).trim();
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif";

    const t = s ? s.t : [];
    const lines = [["admitted", "--admitted"], ["denied", "--denied"]];
    const hasShadow = !!s && s.shadow.some((v) => v > 0);
    if (hasShadow) lines.push(["shadow", "--shadow"]);
    $("legend-shadow").hidden = !hasShadow;
    let peak = 0;
    for (const [k] of lines) for (const v of s ? s[k] : []) peak = Math.max(peak, v);
    const ystep = roundStep(peak / 4);
    const top = Math.max(1, Math.ceil(peak / ystep)) * ystep;
    const yticks = [];
    for (let v = 0; v <= top + ystep / 2; v += ystep) yticks.push(v);

    const label = (v) => num.format(v);
    const left = 8 + Math.max(...yticks.map((v) => g.measureText(label(v)).width)) + 6;
    const right = 10, upper = 8, lower = 20;
    const pw = Math.max(1, w - left - right), ph = Math.max(1, h - upper - lower);
    const end = t.length ? t[t.length - 1] : Date.now();
    // The last minute at first, growing to the whole history as samples come.
    const kept = t.length ? (end - t[0]) / 1000 + state.interval : 0;
    let span = spans.find((x) => x >= kept) || spans[spans.length - 1];
    span = Math.min(span, Math.max(state.history, 1));
    const x = (ms) => left + pw * (1 - (end - ms) / (span * 1000));
    const y = (v) => upper + ph * (1 - v / top);

    // grid and labels
    g.strokeStyle = color("--grid");
    g.fillStyle = color("--muted");
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const v of yticks) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
      g.fillText(label(v), left - 6, yy);
    }
    g.textBaseline = "top";
    const fit = Math.max(1, Math.floor(pw / 64)); // labels that fit
    const tstep = timeSteps.find((st) => span / st <= fit) || span;
    for (let sec = 0; sec <= span; sec += tstep) {
      const xx = x(end - sec * 1000);
      g.textAlign = sec === 0 ? "right" : sec + tstep > span ? "left" : "center";
      g.fillText(timeLabel(sec), xx, h - lower + 5);
    }

    // series, clipped to the plot
    g.save();
    g.beginPath();
    g.rect(left, 0, pw + 1, h);
    g.clip();
    const sums = { admitted: 0, denied: 0, shadow: 0 };
    for (const [k, c] of lines) {
      const vs = s ? s[k] : [];
      g.strokeStyle = color(c);
      g.lineWidth = 2;
      g.lineJoin = "round";
      g.beginPath();
      vs.forEach((v, i) => {
        sums[k] += v;
        if (i === 0) g.moveTo(x(t[i]), y(v)); else g.lineTo(x(t[i]), y(v));
      });
      g.stroke();
      if (k === "admitted" && vs.length > 1) {
        g.lineTo(x(t[t.length - 1]), y(0));
        g.lineTo(x(t[0]), y(0));
        g.closePath();
        g.globalAlpha = 0.12;
        g.fillStyle = color(c);
        g.fill();
        g.globalAlpha = 1;
      }
    }
    g.restore();
    // What the chart drew, for people reading the page with tools.
    canvas.dataset.samples = String(t.length);
    canvas.dataset.admitted = String(Math.round(sums.admitted * 1000) / 1000);
    canvas.dataset.denied = String(Math.round(sums.denied * 1000) / 1000);
    canvas.dataset.top = String(top);
    canvas.setAttribute("aria-label", "Requests per second over the last " + timeLabel(span).slice(1) +
      (state.selected ? " for " + state.selected : "") + ": " + num.format(sums.admitted * state.interval) +
      " admitted, " + num.format(sums.denied * state.interval) + " denied");
  }

  async function refreshSeries() {
    const q = state.selected ? "series?limiter=" + encodeURIComponent(state.selected) : "series";
    const s = await getJSON(q);
    if ((s.limiter || "") !== state.selected) return; // the selection changed meanwhile
    state.series = s;
    const last = (a) => (a.length ? a[a.length - 1] : 0);
    $("now-admitted").textContent = num.format(last(s.admitted));
    $("now-denied").textContent = num.format(last(s.denied));
    $("now-shadow-box").hidden = !s.shadow.some((v) => v > 0);
    $("now-shadow").textContent = num.format(last(s.shadow));
    drawChart();
  }

  // --- polling ------------------------------------------------------------

  async function poll() {
    try {
      const ov = await getJSON("overview");
      state.interval = ov.interval_seconds;
      state.history = ov.history_seconds;
      $("interval").textContent = num.format(ov.interval_seconds);
      renderLimiters(ov.limiters);
      renderStores(ov.stores, ov.now);
      await refreshSeries();
      setStatus("live", "live · " + new Date(ov.now).toLocaleTimeString());
    } catch (e) {
      setStatus("down", "disconnected: " + e.message);
    } finally {
      setTimeout(poll, Math.max(250, state.interval * 1000));
    }
  }

  // --- key inspector ------------------------------------------------------

  function seconds(v) {
    return v === 0 ? "now" : "in " + (v < 10 ? v.toFixed(2) : num.format(v)) + " s";
  }

  async function inspect(e) {
    e.preventDefault();
    const out = $("inspect-result");
    const name = $("inspect-limiter").value;
    const id = $("inspect-id").value;
    let q = "state?limiter=" + encodeURIComponent(name);
    if (id !== "") q += "&id=" + encodeURIComponent(id);
    out.hidden = false;
    try {
      const st = await getJSON(q);
      out.dataset.allowed = String(st.allowed);
      out.replaceChildren(
        el("p", { class: "verdict" }, st.allowed ? "A request would be admitted now" : "A request would be denied now"),
        el("dl", {},
          el("dt", {}, "key"), el("dd", { class: "mono" }, st.key),
          el("dt", {}, "remaining"), el("dd", { class: "st-remaining" }, st.remaining + " of " + st.limit + (st.concurrency ? " concurrent" : "")),
          el("dt", {}, "in use"), el("dd", {}, String(st.current_usage)),
          el("dt", {}, "retry"), el("dd", {}, seconds(st.retry_after_seconds)),
          el("dt", {}, "full again"), el("dd", {}, seconds(st.reset_after_seconds)),
          el("dt", {}, "read at"), el("dd", {}, new Date().toLocaleTimeString())));
    } catch (err) {
      delete out.dataset.allowed;
      out.replaceChildren(el("p", { class: "error" }, err.message));
    }
  }

  $("series-limiter").addEventListener("change", (e) => select(e.target.value));
  $("inspect-form").addEventListener("submit", inspect);
  window.addEventListener("resize", drawChart);
  drawChart();
  poll();
})();
