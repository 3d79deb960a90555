// 网格规划编辑: the planner's map editor. Split by drawing a line, reshape by dragging a shared
// vertex, merge by selecting, reassign buildings by clicking, the balanced draft adjusted and
// accepted. Every edit is first previewed on the server (a dry run of the real change): the
// would-be grids with households, residents and new codes, and every problem drawn where it is
// with its figure. Then save now or on a date, with names, responsible body and team per new grid.
"use strict";
(() => {
  const { M, T, api, el, num, problemText, toast } = WG;
  const m = WG.map("map", { doubleClickZoom: false });
  const GRID = { color: "#2c7fb8", weight: 1.2, fillColor: "#dbe9f6", fillOpacity: 0.35 };
  const PICKED = { color: "#d95f02", weight: 3, fillColor: "#fdd0a2", fillOpacity: 0.5 };
  const PREVIEW = { color: "#7b3294", weight: 2.5, dashArray: "6 4", fillColor: "#c2a5cf", fillOpacity: 0.35 };
  const DRAFT_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"];
  const S = {
    mode: "split", community: null, communityName: "", grids: {}, shapes: {}, layers: {},
    buildings: [], picked: [], moves: {}, changed: new Set(), draft: null, preview: null, body: null,
  };
  const base = L.layerGroup().addTo(m);
  const bldLayer = L.layerGroup().addTo(m);
  const overlay = L.layerGroup().addTo(m);   // the preview's grids and problems
  let handles = null;
  const line = DRAW.lineTool(m, { color: "#d7263d", weight: 3 });
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ data of one community
  async function loadCommunities() {
    const fc = await api("GET", "/v1/layers/community?limit=10000");
    const sel = $("community");
    sel.replaceChildren(...fc.features.map((f) => el("option", { value: f.properties.code },
      `${f.properties.name}（${f.properties.code}）`)));
    S.communities = Object.fromEntries(fc.features.map((f) => [f.properties.code, f]));
    const want = new URLSearchParams(location.search).get("community");
    if (want && S.communities[want]) sel.value = want;
  }

  async function loadCommunity() {
    const code = $("community").value;
    S.community = code;
    S.communityName = S.communities[code] ? S.communities[code].properties.name : "";
    const [grids, blds] = await Promise.all([
      api("GET", `/v1/layers/grid?within=${code}&limit=10000`),
      api("GET", `/v1/layers/building?within=${code}&limit=10000`)]);
    S.grids = {}; S.shapes = {};
    for (const f of grids.features) {
      S.grids[f.properties.code] = Object.assign({}, f.properties, { households: 0, residents: 0 });
      S.shapes[f.properties.code] = f.geometry;
    }
    S.buildings = blds.features;
    for (const b of S.buildings) {
      const g = S.grids[b.properties.grid_code];
      if (g) { g.households += b.properties.households || 0; g.residents += b.properties.residents || 0; }
    }
    reset();
    const comm = S.communities[code];
    if (comm) m.fitBounds(L.geoJSON(comm).getBounds(), { padding: [10, 10] });
  }

  // ------------------------------------------------------------ drawing
  function drawBase() {
    base.clearLayers(); S.layers = {};
    const comm = S.communities[S.community];
    if (comm) L.geoJSON(comm, { style: { color: "#34495e", weight: 2.5, fill: false, dashArray: "5 4" },
      interactive: false }).addTo(base);
    const shapes = S.draft ? S.draft.shapes : S.shapes;
    Object.entries(shapes).forEach(([key, g], i) => {
      const style = S.draft ? Object.assign({}, GRID, { color: DRAFT_COLORS[i % DRAFT_COLORS.length],
        fillColor: DRAFT_COLORS[i % DRAFT_COLORS.length], fillOpacity: 0.25, weight: 2 })
        : S.picked.includes(key) ? PICKED : GRID;
      const layer = L.polygon(DRAW.polyLatLngs(g), Object.assign({ interactive: true,
        bubblingMouseEvents: true }, style)).addTo(base);
      const info = S.draft ? S.draft.props[key] : S.grids[key];
      layer.bindTooltip(S.draft ? `${T("new_grid")} ${Number(key) + 1} · ${num(info.households)} ${T("households")}`
        : `${escapeHtml(info.name)}（${key}）· ${num(info.households)} ${T("households")}`, { sticky: true });
      S.layers[key] = layer;
    });
    drawBuildings();
  }

  function drawBuildings() {
    bldLayer.clearLayers();
    for (const b of S.buildings) {
      const p = b.properties;
      const chosen = S.moves[p.code] !== undefined;
      const style = { color: chosen ? "#d7263d" : "#8d6e63", weight: chosen ? 2.5 : 0.8,
        fillOpacity: chosen ? 0.7 : 0.35, interactive: false };
      L.geoJSON(b, { style: () => style, interactive: false,
        pointToLayer: (f, at) => L.circleMarker(at, Object.assign({ radius: 3 }, style)) }).addTo(bldLayer);
    }
  }

  function codeAt(latlng) {
    const pt = [latlng.lng, latlng.lat];
    const shapes = S.draft ? S.draft.shapes : S.shapes;
    return Object.keys(shapes).find((k) => DRAW.contains(shapes[k], pt)) || null;
  }

  function buildingAt(latlng) {
    const pt = [latlng.lng, latlng.lat];
    const hit = S.buildings.find((b) => b.geometry && b.geometry.type !== "Point" && DRAW.contains(b.geometry, pt));
    if (hit) return hit;
    const at = m.latLngToContainerPoint(latlng);
    let best = null, dist = 12;  // px
    for (const b of S.buildings) {
      const c = L.geoJSON(b).getBounds().getCenter();
      const d = at.distanceTo(m.latLngToContainerPoint(c));
      if (d < dist) { best = b; dist = d; }
    }
    return best;
  }

  // ------------------------------------------------------------ modes
  function setMode(mode) {
    S.mode = mode;
    document.querySelectorAll("[data-mode]").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.mode === mode)));
    $("hint").textContent = T("hint_" + mode);
    $("target").hidden = mode !== "reassign";
    document.querySelector("label[for=target]").hidden = mode !== "reassign";
    $("make-draft").hidden = mode !== "draft";
    if (mode !== "draft") S.draft = null;
    reset();
  }

  function reset() {
    S.picked = []; S.moves = {}; S.changed = new Set(); S.preview = null; S.body = null;
    if (S.draft) S.draft.shapes = DRAW.copy(S.draft.original);
    // the editable shapes start again from the loaded grids
    for (const k of Object.keys(S.shapes)) if (S.grids[k] && S.grids[k].original) S.shapes[k] = DRAW.copy(S.grids[k].original);
    line.clear(); overlay.clearLayers();
    if (handles) { handles.remove(); handles = null; }
    $("target").replaceChildren(...Object.entries(S.grids).map(([c, g]) =>
      el("option", { value: c }, `${g.name}（${c}）`)));
    $("result").replaceChildren();
    drawBase(); picked();
  }

  function picked() {
    const p = $("picked");
    if (S.mode === "split") p.textContent = S.picked.length ? `${T("selected")}：${S.picked[0]} · ${T("line_points")} ${line.points.length}` : "";
    else if (S.mode === "merge") p.textContent = S.picked.length ? `${T("selected")}：${S.picked.join("、")}` : "";
    else if (S.mode === "reassign") p.textContent = Object.keys(S.moves).length ? `${T("selected")}：${Object.keys(S.moves).join("、")}` : "";
    else if (S.mode === "reshape" || S.mode === "draft") p.textContent = S.changed.size ? `${T("status_changed")}：${[...S.changed].join("、")}` : "";
  }

  function keepOriginals() {
    for (const [k, g] of Object.entries(S.shapes)) if (!S.grids[k].original) S.grids[k].original = DRAW.copy(g);
  }

  function showHandles(key) {
    if (handles) handles.remove();
    const shapes = S.draft ? S.draft.shapes : S.shapes;
    handles = DRAW.vertexHandles(m, shapes[key], (from, to, done) => {
      for (const k of DRAW.moveShared(shapes, from, to)) {
        S.changed.add(k);
        S.layers[k].setLatLngs(DRAW.polyLatLngs(shapes[k]));
      }
      if (done) { picked(); preview(); }
    });
  }

  m.on("click", (e) => {
    if (S.mode === "split") {
      if (!S.picked.length) {
        const code = codeAt(e.latlng);
        if (code) { S.picked = [code]; drawBase(); }
      } else line.add(e.latlng);
    } else if (S.mode === "merge") {
      const code = codeAt(e.latlng);
      if (!code) return;
      S.picked = S.picked.includes(code) ? S.picked.filter((c) => c !== code) : S.picked.concat(code);
      drawBase();
    } else if (S.mode === "reassign") {
      const b = buildingAt(e.latlng);
      if (!b) return;
      const code = b.properties.code;
      if (S.moves[code] !== undefined) delete S.moves[code]; else S.moves[code] = $("target").value;
      drawBuildings();
    } else if (S.mode === "reshape" || S.mode === "draft") {
      const key = codeAt(e.latlng);
      if (key === null || (S.mode === "draft" && !S.draft)) return;
      keepOriginals(); S.picked = [key]; showHandles(key);
    }
    picked();
  });
  $("target").addEventListener("change", () => {
    for (const b of Object.keys(S.moves)) S.moves[b] = $("target").value;
  });

  // ------------------------------------------------------------ the balanced draft
  async function makeDraft() {
    $("result").replaceChildren(el("p", {}, T("loading")));
    try {
      const d = await api("GET", `/v1/planning/draft/${S.community}`);
      const shapes = {}, props = {};
      d.features.forEach((f, i) => { shapes[String(i)] = f.geometry; props[String(i)] = f.properties; });
      S.draft = { fc: d, shapes, props, original: DRAW.copy(shapes) };
      reset();
      $("result").replaceChildren(el("p", {}, `${T("draft_ratio")}：${d.ratio.toFixed(2)} · ${d.features.length} ${T("grid")}`));
    } catch (err) { $("result").replaceChildren(el("p", { class: "error", role: "alert" }, problemText(err))); }
  }

  // ------------------------------------------------------------ preview and save
  function body() {
    if (S.mode === "split") {
      if (!S.picked.length || line.points.length < 2) return null;
      return ["split", { code: S.picked[0], line: { type: "LineString", coordinates: line.points } }];
    }
    if (S.mode === "merge") return S.picked.length >= 2 ? ["merge", { codes: S.picked.slice() }] : null;
    if (S.mode === "reassign") return Object.keys(S.moves).length ? ["reassign", { assignments: Object.assign({}, S.moves) }] : null;
    if (S.mode === "reshape") {
      if (!S.changed.size) return null;
      return ["reshape", { geometries: Object.fromEntries([...S.changed].map((k) => [k, S.shapes[k]])) }];
    }
    if (S.mode === "draft" && S.draft) {
      const fc = { type: "FeatureCollection", features: S.draft.fc.features.map((f, i) =>
        ({ type: "Feature", geometry: S.draft.shapes[String(i)], properties: f.properties })) };
      return ["draft/accept", { community: S.community, draft: fc }];
    }
    return null;
  }

  async function preview() {
    const b = body();
    if (!b) { toast(S.mode === "split" && !S.picked.length ? T("pick_grid") : T("preview_first"), true); return; }
    const [route, payload] = b;
    $("result").replaceChildren(el("p", {}, T("loading")));
    overlay.clearLayers();
    try {
      const p = await api("POST", `/v1/planning/preview/${route}`, payload);
      S.preview = p; S.body = b;
      showPreview(p);
    } catch (err) {
      S.preview = null;
      $("result").replaceChildren(el("p", { class: "error", role: "alert" }, problemText(err)));
      drawProblems((err.body && err.body.problems) || []);
    }
  }

  function figure(p) {
    const bits = [];
    if (p.m2 !== null && p.m2 !== undefined) bits.push(`${num(Math.round(p.m2 * 10) / 10)} ${T("m2")}`);
    if (p.households !== null && p.households !== undefined) bits.push(`${num(p.households)} ${T("households")}`);
    if (p.by !== null && p.by !== undefined) bits.push(`${T("off_by")} ${num(p.by)} ${T("households")}`);
    if (p.other) bits.push(p.other);
    if (p.grids && p.grids.length) bits.push(p.grids.join("、"));
    return bits.join(" · ");
  }
  const checkName = (p) => (p.check && M.checks[p.check]) || p.field || T("problems");

  // Problems: a marker where each is, with its figure in the popup, and a list beside the map.
  function drawProblems(feats) {
    const items = [];
    for (const f of feats) {
      const p = f.properties || f;
      const text = `${checkName(p)}${p.feature ? "（" + p.feature + "）" : ""}：${figure(p) || p.reason}`;
      let marker = null;
      const coords = f.geometry && f.geometry.coordinates;
      if (coords) {
        marker = L.circleMarker(DRAW.ll(coords), { radius: 9, color: p.severity === "warning" ? "#f4a300" : "#d7263d",
          weight: 3, fillOpacity: 0.4, className: "problem-marker" }).addTo(overlay);
        marker.bindPopup(`<b>${escapeHtml(checkName(p))}</b>${p.feature ? "（" + escapeHtml(p.feature) + "）" : ""}<br>${escapeHtml(figure(p) || p.reason)}`);
        marker.feature = f;
      }
      items.push(el("li", { class: p.severity === "warning" ? "warning" : "error" },
        marker ? el("button", { type: "button", class: "link", onclick: () => {
          m.panTo(marker.getLatLng()); marker.openPopup(); }, title: p.reason }, text) : el("span", { title: p.reason }, text)));
    }
    return items;
  }
  function escapeHtml(s) { return String(s || "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

  function suggestName(code) {
    return `${S.communityName}第${Number(code.slice(-3))}${T("grid_seq")}`;
  }

  function showPreview(p) {
    const box = $("result");
    L.geoJSON(p.grids, { style: () => PREVIEW, interactive: false }).addTo(overlay);
    for (const f of p.grids.features) {
      const c = L.geoJSON(f).getBounds().getCenter();
      L.marker(c, { icon: L.divIcon({ className: "grid-label", html: `${f.properties.code.slice(-3)}<br>${num(f.properties.households)}${T("households")}`,
        iconSize: [70, 32] }), interactive: false }).addTo(overlay);
    }
    const created = new Set(p.created);
    const rows = p.grids.features.map((f) => {
      const g = f.properties, isNew = created.has(g.code);
      return el("tr", { "data-code": g.code },
        el("th", { scope: "row" }, g.code),
        el("td", {}, T("status_" + g.status)),
        el("td", {}, isNew ? el("input", { type: "text", class: "grid-name", "aria-label": `${T("grid_name")} ${g.code}`,
          value: suggestName(g.code), maxlength: 64 }) : g.name),
        el("td", {}, isNew ? el("input", { type: "text", class: "grid-body", "aria-label": `${T("responsible_body")} ${g.code}`,
          value: g.responsible_body || "", maxlength: 64 }) : g.responsible_body || ""),
        el("td", { class: "households" }, num(g.households)), el("td", {}, num(g.residents)),
        el("td", {}, num(g.buildings)),
        el("td", {}, g.team ? (g.team.complete_2_5_n ? T("team_complete") : T("team_gaps")) : "—"));
    });
    const probs = drawProblems(p.problems.features);
    const errors = p.problems.features.filter((f) => f.properties.severity === "error").length;
    const parts = [
      el("p", { class: p.accepted ? "ok verdict" : "error verdict", role: p.accepted ? "status" : "alert" },
        p.accepted ? T("can_save") : `${T("refused")}（${errors} ${T("problems")}）`),
      el("h2", {}, T("new_grids")),
      el("div", { class: "table-wrap" }, el("table", { id: "preview-grids" },
        el("thead", {}, el("tr", {}, [T("id"), T("status"), T("grid_name"), T("responsible_body"),
          T("households"), T("residents"), T("buildings"), T("team_rule")].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows))),
      el("h2", {}, `${T("problems")}（${p.problems.features.length}）`),
      probs.length ? el("ul", { id: "problems", class: "compact problems" }, probs) : el("p", { id: "problems" }, T("no_problems")),
    ];
    const members = p.created.length ? p.parent_team || [] : [];
    if (members.length) {
      parts.push(el("h2", {}, T("team_assign")), el("div", { class: "table-wrap" }, el("table", { id: "team" },
        el("tbody", {}, members.map((mb, i) => el("tr", { "data-member": mb.id === undefined ? "" : mb.id },
          el("th", { scope: "row" }, `${M.team_roles[mb.role] || mb.role} ${mb.name}`),
          el("td", {}, el("select", { "aria-label": `${T("goes_to")} ${mb.name}`, id: `member-${i}`,
            disabled: mb.id === undefined },
            el("option", { value: "" }, T("keep_default")),
            p.created.map((c) => el("option", { value: c }, c))))))))));
    }
    const when = el("input", { type: "date", id: "effective", min: WG.today() });
    const save = el("button", { type: "button", id: "save", class: "primary", disabled: !p.accepted,
      onclick: () => commit() }, T("save"));
    parts.push(el("div", { class: "toolbar" }, el("label", { for: "effective" }, T("save_on")), when, save));
    box.replaceChildren(...parts);
    box.dataset.previewed = String(Date.now());
  }

  // {new code: {name, responsible_body, team: [member id]}} from the panel.
  function completion() {
    const out = {};
    for (const tr of document.querySelectorAll("#preview-grids tbody tr")) {
      const name = tr.querySelector(".grid-name");
      if (!name) continue;
      const body = tr.querySelector(".grid-body").value.trim();
      out[tr.dataset.code] = Object.assign({ name: name.value.trim() || null }, body ? { responsible_body: body } : {});
    }
    for (const tr of document.querySelectorAll("#team tr")) {
      const to = tr.querySelector("select").value;
      if (to && out[to]) (out[to].team = out[to].team || []).push(Number(tr.dataset.member));
    }
    return out;
  }

  async function commit() {
    if (!S.preview || !S.body) { toast(T("preview_first"), true); return; }
    const [route, payload] = S.body;
    const when = $("effective").value;
    const out = Object.assign({}, payload);
    const chosen = completion();
    if (Object.keys(chosen).length) out.grids = chosen;
    if (when) out.effective_from = `${when}T00:00:00+08:00`;
    try {
      const r = await api("POST", `/v1/planning/${route}`, out);
      toast(when ? `${T("scheduled_for")} ${when}` : `${T("saved")} ${r.generation}`);
      document.body.dataset.saved = String(r.generation);
      S.draft = null;
      await loadCommunity();
      $("result").replaceChildren(el("p", { class: "ok", role: "status" },
        when ? `${T("scheduled_for")} ${when}（${r.created.join("、")}）` : `${T("saved")} ${r.generation}：${r.created.concat(r.changed).join("、")}`));
    } catch (err) {
      toast(problemText(err), true);
      drawProblems((err.body && err.body.problems) || []);
    }
  }

  // ------------------------------------------------------------ wiring
  document.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  $("community").addEventListener("change", () => { S.draft = null; loadCommunity(); });
  $("reset").addEventListener("click", reset);
  $("preview").addEventListener("click", preview);
  $("make-draft").addEventListener("click", makeDraft);
  window.PLANNER = S;  // for tests and the curious

  (async () => {
    try {
      await loadCommunities();
      await loadCommunity();
      setMode("split");
    } catch (err) { toast(problemText(err), true); }
    WG.ready();
  })();
})();
