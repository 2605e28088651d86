"""Pareto dominance of (accuracy, cost) points, accuracy up and cost down: the one definition behind
the report's front (`src.reporting.comparisons`) and the sweep's pruners (`src.search.pruning`).

A point with a NaN in it is never on a front and dominates nothing (every comparison with NaN is
false). Equal points do not dominate each other: both stay on the front, with the same rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]  # (accuracy, cost)


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


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, by rising cost (then falling accuracy);
    points with a NaN are left out."""
    finite = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    front = [i for i in finite if not any(dominates(points[j], points[i]) for j in finite if j != i)]
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))
