"""Small statistics for results across seeds: mean with a Student-t confidence interval, paired
differences, and a rank correlation across runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from scipy import stats

# The report tells two configurations apart at p < LEVEL (a 95% CI that leaves 0 out), over a whole
# family of comparisons where there is one (`holm`, `comparisons.Family`): one constant for every reader.
LEVEL = 0.05

# Differences this close (relative) are one difference: accuracies are counts over the same images, so
# "one image better on every seed" is common, and 0.4 - 0.3 and 0.3 - 0.2 differ in the last bits.
SAME_DIFF = 1e-9


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` Student-t CI of the mean: scipy's `t.interval`); the
    half-width is NaN with one value and 0 with no spread."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    # exactly rounded, so the same seeds' values give the same mean in any order (ties stay ties)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, float("nan")
    sem = float(stats.sem(values))
    if sem == 0.0:  # scipy's interval of a zero-scale t is NaN; the CI of identical values is the point
        return mean, 0.0
    # centred on 0, the interval's upper end is the half-width itself (no cancellation against the mean)
    return mean, float(stats.t.interval(level, n - 1, scale=sem)[1])


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """A − B over pairs (the same seed in both): mean difference, its `level` CI half-width and the
    two-sided p-value of the paired t-test (scipy's `ttest_rel` and its `confidence_interval`).
    Pairing removes what the seed does to both (data order, head init), so it sees differences that
    two separate CIs hide.

    With no spread in the differences (equal to float rounding, `SAME_DIFF`) the t statistic is
    undefined, and a t-test run on rounding noise answered p = 1e-32: no difference is p = 1 with a
    half-width of 0; any other has no interval (NaN) and the exact two-sided sign test's p, what n
    seeds that all agree can show without a spread to measure (2 / 2**n: 0.5 with two seeds, 0.25
    with three, under 0.05 from six on)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired needs two equal-length samples of >= 2 values, not {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    diff = math.fsum(diffs) / len(diffs)  # exactly rounded, as mean_ci's
    if max(diffs) - min(diffs) <= SAME_DIFF * max(abs(d) for d in diffs):
        if diff == 0:
            return {"n": len(diffs), "diff": diff, "ci95": 0.0, "p": 1.0}
        return {"n": len(diffs), "diff": diff, "ci95": math.nan, "p": min(1.0, 2.0 ** (1 - len(diffs)))}
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(confidence_level=level)
    return {"n": len(diffs), "diff": diff, "ci95": float(ci.high - ci.low) / 2, "p": float(test.pvalue)}


def shows_ahead(test: dict[str, float]) -> bool:
    """Whether a `paired` result of A − B shows A ahead: its 95% CI of the mean difference lies above 0
    (with no spread, and so no CI, the sign test's p < 0.05), and, where the test is one of a family
    (`p_holm`, `comparisons.Family`), its p adjusted over the family is below 0.05 too. A CI below 0
    is no lead either way round: with unequal seeds the mean over each one's own seeds can rank A
    first while the seeds they share put B ahead, and then neither can be named the better."""
    if test.get("p_holm", 0.0) >= LEVEL:
        return False
    if math.isnan(test["ci95"]):
        return test["diff"] > 0 and test["p"] < LEVEL
    return test["diff"] - test["ci95"] > 0


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of `pvalues` (Holm 1979), in their order: the i-th smallest p
    times (m - i), kept non-decreasing and at most 1. An adjusted p under 0.05 separates at a 5%
    family-wise error rate over all m comparisons: the chance that any of them is claimed by luck,
    not each one's alone."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value; (NaN, NaN) when either side is constant
    (no ranking to correlate) or with fewer than 3 pairs."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal-length samples, not {len(x)} and {len(y)}")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


# The values a measure can take: a share of images (an accuracy, an agreement), a cost (FLOPs,
# seconds, parameters, megabytes), or anything. An interval is cut there (`within`).
Range = tuple[float, float]
SHARE: Range = (0.0, 1.0)
COST: Range = (0.0, math.inf)
ANY: Range = (-math.inf, math.inf)


def difference_range(bounds: Range) -> Range:
    """The values a difference of two values in `bounds` can take (a paired gap of accuracies: [-1, 1])."""
    return bounds[0] - bounds[1], bounds[1] - bounds[0]


def within(mean: float, half: float, bounds: Range = ANY) -> Range:
    """The ends of mean ± half cut at `bounds`. A t-interval knows no range: with two seeds its
    half-width is 12.7 standard errors, and an accuracy's ran from -1 to 2. The true value lies
    inside the range, so the cut interval holds it exactly as often as the whole one does."""
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


def format_ci(mean: float, half: float, digits: int = 4, bounds: Range = ANY,
              number: Callable[[float], str] | None = None) -> str:
    """"mean ± half"; where that runs past `bounds` (the measure's range), the mean and the ends of
    the interval cut there, in brackets ("0.6450 [0.0000, 1.0000]": never "0.6450 ± 4.3836", an
    accuracy of -3.7 to 5.0); the mean alone where there is no interval (NaN). `number` writes each
    number (default: `digits` decimals)."""
    show = number or (lambda x: f"{x:.{digits}f}")
    if math.isnan(half):
        return show(mean)
    low, high = within(mean, half, bounds)
    if (low, high) != (mean - half, mean + half):
        return f"{show(mean)} [{show(low)}, {show(high)}]"
    # a half-width has no sign: a signed `number` (a gap's "+.4f") wrote "-0.0975 ± +0.0318"
    return f"{show(mean)} ± {show(half).lstrip('+')}"


def wilson(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of an accuracy measured on `n` images (scipy's binomtest), or None
    when `accuracy` is not a count out of `n` (a balanced accuracy, a mean over seeds, a wrong n): an
    interval for the wrong count would look exact and be wrong."""
    if n <= 0 or not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
        return None
    k = round(accuracy * n)
    if abs(accuracy * n - k) > 1e-6 * n:
        return None
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def seeds_to_separate(diff: float, half: float, n: int, level: float = 0.95, most: int = 100,
                      comparisons: int = 1) -> int | None:
    """How many seeds a paired CI of the mean difference would need to exclude 0 if the difference
    and the spread of the `n` seeds so far held: the smallest m with t(m-1) * sd / sqrt(m) < |diff|,
    sd recovered from the `level` CI half-width `half`. Among `comparisons` (Holm's family) the CI's
    level is Bonferroni's 1 - (1 - level) / comparisons, what Holm asks of the first pair. None when
    nothing would (no difference seen) or when it would take more than `most` seeds. An extrapolation
    from few seeds, not a promise. With no spread (`half` NaN, `paired`): the seeds the sign test
    needs, if every one kept the same sign."""
    if n < 2 or math.isinf(half) or diff == 0:
        return None
    alpha = (1 - level) / comparisons
    if math.isnan(half):
        return next((m for m in range(n + 1, most + 1) if 2.0 ** (1 - m) < alpha), None)
    sd = half * math.sqrt(n) / float(stats.t.ppf(0.5 + level / 2, n - 1))
    for m in range(n + 1, most + 1):
        if float(stats.t.ppf(1 - alpha / 2, m - 1)) * sd / math.sqrt(m) < abs(diff):
            return m
    return None
