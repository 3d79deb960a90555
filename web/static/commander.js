// 指挥调度: the area's map (own boundaries, no tiles), incidents by SLA state in clusters that
// show their worst state, counts and trends (ECharts), drill-down grid → team → cases → case,
// 督办 and escalation; refreshes itself every few seconds (polling "changed since").
"use strict";
(() => {
  const { M, T, api, el, time, num, badge, status, SLA_ORDER, SLA_COLOR, problemText, toast } = WG;
  const POLL_MS = 4000;
  const m = WG.map("map");
  const cases = new Map(); // id -> {row, marker}
  let since = null;
  let countsBy = "street";
  const worst = (list) => list.reduce((w, s) => (SLA_ORDER[s] < SLA_ORDER[w] ? s : w), "none");
  const cluster = L.markerClusterGroup({
    showCoverageOnHover: false, maxClusterRadius: 50,
    iconCreateFunction: (c) => {
      const kids = c.getAllChildMarkers();
      const w = worst(kids.map((k) => k.options.sla));
      const red = kids.filter((k) => k.options.sla === "red").length;
      return L.divIcon({ className: "cluster cluster-" + w, iconSize: [40, 40],
        html: `<span>${kids.length}</span>` + (red ? `<i title="${T("overdue")}">${red}</i>` : "") });
    },
  }).addTo(m);
  window.commander = { cases, cluster, map: m };

  function marker(row) {
    const [id, lon, lat, sla, st, cat] = row;
    const cname = (categories[cat] || cat);
    const mk = L.marker([lat, lon], { icon: WG.dot(sla), sla, keyboard: true,
      title: `#${id} ${cname} ${WG.sla(sla)}`, alt: `#${id}` });
    mk.bindTooltip(`#${id} ${cname} · ${status(st)} · ${WG.sla(sla)}`);
    mk.on("click", () => openCase(id));
    return mk;
  }

  function apply(rows) {
    const add = [], drop = [];
    for (const row of rows) {
      const old = cases.get(row[0]);
      if (old) drop.push(old.marker);
      const mk = marker(row);
      cases.set(row[0], { row, marker: mk });
      add.push(mk);
    }
    if (drop.length) cluster.removeLayers(drop);
    if (add.length) cluster.addLayers(add);
    totals();
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
      since = p.now;
      apply(p.rows);
      document.getElementById("updated").textContent = time(p.now);
      if (p.rows.length && q) { counts(); trend(); }
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
        api("GET", `/v1/incidents?grid=${g.code}&limit=200`)]);
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
    await Promise.all([
      WG.basemap(m, ["grid", "community", "street"], openGrid).then(() => WG.buildings(m)),
      poll(), counts(), trend()]);
    WG.ready();
    setInterval(poll, POLL_MS);
  })().catch((e) => toast(problemText(e), true));
})();
