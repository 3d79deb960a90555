// 服务圈分析: start circles / coverage / siting runs and follow them; circles by station kind and
// one tier at a time; uncovered buildings with grid and community names; suggested sites with
// what each adds; station-kind shares against the targets; exports (GeoPackage, GeoJSON, CSV).
"use strict";
(() => {
  const { M, T, api, el, time, num, pct, problemText, toast } = WG;
  const m = WG.map("map");
  const KIND_COLORS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999"];
  let kinds = {}, colors = {}, gridNames = {}, communityNames = {};
  let circlesRun = null, circles = null, circleLayer = null, extras = L.layerGroup().addTo(m);

  function exportLinks(run) {
    const what = { circles: "circles", coverage: "uncovered", siting: "sites" }[run.kind];
    if (!what || !["done", "finished"].includes(run.status)) return "—";
    return el("span", {}, ["gpkg", "geojson", "csv"].map((f) => el("a", {
      href: `/v1/console/export/${run.id}?what=${what}&format=${f}`, download: "" }, f.toUpperCase() + " ")));
  }

  let asked = 0;  // a slower, older answer never overwrites a newer one
  async function runs() {
    const mine = ++asked;
    const list = (await api("GET", "/v1/circles/runs?limit=20")).items;  // a page
    if (mine !== asked) return list;
    document.querySelector("#runs tbody").replaceChildren(...list.map((r) => el("tr", {},
      el("td", {}, String(r.id)), el("td", {}, M.run_kinds[r.kind] || r.kind),
      el("td", {}, M.run_status[r.status] || r.status), el("td", {}, time(r.started_at)),
      el("td", {}, exportLinks(r)))));
    return list;
  }

  function drawCircles() {
    if (circleLayer) circleLayer.remove();
    if (!circles) return;
    const kind = document.getElementById("kind").value;
    const tier = Number(document.getElementById("tier").value);
    circleLayer = L.geoJSON(circles, {
      filter: (f) => (!kind || f.properties.kind === kind) && f.properties.tier_m === tier,
      style: (f) => ({ color: colors[f.properties.kind], weight: 1, fillOpacity: 0.15 }),
      onEachFeature: (f, l) => l.bindTooltip(`${kinds[f.properties.kind] || f.properties.kind} · ` +
        `${f.properties.station_code} · ${num(f.properties.tier_m)} ${T("metres")}`),
    }).addTo(m);
  }

  async function showLatest(list) {
    const latest = (k) => list.find((r) => r.kind === k && ["done", "finished"].includes(r.status));
    const c = latest("circles"), cov = latest("coverage"), s = latest("siting");
    extras.clearLayers();
    if (c && (!circlesRun || circlesRun !== c.id)) {
      circlesRun = c.id;
      circles = await api("GET", `/v1/circles/runs/${c.id}/circles`);
      const tiers = [...new Set(circles.features.map((f) => f.properties.tier_m))].sort((a, b) => a - b);
      document.getElementById("tier").replaceChildren(...tiers.map((t) => el("option", { value: t }, `${num(t)} ${T("metres")}`)));
      drawCircles();
    }
    if (cov) {
      const sharesRows = (cov.summary && cov.summary.kind_shares) || [];
      document.querySelector("#shares tbody").replaceChildren(...sharesRows.map((r) => el("tr",
        { class: r.meets_targets === false ? "below" : "" },
        el("th", { scope: "row" }, kinds[r.kind] || r.kind),
        el("td", {}, `${pct(r.community_share)}（${r.communities_with}/${r.communities}）`),
        el("td", {}, pct(r.community_target)), el("td", {}, `${pct(r.street_share)}（${r.streets_with}/${r.streets}）`),
        el("td", {}, pct(r.street_target)))));
      const un = await api("GET", `/v1/circles/coverage/${cov.id}/uncovered?limit=2000`);
      document.getElementById("uncovered").replaceChildren(...un.features.slice(0, 200).map((f) => {
        const p = f.properties, g = p.grid_code || "";
        return el("li", {}, el("b", {}, p.name || p.code), ` · ${gridNames[g] || g} · ${communityNames[g.slice(0, 12)] || ""}` +
          ` · ${num(p.residents)} ${T("people")}`);
      }));
      L.geoJSON(un, { pointToLayer: (f, ll) => L.circleMarker(ll, { radius: 3, color: "#d7263d", weight: 1, fillOpacity: 0.8 })
        .bindTooltip(`${f.properties.name || f.properties.code}（${T("uncovered")}）`) }).addTo(extras);
    }
    if (s) {
      const got = await api("GET", `/v1/circles/siting/${s.id}`);
      const feats = got.sites.features.filter((f) => f.properties.method === (got.sites.features.some((x) => x.properties.method === "mclp") ? "mclp" : f.properties.method));
      document.getElementById("sites").replaceChildren(...feats.map((f) => el("li", {},
        `${T("gain")} ${num(f.properties.gain_residents)} ${T("people")}（${M.methods[f.properties.method] || f.properties.method}）`)));
      L.geoJSON({ type: "FeatureCollection", features: feats }, { pointToLayer: (f, ll) => L.circleMarker(ll,
        { radius: 7, color: "#111", weight: 2, fillColor: "#ffd400", fillOpacity: 1 })
        .bindTooltip(`#${f.properties.rank} +${num(f.properties.gain_residents)} ${T("people")}`) }).addTo(extras);
    }
  }

  // A run is queued (202) and computed in the background: poll it, showing its progress.
  async function start(kind, body, url) {
    const p = document.getElementById("progress");
    const label = (r) => `${M.run_kinds[kind]}：${M.run_status[r.status] || r.status}` +
      ` ${Math.round(100 * (r.progress || 0))}%`;
    p.textContent = `${M.run_kinds[kind]}：${M.run_status.queued || M.run_status.running}…`;
    const t0 = performance.now();
    try {
      let run = await api("POST", url, body);
      while (!["done", "finished", "failed"].includes(run.status)) {
        await new Promise((ok) => setTimeout(ok, 1000));
        run = await api("GET", `/v1/circles/runs/${run.id}`);
        p.textContent = `${label(run)}（${((performance.now() - t0) / 1000).toFixed(0)} s）`;
        runs().catch(() => {});
      }
      if (run.status === "failed") {
        p.textContent = `${M.run_kinds[kind]}：${M.run_status.failed || run.status}` +
          `${run.summary && run.summary.error ? "：" + run.summary.error : ""}`;
        return;
      }
      p.textContent = `${M.run_kinds[kind]}：${M.run_status.done}（${((performance.now() - t0) / 1000).toFixed(1)} s）`;
      await showLatest(await runs());
    } catch (e) { p.textContent = problemText(e); }
  }
  document.getElementById("start-circles").addEventListener("click", () => start("circles", {}, "/v1/circles/runs"));
  document.getElementById("start-coverage").addEventListener("click", () => start("coverage", {}, "/v1/circles/coverage"));
  document.getElementById("start-siting").addEventListener("click", () =>
    start("siting", { k: Number(document.getElementById("k").value) || 5 }, "/v1/circles/siting"));
  document.getElementById("kind").addEventListener("change", drawCircles);
  document.getElementById("tier").addEventListener("change", drawCircles);

  (async () => {
    const ks = await api("GET", "/v1/console/station-kinds");
    ks.forEach((k, i) => { kinds[k.code] = k.name_zh; colors[k.code] = KIND_COLORS[i % KIND_COLORS.length]; });
    document.getElementById("kind").append(...ks.map((k) => el("option", { value: k.code }, k.name_zh)));
    const base = await WG.basemap(m, ["grid", "community", "street"]);
    for (const l of base.grid.getLayers()) gridNames[l.feature.properties.code] = l.feature.properties.name;
    for (const l of base.community.getLayers()) communityNames[l.feature.properties.code] = l.feature.properties.name;
    await showLatest(await runs());
    WG.ready();
  })().catch((e) => toast(problemText(e), true));
})();
