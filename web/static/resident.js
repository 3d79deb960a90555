// 居民随手拍 (phone width): report with a category in Chinese, a description, a photo and a
// location (the phone's GPS, WGS 84, or a point picked on the map), the grid and community it
// falls in shown before sending; my reports through the six steps; rating when fed back.
"use strict";
(() => {
  const { T, api, el, problemText, toast, status } = WG;
  const m = WG.map("pick-map");
  let point = null, pin = null;

  async function place(lon, lat) {
    point = null;
    if (pin) pin.remove();
    pin = L.marker([lat, lon], { alt: T("location") }).addTo(m);
    const out = document.getElementById("place");
    try {
      const a = await api("GET", `/v1/lookup?lon=${lon.toFixed(6)}&lat=${lat.toFixed(6)}`);
      point = { lon, lat };
      out.dataset.grid = a.grid.code;
      out.textContent = `${T("located_in")}：${a.street ? a.street.name + " · " : ""}` +
        `${a.community ? a.community.name + " · " : ""}${a.grid.name}（${a.grid.code}）`;
    } catch (e) {
      out.dataset.grid = "";
      out.textContent = e.status === 404 ? T("outside") : problemText(e);
    }
  }
  m.on("click", (ev) => place(ev.latlng.lng, ev.latlng.lat));
  document.getElementById("gps").addEventListener("click", () => {
    navigator.geolocation.getCurrentPosition(
      (p) => { m.setView([p.coords.latitude, p.coords.longitude], 17); place(p.coords.longitude, p.coords.latitude); },
      (e) => toast(e.message, true), { enableHighAccuracy: true, timeout: 10000 });
  });

  document.getElementById("report-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("report-msg");
    if (!point) { msg.textContent = `${T("location")}：${T("required")}`; return; }
    try {
      const r = await api("POST", "/v1/incidents", { category: document.getElementById("category").value,
        description: document.getElementById("description").value, lon: point.lon, lat: point.lat, crs: "wgs84" });
      const file = document.getElementById("photo").files[0];
      if (file) await WG.uploadPhoto(r.id, file);
      msg.textContent = `${T("sent")} #${r.id}`;
      msg.dataset.id = r.id;
      ev.target.reset();
      mine();
    } catch (e) { msg.textContent = problemText(e); }
  });

  const STEPS = ["reported", "checked_in", "consulting", "in_progress", "feedback", "rated", "closed"];
  async function mine() {
    const list = (await api("GET", "/v1/incidents?limit=100")).items;  // a page
    document.getElementById("mine").replaceChildren(...(list.length ? list.map((c) =>
      el("li", {}, el("button", { type: "button", class: "case-row", "data-id": c.id, onclick: () => openCase(c.id) },
        el("b", {}, c.category_name_zh), ` #${c.id} · ${status(c.status)} `,
        el("progress", { max: STEPS.length - 1, value: Math.max(0, STEPS.indexOf(c.status)),
          "aria-label": T("steps") }),
        c.status === "feedback" ? el("span", { class: "sla sla-amber" }, T("rate")) : null)))
      : [el("li", {}, T("no_cases"))]));
  }
  const openCase = (id) => WG.casePanel(document.getElementById("case"), id, ["rate"], mine);

  (async () => {
    const cats = await api("GET", "/v1/incident-categories");
    document.getElementById("category").append(...cats.filter((c) => c.active)
      .map((c) => el("option", { value: c.code }, c.name_zh)));
    await Promise.all([WG.basemap(m, ["grid"]).catch(() => {}), mine()]);
    WG.ready();
  })().catch((e) => toast(problemText(e), true));
})();
