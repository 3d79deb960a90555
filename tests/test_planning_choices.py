"""Issue 15 item 13 over HTTP: the caller chooses the new grids' names, responsible body and
which members of the parent grid's 2+5+N team go where (``grids`` in the change bodies).

The synthetic city of ``factories``. Expected teams are computed here from the rule
(chosen members + members named nowhere) over the ids read back from the database; counts are
read from ``grid_team_member`` rows, never from the answer.
"""

from __future__ import annotations

import json
from collections import Counter

from factories import C1, C2, snapshot, split_line
from shapely.geometry import mapping
from sqlalchemy import text

TEAM = [("grid_leader", "组长"), ("responsible_cadre", "干部"), ("community_police", "民警"),
        ("urban_management", "城管"), ("market_supervisor", "市监"), ("judicial_mediator", "调解"),
        ("community_medic", "医生"), ("grid_worker", "网格员甲"), ("grid_worker", "网格员乙")]
OFFICERS = {"community_police", "urban_management", "market_supervisor", "judicial_mediator",
            "community_medic"}


def give_team(eng, code: str) -> dict[str, int]:
    """Put TEAM on grid ``code``; {member name: id}."""
    with eng.begin() as c:
        c.execute(text("DELETE FROM grid_team_member WHERE grid_code = :g"), {"g": code})
        return {n: c.execute(text(
            "INSERT INTO grid_team_member (grid_code, role, name, phone) "
            "VALUES (:g, :r, :n, '13800000000') RETURNING id"),
            {"g": code, "r": r, "n": n}).scalar_one() for r, n in TEAM}


def team_rows(eng, code: str) -> list[tuple[str, str]]:
    with eng.connect() as c:
        return sorted(c.execute(text("SELECT role, name FROM grid_team_member "
                                     "WHERE grid_code = :g"), {"g": code}).all())


def rule(rows: list[tuple[str, str]]) -> dict:
    """The 2+5+N rule computed here from the rows."""
    roles = Counter(r for r, _ in rows)
    officers = len(OFFICERS & set(roles))
    workers = roles["grid_worker"] + roles["volunteer"]
    return {"leaders": roles["grid_leader"], "cadres": roles["responsible_cadre"],
            "officer_roles": officers, "workers": workers,
            "complete_2_5_n": roles["grid_leader"] == 1 and roles["responsible_cadre"] == 1
            and officers == 5 and workers >= 1}


def current(eng, codes: list[str]) -> dict[str, tuple[str, str]]:
    with eng.connect() as c:
        return {k: (n, b) for k, n, b in c.execute(text(
            "SELECT code, name, responsible_body FROM area WHERE code = ANY(:c) "
            "AND generation_high IS NULL"), {"c": codes})}


def previewed_split(api, code: str) -> tuple[dict[str, int], dict, dict]:
    """Give grid ``code`` the TEAM; ({name: member id}, split body, its preview)."""
    client, eng, h = api
    ids = give_team(eng, code)
    _, _, line, _ = split_line(eng, code)
    body = {"code": code, "line": mapping(line)}
    p = client.post("/v1/planning/preview/split", json=body, headers=h["planner_in"])
    assert p.status_code == 200, p.text
    return ids, body, p.json()


