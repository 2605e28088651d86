"""The answer's structure (`src.reporting.verdict` decides it and writes it in words): for one task,
the standing of every configuration against the best on one accuracy (`Standing`, each other one a
`Gap`), and what the cheap end of the Pareto front gives up (`Trade`); together a `Verdict`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from src.reporting.more_seeds import MORE_SEEDS
from src.reporting.stats import shows_ahead

__all__ = ["Evidence", "Gap", "Standing", "Trade", "Verdict"]

Evidence = Literal["paired", "intervals", "none"]


@dataclass(frozen=True)
class Gap:
    """How far configuration `name` is behind the leader on one accuracy, and what says so.

    `behind`: the leader's accuracy minus this one's (over their common seeds when `paired`);
    `tied`: the evidence cannot tell the two apart. `seeds_to_tell`: with `paired` and a tie, how
    many seeds would separate them if the gap and spread seen so far held (None: no estimate)."""

    name: str
    mean: float
    ci95: float | None  # of its mean over seeds; None with one seed
    interval: tuple[float, float] | None  # Wilson interval of a one-seed accuracy (at Standing.level)
    behind: float
    evidence: Evidence
    tied: bool
    behind_ci95: float | None = None
    p: float | None = None
    p_holm: float | None = None  # p adjusted by Holm's method over the task's `pairs` paired tests
    pairs: int = 0
    seeds: int = 0  # the seeds the paired test used
    partial: bool = False  # fewer than one of the two has: its gap is not the difference of the two means
    seeds_to_tell: int | None = None
    why_not: str = ""  # with evidence "none": why nothing compared them

    @property
    def reversed(self) -> bool:
        """Paired, and ahead of the leader on their common seeds: the leader leads only on the mean over
        each one's own seeds (unequal seeds), so the runs cannot rank the two."""
        return self.evidence == "paired" and shows_ahead({"diff": -self.behind, "ci95": self.behind_ci95 or 0.0,
                                                          "p": 1.0 if self.p is None else self.p,
                                                          "p_holm": 1.0 if self.p_holm is None else self.p_holm})

    @property
    def no_spread(self) -> bool:
        """Paired, with the same gap on every common seed: no CI, the sign test's p (`stats.paired`)."""
        return self.evidence == "paired" and self.behind_ci95 is not None and math.isnan(self.behind_ci95)


@dataclass(frozen=True)
class Standing:
    """The best configuration on one accuracy (`metric`: val_acc or test_acc) and every other
    configuration's `Gap` to it, closest first."""

    metric: str
    best: str
    mean: float
    ci95: float | None
    interval: tuple[float, float] | None
    samples: int | None  # images the accuracy was measured on (one seed; None when not recorded)
    gaps: tuple[Gap, ...]
    level: float = 0.95  # of each one-seed interval: all of them together hold at 95% (comparisons.Family)
    more_seeds: str = MORE_SEEDS  # the setting that runs them on more seeds (src.reporting.more_seeds)

    @property
    def tied(self) -> tuple[Gap, ...]:
        return tuple(g for g in self.gaps if g.tied)

    @property
    def best_set(self) -> list[str]:
        """The best configuration and those tied with it: who the answer names."""
        return [self.best] + [g.name for g in self.tied]

    @property
    def runner_up(self) -> Gap | None:
        """The closest configuration that the evidence does separate from the best."""
        return next((g for g in self.gaps if not g.tied), None)


@dataclass(frozen=True)
class Trade:
    """The cheapest configuration on the Pareto front of `metric` against `cost` and what it gives up
    against the front's most accurate (`top`); `gap` is None when the two are one configuration."""

    metric: str
    cost: str
    cheap: str
    top: str
    cheap_mean: float
    top_mean: float
    cheap_ci95: float | None
    top_ci95: float | None
    top_interval: tuple[float, float] | None
    cheap_cost: float
    top_cost: float
    gap: Gap | None
    unplaced: tuple[str, ...] = ()  # configurations with no number on some seed: off the front unseen otherwise
    # the costs' 95% CI half-widths over seeds (None with one seed): a time is measured, and noisy
    cheap_cost_ci95: float | None = None
    top_cost_ci95: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The answer for one task: where (None with a single task), how many seeds each configuration
    has (fewest, most), the standings on validation and on test, the cheap end's trade, and the seeds
    that failed or were interrupted in configurations it counts ("full on seed 2 (failed)"); `unmeasured`:
    per accuracy no configuration has on every seed (so no standing), each one and the seeds without it;
    `repeated_apart`: configurations with a seed run again that measured other accuracies (one run counted)."""

    task: str | None
    seeds: tuple[int, int]
    validation: Standing | None
    test: Standing | None
    trade: Trade | None
    left_out: tuple[str, ...] = ()
    unmeasured: tuple[str, ...] = ()
    repeated_apart: tuple[str, ...] = ()  # seeds run twice with other accuracies, one run counted ("full on seed 0, ...")

    @property
    def one_seed(self) -> bool:
        return self.seeds[1] == 1
