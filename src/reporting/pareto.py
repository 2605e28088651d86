"""Pareto dominance of (accuracy, cost) points, accuracy up and cost down: the one definition behind
the report's front (`src.reporting.comparisons`) and the sweep's pruners (`src.search.pruning`).

A point with a NaN in it is never on a front and dominates nothing (every comparison with NaN is
false). Equal points do not dominate each other: both stay on the front, with the same rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hydra_plugins.ft_optuna_sweeper.halving import Point, dominates, pareto_ranks  # defined once, with the pruner's rules

__all__ = ["Point", "dominates", "pareto_front", "pareto_ranks"]


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, by rising cost (then falling accuracy);
    points with a NaN are left out."""
    finite = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    front = [i for i in finite if not any(dominates(points[j], points[i]) for j in finite if j != i)]
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))
