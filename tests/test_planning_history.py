"""Undo, cancel and the diff as map features, over HTTP (issue 18 item 4).

The same synthetic city as ``test_planning_api`` (its fixtures). Geometry is compared with
shapely in UTM 50N (m²) against the rows read back from the database before the change, never
against what the planning code answered.
"""


from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import shapely
from factories import (
    C1,
    C2,
    assert_sound,
    buildings,
    grids,
    moved_boundary,
    posts_at_once,
    refused,
    snapshot,
    split_line,
    utm,
    wgs,
)
from shapely.geometry import mapping, shape
from sqlalchemy import text


def lookup_code(client, h, pt, expect: set[str] | None = None) -> str:
    """The grid the HTTP lookup answers at ``pt``; with ``expect``, wait (up to 15 s) for one of
    those (the lookup re-checks the generation in force in the background)."""
    for _ in range(150):
        r = client.get("/v1/lookup", params={"lon": pt.x, "lat": pt.y}, headers=h["admin"])
        assert r.status_code == 200, r.text
        code = r.json()["grid"]["code"]
        if expect is None or code in expect:
            break
        time.sleep(0.1)
    return code


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


def retired(eng) -> set[str]:
    with eng.connect() as c:
        return set(c.execute(text("SELECT code FROM retired_code")).scalars())


def test_scheduled_split_is_listed_and_diffed_and_the_lookup_answers_today(api):
    client, eng, h = api
    code = C1 + "005"
    old, _, line, west = split_line(eng, code)
    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": tomorrow()})
    assert r.status_code == 200, r.text
    gen, created = r.json()["generation"], r.json()["created"]
    gens = client.get("/v1/planning/generations", headers=h["planner_in"]).json()
    assert gens[0]["id"] == gen and gens[0]["scheduled"] and not gens[0]["in_force"]
    assert gens[0]["author"] == "user:planner_in"
    in_force = next(g for g in gens if g["in_force"])
    d = client.get("/v1/planning/diff", params={"from": in_force["id"], "to": gen},
                   headers=h["planner_in"]).json()
    assert d["grids_removed"] == [code] and sorted(d["grids_added"]) == sorted(created)
    fc = client.get("/v1/planning/diff/features", params={"from": in_force["id"], "to": gen},
                    headers=h["planner_in"])
    assert fc.status_code == 200, fc.text
    by = {}
    for f in fc.json()["features"]:
        by.setdefault(f["properties"]["change"], []).append(f)
    assert sorted(f["properties"]["code"] for f in by["added"]) == sorted(created)
    assert [f["properties"]["code"] for f in by["removed"]] == [code]
    removed = utm(shape(by["removed"][0]["geometry"]))
    assert removed.symmetric_difference(old).area < 1.0  # the old grid as stored
    pieces = shapely.union_all([utm(shape(f["geometry"])) for f in by["added"]])
    assert pieces.symmetric_difference(old).area < 1.0
    bl = buildings(eng)
    inside = set(bl[bl.geometry.within(old)]["code"])
    assert {f["properties"]["code"] for f in by.get("moved", [])} == inside
    assert lookup_code(client, h, west) == code  # today's grid until tomorrow


def test_cancel_a_scheduled_change_restores_everything_and_is_audited(api):
    client, eng, h = api
    code = C1 + "006"
    _, _, line, west = split_line(eng, code)
    before = snapshot(eng)
    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": tomorrow()})
    assert r.status_code == 200, r.text
    gen, created = r.json()["generation"], r.json()["created"]
    assert snapshot(eng) != before
    refused(client.delete(f"/v1/planning/generations/{gen}", headers=h["planner_out"]), 403)
    refused(client.delete("/v1/planning/generations/1", headers=h["admin"]), 409, "in force")
    refused(client.delete("/v1/planning/generations/99999", headers=h["admin"]), 404)
    r = client.delete(f"/v1/planning/generations/{gen}", headers=h["planner_in"])
    assert r.status_code == 200, r.text
    assert sorted(r.json()["grids_removed"]) == sorted(created)
    assert r.json()["grids_restored"] == [code]
    assert snapshot(eng) == before  # grids, buildings, generations, retired codes, moves
    assert gen not in {g["id"] for g in client.get(
        "/v1/planning/generations", headers=h["admin"]).json()}
    with eng.connect() as c:
        row = c.execute(text("SELECT actor, detail FROM audit_log WHERE action = "
                             "'planning_cancel' AND target = :t"), {"t": str(gen)}).one()
    assert row.actor == "user:planner_in" and row.detail["operation"] == "split"
    assert lookup_code(client, h, west) == code
    # undated changes are possible again (nothing is scheduled any more)
    r = client.post("/v1/planning/split", headers=h["planner_in"],
                    json={"code": code, "line": mapping(line)})
    assert r.status_code == 200, r.text


