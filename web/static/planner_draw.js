// The planner's drawing helpers on plain Leaflet (no plugin): which polygon a click falls in,
// the nearest building, a split line drawn click by click, and a shared vertex dragged so that
// every polygon holding it (or passing through it on an edge) follows: no gap, no overlap.
// Coordinates are GeoJSON [lon, lat] in WGS 84 throughout.
"use strict";
const DRAW = (() => {
  const SAME = 1e-9;   // degrees (~0.1 mm): two vertices are the same point
  const ON_EDGE = 2e-8; // degrees (~2 mm): a vertex lies on a neighbour's edge

  const rings = (g) => (g.type === "Polygon" ? [g.coordinates]
    : g.type === "MultiPolygon" ? g.coordinates : []).flat();

  function inRing(pt, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > pt[1]) !== (yj > pt[1]) && pt[0] < ((xj - xi) * (pt[1] - yi)) / (yj - yi) + xi) {
        inside = !inside;
      }
    }
    return inside;
  }

  // Point [lon, lat] inside a Polygon/MultiPolygon (holes respected).
  function contains(g, pt) {
    const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
    return polys.some((p) => inRing(pt, p[0]) && !p.slice(1).some((h) => inRing(pt, h)));
  }

  const same = (a, b) => Math.abs(a[0] - b[0]) < SAME && Math.abs(a[1] - b[1]) < SAME;

  function onSegment(p, a, b) {
    const dx = b[0] - a[0], dy = b[1] - a[1];
    const len2 = dx * dx + dy * dy;
    if (len2 === 0) return false;
    const t = ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2;
    if (t <= 0 || t >= 1) return false;
    const qx = a[0] + t * dx, qy = a[1] + t * dy;
    return Math.hypot(p[0] - qx, p[1] - qy) < ON_EDGE;
  }

  // Move the point ``from`` to ``to`` in every geometry of ``shapes`` ({key: geometry}) that has
  // it as a vertex, or inserts ``to`` where ``from`` lies on an edge. Returns the keys changed.
  function moveShared(shapes, from, to) {
    const changed = [];
    for (const [key, g] of Object.entries(shapes)) {
      let hit = false;
      for (const ring of rings(g)) {
        let moved = false;
        for (const v of ring) {
          if (same(v, from)) { v[0] = to[0]; v[1] = to[1]; moved = true; }
        }
        if (!moved) {
          for (let i = 0; i + 1 < ring.length; i++) {
            if (onSegment(from, ring[i], ring[i + 1])) { ring.splice(i + 1, 0, [to[0], to[1]]); moved = true; break; }
          }
        }
        hit = hit || moved;
      }
      if (hit) changed.push(key);
    }
    return changed;
  }

  // The distinct vertices of a geometry (the ring's closing point once).
  function vertices(g) {
    const out = [];
    for (const ring of rings(g)) for (const v of ring.slice(0, -1)) out.push(v);
    return out;
  }

  const ll = (c) => [c[1], c[0]];
  const polyLatLngs = (g) => (g.type === "Polygon" ? g.coordinates.map((r) => r.map(ll))
    : g.coordinates.map((p) => p.map((r) => r.map(ll))));
  const copy = (g) => JSON.parse(JSON.stringify(g));

  // A line drawn click by click on map ``m``; ``points`` are [lon, lat].
  function lineTool(m, style) {
    const points = [];
    const line = L.polyline([], style).addTo(m);
    const dots = L.layerGroup().addTo(m);
    return {
      points,
      add(latlng) {
        points.push([latlng.lng, latlng.lat]);
        line.setLatLngs(points.map(ll));
        L.circleMarker(latlng, { radius: 4, color: style.color, fillOpacity: 1 }).addTo(dots);
      },
      clear() { points.length = 0; line.setLatLngs([]); dots.clearLayers(); },
      remove() { line.remove(); dots.remove(); },
    };
  }

  // Draggable markers on the vertices of ``g``; ``onMove(from, to, done)`` on each drag step.
  function vertexHandles(m, g, onMove) {
    const group = L.layerGroup().addTo(m);
    const icon = L.divIcon({ className: "vertex", iconSize: [12, 12] });
    for (const v of vertices(g)) {
      const at = [v[0], v[1]];
      const mk = L.marker(ll(v), { icon, draggable: true, keyboard: false, autoPan: false });
      mk.on("drag", (e) => {
        const to = [e.latlng.lng, e.latlng.lat];
        onMove(at.slice(), to, false);
        at[0] = to[0]; at[1] = to[1];
      });
      mk.on("dragend", () => onMove(at.slice(), at.slice(), true));
      mk.addTo(group);
    }
    return group;
  }

  return { contains, moveShared, vertices, polyLatLngs, lineTool, vertexHandles, copy, ll, same };
})();
