
"use strict";
// The status page: reads health/detailed and status/events (relative URLs, so it also works behind
// a path prefix such as kubectl proxy) every few seconds and draws them with DOM APIs only: every
// value is set as text or as an attribute, never parsed as HTML.
(() => {
  const REFRESH_MS = 3000;
  const TIMEOUT_MS = 5000;
  const TOKEN_KEY = "sidecar.adminToken";
  const ACTIONS = [["reset", "Reset", false], ["force-open", "Force open", true], ["disable", "Disable", true]];
  const EXTRA_KEYS = ["rate_limits", "rate_limit", "ledger"];
  const TROUBLE = {open: 0, forced_open: 1, half_open: 2, disabled: 3};
  const MAX_DEPTH = 4;
  const MAX_ITEMS = 50;
  const SHOWN_TRANSITIONS = 8;
  const $ = (id) => document.getElementById(id);

  const results = new Map();  // provider -> {ok, text} of its last admin action
  let lastHealth = null;
  let lastEvents = null;
  let lastOk = 0;
  let healthError = "not loaded yet";
  let eventsError = null;
  let timer = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false || child === "") continue;
      node.append(child instanceof Node ? child : String(child));  // a string becomes a text node
    }
    return node;
  }

  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const pct = (x) => `${(x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`;
  const label = (key) => key.replace(/_/g, " ");
  const clock = (ms) => new Date(ms).toTimeString().slice(0, 8);
  const errText = (err) => (err && err.name === "AbortError" ? "timed out" : String(err && err.message || err));

  function when(iso) {  // an ISO-8601 time from the sidecar, shown in the browser's local time
    const ms = Date.parse(String(iso));
    return Number.isNaN(ms) ? scalar(iso) : clock(ms);
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (h) return m ? `${h}h ${m}m` : `${h}h`;
    if (m) return s % 60 ? `${m}m ${s % 60}s` : `${m}m`;
    return `${s}s`;
  }

  function scalar(value) {
    if (value === null || value === undefined) return "\u2013";
    if (typeof value === "object") {
      const text = JSON.stringify(value);
      return text.length > 120 ? `${text.slice(0, 117)}...` : text;
    }
    return String(value);
  }

  async function getJSON(url, statuses) {
    const ctl = new AbortController();
    const timeout = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(url, {cache: "no-store", signal: ctl.signal, headers: {Accept: "application/json"}});
      if (!statuses.includes(resp.status)) throw new Error(`${url}: HTTP ${resp.status}`);
      const body = await resp.json();
      if (!isObj(body) || !isObj(body.providers)) throw new Error(`${url}: unexpected answer`);
      return body;
    } finally {
      clearTimeout(timeout);
    }
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      // health/detailed answers 503 when unhealthy: still a good answer to draw.
      const [health, events] = await Promise.allSettled([
        getJSON("health/detailed", [200, 503]), getJSON("status/events", [200])]);
      if (health.status === "fulfilled") {
        lastHealth = health.value;
        lastOk = Date.now();
        healthError = null;
      } else {
        healthError = errText(health.reason);
      }
      if (events.status === "fulfilled") {
        lastEvents = events.value;
        eventsError = null;
      } else {
        eventsError = errText(events.reason);
      }
      render();
    } finally {
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function render() {
    renderUpdated();
    const h = lastHealth;
    if (!h) return;
    const overall = $("overall");
    overall.dataset.status = String(h.status);
    overall.textContent = String(h.status);
    document.title = `sidecar: ${h.status}`;
    $("meta").textContent = `version ${scalar(h.version)} \u00b7 up ${num(h.uptime_seconds) ? duration(h.uptime_seconds) : "?"}`;
    renderChecks(h.checks);
    const extras = [];
    for (const key of EXTRA_KEYS) {
      if (h[key] !== undefined) extras.push(el("h3", null, label(key)), generic(h[key], 0));
    }
    $("extras").replaceChildren(...extras);
    const events = lastEvents ? lastEvents.providers : null;
    const entries = Object.entries(h.providers).map(([name, p], i) => [name, isObj(p) ? p : {}, i]);
    entries.sort((a, b) => rank(a[1]) - rank(b[1]) || a[2] - b[2]);
    $("providers").replaceChildren(...entries.map(([name, p]) =>
      renderProvider(name, p, events ? (events[name] || []) : null)));
  }

  function rank(p) {
    const r = TROUBLE[String(p.state)];
    return r === undefined ? 9 : r;
  }

  function renderUpdated() {
    const node = $("updated");
    if (healthError === null) {
      // The transitions are secondary: the page is fresh, but says when they could not be read.
      node.dataset.stale = eventsError === null ? "false" : "partial";
      node.textContent = `updated ${clock(lastOk)}, every ${REFRESH_MS / 1000} s` +
        (eventsError === null ? "" : `; transitions not updated: ${eventsError}`);
    } else {
      node.dataset.stale = "true";
      node.textContent = lastOk
        ? `stale: last update ${clock(lastOk)} (${duration((Date.now() - lastOk) / 1000)} ago), ${healthError}`
        : `no data: ${healthError}`;
    }
  }

  function renderChecks(checks) {
    const items = [];
    for (const [name, c] of Object.entries(isObj(checks) ? checks : {})) {
      const ok = isObj(c) && c.ok === true;
      const details = isObj(c)
        ? Object.entries(c).filter(([k, v]) => k !== "ok" && v !== null).map(([k, v]) => `${label(k)} ${scalar(v)}`).join(", ")
        : scalar(c);
      // Details of a passing check are in its tooltip; a failing one shows them.
      items.push(el("span", {class: "check", "data-check": name, "data-ok": ok, title: details},
        `${name}: ${ok ? "ok" : "failing"}`, !ok && details && el("span", {class: "muted"}, ` (${details})`)));
    }
    $("checks").replaceChildren(...(items.length ? [el("strong", null, "Checks"), ...items] : []));
  }

  function generic(value, depth) {
    if (!Array.isArray(value) && !isObj(value)) return el("span", null, scalar(value));
    if (depth >= MAX_DEPTH) return el("code", null, scalar(value));
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const table = el("table", {class: "kv"});
    for (const [key, v] of entries.slice(0, MAX_ITEMS)) {
      table.append(el("tr", null, el("th", null, key), el("td", null, generic(v, depth + 1))));
    }
    if (entries.length > MAX_ITEMS) {
      table.append(el("tr", null, el("td", {class: "muted", colspan: 2}, `${entries.length - MAX_ITEMS} more`)));
    }
    return table;
  }

  function renderProvider(name, p, transitions) {
    const b = isObj(p.breaker) ? p.breaker : {};
    const cfg = isObj(b.config) ? b.config : {};
    const state = String(p.state || b.state || "unknown");
    const card = el("article", {class: "provider", "data-provider": name, "data-state": state});
    card.append(el("header", null,
      el("h2", null, name),
      el("span", {class: "state", "data-state": state}, label(state)),
      p.critical === true && el("span", {class: "tag"}, "critical"),
      p.configured === false && el("span", {class: "tag"}, "unconfigured"),
      b.per_host === true && el("span", {class: "tag"}, `per host: ${scalar(b.host_count)}`)));
    const facts = el("dl", {class: "facts"});
    const fact = (term, ...value) => facts.append(el("dt", null, term), el("dd", null, ...value));
    fact("failure rate", rateView(b, cfg));
    if (num(b.consecutive_failures)) {
      const limit = num(cfg.failure_threshold) ? cfg.failure_threshold : "?";
      fact("consecutive failures", el("span", {class: b.consecutive_failures ? "bad" : null},
        `${b.consecutive_failures} of ${limit}`), el("span", {class: "muted"}, " to open"));
    }
    if (num(b.retry_after_seconds)) fact("trial calls in", `${b.retry_after_seconds.toFixed(1)} s`);
    if (state === "half_open" && num(b.half_open_successes)) {
      fact("trial calls", `${b.half_open_successes} of ${scalar(cfg.success_threshold)} succeeded, ` +
        `${scalar(b.half_open_in_flight)} in flight`);
    }
    if (state === "forced_open") fact("forced open", "until an admin reset");
    if (state === "disabled") fact("disabled", "every call is let through until an admin reset");
    fact("totals", [
      `${scalar(b.total_calls)} calls`, `${scalar(b.total_failures)} failed`,
      `${scalar(b.total_rejected)} short-circuited`,
      num(b.opened_count) ? `opened ${b.opened_count}\u00d7` : ""].filter(Boolean).join(", "));
    fact("probe", probeView(p.probe));
    card.append(facts);
    if (b.per_host === true && isObj(b.hosts) && Object.keys(b.hosts).length) card.append(hostsView(b.hosts));
    for (const key of EXTRA_KEYS) {
      if (p[key] !== undefined) card.append(el("h3", null, label(key)), generic(p[key], 0));
    }
    card.append(el("h3", null, "Recent transitions"), transitionsView(transitions), actionsView(name));
    return card;
  }

  function rateView(b, cfg) {
    const calls = num(b.window_calls) ? b.window_calls : 0;
    const failures = num(b.window_failures) ? b.window_failures : 0;
    const rate = num(b.failure_rate) ? b.failure_rate : (calls ? failures / calls : null);
    const threshold = num(cfg.failure_rate_threshold) ? cfg.failure_rate_threshold : null;
    const minimum = num(cfg.minimum_calls) ? cfg.minimum_calls : null;
    const period = num(cfg.monitoring_period) ? ` in the last ${duration(cfg.monitoring_period)}` : "";
    const over = rate !== null && threshold !== null && rate >= threshold;
    const wrap = el("div", {class: "rate", "data-rate": rate === null ? "none" : rate});
    wrap.append(el("span", {class: over ? "bad" : null},
      rate === null ? `no calls${period}` : `${pct(rate)}: ${failures} of ${calls} calls failed${period}`));
    const meter = el("div", {class: "meter"});
    const fill = el("div", {class: "fill", "data-over": over});
    fill.style.width = `${Math.min(100, Math.max(0, (rate || 0) * 100))}%`;  // CSSOM, allowed by the CSP
    meter.append(fill);
    if (threshold !== null && minimum !== 0) {
      const mark = el("div", {class: "mark", title: `threshold ${pct(threshold)}`});
      mark.style.left = `${Math.min(100, Math.max(0, threshold * 100))}%`;
      meter.append(mark);
    }
    wrap.append(meter);
    if (threshold !== null) {
      const rule = minimum === 0
        ? "rate rule off (minimum_calls 0)"
        : `opens at \u2265 ${pct(threshold)} once the window holds \u2265 ${scalar(minimum)} calls`;
      wrap.append(el("div", {class: "muted"}, rule));
    }
    return wrap;
  }

  function probeView(probe) {
    if (!isObj(probe)) return el("span", {class: "muted"}, "not probed");
    const ok = probe.ok === true;
    return el("span", {class: "probe", "data-ok": ok},
      el("span", {class: ok ? "good" : "bad"}, ok ? "ok" : "failed"),
      probe.status !== null && probe.status !== undefined ? ` HTTP ${scalar(probe.status)}` : "",
      num(probe.latency_ms) ? `, ${probe.latency_ms} ms` : "",
      probe.checked_at ? el("span", {class: "muted", title: scalar(probe.checked_at)}, ` at ${when(probe.checked_at)}`) : "",
      probe.error ? el("div", {class: "bad"}, scalar(probe.error)) : "");
  }

  function hostsView(hosts) {
    const rows = Object.entries(hosts).map(([host, s]) => [host, isObj(s) ? s : {}]);
    rows.sort((a, b) => rank(a[1]) - rank(b[1]));
    const table = el("table", {class: "kv hosts"});
    for (const [host, s] of rows.slice(0, MAX_ITEMS)) {
      const state = String(s.state || "unknown");
      table.append(el("tr", {"data-host": host, "data-state": state},
        el("th", null, host), el("td", null, el("span", {class: "state", "data-state": state}, label(state))),
        el("td", null, `${scalar(s.window_failures)} of ${scalar(s.window_calls)} failed`)));
    }
    if (rows.length > MAX_ITEMS) table.append(el("tr", null, el("td", {class: "muted", colspan: 3}, `${rows.length - MAX_ITEMS} more`)));
    return el("div", null, el("h3", null, "Hosts"), table);
  }

  function transitionsView(list) {
    if (list === null) return el("div", {class: "muted"}, `unavailable: ${eventsError || "not loaded"}`);
    if (!Array.isArray(list) || !list.length) return el("div", {class: "muted"}, "none since start-up");
    const ol = el("ol", {class: "transitions"});
    for (const t of list.slice(-SHOWN_TRANSITIONS).reverse()) {
      const item = isObj(t) ? t : {};
      ol.append(el("li", {"data-from-state": item.from_state, "data-to-state": item.to_state, "data-reason": item.reason},
        el("span", {class: "when", title: scalar(item.at)}, num(item.age_seconds) ? `${duration(item.age_seconds)} ago` : scalar(item.at)),
        el("span", null, `${scalar(item.from_state)} \u2192 ${scalar(item.to_state)}`),
        el("span", {class: "reason"}, scalar(item.reason)),
        item.host ? el("span", {class: "tag"}, scalar(item.host)) : ""));
    }
    if (list.length > SHOWN_TRANSITIONS) {
      ol.append(el("li", {class: "muted"}, `${list.length - SHOWN_TRANSITIONS} older ones in status/events`));
    }
    return ol;
  }

  function actionsView(name) {
    const box = el("div", {class: "actions"});
    for (const [action, text, risky] of ACTIONS) {
      const button = el("button", {type: "button", class: risky ? "danger" : null, "data-action": action}, text);
      button.addEventListener("click", () => act(name, action, risky));
      box.append(button);
    }
    const last = results.get(name);
    if (last) box.append(el("output", {class: "result", "data-ok": last.ok}, last.text));
    return box;
  }

  async function act(name, action, risky) {
    if (risky && !window.confirm(`${action} the breaker of ${name}?`)) return;
    const headers = {};
    const token = $("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    let result;
    try {
      const url = `admin/breakers/${encodeURIComponent(name)}/${encodeURIComponent(action)}`;
      const resp = await fetch(url, {method: "POST", headers, cache: "no-store"});
      let body = null;
      try { body = await resp.json(); } catch (err) { body = null; }
      if (resp.ok) {
        result = {ok: true, text: `${action}: now ${isObj(body) ? scalar(body.state) : "?"}`};
      } else {
        const detail = isObj(body) ? [body.error, body.detail].filter(Boolean).map(scalar).join(": ") : resp.statusText;
        const hint = resp.status === 401 ? " (paste the admin token above)" : "";
        result = {ok: false, text: `${action}: HTTP ${resp.status} ${detail}${hint}`};
      }
    } catch (err) {
      result = {ok: false, text: `${action}: ${errText(err)}`};
    }
    results.set(name, result);
    const top = $("action-result");
    top.dataset.ok = String(result.ok);
    top.textContent = `${name} ${result.text}`;
    refresh();
  }

  function setUpToken() {
    let store = null;
    try { store = window.sessionStorage; } catch (err) { store = null; }
    const input = $("token");
    const save = (value) => {
      try {
        if (!store) return;
        if (value) store.setItem(TOKEN_KEY, value); else store.removeItem(TOKEN_KEY);
      } catch (err) { /* storage full or refused: the field still works for this page */ }
    };
    try { input.value = (store && store.getItem(TOKEN_KEY)) || ""; } catch (err) { input.value = ""; }
    input.addEventListener("input", () => save(input.value));
    $("forget").addEventListener("click", () => { input.value = ""; save(""); });
  }

  setUpToken();
  refresh();
})();
