"""The draft's default refinement: boundary-unit flips with contiguity checks (own local search).

A move gives one unit on a region's edge to the neighbouring region; it is allowed only when the
region it leaves stays connected (a breadth-first search from one of the unit's neighbours in
that region must reach the others: the unit is not an articulation point) and non-empty. Moves
are drawn at random (seeded) and accepted by simulated annealing on an energy that falls with
the largest/smallest households, the households outside the balance rule and the variance;
the best partition seen, by ``score``, is returned. Units, neighbours and households are plain
arrays (see ``geo.planning.balance``); no database, no CRS.
"""

from __future__ import annotations

import math
import random

import numpy as np

from geo.planning.balance import score

NAME = "local search (boundary flips, simulated annealing)"


def _energy(sums: list[float], lo: int, hi: int, mean: float) -> float:
    """Lower is better: largest/smallest, plus households outside ``lo``..``hi`` and the
    squared deviation from the mean, both relative to the mean."""
    low, high = min(sums), max(sums)
    outside = sum(max(lo - s, 0.0) + max(s - hi, 0.0) for s in sums)
    spread = sum((s - mean) ** 2 for s in sums) / (len(sums) * mean * mean)
    return high / max(low, 1.0) + 4.0 * outside / mean + spread


def stays_connected(unit: int, labels: np.ndarray | list[int], neighbors: dict[int, list[int]],
                    size: int) -> bool:
    """Whether ``unit``'s region (of ``size`` units) stays one connected, non-empty piece
    without it."""
    if size <= 1:
        return False
    region = labels[unit]
    near = [v for v in neighbors[unit] if labels[v] == region]
    if len(near) <= 1:
        return True
    todo = set(near[1:])
    seen = {unit, near[0]}
    stack = [near[0]]
    while stack and todo:
        for v in neighbors[stack.pop()]:
            if v not in seen and labels[v] == region:
                seen.add(v)
                todo.discard(v)
                stack.append(v)
    return not todo


def local_search(labels: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray, lo: int,
                 hi: int, *, seed: int = 0, steps: int = 30_000, target: float = 1.2,
                 t_start: float = 0.05, t_end: float = 0.0005) -> np.ndarray:
    """Refine contiguous region ``labels`` (0..k-1) of units by boundary flips; stops early
    once every region keeps ``lo``..``hi`` and largest/smallest is half-way from ``target``
    to 1 (a margin below the target; else the best seen after ``steps``). Temperature
    falls geometrically from ``t_start`` to ``t_end`` over ``steps`` proposals. Returns the
    best labels seen (regions contiguous, none empty)."""
    rng = random.Random(seed)
    lab = [int(v) for v in labels]
    k = max(lab) + 1
    w = [float(v) for v in hh]
    sums = [0.0] * k
    size = [0] * k
    for i, r in enumerate(lab):
        sums[r] += w[i]
        size[r] += 1
    mean = sum(sums) / k
    arcs = [(i, j) for i, js in neighbors.items() for j in js]
    if k < 2 or not arcs or mean <= 0:
        return np.asarray(lab)
    energy = _energy(sums, lo, hi, mean)
    best_key, best = score(np.asarray(sums), lo, hi), list(lab)
    cool = (t_end / t_start) ** (1.0 / max(steps, 1))
    temp = t_start
    good = 1 + (target - 1) / 2
    for _ in range(steps):
        temp *= cool
        i, j = arcs[rng.randrange(len(arcs))]
        a, b = lab[i], lab[j]
        if a == b or not stays_connected(i, lab, neighbors, size[a]):
            continue
        sums[a] -= w[i]
        sums[b] += w[i]
        new = _energy(sums, lo, hi, mean)
        if new <= energy or rng.random() < math.exp((energy - new) / temp):
            lab[i] = b
            size[a] -= 1
            size[b] += 1
            energy = new
            key = score(np.asarray(sums), lo, hi)
            if key < best_key:
                best_key, best = key, list(lab)
                if key[0] == 0 and key[1] <= good:
                    break
        else:
            sums[a] += w[i]
            sums[b] -= w[i]
    return np.asarray(best)