def test_undo_a_split_restores_the_grids_with_their_codes(api):
    client, eng, h = api
    code = C1 + "007"
    old, _, line, west = split_line(eng, code)
    cur = grids(eng)
    with eng.connect() as c:
        owners = dict(c.execute(text("SELECT code, grid_code FROM building")).all())
    r = client.post("/v1/planning/split", headers=h["planner_in"],
                    json={"code": code, "line": mapping(line)})
    assert r.status_code == 200, r.text
    gen, created = r.json()["generation"], r.json()["created"]
    assert lookup_code(client, h, west, set(created)) in created
    refused(client.post("/v1/planning/undo", json={"generation": gen},
                        headers=h["planner_out"]), 403)
    mid = snapshot(eng)
    p = client.post("/v1/planning/preview/undo", json={"generation": gen},
                    headers=h["planner_in"])
    assert p.status_code == 200, p.text
    assert p.json()["accepted"] and p.json()["codes"] == [code]
    assert sorted(p.json()["retired"]) == sorted(created)
    shown = {f["properties"]["code"]: utm(shape(f["geometry"]))
             for f in p.json()["grids"]["features"]}
    assert shown[code].symmetric_difference(old).area < 1.0
    assert snapshot(eng) == mid  # nothing written by the preview
    r = client.post("/v1/planning/undo", json={"generation": gen}, headers=h["planner_in"])
    assert r.status_code == 200, r.text
    undo = r.json()
    assert undo["operation"] == "undo" and sorted(undo["retired"]) == sorted(created)
    now = grids(eng)
    assert set(now) == set(cur)  # the same codes as before the split
    for c, g in cur.items():
        assert now[c].symmetric_difference(g).area < 1.0, c
    assert code not in retired(eng) and set(created) <= retired(eng)
    with eng.connect() as c:
        assert dict(c.execute(text("SELECT code, grid_code FROM building")).all()) == owners
    assert_sound(eng, [C1, C2])
    assert lookup_code(client, h, west, {code}) == code
    gens = client.get("/v1/planning/generations", headers=h["admin"]).json()
    assert gens[0]["id"] == undo["generation"] and gens[0]["operation"] == "undo"
    assert gens[0]["author"] == "user:planner_in"
    # the undone generation is no longer the latest of its district
    refused(client.post("/v1/planning/undo", json={"generation": gen},
                        headers=h["planner_in"]), 409, str(undo["generation"]))
    # undo the undo: the split's pieces come back with their own codes
    r = client.post("/v1/planning/undo", json={"generation": undo["generation"]},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    again = grids(eng)
    assert code not in again and set(created) <= set(again)
    assert shapely.union_all([again[c] for c in created]).symmetric_difference(old).area < 1.0
    assert lookup_code(client, h, west, set(created)) in created


def test_undo_a_reshape_and_a_reassign(api):
    client, eng, h = api
    a, b = C2 + "001", C2 + "002"
    cur = grids(eng)
    new_a, new_b, _ = moved_boundary(cur, a, b, 25.0)
    r = client.post("/v1/planning/reshape", headers=h["planner_in"], json={
        "geometries": {a: mapping(wgs(new_a)), b: mapping(wgs(new_b))}})
    assert r.status_code == 200, r.text
    assert grids(eng)[a].symmetric_difference(cur[a]).area > 100.0
    r = client.post("/v1/planning/undo", json={"generation": r.json()["generation"]},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    assert sorted(r.json()["changed"]) == [a, b]
    now = grids(eng)
    for c in (a, b):
        assert now[c].symmetric_difference(cur[c]).area < 1.0
    bl = buildings(eng)
    moved = bl[bl["grid_code"] == a]["code"].iloc[0]
    r = client.post("/v1/planning/reassign", headers=h["planner_in"],
                    json={"assignments": {moved: b}})
    assert r.status_code == 200, r.text
    r = client.post("/v1/planning/undo", json={"generation": r.json()["generation"]},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    with eng.connect() as c:
        assert c.execute(text("SELECT grid_code FROM building WHERE code = :c"),
                         {"c": moved}).scalar() == a
    assert_sound(eng, [C2])


def test_undo_refusals_write_nothing(api):
    client, eng, h = api
    before = snapshot(eng)
    refused(client.post("/v1/planning/undo", json={"generation": 1}, headers=h["admin"]),
            409, "data load")
    refused(client.post("/v1/planning/undo", json={"generation": 4242}, headers=h["admin"]),
            404, "generation")
    refused(client.post("/v1/planning/undo", json={"generation": "x"}, headers=h["admin"]),
            422, "generation")
    assert snapshot(eng) == before
    code = C1 + "008"
    _, _, line, _ = split_line(eng, code)
    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": tomorrow()})
    assert r.status_code == 200, r.text
    mid = snapshot(eng)
    refused(client.post("/v1/planning/undo", json={"generation": r.json()["generation"]},
                        headers=h["planner_in"]), 409, "cancel")
    assert snapshot(eng) == mid


def test_undo_a_scheduled_change_on_a_later_date_and_the_cli(api):
    from typer.testing import CliRunner

    from cli.main import app

    client, eng, h = api
    code = C2 + "004"
    old, _, line, west = split_line(eng, code)
    when = datetime.now(UTC) + timedelta(days=1)
    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": when.isoformat()})
    assert r.status_code == 200, r.text
    gen, created = r.json()["generation"], r.json()["created"]
    later = (when + timedelta(days=30)).isoformat()
    r = client.post("/v1/planning/undo", json={"generation": gen, "effective_from": later},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    undo = r.json()["generation"]
    gens = {g["id"]: g for g in client.get("/v1/planning/generations",
                                           headers=h["admin"]).json()}
    assert gens[gen]["scheduled"] and gens[undo]["scheduled"]
    assert lookup_code(client, h, west) == code  # today's grid, before either date
    with eng.connect() as c:  # at each date, the grids of that date (PostGIS, by generation)
        at = {g: set(c.execute(text(
            "SELECT code FROM area WHERE level = 'grid' AND generation_low <= :g AND "
            "coalesce(generation_high, 2147483647) >= :g AND code = ANY(:c)"),
            {"g": g, "c": [code, *created]}).scalars()) for g in (gen, undo)}
    assert at == {gen: set(created), undo: {code}}
    env = {"WANGGE_DATABASE_URL": eng.url.render_as_string(hide_password=False),
           "WANGGE_BALANCE_MODE": "warn"}
    runner = CliRunner()
    r = runner.invoke(app, ["grid", "cancel", str(gen)], env=env)
    assert r.exit_code == 1 and str(undo) in r.output, r.output  # built on: cancel that first
    r = runner.invoke(app, ["grid", "cancel", str(undo)], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["grid", "cancel", str(gen)], env=env)
    assert r.exit_code == 0, r.output
    assert code in grids(eng) and grids(eng)[code].symmetric_difference(old).area < 1.0
    r = runner.invoke(app, ["grid", "undo", "1"], env=env)
    assert r.exit_code == 1 and "data load" in r.output, r.output


def test_two_undos_at_once_one_wins(api):

    client, eng, h = api
    for code in (C1 + "009", C1 + "010", C1 + "011"):
        _, _, line, _ = split_line(eng, code)
        r = client.post("/v1/planning/split", headers=h["planner_in"],
                        json={"code": code, "line": mapping(line)})
        assert r.status_code == 200, r.text
        gen = r.json()["generation"]
        answers = posts_at_once(client, [("/v1/planning/undo", {"generation": gen}, h["planner_in"])
                                    for _ in range(2)])
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        assert code in grids(eng)
    assert_sound(eng, [C1])
