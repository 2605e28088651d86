"""Small statistics for results across seeds: mean with a Student-t confidence interval, paired
differences, and a rank correlation across runs."""

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


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """A − B over pairs (the same seed in both): mean difference, its `level` CI half-width and the
    two-sided p-value of the paired t-test. Pairing removes what the seed does to both (data order,
    head init), so it sees differences that two separate CIs hide."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired needs two equal-length samples of >= 2 values, not {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean, half = mean_ci(diffs, level)
    if all(d == diffs[0] for d in diffs):  # no spread: the t statistic is undefined
        p = 1.0 if diffs[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"n": len(diffs), "diff": mean, "ci95": half, "p": p}


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value; (NaN, NaN) when either side is constant
    (no ranking to correlate) or with fewer than 3 pairs."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal-length samples, not {len(x)} and {len(y)}")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def format_ci(mean: float, half: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"
