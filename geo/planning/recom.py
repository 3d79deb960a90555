"""The draft's alternative refinement: ReCom from the ``gerrychain`` package (short bursts).

ReCom (DeFord, Duchin & Solomon) merges two adjacent regions, draws a random spanning tree of
their units and cuts it where both halves are within ``epsilon`` of total/k households, so both
are contiguous by construction. Run in short bursts (the idea of GerryChain's
``SingleMetricOptimizer.short_bursts``: each burst a chain from the best partition so far)
minimising the balance ``score``, with ``epsilon`` tightened between bursts. A step whose pairs
have no balanced cut (an indivisible unit too large) proposes no change. Measured
against ``geo.planning.flips`` in ``bench/planning``; see the planners' docs.
"""

from __future__ import annotations

import random
import warnings
from functools import partial

import networkx as nx
import numpy as np

from geo.planning.balance import score

NAME = "GerryChain ReCom (short bursts)"


def recom_search(labels: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray, lo: int,
                 hi: int, *, seed: int = 0, steps: int = 300, burst: int = 10,
                 target: float = 1.2) -> np.ndarray:
    """Refine contiguous region ``labels`` (0..k-1) with GerryChain's ReCom in short bursts of
    ``burst`` steps (``steps`` in all), each burst a ``MarkovChain`` from the best partition so
    far. ReCom keeps both new halves within ``epsilon`` of total/k, so ``epsilon`` starts at the
    seed's largest deviation and tightens to the best partition's after each burst: a chain
    from an unbalanced seed would otherwise find no valid cut. Returns the best labels."""
    from gerrychain import Graph, MarkovChain, Partition
    from gerrychain.accept import always_accept
    from gerrychain.proposals import recom
    from gerrychain.tree import bipartition_tree
    from gerrychain.updaters import Tally

    k = int(labels.max()) + 1
    total = float(hh.sum())
    if k < 2 or total <= 0:
        return labels
    ideal = total / k
    g = nx.Graph()
    g.add_nodes_from((i, {"households": float(v)}) for i, v in enumerate(hh))
    g.add_edges_from((i, j) for i, js in neighbors.items() for j in js if i < j)
    best = Partition(Graph.from_networkx(g), {i: int(r) for i, r in enumerate(labels)},
                     updaters={"households": Tally("households", alias="households")})
    cut = partial(bipartition_tree, max_attempts=10, warn_attempts=10**9,
                  allow_pair_reselection=True)

    def sums(part: Partition) -> np.ndarray:
        return np.array(list(part["households"].values()), dtype=float)

    def metric(part: Partition) -> tuple[int, float, float]:
        return score(sums(part), lo, hi)

    best_score = metric(best)
    rng = random.Random(seed)
    for _ in range(max(1, steps // burst)):
        if best_score[0] == 0 and best_score[1] <= target:
            break
        eps = max(float(np.abs(sums(best) - ideal).max()) / ideal, 0.005)

        def propose(part: Partition, *, rng: random.Random, eps: float = eps) -> Partition:
            try:
                return recom(part, pop_col="households", pop_target=ideal, epsilon=eps,
                             bipartition_tree_fn=cut, rng=rng)
            except Exception:  # gerrychain: no pair has a balanced cut: stay
                return part.flip({})

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for part in MarkovChain(propose, [], always_accept, best, burst, rng=rng):
                sc = metric(part)
                if sc < best_score:
                    best, best_score = part, sc
    return np.array([int(best.assignment[i]) for i in range(len(hh))])  # type: ignore[call-overload]
