"""Small statistics for results across seeds: mean with a Student-t confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` CI of the mean); the half-width is NaN with one value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, float("nan")
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def format_ci(mean: float, half: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"
