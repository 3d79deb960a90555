// 边界历史: the generations of the grid boundaries (date in China Standard Time, scheduled ones
// marked 待生效, author, summary); any two compared on the map (added green, removed red,
// changed amber, buildings that moved as points) and as tables; undo the latest change of a
// district, cancel a scheduled one (planners and admins; commanders read only).
"use strict";
(() => {
  const { M, T, api, el, time, problemText, toast } = WG;
  const root = document.getElementById("history");
  const canEdit = root.dataset.canEdit === "1";
  const m = WG.map("map");
  const diffLayer = L.layerGroup().addTo(m);
  const COLORS = { added: "#2e9d4a", removed: "#d7263d", changed: "#f4a300", changed_before: "#b37400",
    moved: "#6a3d9a" };
  let gens = [];

  const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k]));
  const planningChange = (g) => String(g.kind).startsWith("planning:");
  const opName = (g) => {
    const op = g.operation || (planningChange(g) ? g.kind.slice(9) : null);
    return op ? (M.operations[op] || op) : `${T("data_load")}（${g.kind}）`;
  };
  const who = (a) => (a ? String(a).replace(/^(user|api_key|local):/, "") : "—");
  const changeName = (c) => M.changes[c] || c;

  // The generation is the latest of its district(s): nothing later touched any of them.
  const latestOfItsDistricts = (g) => !gens.some((h) => h.id > g.id && (!h.districts || !g.districts
    || h.districts.some((d) => g.districts.includes(d))));

  function summary(g) {
    const s = g.summary;
    if (!s) return g.note || "—";
    const n = (k) => (Array.isArray(s[k]) ? s[k].length : 0);
    return [[T("created_n"), n("created")], [T("retired_n"), n("retired")], [T("changed_n"), n("changed")],
      [T("moved_n"), s.buildings_moved || 0]].filter((x) => x[1]).map((x) => `${x[0]} ${x[1]}`).join(" · ") || "—";
  }

  // A confirmation in Chinese in a modal <dialog>; resolves true on 确定.
  function ask(text) {
    const d = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise((ok) => {
      d.addEventListener("close", () => ok(d.returnValue === "yes"), { once: true });
      d.returnValue = "";
      d.showModal();
    });
  }
  document.getElementById("confirm-no").addEventListener("click", () =>
    document.getElementById("confirm").close("no"));

  const picked = (name) => {
    const r = document.querySelector(`input[name=${name}]:checked`);
    return r ? Number(r.value) : null;
  };

  async function list(from, to) {
    gens = await api("GET", "/v1/planning/generations?limit=200");
    from = from ?? picked("from") ?? (gens[1] || gens[0] || {}).id;
    to = to ?? picked("to") ?? (gens[0] || {}).id;
    if (!gens.some((g) => g.id === from)) from = (gens[1] || gens[0] || {}).id;
    if (!gens.some((g) => g.id === to)) to = (gens[0] || {}).id;
    document.querySelector("#generations tbody").replaceChildren(...gens.map((g) => {
      const state = g.scheduled ? "scheduled" : g.in_force ? "in_force" : "past";
      const buttons = [];
      if (canEdit && planningChange(g) && latestOfItsDistricts(g)) {
        if (g.scheduled) {
          buttons.push(el("button", { type: "button", class: "cancel", "data-id": g.id,
            title: fill(T("confirm_cancel"), { id: g.id, op: opName(g), date: time(g.effective_from) }),
            onclick: () => cancel(g) }, T("cancel_change")));
        } else {
          buttons.push(el("button", { type: "button", class: "undo", "data-id": g.id,
            title: fill(T("confirm_undo"), { id: g.id, op: opName(g) }),
            onclick: () => undo(g) }, T("undo")));
        }
      }
      return el("tr", { class: state, "data-id": g.id },
        el("th", { scope: "row" }, String(g.id)),
        el("td", {}, el("input", { type: "radio", name: "from", value: g.id, checked: g.id === from,
          "aria-label": `${T("from_gen")} ${g.id}` })),
        el("td", {}, el("input", { type: "radio", name: "to", value: g.id, checked: g.id === to,
          "aria-label": `${T("to_gen")} ${g.id}` })),
        el("td", {}, time(g.effective_from)),
        el("td", {}, el("span", { class: "tag " + state }, T(state))),
        el("td", {}, opName(g)), el("td", {}, who(g.author)), el("td", {}, summary(g)),
        el("td", {}, buttons));
    }));
  }

  async function compare() {
    const from = picked("from"), to = picked("to");
    if (!from || !to) return;
    const q = `from=${from}&to=${to}`;
    const [d, fc] = await Promise.all([api("GET", "/v1/planning/diff?" + q),
      api("GET", "/v1/planning/diff/features?" + q)]);
    diffLayer.clearLayers();
    const order = { removed: 0, changed_before: 1, changed: 2, added: 3, moved: 4 };  // bottom → top
    fc.features.sort((a, b) => order[a.properties.change] - order[b.properties.change]);
    const drawn = L.geoJSON(fc, {
      style: (f) => {
        const c = f.properties.change;
        return c === "changed_before" ? { color: COLORS[c], weight: 2, dashArray: "5 4", fill: false }
          : c === "removed" ? { color: COLORS[c], weight: 3, dashArray: "6 4", fillColor: COLORS[c], fillOpacity: 0.15 }
          : { color: COLORS[c], weight: 2, fillColor: COLORS[c], fillOpacity: 0.35 };
      },
      pointToLayer: (f, ll) => L.circleMarker(ll, { radius: 5, color: "#fff", weight: 1.5,
        fillColor: COLORS.moved, fillOpacity: 0.95 }),
      onEachFeature: (f, l) => {
        const p = f.properties;
        l.bindTooltip(p.change === "moved"
          ? `${T("building")} ${p.name || p.code}：${p.from || "—"} → ${p.to || "—"}`
          : `${changeName(p.change)}：${p.name || ""}（${p.code}）`);
      },
    }).addTo(diffLayer);
    if (fc.features.length) m.fitBounds(drawn.getBounds(), { padding: [20, 20], maxZoom: 17 });
    document.getElementById("diff-title").textContent = `${from} → ${to}`;
    const names = {};
    for (const f of fc.features) if (f.properties.change !== "moved") names[f.properties.code] = f.properties.name;
    const rows = [...d.grids_added.map((c) => ["added", c]), ...d.grids_removed.map((c) => ["removed", c]),
      ...d.grids_changed.map((c) => ["changed", c])];
    document.querySelector("#diff-grids tbody").replaceChildren(...rows.map(([change, code]) => el("tr",
      { "data-change": change, "data-code": code },
      el("td", { class: "change-" + change }, changeName(change)), el("td", {}, code),
      el("td", {}, names[code] || ""))));
    document.querySelector("#diff-moves tbody").replaceChildren(...d.buildings_moved.map((b) => el("tr",
      { "data-building": b.building }, el("td", {}, b.building), el("td", {}, b.from || "—"),
      el("td", {}, b.to || "—"), el("td", {}, T(b.by === "assignment" ? "by_assignment" : "by_location")))));
    document.getElementById("diff-empty").hidden = rows.length + d.buildings_moved.length > 0;
    root.dataset.compared = q;
  }

  // What the undo would do, from its dry run (nothing written): grids back, codes retired, checks.
  async function undoPreview(g) {
    try {
      const p = await api("POST", "/v1/planning/preview/undo", { generation: g.id });
      const list = (xs) => (xs.length ? xs.join("、") : "—");
      const problems = p.problems.features.filter((f) => f.properties.severity === "error");
      return `\n${T("restores")}：${list(p.codes.concat(p.changed))}；${T("retires")}：${list(p.retired)}；` +
        `${T("moved_n")} ${p.buildings_moved}；${T("checks")}：` +
        (p.accepted ? T("checks_pass") : problems.map((f) => f.properties.reason).join("；"));
    } catch (e) { return `\n${problemText(e)}`; }
  }

  async function undo(g) {
    const preview = await undoPreview(g);
    if (!(await ask(fill(T("confirm_undo"), { id: g.id, op: opName(g) }) + preview))) return;
    try {
      const res = await api("POST", "/v1/planning/undo", { generation: g.id });
      toast(`${T("undone")} ${res.generation}`);
      await list(g.id, res.generation);
      await compare();
    } catch (e) { toast(problemText(e), true); }
  }

  async function cancel(g) {
    const text = fill(T("confirm_cancel"), { id: g.id, op: opName(g), date: time(g.effective_from) });
    if (!(await ask(text))) return;
    try {
      await api("DELETE", `/v1/planning/generations/${g.id}`);
      toast(`${T("cancelled")} ${g.id}`);
      await list(null, null);
      await compare();
    } catch (e) { toast(problemText(e), true); }
  }

  document.getElementById("compare").addEventListener("click", () =>
    compare().catch((e) => toast(problemText(e), true)));

  (async () => {
    await WG.basemap(m, ["community", "street"], null, ["grid"]);  // grids from zoom 14 on
    await list();
    await compare();
    WG.ready();
  })().catch((e) => toast(problemText(e), true));
})();
