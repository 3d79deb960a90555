// The console's shared script: texts from the catalogue, API calls with the CSRF token, times in
// China Standard Time, the base map (service's own boundaries, no tiles) and the case panel.
"use strict";
const WG = (() => {
  const M = JSON.parse(document.getElementById("catalogue").textContent);
  const T = (k) => M.text[k] || k;
  const TZ = "Asia/Shanghai";

  function cookie(name) {
    const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.error)) || String(status));
      this.status = status; this.body = body;
    }
  }

  // Every request goes to this origin; state-changing ones carry X-CSRF-Token.
  async function api(method, url, body, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("wangge_csrf");
    let payload = body;
    if (body !== undefined && !(body instanceof Blob) && !(body instanceof FormData)
        && !(body instanceof URLSearchParams)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    if (r.status === 401 && !opts.noRedirect) {
      location.href = "/console/login?next=" + encodeURIComponent(location.pathname);
      throw new ApiError(401, null);
    }
    if (r.status === 204) return null;
    const ctype = r.headers.get("content-type") || "";
    const data = ctype.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  function problemText(err) {
    const b = err.body;
    if (b && Array.isArray(b.problems) && b.problems.length) {
      return b.problems.map((p) => (p.field ? p.field + "：" : "") + p.reason).join("；");
    }
    if (b && Array.isArray(b.detail)) return b.detail.map((d) => d.msg).join("；");
    return err.message || T("error");
  }

  function toast(msg, bad) {
    const t = document.getElementById("toast");
    t.textContent = msg; t.className = bad ? "show bad" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ""; }, 4000);
  }

  // "2026-12-02 09:30" in China Standard Time.
  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    const p = new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false }).formatToParts(d);
    const g = (k) => (p.find((x) => x.type === k) || {}).value;
    return `${g("year")}-${g("month")}-${g("day")} ${g("hour")}:${g("minute")}`;
  }
  function day(iso) { return time(iso).slice(0, 10); }
  function today() { return time(new Date().toISOString()).slice(0, 10); }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  const status = (s) => M.status[s] || s;
  const sla = (s) => M.sla[s] || s;
  const SLA_ORDER = { red: 0, amber: 1, green: 2, none: 3 };
  const SLA_COLOR = { red: "#d7263d", amber: "#f4a300", green: "#2e9d4a", none: "#7d8790" };
  const badge = (s) => el("span", { class: "sla sla-" + s }, sla(s));
  const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + " %");
  const num = (x) => (x === null || x === undefined ? "—" : Number(x).toLocaleString("zh-CN"));
  const next = (from) => M.transitions.filter((t) => t[0] === from);

  // ---------------------------------------------------------------- maps
  const maps = {}; // by element id, for tests and the console's own scripts
  function map(div, opts = {}) {
    const m = L.map(div, Object.assign({ preferCanvas: true, zoomControl: true, maxZoom: 19,
      attributionControl: false }, opts));
    m.setView([26.07, 119.30], 13);
    maps[div] = m;
    return m;
  }
  const LEVEL_STYLE = {
    district: { color: "#1b2631", weight: 3.5, fill: false },
    street: { color: "#34495e", weight: 2.5, fill: false },
    community: { color: "#7f8c8d", weight: 1.2, dashArray: "4 3", fill: false },
    grid: { color: "#2c7fb8", weight: 0.8, fillColor: "#dbe9f6", fillOpacity: 0.35 },
  };
  // The service's own boundaries as the base (no tile server); returns the layers by level.
  // ``lazy`` levels (a whole district's ten thousand grids) are fetched and drawn only from
  // zoom ``lazyZoom`` on, where they can be told apart; the others at once.
  async function basemap(m, levels, onGrid, lazy = [], lazyZoom = 14) {
    const out = {};
    const draw = (level, fc) => {
      const layer = L.geoJSON(fc, { style: () => LEVEL_STYLE[level],
        interactive: level === "grid" }).addTo(m);
      if (level === "grid") {  // one handler for all grids; tooltips bound on first hover
        layer.on("mouseover", (e) => {
          if (!e.layer.getTooltip()) {
            const p = e.layer.feature.properties;
            e.layer.bindTooltip(`${p.name || ""}（${p.code}）`).openTooltip(e.latlng);
          }
        });
        if (onGrid) layer.on("click", (e) => onGrid(e.layer.feature.properties, e.layer));
      }
      layer.bringToBack();
      return layer;
    };
    const now = levels.filter((l) => !lazy.includes(l));
    const got = await Promise.all(now.map((l) => api("GET", "/v1/console/basemap/" + l)));
    mark("basemap-fetched");
    now.forEach((level, i) => { out[level] = draw(level, got[i]); });
    const any = out.grid || out.community || out.street || out.district;
    if (any && any.getLayers().length) m.fitBounds(any.getBounds(), { padding: [10, 10] });
    for (const level of lazy) {
      let loading = null;
      const show = async () => {
        if (m.getZoom() < lazyZoom) { if (out[level]) out[level].remove(); return; }
        if (out[level]) { out[level].addTo(m); return; }
        loading = loading || api("GET", "/v1/console/basemap/" + level);
        const fc = await loading;
        if (!out[level]) out[level] = draw(level, fc);
        if (m.getZoom() < lazyZoom) out[level].remove();
      };
      m.on("zoomend", show);
      show();
    }
    return out;
  }

  // Building footprints/points of the visible area, when zoomed in far enough.
  function buildings(m, minZoom = 16) {
    const layer = L.layerGroup().addTo(m);
    async function load() {
      layer.clearLayers();
      if (m.getZoom() < minZoom) return;
      const b = m.getBounds();
      const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5));
      try {
        const fc = await api("GET", `/v1/layers/building?limit=3000&bbox=${bbox.join(",")}`,
          undefined, { noRedirect: true });
        L.geoJSON(fc, { pointToLayer: (f, ll) => L.circleMarker(ll, { radius: 2, color: "#8d6e63",
          weight: 1, fillOpacity: 0.6 }), style: () => ({ color: "#8d6e63", weight: 0.6,
          fillOpacity: 0.3 }) }).addTo(layer);
      } catch (e) { /* a role without layer access sees no buildings */ }
    }
    m.on("moveend", load);
    return layer;
  }

  function dot(s) {
    return L.divIcon({ className: "case-dot sla-" + s, iconSize: [14, 14] });
  }

  // ---------------------------------------------------------------- one case
  // Renders a case with its history and photos; `actions` lists what the role may do:
  // "steps" (the state machine's next steps, with a note and a photo), "rate", "urge".
  async function casePanel(box, id, actions, onChange) {
    box.replaceChildren(el("p", {}, T("loading")));
    let c;
    try { c = await api("GET", "/v1/incidents/" + id); }
    catch (e) { box.replaceChildren(el("p", { class: "error", role: "alert" }, problemText(e))); return; }
    const photosBy = {};
    for (const p of c.photos) (photosBy[p.history_id || 0] = photosBy[p.history_id || 0] || []).push(p);
    const img = (p) => el("img", { src: `/v1/incidents/${c.id}/photos/${p.id}`, alt: T("photo") + " " + p.id,
      class: "photo", loading: "lazy" });
    const steps = ["reported", "checked_in", "consulting", "in_progress", "feedback", "rated", "closed"];
    const at = steps.indexOf(c.status);
    const progress = el("ol", { class: "steps", "aria-label": T("steps") },
      steps.map((s, i) => el("li", { class: i < at ? "done" : i === at ? "now" : "" }, status(s))));
    const hist = el("ol", { class: "history" }, c.history.map((h) => el("li", {},
      el("time", {}, time(h.at)), " ", el("b", {}, M.actions[h.action] || h.action),
      h.to_status && h.to_status !== h.from_status && M.actions[h.action] !== status(h.to_status)
        && h.action !== "report" ? `（${status(h.to_status)}）` : "", " · ", String(h.actor).replace(/^user:/, ""),
      h.note ? el("div", { class: "note" }, h.note) : null,
      (photosBy[h.id] || []).map(img))));
    box.replaceChildren(...[
      el("h2", {}, `${T("case")} #${c.id}`),
      el("p", {}, el("b", {}, c.category_name_zh || c.category_code), " ", badge(c.sla), " ",
        el("span", { class: "status" }, status(c.status))),
      c.description ? el("p", {}, c.description) : null,
      el("dl", { class: "facts" },
        el("dt", {}, T("reported_at")), el("dd", {}, time(c.reported_at)),
        el("dt", {}, T("checkin_due")), el("dd", {}, time(c.checkin_due)),
        el("dt", {}, T("resolve_due")), el("dd", {}, time(c.resolve_due)),
        el("dt", {}, T("grid")), el("dd", { class: "grid-name" }, c.grid_code || "—"),
        el("dt", {}, T("escalation_level")), el("dd", {}, M.levels[c.escalation_level] || c.escalation_level),
        el("dt", {}, T("urge_count")), el("dd", {}, String(c.urge_count))),
      progress,
      (photosBy[0] || []).length ? el("div", { class: "photos" }, (photosBy[0] || []).map(img)) : null,
      el("h3", {}, T("history")), hist].filter((x) => x !== null));
    placeName(c, box.querySelector(".grid-name"));
    const done = () => { casePanel(box, id, actions, onChange); if (onChange) onChange(); };
    if (actions.includes("steps")) {
      const opts = next(c.status).filter((t) => t[1] !== "rated");
      if (opts.length) box.append(stepForm(c, opts, done));
    }
    if (actions.includes("rate") && c.status === "feedback") box.append(rateForm(c, done));
    if (actions.includes("urge") && !["closed", "duplicate"].includes(c.status)) {
      box.append(el("button", { type: "button", class: "urge", onclick: async () => {
        try { await api("POST", `/v1/incidents/${c.id}/urge`, { note: T("urge") });
          toast(T("urged")); done(); } catch (e) { toast(problemText(e), true); }
      } }, T("urge")));
    }
    return c;
  }

  // The names of the street, community and grid a case lies in (the point lookup).
  async function placeName(c, dd) {
    try {
      const a = await api("GET", `/v1/lookup?lon=${c.lon}&lat=${c.lat}`, undefined, { noRedirect: true });
      dd.textContent = [a.street, a.community, a.grid].filter(Boolean).map((x) => x.name).join(" · ")
        + `（${c.grid_code}）`;
    } catch (e) { /* the code stays */ }
  }

  function stepForm(c, opts, done) {
    const sid = "step-" + c.id;
    const select = el("select", { id: sid, name: "to" },
      opts.map((t) => el("option", { value: t[1] }, M.actions[t[2]] === status(t[1]) ? status(t[1])
        : `${M.actions[t[2]] || t[2]} → ${status(t[1])}`)));
    const note = el("textarea", { id: sid + "-note", rows: 2 });
    const photo = el("input", { id: sid + "-photo", type: "file", accept: "image/*", capture: "environment" });
    const form = el("form", { class: "step-form" },
      el("label", { for: sid }, T("next_step")), select,
      el("label", { for: sid + "-note" }, T("note")), note,
      el("label", { for: sid + "-photo" }, T("photo")), photo,
      el("button", { type: "submit" }, T("next_step")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const h = await api("POST", `/v1/incidents/${c.id}/transitions`,
          { to: select.value, note: note.value || null });
        if (photo.files[0]) await uploadPhoto(c.id, photo.files[0], h.history_id);
        toast(`${status(select.value)} ✓`); done();
      } catch (e) { toast(problemText(e), true); }
    });
    return form;
  }

  function rateForm(c, done) {
    const sid = "rate-" + c.id;
    const select = el("select", { id: sid }, [5, 4, 3, 2, 1].map((n) => el("option", { value: n }, "★".repeat(n) + ` ${n}`)));
    const note = el("textarea", { id: sid + "-note", rows: 2 });
    const form = el("form", { class: "rate-form" }, el("h3", {}, T("rate")),
      el("label", { for: sid }, T("rating")), select,
      el("label", { for: sid + "-note" }, T("note")), note,
      el("button", { type: "submit" }, T("rate_send")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", `/v1/incidents/${c.id}/transitions`,
          { to: "rated", rating: Number(select.value), note: note.value || null });
        toast(T("rated")); done();
      } catch (e) { toast(problemText(e), true); }
    });
    return form;
  }

  async function uploadPhoto(id, file, historyId) {
    const q = historyId ? `?history_id=${historyId}` : "";
    return api("POST", `/v1/incidents/${id}/photos${q}`, file,
      { headers: { "Content-Type": file.type || "image/jpeg" } });
  }

  // Case list rows sorted red → amber → green, then by the earliest deadline.
  function bySla(a, b) {
    return (SLA_ORDER[a.sla] - SLA_ORDER[b.sla]) || String(a.resolve_due).localeCompare(String(b.resolve_due));
  }
  function caseItem(c, onOpen) {
    return el("li", {}, el("button", { type: "button", class: "case-row", "data-id": c.id,
      onclick: () => onOpen(c) }, badge(c.sla), " ", el("b", {}, c.category_name_zh || c.category_code),
      ` #${c.id} · ${status(c.status)} · ${T("resolve_due")} ${time(c.resolve_due)}`));
  }

  // Timings of a page's parts (ms since navigation start), for the benchmark.
  const marks = {};
  function mark(name) { marks[name] = Math.round(performance.now()); }

  // The page is drawn: data loaded and two frames painted; readyMs is ms since navigation start.
  function ready() {
    if (document.body.dataset.ready) return;
    requestAnimationFrame(() => requestAnimationFrame(() => {
      document.body.dataset.readyMs = String(Math.round(performance.now()));
      document.body.dataset.ready = "1";
    }));
  }

  const signOut = document.getElementById("sign-out");
  if (signOut) signOut.addEventListener("click", async () => {
    try { await api("DELETE", "/v1/console/session"); } finally { location.href = "/console/login"; }
  });

  return { M, T, api, problemText, toast, time, day, today, el, status, sla, badge, pct, num,
    SLA_ORDER, SLA_COLOR, map, maps, basemap, buildings, dot, casePanel, uploadPhoto, bySla, caseItem,
    next, ready, mark, marks };
})();
