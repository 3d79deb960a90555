// 指挥调度: the area's map (own boundaries, no tiles), incidents by SLA state in clusters that
// show their worst state, counts and trends (ECharts), drill-down grid → team → cases → case,
// 督办 and escalation; refreshes itself every few seconds (polling "changed since").
"use strict";
(() => {
  const { M, T, api, el, time, num, badge, status, SLA_ORDER, SLA_COLOR, problemText, toast } = WG;
  const POLL_MS = 4000;
  const m = WG.map("map");
  const cases = new Map(); // id -> {row}
  let since = null;
  // A city's or province's commander (or one with no area) looks at districts first.
  const AREA = document.body.dataset.area || "";
  const WIDE = AREA.length <= 4;
  let countsBy = WIDE ? "district" : "street";
  // Clusters by Supercluster (tens of thousands of cases in tens of ms); each cluster carries
  // its worst SLA state and how many of its cases are overdue, and is coloured by the worst.
  const index = new Supercluster({
    radius: 90, maxZoom: 17,  // radius in 512-px tile units: ~45 screen px
    map: (p) => ({ worst: p.sla, red: p.sla === "red" ? 1 : 0 }),
    reduce: (acc, p) => {
      if (SLA_ORDER[p.worst] < SLA_ORDER[acc.worst]) acc.worst = p.worst;
      acc.red += p.red;
    },
  });
  const layer = L.layerGroup().addTo(m);
  const icons = Object.fromEntries(["red", "amber", "green", "none"].map((s) => [s, WG.dot(s)]));

  function clusterIcon(p) {
    return L.divIcon({ className: "cluster cluster-" + p.worst, iconSize: [40, 40],
      html: `<span>${p.point_count}</span>` + (p.red ? `<i title="${T("overdue")}">${p.red}</i>` : "") });
  }
  function draw() {
    if (!index.points) return;  // moved before the first load
    const b = m.getBounds();
    const found = index.getClusters([b.getWest(), b.getSouth(), b.getEast(), b.getNorth()],
      Math.round(m.getZoom()));
    layer.clearLayers();
    for (const f of found) {
      const [lon, lat] = f.geometry.coordinates;
      const p = f.properties;
      if (p.cluster) {
        const title = `${p.point_count} ${T("cases")}` + (p.red ? `，${T("overdue")} ${p.red}` : "");
        L.marker([lat, lon], { icon: clusterIcon(p), clusterId: p.cluster_id, keyboard: true,
          title, alt: title }).on("click", () => m.setView([lat, lon],
          Math.min(index.getClusterExpansionZoom(p.cluster_id), 19))).addTo(layer);
      } else {
        L.marker([lat, lon], { icon: icons[p.sla], caseId: p.id, keyboard: true, alt: `#${p.id}`,
          title: `#${p.id} ${categories[p.cat] || p.cat} · ${status(p.st)} · ${WG.sla(p.sla)}` })
          .on("click", () => openCase(p.id)).addTo(layer);
      }
    }
  }
  m.on("moveend", draw);
  // The drawn cluster (its icon element) holding case ``id``, or null (for tests).
  function clusterOf(id) {
    let hit = null;
    layer.eachLayer((mk) => {
      if (mk.options.clusterId !== undefined
          && index.getLeaves(mk.options.clusterId, Infinity).some((f) => f.properties.id === id)) hit = mk;
    });
    return hit && hit.getElement();
  }
  window.commander = { cases, index, layer, map: m, clusterOf };

  // Rows of new or changed cases into the map; how many changed (a refresh repeats the cases
  // of its overlap window as they are).
  function apply(rows) {
    let changed = 0;
    for (const row of rows) {
      const old = cases.get(row[0]);
      if (old && old.row.join("\u0001") === row.join("\u0001")) continue;
      cases.set(row[0], { row });
      changed++;
    }
    if (!changed && index.points) return 0;
    index.load([...cases.values()].map(({ row }) => ({ type: "Feature",
      geometry: { type: "Point", coordinates: [row[1], row[2]] },
      properties: { id: row[0], sla: row[3], st: row[4], cat: row[5] } })));
    draw();
    totals();
    return changed;
  }

  function totals() {
    const n = { green: 0, amber: 0, red: 0, none: 0 };
    for (const { row } of cases.values()) n[row[3]] = (n[row[3]] || 0) + 1;
    document.getElementById("totals").replaceChildren(
      ...["red", "amber", "green", "none"].map((s) => el("div", { class: "total sla-" + s, "data-sla": s },
        el("b", {}, num(n[s])), el("span", {}, s === "none" ? T("closed") : WG.sla(s)))));
  }

  async function poll() {
    try {
      const q = since ? "?since=" + encodeURIComponent(since) : "";
      const p = await api("GET", "/v1/console/points" + q);
      if (!since) WG.mark("points-fetched");
      since = p.next_since || p.now;  // a worker of the previous release gives no next_since
      const changed = apply(p.rows);
      document.getElementById("updated").textContent = time(p.now);
      if (changed && q) { counts(); trend(); }
    } catch (e) { if (e.status !== 401) toast(problemText(e), true); }
  }

  // ---------------------------------------------------------------- counts and trends
  const countChart = echarts.init(document.getElementById("count-chart"), null, { renderer: "canvas" });
  const trendChart = echarts.init(document.getElementById("trend-chart"), null, { renderer: "canvas" });
  async function counts() {
    const rows = await api("GET", "/v1/console/counts?by=" + countsBy);
    const label = (r) => r.name || r.code || "—";
    const top = rows.slice().sort((a, b) => b.open - a.open).slice(0, 12);
    countChart.setOption({
      animation: false, grid: { left: 90, right: 10, top: 24, bottom: 20 },
      legend: { top: 0, textStyle: { fontSize: 11 } }, tooltip: { trigger: "axis" },
      xAxis: { type: "value", minInterval: 1 },
      yAxis: { type: "category", inverse: true, data: top.map(label), axisLabel: { fontSize: 11, width: 80, overflow: "truncate" } },
      series: ["green", "amber", "red"].map((s) => ({ name: WG.sla(s), type: "bar", stack: "open",
        itemStyle: { color: SLA_COLOR[s] }, data: top.map((r) => r[s]) })),
    }, true);
    const body = document.querySelector("#count-table tbody");
    body.replaceChildren(...rows.map((r) => el("tr", { "data-code": r.code || "" },
      el("th", { scope: "row" }, label(r)), el("td", {}, num(r.open)), el("td", {}, num(r.green)),
      el("td", {}, num(r.amber)), el("td", { class: r.red ? "red" : "" }, num(r.red)),
      el("td", {}, num(r.closed)))));
  }
  async function trend() {
    const rows = await api("GET", "/v1/console/trend?days=30");
    trendChart.setOption({
      animation: false, grid: { left: 40, right: 10, top: 24, bottom: 24 }, tooltip: { trigger: "axis" },
      legend: { top: 0, textStyle: { fontSize: 11 } },
      xAxis: { type: "category", data: rows.map((r) => r.day.slice(5)) },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: T("reported"), type: "line", data: rows.map((r) => r.reported), itemStyle: { color: "#2c7fb8" } },
        { name: T("closed"), type: "line", data: rows.map((r) => r.closed), itemStyle: { color: "#2e9d4a" } }],
    }, true);
  }
  for (const b of document.querySelectorAll(".tabs [data-by]")) {
    b.addEventListener("click", () => {
      countsBy = b.dataset.by;
      for (const o of document.querySelectorAll(".tabs [data-by]")) o.setAttribute("aria-selected", String(o === b));
      counts();
    });
  }

  // ---------------------------------------------------------------- drill-down
  const drill = document.getElementById("drill");
  const caseBox = document.getElementById("case");
  async function openGrid(g) {
    drill.replaceChildren(el("p", {}, T("loading")));
    caseBox.replaceChildren();
    try {
      const [team, list] = await Promise.all([
        api("GET", `/v1/console/grids/${g.code}/team`),
        api("GET", `/v1/incidents?grid=${g.code}&limit=200`).then((p) => p.items)]);
      list.sort(WG.bySla);
      drill.replaceChildren(
        el("h2", {}, `${T("grid")}：${team.name || ""}（${team.code}）`),
        el("p", {}, `${T("community")}：${team.community_name || team.community_code || "—"}`),
        el("h3", {}, T("team")),
        team.complete ? el("p", { class: "ok" }, T("team_complete"))
          : el("p", { class: "gap", role: "note" }, `${T("team_gaps")}：`,
            team.gaps.map((x) => `${M.team_roles[x.role] || x.role} ${T("missing")}${x.want - x.have}`).join("，")),
        el("ul", { class: "team" }, team.members.map((p) => el("li", {},
          el("b", {}, M.team_roles[p.role] || p.role), " ", p.name))),
        el("h3", {}, `${T("cases")}（${list.length}）`),
        list.length ? el("ul", { class: "cases" }, list.map((c) => WG.caseItem(c, (x) => openCase(x.id))))
          : el("p", {}, T("no_cases")));
    } catch (e) { drill.replaceChildren(el("p", { class: "error" }, problemText(e))); }
  }
  function openCase(id) {
    caseBox.scrollIntoView({ block: "nearest" });
    WG.casePanel(caseBox, id, ["urge"], () => poll());
  }
  document.getElementById("escalate").addEventListener("click", async () => {
    try {
      const out = await api("POST", "/v1/incidents/escalate");
      toast(`${T("escalated")}：${out.length}`);
      poll();
    } catch (e) { toast(problemText(e), true); }
  });

  // ---------------------------------------------------------------- start
  let categories = {};
  (async () => {
    const cats = await api("GET", "/v1/incident-categories");
    categories = Object.fromEntries(cats.map((c) => [c.code, c.name_zh]));
    WG.mark("start");
    await Promise.all([
      // A district's grids are drawn from zoom 14; a street's or community's at once.
      WG.basemap(m, WIDE ? ["grid", "community", "street", "district"] : ["grid", "community", "street"],
        openGrid, AREA.length >= 9 ? [] : WIDE ? ["grid", "community"] : ["grid"])
        .then((base) => { window.commander.base = base; WG.mark("basemap"); WG.buildings(m); }),
      poll().then(() => WG.mark("points")), counts().then(() => WG.mark("counts")),
      trend().then(() => WG.mark("trend"))]);
    WG.ready();
    setInterval(poll, POLL_MS);
  })().catch((e) => toast(problemText(e), true));
})();
