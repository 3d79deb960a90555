"""What the caller chooses for the grids a change creates: names, responsible body, team.

A change's ``grids`` argument is ``{new grid code: {"name", "responsible_body", "team"}}``,
keyed by the codes the change creates (DB11 numbering is deterministic for the same state, so
the codes a preview showed are the codes the change creates). A key that is not one of them
means the preview is stale: 409 naming ``grids``, nothing written. A reshape (or an import that
redraws a grid) may also rename the grids it redraws, but not move their teams.

Teams (2+5+N, ``grid_team_member``): each new grid by default carries a copy of the whole team
of the closed grid it overlaps most. ``team`` lists member ids of the closed grids' teams that
go to that new grid; a member named for one or more new grids goes only to those; members
named nowhere stay with the default (copied to every new grid that carries their grid's team).
A member id not on the closed grids' teams is refused (422 naming it).

Names and responsible bodies given by the caller: at most ``NAME_MAX`` characters, no control
characters, and names unique within the community (409 naming the field on a duplicate).
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import Conflict, InvalidInput, Problem

if TYPE_CHECKING:
    from geo.planning.changes import _Change

NAME_MAX = 64  # characters of a grid's name or responsible body
TEAM_MAX = 200  # member ids listed for one new grid
CHOICE_KEYS = ("name", "responsible_body", "team")
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def clean_text(value: Any, field: str) -> str:
    """A chosen name or responsible body, checked: a non-blank string of at most ``NAME_MAX``
    characters without control characters (422 naming ``field`` otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field}: a non-empty text is needed",
                           [Problem(reason="must be a non-empty string", field=field)])
    if len(value) > NAME_MAX:
        raise InvalidInput(f"{field}: too long", [Problem(
            reason=f"{len(value)} characters, at most {NAME_MAX}", field=field)])
    bad = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in _BAD_CATEGORIES})
    if bad:
        raise InvalidInput(f"{field}: control characters", [Problem(
            reason=f"contains control characters {', '.join(bad[:5])}", field=field)])
    return value.strip()


def clean_team(team: Any, field: str) -> list[int]:
    """Chosen team member ids, checked: a list of at most ``TEAM_MAX`` integers (422 naming
    ``field`` otherwise); duplicates dropped."""
    if not isinstance(team, list) or len(team) > TEAM_MAX or not all(
            isinstance(m, int) and not isinstance(m, bool) for m in team):
        raise InvalidInput("team is a list of member ids", [Problem(
            reason=f"a list of at most {TEAM_MAX} grid_team_member ids", field=field)])
    return list(dict.fromkeys(team))


def apply_choices(ch: _Change) -> None:
    """Merge ``ch.choices`` into the new grids (``ch.create`` items, codes allocated) and the
    redrawn ones (``ch.renames``). Stale keys → 409; bad text or a team on a redrawn grid →
    422. Items named here are marked ``chosen`` (their names are checked for uniqueness)."""
    if not ch.choices:
        return
    closed = set(ch.closed)
    created = {str(it["code"]): it for it in ch.create if str(it["code"]) not in closed}
    stale = sorted(k for k in ch.choices if k not in created and k not in ch.replace)
    if stale:
        shown = ", ".join(sorted(created)) or "none"
        raise Conflict("预览已过期: grids names codes this change does not create (the grids "
                       "changed since the preview; preview again)", [Problem(
                           reason=f"not a grid this change creates (it creates: {shown})",
                           field="grids", feature=k) for k in stale])
    for code, choice in ch.choices.items():
        choice = dict(choice or {})
        unknown = sorted(set(choice) - set(CHOICE_KEYS))
        if unknown:
            raise InvalidInput("unknown keys in grids", [Problem(
                reason=f"unknown key; use {', '.join(CHOICE_KEYS)}",
                field=f"grids.{code}.{k}") for k in unknown])
        target = created.get(code)
        if target is None:  # a redrawn grid keeps its code (and its team)
            if choice.get("team"):
                raise InvalidInput("a redrawn grid keeps its own team", [Problem(
                    reason="team can be chosen only for grids the change creates",
                    field=f"grids.{code}.team", feature=code)])
            target = ch.renames.setdefault(code, {})
        for key in ("name", "responsible_body"):
            if choice.get(key) is not None:
                target[key] = clean_text(choice[key], f"grids.{code}.{key}")
                target["chosen"] = True
        if choice.get("team") is not None:
            target["team"] = clean_team(choice["team"], f"grids.{code}.team")


def check_names(conn: Connection, ch: _Change) -> None:
    """Names the caller chose are unique within their community (409 naming the field):
    against the current grids that stay, the redrawn ones and the other new grids."""
    chosen = {str(it["code"]) for it in ch.create if it.get("chosen")} | {
        c for c, r in ch.renames.items() if r.get("name")}
    if not chosen:
        return
    closed = set(ch.closed)
    final: dict[str, tuple[str, str]] = {}  # code -> (community, name)
    comms = {str(it["parent_code"]) for it in ch.create} | {
        str(ch.current[c][1]) for c in ch.replace if c in ch.current}
    for code, parent, name in conn.execute(text(
            "SELECT code, parent_code, name FROM area WHERE level = 'grid' "
            "AND generation_high IS NULL AND parent_code = ANY(:p)"), {"p": sorted(comms)}):
        if code not in closed:
            final[code] = (parent, name)
    for code in ch.replace:
        if code in ch.current:
            row = ch.current[code]
            final[code] = (row[1], ch.renames.get(code, {}).get("name") or row[2])
    for it in ch.create:
        if str(it["code"]) not in closed:
            final[str(it["code"])] = (str(it["parent_code"]), str(it.get("name") or ""))
    dup = []
    for code in sorted(chosen):
        comm, name = final[code]
        other = sorted(c for c, (p, n) in final.items() if c != code and p == comm and n == name)
        if other:
            dup.append(Problem(reason=f"name {name!r} is already used by grid {other[0]} of "
                               f"community {comm}", field=f"grids.{code}.name", feature=code))
    if dup:
        raise Conflict("duplicate grid names in the community", dup)


def parent_team(conn: Connection, closed: list[str]) -> list[dict[str, Any]]:
    """The 2+5+N team members of the grids a change closes: id, grid_code, name, role."""
    if not closed:
        return []
    return [dict(r) for r in conn.execute(text(
        "SELECT id, grid_code, name, role FROM grid_team_member WHERE grid_code = ANY(:c) "
        "ORDER BY grid_code, id"), {"c": sorted(closed)}).mappings()]


def team_assignment(new: list[str], team_from: dict[str, str],
                    chosen: dict[str, list[int]],
                    members: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(new grid code, member id) pairs: the chosen members of each new grid, plus the
    members named for no grid from the team it carries by default (``team_from``).
    Chosen ids not on ``members`` → 422 naming them."""
    known = {int(m["id"]): m for m in members}
    bad = [Problem(reason=f"member {m} is not on the team of the grid(s) this change closes",
                   field=f"grids.{g}.team", feature=m)
           for g, ids in chosen.items() for m in ids if m not in known]
    if bad:
        raise InvalidInput("team members not on the parent team", bad)
    named = {m for ids in chosen.values() for m in ids}
    out = []
    for g in new:
        ids = list(chosen.get(g, []))
        ids += [i for i, m in known.items()
                if m["grid_code"] == team_from.get(g) and i not in named]
        out += [(g, i) for i in sorted(set(ids))]
    return out
