"""Area codes: GB/T 2260 district codes and the DB11 15-digit grid code.

A code's parents are its prefixes: province 2 digits, city 4, district 6, street 9,
community 12, grid 15. These helpers are the one place that slices codes.
"""

from __future__ import annotations

LEVEL_LENGTHS: dict[str, int] = {
    "province": 2, "city": 4, "district": 6, "street": 9, "community": 12, "grid": 15,
}
LEVEL_OF_LENGTH: dict[int, str] = {n: level for level, n in LEVEL_LENGTHS.items()}


def level_of(code: str) -> str | None:
    """The level a code of this length names (``'grid'`` for 15 digits), else None."""
    return LEVEL_OF_LENGTH.get(len(code))


def prefix_at(code: str, level: str) -> str | None:
    """``code`` cut to ``level`` (``prefix_at(grid, 'street')`` is its 9-digit street), or None
    when the code is shorter than that level."""
    n = LEVEL_LENGTHS[level]
    return code[:n] if len(code) >= n else None


def street_of(code: str) -> str | None:
    """The 9-digit street code of a street, community or grid code."""
    return prefix_at(code, "street")


def community_of(code: str) -> str | None:
    """The 12-digit community code of a community or grid code."""
    return prefix_at(code, "community")


def district_of(code: str) -> str | None:
    """The 6-digit district code of any code at or below district level."""
    return prefix_at(code, "district")


def parent_code(code: str) -> str | None:
    """The code of the level directly above (a grid's community, a street's district)."""
    lengths = sorted(LEVEL_OF_LENGTH)
    i = lengths.index(len(code)) if len(code) in LEVEL_OF_LENGTH else -1
    return code[: lengths[i - 1]] if i > 0 else None


def parents_of(code: str) -> dict[str, str]:
    """Every level at or above ``code``: ``{'district': ..., 'street': ..., ...}``."""
    return {level: code[:n] for level, n in LEVEL_LENGTHS.items() if len(code) >= n}
