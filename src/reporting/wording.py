"""How the answer (`src.reporting.verdict`) writes numbers and lists: a p-value, a gap in points, an
accuracy with its CI or interval, names joined with "and". One place, so every sentence says them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from src.record.lock import in_use
from src.reporting.stats import LEVEL, SHARE, format_ci, within

__all__ = ["and_list", "common_seeds", "gap_p", "gap_size", "interval_digits", "level_text", "not_completed", "p_text",
           "points", "seeds_sentence", "value_text"]


class PairedGap(Protocol):
    """What these need of a `verdict.Gap` with paired evidence."""

    behind: float
    behind_ci95: float | None
    p: float | None
    p_holm: float | None
    pairs: int
    seeds: int
    partial: bool

    @property
    def no_spread(self) -> bool: ...




def p_text(p: float | None) -> str:
    """p to 2 decimals (3 below 0.01), or as many more as show which side of 0.05 it is: a separation
    at p = 0.0494 read "p = 0.05", the value at which the answer calls a tie."""
    if p is None:
        return ""
    if p < 0.001:
        return "p < 0.001"
    digits = 3 if p < 0.01 else 2
    while digits < 6 and (round(p, digits) < LEVEL) != (p < LEVEL):
        digits += 1
    return f"p = {p:.{digits}f}"


def points(x: float) -> str:
    """An accuracy gap in percentage points, unsigned (the sentence says behind or ahead)."""
    return f"{100 * abs(x):.1f}"


Interval = tuple[float, float]


def value_text(mean: float, ci95: float | None, interval: Interval | None, digits: int = 3) -> str:
    """An accuracy with its Wilson interval (one seed, to `digits` decimals: `interval_digits`) or its
    ± 95% CI over seeds, whichever it has; a CI that would run past 0 or 1 as its ends cut there."""
    if interval is not None:
        return f"{mean:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    if ci95 is not None and abs(ci95) <= 1e-9:  # seeds that all agree (to float noise) leave a t-interval
        # no spread: "± 0.000" read as certainty
        return f"{mean:.3f} (the same on every seed)"
    return f"{mean:.3f}" if ci95 is None else format_ci(mean, ci95, 3, SHARE)


def interval_digits(pairs: Sequence[tuple[Interval | None, Interval | None]]) -> int:
    """Decimals for one-seed intervals set side by side: 3, or as many more as make each pair print as
    overlapping exactly when it does (the answer ties on overlap): 264 and 295 of 360 printed
    [0.699, 0.776] and [0.776, 0.857] beside "the intervals do not overlap"."""
    def overlap(a: Interval, b: Interval, digits: int | None = None) -> bool:
        r = (lambda x: x) if digits is None else (lambda x: round(x, digits))  # noqa: E731
        return r(a[1]) >= r(b[0]) and r(b[1]) >= r(a[0])

    digits = 3
    while digits < 6 and any(a and b and overlap(a, b, digits) != overlap(a, b) for a, b in pairs):
        digits += 1
    return digits


def and_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def gap_size(g: PairedGap) -> str:
    """A paired gap in points with its CI, to 1 decimal or as many more as show whether the CI holds 0
    (a separation printed "5.0 ± 5.0" looked like a tie); alone where the gap was the same on every
    seed (no CI). Where ± would run past 100 points, the CI's ends cut there, signed as the sentence
    reads (points behind, or ahead): two seeds' "40.0 ± 127.0" is "40.0 [-87.0, 100.0]"."""
    if g.no_spread:
        return points(g.behind)
    gap, half = 100 * g.behind, 100 * (g.behind_ci95 or 0.0)
    digits = 1
    while digits < 4 and _holds_zero(round(gap, digits), round(half, digits)) != _holds_zero(gap, half):
        digits += 1
    side = 1 if gap >= 0 else -1
    low, high = within(side * gap, half, (-100.0, 100.0))
    if (low, high) != (side * gap - half, side * gap + half):
        return f"{abs(gap):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{abs(gap):.{digits}f} ± {half:.{digits}f}"


def _holds_zero(gap: float, half: float) -> bool:
    return gap - half <= 0 <= gap + half


