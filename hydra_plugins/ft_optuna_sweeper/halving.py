"""Successive halving, one objective or two (MO-ASHA): which trials go on at a rung. Pure functions of
the points that reached the rung, shared by the plugin's pruner for any application (_pruners.py) and
src.train's own (src/search/pruning.py), so every worker judges the same way.

A point is (accuracy, cost): the first value maximised, the second minimised (a study's values are
turned this way before they come here). A point with a NaN is on no front and dominates nothing;
equal points do not dominate each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]  # (accuracy, cost)
HALVING_RATE = 3  # successive halving keeps the top third at each rung (Li et al.'s eta = 3)


def dominates(a: Point, b: Point, min_delta: float = 0.0, strict: bool = True) -> bool:
    """Whether `a` is at least as accurate as `b` (by `min_delta` more) at no higher cost, and,
    when `strict`, better in one of the two (so that equal points do not dominate each other).
    `strict=False` is the pruner's "no better at no lower cost": an equal point is beaten."""
    no_worse = a[0] >= b[0] + min_delta and a[1] <= b[1]
    return no_worse and (not strict or a[0] > b[0] or a[1] < b[1])


def pareto_ranks(points: Sequence[Point]) -> list[int]:
    """Non-dominated sorting: 0 for the front, 1 for the front of the rest, and so on."""
    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def halving_rungs(after: int, epochs: int, rate: int = HALVING_RATE) -> list[int]:
    """The 0-based epochs at which successive halving judges: after, after*rate, ... (1-based)."""
    rungs, e = [], after
    while e < epochs:  # the last epoch is no rung: the trial has finished by then
        rungs.append(e - 1)
        e *= rate
    return rungs


def halving_keeps(point: tuple[float, float], others: list[tuple[float, float]], use_cost: bool,
                  rate: int = HALVING_RATE) -> bool:
    """Successive halving at one rung: is `point` among the top 1/rate of everyone who reached this
    epoch (itself included)? One objective: ranked by accuracy. With a cost: MO-ASHA's selection
    (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"): the quota is filled
    Pareto rank by Pareto rank, and within the rank that does not fit whole, by spread
    (`spread_order`). Ties go on, as in Optuna's halving. The first trials to reach a rung go on."""
    everyone = [*others, point]
    keep = max(len(everyone) // rate, 1)
    if not use_cost:
        return sum(p[0] > point[0] for p in others) < keep
    ranks = pareto_ranks(everyone)
    mine = ranks[-1]
    before = sum(r < mine for r in ranks)  # kept whole, ahead of point's rank
    same = [p for p, r in zip(everyone, ranks) if r == mine]
    if before + len(same) <= keep:
        return True
    if before >= keep:
        return False
    order = spread_order(same)
    return sum(key < order[point] for key in (order[p] for p in same if p != point)) < keep - before


def spread_order(points: list[tuple[float, float]]) -> dict[tuple[float, float], tuple[int, float]]:
    """Each point's place when one Pareto rank is cut: a sort key, lower first. NSGA-II's crowding
    distance (Deb et al. 2002), one of the two selections MO-ASHA studies: the rank's extremes
    first (in two objectives: its cheapest and its most accurate trial, the two ends an
    accuracy-vs-cost study is for), then by largest crowding distance, each objective scaled by its
    range in the rank. Chosen over the paper's other selection, the epsilon-net, because it needs
    neither a first point to grow the net from nor a scale for epsilon: the same points give the
    same order on every worker, and the cheap end is never left to a pick. The two ends share one
    key, so with one place left both go on (a rung of 3 to 5 may keep 2: the quota is soft there,
    as with ties). Equal points share one key too; a point with a NaN comes last."""
    distinct = sorted({p for p in points if not any(math.isnan(v) for v in p)})
    dist = dict.fromkeys(distinct, 0.0)
    if len(distinct) <= 2:
        return {p: (0, 0.0) if p in dist else (2, 0.0) for p in points}
    for axis in (0, 1):
        line = sorted(distinct, key=lambda p: p[axis])
        span = line[-1][axis] - line[0][axis] or 1.0
        for left, mid, right in zip(line, line[1:], line[2:]):
            dist[mid] += (right[axis] - left[axis]) / span
    # Within one rank no point dominates another, so accuracy and cost rise together: the cheapest
    # point is also the least accurate, and the most accurate the dearest.
    ends = {min(distinct, key=lambda p: (p[1], -p[0])), max(distinct, key=lambda p: (p[0], -p[1]))}
    return {p: (0, 0.0) if p in ends else (1, -dist[p]) if p in dist else (2, 0.0) for p in points}
