// 网格员工作台 and 部门办件 (phone width): my cases sorted by SLA state, what is due today; open
// one to see it on the map and move it through the steps the state machine allows.
"use strict";
(() => {
  const { T, api, el, problemText, toast, today, day } = WG;
  const OPEN = ["reported", "checked_in", "consulting", "in_progress", "feedback", "rated"];
  const wrap = document.getElementById("case-wrap");
  let small = null, pin = null;

  async function load() {
    const q = OPEN.map((s) => "status=" + s).join("&");
    const list = (await api("GET", `/v1/incidents?${q}&limit=500`)).items;  // a page
    list.sort(WG.bySla);
    const t = today();
    const due = list.filter((c) => day(c.resolve_due) <= t || (c.status === "reported" && day(c.checkin_due) <= t));
    const ul = document.getElementById("cases");
    ul.replaceChildren(...(list.length ? list.map((c) => WG.caseItem(c, open)) : [el("li", {}, T("no_cases"))]));
    document.getElementById("due").replaceChildren(
      ...(due.length ? due.map((c) => WG.caseItem(c, open)) : [el("li", {}, T("no_cases"))]));
    WG.ready();
  }

  async function open(c) {
    wrap.hidden = false;
    if (!small) {
      small = WG.map("case-map", { zoomControl: false });
      WG.basemap(small, ["grid"]).catch(() => {});
    }
    if (pin) pin.remove();
    pin = L.marker([c.lat, c.lon], { icon: WG.dot(c.sla), alt: "#" + c.id }).addTo(small);
    small.setView([c.lat, c.lon], 17);
    setTimeout(() => small.invalidateSize(), 50);
    await WG.casePanel(document.getElementById("case"), c.id, ["steps"], load);
    wrap.scrollIntoView({ block: "start" });
  }
  document.getElementById("case-back").addEventListener("click", () => { wrap.hidden = true; });
  load().catch((e) => toast(problemText(e), true));
  setInterval(() => load().catch(() => {}), 15000);
})();