def common_seeds(g: PairedGap) -> str:
    """On which seeds a paired gap was measured, where the reader cannot take it for granted: the same
    on each of them (no CI), or fewer than one of the two has (the gap is then no difference of the
    means printed beside it: 3 seeds against 2)."""
    if g.no_spread:
        return f" on each of their {g.seeds} common seeds"
    return f" on their {g.seeds} common seeds" if g.partial else ""


# A Wilson interval is the spread of testing one trained model on n images; the answer names
# configurations, and what another seed would train is in no such interval (on digits at 32 px, one seed
# put frozen and full apart where two seeds' paired CI of the same runs held 0).
SEED_LUCK = ("Such an interval holds the luck of the images, not the seed's: two that do not overlap separate these "
             "two trained models, which another seed may not repeat.")


def seeds_sentence(low: int, high: int, counts: Sequence[str], level: float = 0.95, cut: bool = False,
                   wilson: bool = False) -> str:
    """How many seeds the configurations have (fewest, most) and what the brackets and ± are; `counts`:
    the images one seed's accuracies were measured on ("360 validation"); `level`: the one-seed
    intervals' (1 - 0.05/k for k configurations, `comparisons.Family`); `cut`: a CI is printed as its ends
    cut at 0 or 1 (or 100 points), where ± would run past them (`stats.format_ci`); `wilson`: a one-seed
    configuration has its Wilson interval printed, in brackets (among several seeds, or with one where the
    best's result.json, an older one, records no image count and so gives no `counts`)."""
    if high == 1:
        together = "" if level == 1 - LEVEL else f", so that all {round(LEVEL / (1 - level))} hold together at 95%"
        if not counts and wilson:  # the images differ by record, not by configuration: said as such
            return (f"One seed per configuration: in brackets, each accuracy's Wilson {level_text(level)} interval over "
                    f"the images it was measured on, where its result.json records how many{together}. {SEED_LUCK}")
        if not counts:
            return "One seed per configuration, and no image counts recorded: no interval can be put on these accuracies."
        return (f"One seed per configuration: in brackets, each accuracy's Wilson {level_text(level)} interval over "
                f"the {' and '.join(counts)} images{together}. {SEED_LUCK}")
    many = f"{high}" if low == high else f"{low} to {high}"
    ends = ", or its ends in brackets where it would run past 0 or 1" if cut else ""
    one = (f" In brackets after the accuracy of a configuration with one seed: its Wilson {level_text(level)} interval "
           f"over the images it was measured on. {SEED_LUCK}") if wilson and low == 1 else ""
    return f"{many} seeds per configuration (mean ± 95% CI{ends}; gaps paired by seed).{one}"


def gap_p(g: PairedGap) -> str:
    """Its p; with no spread the sign test's, and said so (`stats.paired`); and, among several pairs,
    the p adjusted over them that decides (Holm's, `comparisons.Family`)."""
    holm = f", Holm {p_text(g.p_holm)} over {g.pairs} pairs" if g.pairs > 1 else ""
    if holm and g.p is not None and g.p_holm is not None and g.p < LEVEL <= g.p_holm:
        # the printed 95% CI is this pair's alone and may leave out 0: why that is no separation here
        holm += f"; under {LEVEL:g} for this pair alone, as 1 pair in {round(1 / LEVEL)} is by chance"
    return p_text(g.p) + (" by the sign test" if g.no_spread else "") + holm


def level_text(level: float) -> str:
    return f"{100 * level:.2f}".rstrip("0").rstrip(".") + "%"  # 95%, 97.5%, 98.33%


def not_completed(name: str, runs: Sequence[Any]) -> str:
    """A configuration's runs (`src.reporting.runs.Run`) that did not complete, for the answer: "full on seeds 0, 1 (failed)"."""
    again = [str(r.result.seed) for r in runs if in_use(r.dir)]  # resumed: the record is the earlier attempt's
    return (f"{name} on seed{'s' * (len(runs) > 1)} {', '.join(str(r.result.seed) for r in runs)} "
            f"({', '.join(sorted({str(r.result.status) for r in runs}))}"
            + (f"; training again now: seed{'s' * (len(again) > 1)} {', '.join(again)})" if again else ")"))