def test_split_takes_chosen_names_bodies_and_team(api):
    client, eng, h = api
    code = C1 + "008"
    ids, body, p = previewed_split(api, code)
    west, east = p["codes"]
    assert {(m["id"], m["name"], m["role"], m["grid_code"]) for m in p["parent_team"]} == {
        (ids[n], n, r, code) for r, n in TEAM}
    # the leader and worker 甲 go west only, worker 乙 east; the others stay with the default
    chosen = {west: {"name": "东街西片", "responsible_body": "东街社区居委会",
                     "team": [ids["组长"], ids["网格员甲"]]},
              east: {"name": "东街东片", "team": [ids["网格员乙"]]}}
    r = client.post("/v1/planning/split", json={**body, "grids": chosen},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    assert sorted(r.json()["created"]) == [west, east]  # the codes the preview showed
    with eng.connect() as c:
        old_body = c.execute(text("SELECT responsible_body FROM area WHERE code = :g"),
                             {"g": code}).scalar()
    assert current(eng, [west, east]) == {west: ("东街西片", "东街社区居委会"),
                                          east: ("东街东片", old_body)}
    named = {"组长", "网格员甲", "网格员乙"}
    default = [(r, n) for r, n in TEAM if n not in named]
    expect = {west: sorted(default + [("grid_leader", "组长"), ("grid_worker", "网格员甲")]),
              east: sorted(default + [("grid_worker", "网格员乙")])}
    report = r.json()["grids"]
    for g in (west, east):
        assert team_rows(eng, g) == expect[g]
        assert report[g]["team"] == rule(expect[g])
        assert report[g]["name"] == chosen[g]["name"]
    assert report[west]["team"]["complete_2_5_n"] is True
    assert report[east]["team"]["complete_2_5_n"] is False  # no leader: reported, not hidden
    assert team_rows(eng, code) == sorted(TEAM)  # the old grid's rows are kept (history)


def test_stale_codes_bad_members_and_names_are_refused_with_nothing_written(api):
    client, eng, h = api
    code = C1 + "008"
    ids, body, p = previewed_split(api, code)
    codes = p["codes"]
    with eng.connect() as c:
        other = c.execute(text("SELECT max(id) FROM grid_team_member WHERE grid_code <> :g"),
                          {"g": code}).scalar() or 10**9
        sibling = c.execute(text(
            "SELECT name FROM area WHERE parent_code = :p AND code <> :g AND level = 'grid' "
            "AND generation_high IS NULL ORDER BY code LIMIT 1"), {"p": C1, "g": code}).scalar()
    before = snapshot(eng)
    cases = [
        ({C1 + "999": {"name": "新网格"}}, 409, ["预览已过期", "grids", C1 + "999"]),
        ({codes[0]: {"team": [ids["组长"], other]}}, 422, [f"grids.{codes[0]}.team", str(other)]),
        ({codes[0]: {"name": sibling}}, 409, [f"grids.{codes[0]}.name"]),
        ({codes[0]: {"name": "同名"}, codes[1]: {"name": "同名"}}, 409, ["同名"]),
        ({codes[0]: {"name": "坏\u0007名"}}, 422, [f"grids.{codes[0]}.name", "U+0007"]),
        ({codes[0]: {"name": "长" * 65}}, 422, ["name"]),
        ({codes[0]: {"nickname": "x"}}, 422, ["nickname"]),
    ]
    for chosen, status, words in cases:
        for path in ("/v1/planning/split", "/v1/planning/preview/split"):
            r = client.post(path, json={**body, "grids": chosen}, headers=h["planner_in"])
            assert r.status_code == status, (chosen, path, r.text)
            assert all(w in r.text for w in words), (words, r.text)
    assert snapshot(eng) == before


def test_merge_reshape_and_accept_draft_take_chosen_names(api):
    client, eng, h = api
    a, b = C2 + "001", C2 + "002"
    ids = give_team(eng, a)
    p = client.post("/v1/planning/preview/merge", json={"codes": [a, b]},
                    headers=h["planner_in"]).json()
    (new,) = p["codes"]
    assert {m["id"] for m in p["parent_team"]} >= set(ids.values())
    r = client.post("/v1/planning/merge", headers=h["planner_in"], json={
        "codes": [a, b], "grids": {new: {"name": "合并网格", "team": [ids["组长"]]}}})
    assert r.status_code == 200, r.text
    assert current(eng, [new])[new][0] == "合并网格"
    # reshape: a redrawn grid may be renamed, but keeps its own team
    with eng.connect() as c:
        g, geo = c.execute(text(
            "SELECT code, ST_AsGeoJSON(geom) FROM area WHERE parent_code = :p AND code <> :n "
            "AND level = 'grid' AND generation_high IS NULL ORDER BY code LIMIT 1"),
            {"p": C2, "n": new}).one()
    refused = client.post("/v1/planning/reshape", headers=h["planner_in"], json={
        "geometries": {g: json.loads(geo)}, "grids": {g: {"team": [ids["组长"]]}}})
    assert refused.status_code == 422 and f"grids.{g}.team" in refused.text, refused.text
    r = client.post("/v1/planning/reshape", headers=h["planner_in"], json={
        "geometries": {g: json.loads(geo)}, "grids": {g: {"name": "改名网格"}}})
    assert r.status_code == 200, r.text
    assert current(eng, [g])[g][0] == "改名网格"
    # accept a draft: the community's current grids as the draft, named by the caller
    with eng.connect() as c:
        feats = [{"type": "Feature", "geometry": json.loads(gj), "properties": {}}
                 for (gj,) in c.execute(text(
                     "SELECT ST_AsGeoJSON(geom) FROM area WHERE parent_code = :p "
                     "AND level = 'grid' AND generation_high IS NULL ORDER BY code"), {"p": C1})]
    draft = {"community": C1, "draft": {"type": "FeatureCollection", "features": feats}}
    p = client.post("/v1/planning/preview/draft/accept", json=draft, headers=h["planner_in"])
    assert p.status_code == 200, p.text
    names = {c: f"草案网格{i}" for i, c in enumerate(p.json()["codes"])}
    r = client.post("/v1/planning/draft/accept", headers=h["planner_in"], json={
        **draft, "grids": {c: {"name": n} for c, n in names.items()}})
    assert r.status_code == 200, r.text
    assert {c: v[0] for c, v in current(eng, list(names)).items()} == names
