"""How the answer (`src.reporting.verdict`) writes numbers and lists: a p-value, a gap in points, an
accuracy with its CI or interval, names joined with "and". One place, so every sentence says them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["and_list", "each_seed", "gap_p", "gap_size", "p_text", "points", "value_text"]


class PairedGap(Protocol):
    """What these need of a `verdict.Gap` with paired evidence."""

    behind: float
    behind_ci95: float | None
    p: float | None
    seeds: int

    @property
    def no_spread(self) -> bool: ...


def p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def points(x: float) -> str:
    """An accuracy gap in percentage points, unsigned (the sentence says behind or ahead)."""
    return f"{100 * abs(x):.1f}"


def value_text(mean: float, ci95: float | None, interval: tuple[float, float] | None) -> str:
    """An accuracy with its Wilson interval (one seed) or its ± 95% CI over seeds, whichever it has."""
    if interval is not None:
        return f"{mean:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{mean:.3f}" if ci95 is None else f"{mean:.3f} ± {ci95:.3f}"


def and_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def gap_size(g: PairedGap) -> str:
    """A paired gap in points with its CI; alone where the gap was the same on every seed (no CI)."""
    return points(g.behind) if g.no_spread else f"{points(g.behind)} ± {points(g.behind_ci95 or 0.0)}"


def each_seed(g: PairedGap) -> str:
    return f" on each of their {g.seeds} common seeds" if g.no_spread else ""


def gap_p(g: PairedGap) -> str:
    """Its p; with no spread the sign test's, and said so (`stats.paired`)."""
    return p_text(g.p) + (" by the sign test" if g.no_spread else "")
