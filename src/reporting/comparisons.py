"""Configurations compared: one summary row each (with Pareto membership), paired differences on
common seeds, and which strategy wins per dataset and training-set size (the win map).

Only configurations on the same task (`task_key`) are compared head to head. Every difference is
paired by seed (`src.reporting.stats.paired`): the seed moves both runs alike. Whether a pair is told
apart is decided on its p adjusted by Holm's method over every pair of the task (`Family`), not on
its own p: a report compares many pairs and names a best after seeing them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from src.record.io import as_number
from src.reporting.configs import Config, Unfinished, config_labels
from src.reporting.pareto import pareto_front
from src.reporting.runs import ConfigKey
from src.reporting.stats import LEVEL, holm, paired, wilson

__all__ = ["COSTS", "COST_SHORT", "COST_WORDS", "LEVEL", "METRIC_LABEL", "Family", "cost_ratio", "paired_on_common_seeds",
           "paired_rows", "task_groups",
           "per_class_label", "summary_rows", "task_key", "untasked", "win_map"]

# Costs on offer for the x axis of accuracy-vs-cost plots.
COSTS = {"train_flops": "train FLOPs", "train_time_s": "train time (s)", "trainable_params": "trainable params"}
# The same costs in a table cell (the fronts a configuration is on).
COST_SHORT = {"train_flops": "FLOPs", "train_time_s": "time", "trainable_params": "params"}
# The same costs in a sentence ("at 1/18 of its training FLOPs").
COST_WORDS = {"train_flops": "training FLOPs", "train_time_s": "training time", "trainable_params": "trainable parameters"}
# The accuracies a report can put against cost, in words.
METRIC_LABEL = {"val_acc": "validation accuracy", "test_acc": "test accuracy", "test_balanced_acc": "test balanced accuracy"}


def task_key(config: Config | Unfinished) -> tuple:
    """What a configuration is evaluated on: the dataset (by identity, `dataset_token`) and the
    training set drawn from it. Only configurations on the same task are compared head to head."""
    key = dict(config.key)
    return key["dataset"], key["train_samples"]


def paired_on_common_seeds(a: Config, b: Config, metric: str) -> dict[str, Any] | None:
    """`stats.paired` of metric(A) − metric(B) on the seeds both have a value for (listed as
    "seeds"); None with fewer than two."""
    va = {r.result.seed: as_number(r.measure(metric)) for r in a.runs}
    vb = {r.result.seed: as_number(r.measure(metric)) for r in b.runs}
    seeds = sorted((s for s in va.keys() & vb.keys() if va[s] is not None and vb[s] is not None))
    if len(seeds) < 2:
        return None
    return {"seeds": seeds} | paired([va[s] for s in seeds], [vb[s] for s in seeds])


# result.json's count of the images each accuracy was measured on (for its binomial interval).
SAMPLES = {"val_acc": "val_samples", "test_acc": "test_samples"}


def one_seed_samples(config: Config, metric: str) -> int | None:
    """The images its first run's `metric` was measured on (None where result.json records no count)."""
    n = config.runs[0].result.get(SAMPLES.get(metric, ""))
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def one_seed_interval(config: Config, metric: str, level: float) -> tuple[float, float] | None:
    """A one-seed accuracy's Wilson interval at `level`; None with several seeds (their CI says more),
    without the image count, or for an accuracy that is no count out of it (`stats.wilson`)."""
    stat = config.stats.get(metric)
    n = one_seed_samples(config, metric)
    if len(config.runs) != 1 or stat is None or math.isnan(stat[0]) or n is None:
        return None
    return wilson(stat[0], n, level)


class Family:
    """The paired tests of every pair of `configs` (one task) on `metric` that share two seeds, each
    with its p adjusted by Holm's method over all of them (`p_holm`; `stats.holm`); and `level`, the
    confidence of each one-seed accuracy's interval that makes all of them hold together at 95%
    (Bonferroni over the configurations: when every interval holds its true accuracy, two that do not
    overlap are truly apart, so no separation is claimed by luck more than 5% of the time).

    The family is every pair, not only the pairs with the best: the best is chosen by its mean first,
    and that choice makes its own comparisons look more separated than they are. Simulated on equal
    configurations (benchmarks/verdict_error.py, docs/verdict.md), only Holm over every pair kept the
    chance of separating any of them from the best under the 5% the verdict claims."""

    def __init__(self, configs: Sequence[Config], metric: str) -> None:
        tests: dict[tuple[int, int], dict[str, Any]] = {}
        for i, a in enumerate(configs):
            for b in configs[i + 1:]:
                test = paired_on_common_seeds(a, b, metric)
                if test is not None:
                    tests[(id(a), id(b))] = test
        for test, p in zip(tests.values(), holm([t["p"] for t in tests.values()])):
            test["p_holm"] = p
        self.tests, self.metric = tests, metric
        self.level = 1 - LEVEL / max(len(configs), 1)

    def __len__(self) -> int:
        return len(self.tests)

    def intervals_overlap(self, a: Config, b: Config) -> bool | None:
        """With one seed each, whether their Wilson intervals at `level` overlap: a tie (the rule for one
        seed, where no paired test can be run); None where either has no such interval."""
        mine, other = one_seed_interval(a, self.metric, self.level), one_seed_interval(b, self.metric, self.level)
        if mine is None or other is None:
            return None
        return other[1] >= mine[0] and mine[1] >= other[0]

    def test(self, a: Config, b: Config) -> dict[str, Any] | None:
        """The paired test of metric(A) − metric(B), with its family's `p_holm` and `pairs` (the
        family's size); None when the two share fewer than two seeds."""
        if (id(a), id(b)) in self.tests:
            return self.tests[(id(a), id(b))] | {"pairs": len(self)}
        if (id(b), id(a)) in self.tests:  # the same test, the other way round
            return self.tests[(id(b), id(a))] | {"diff": -self.tests[(id(b), id(a))]["diff"], "pairs": len(self)}
        return None


def paired_rows(configs: Sequence[Config], metric: str = "test_acc") -> list[dict[str, Any]]:
    """Every pair of configurations on the same task (`task_key`) that share at least two seeds:
    metric(A) − metric(B) on the common seeds, with its 95% CI, the paired t-test's p-value and that
    p adjusted by Holm's method over all of the task's pairs (`p_holm`, what tells them apart)."""
    tasks: dict[tuple, list[Config]] = {}
    for c in configs:
        tasks.setdefault(task_key(c), []).append(c)
    families = {task: Family(members, metric) for task, members in tasks.items()}
    rows = []
    for i, a in enumerate(configs):
        for b in configs[i + 1:]:
            if task_key(a) != task_key(b):
                continue
            test = families[task_key(a)].test(a, b)
            if test is not None:
                rows.append({"a": a.label, "b": b.label, "metric": metric} | test)
    return rows


def summary_rows(configs: Sequence[Config], metric: str = "test_acc", cost: str = "train_flops") -> list[dict[str, Any]]:
    """One row per configuration: seeds, mean and 95% CI of each measure, and Pareto membership on
    `metric` against `cost` (`pareto`) and against each of COSTS (`pareto_by_cost`, as the report's
    panels draw them: None where the configuration has no number for that cost)."""
    fronts = {c: _front(configs, metric, c) for c in dict.fromkeys([cost, *COSTS])}
    front = {i for i, on in enumerate(fronts[cost]) if on}
    rows = []
    for i, c in enumerate(configs):
        row: dict[str, Any] = {"config": c.label, "strategy": c.strategy, "seeds": len(c.runs), "task": task_label(c)}
        for m, (mean, half) in c.stats.items():
            row[m] = mean
            row[f"{m}_ci95"] = None if math.isnan(half) else half
        row["pareto"] = i in front
        row["pareto_by_cost"] = {c: on[i] for c, on in fronts.items() if c in COSTS}
        row["run_dirs"] = [str(r.dir) for r in c.runs]
        row["duplicates"] = [{"run": str(d.run.dir), "of": str(d.kept.dir)} for d in c.duplicates]
        row["selected_on"] = [str(r.dir) for r in c.selected_on]  # not counted: its re-runs are the measure
        rows.append(row)
    return rows


def task_label(config: Config) -> str:
    """The task a configuration's front is drawn within (`task_key`), in words: its dataset and how many
    training images per class."""
    return f"{config.runs[0].result.dataset}, {per_class_label(config)} per class"


def per_class_label(config: Config) -> str:
    n = config.runs[0].result.train_per_class
    return "all" if n is None else str(n)


def untasked(key: ConfigKey) -> ConfigKey:
    return tuple((k, None if k in ("dataset", "train_samples") else v) for k, v in key)


def win_map(configs: Sequence[Config], metric: str = "test_acc", level: float = LEVEL) -> list[dict[str, Any]]:
    """Which strategy wins, per dataset and training-set size (a cell of `experiment=data_size_grid`).

    In each cell: every configuration's mean ± 95% CI of `metric`, the winner (highest mean), and
    for each other configuration the paired difference to the winner on their common seeds. A
    configuration whose paired test does not separate it from the winner (its p adjusted over the
    cell's pairs, `Family`, at least `level`, fewer than two common seeds, or ahead of it on the seeds
    they share; with one seed each, Wilson intervals that overlap, as the answer rules) is `tied` with it: the seeds cannot say that the winner is better. So is one with no
    number on some seed (null in its result.json: no mean to rank by), with `missing` saying so, and
    `mean` None: left out, the cell named a winner without it."""
    # The strategy's name, plus the settings that tell its configurations apart across the map; the
    # dataset and training-set size are the cell's own, so a row keeps one name in every cell.
    labels = config_labels([untasked(c.key) for c in configs])
    cells: dict[tuple, list[Config]] = {}
    unplaced: dict[tuple, list[Config]] = {}
    for c in configs:
        (cells if metric in c.stats else unplaced).setdefault(task_key(c), []).append(c)
    rows = []
    for task, members in cells.items():
        dataset = members[0].dataset
        members = sorted(members, key=lambda c: -c.stats[metric][0])
        best = members[0]
        family = Family(members, metric)
        label = {id(c): labels[untasked(c.key)] for c in members}  # (and `unplaced`'s, below)
        entries = []
        for c in members:
            mean, half = c.stats[metric]
            entry: dict[str, Any] = {"config": label[id(c)], "strategy": c.strategy, "seeds": len(c.runs),
                                     "mean": mean, "ci95": None if math.isnan(half) else half}
            if c is not best:
                test = family.test(best, c)
                if test is not None:
                    # a winner on the mean that its common seeds put behind is no winner either (unequal seeds)
                    entry |= {"behind": test["diff"], "behind_ci95": test["ci95"], "p": test["p"],
                              "p_holm": test["p_holm"], "tied": test["p_holm"] >= level or test["diff"] < 0,
                              "common_seeds": test["n"]}  # fewer than either has: the gap is no difference of the means
                else:  # one seed each: tied where their Wilson intervals overlap, as the answer decides
                    overlap = family.intervals_overlap(best, c)
                    entry |= {"behind": best.stats[metric][0] - mean, "behind_ci95": None, "p": None, "p_holm": None,
                              "tied": overlap is not False}
            entries.append(entry)
        for c in unplaced.get(task, []):
            seeds = c.missing(metric)
            entries.append({"config": labels[untasked(c.key)], "strategy": c.strategy, "seeds": len(c.runs), "mean": None,
                            "ci95": None, "behind": None, "behind_ci95": None, "p": None, "p_holm": None, "tied": True,
                            "missing": f"no {METRIC_LABEL.get(metric, metric)} on seed{'s' * (len(seeds) > 1)} "
                                       f"{', '.join(map(str, seeds))}"})
        rows.append({
            "dataset": dataset, "train_per_class": per_class_label(best),
            "train_samples": best.runs[0].result.train_samples, "metric": metric,
            "winner": label[id(best)], "tied_with_winner": [e["config"] for e in entries[1:] if e["tied"]],
            "entries": entries,
        })
    rows.sort(key=lambda r: (str(r["dataset"]), math.inf if r["train_per_class"] == "all" else float(r["train_per_class"])))
    return rows


def cost_ratio(cheap: float, dear: float) -> str:
    """`cheap` as a share of `dear`, the way a reader says it: 1/18, 1/2.5, 73%."""
    if dear <= 0 or cheap <= 0:
        return f"{cheap:.3g} against {dear:.3g}"
    times = dear / cheap
    if times >= 10:
        return f"1/{times:.0f}"
    if times >= 2:
        return f"1/{times:.2g}"
    # as many decimals as keep a cheaper cost under 100%: "at 100% of its training FLOPs" read as the
    # same cost for the configuration the front put below the other (0.998 of it)
    share, digits = 100 * cheap / dear, 0
    while digits < 6 and cheap < dear and round(share, digits) >= 100:
        digits += 1
    return f"{share:.{digits}f}%"


def _front(configs: Sequence[Config], metric: str, cost: str) -> list[bool | None]:
    """Whether each configuration is on the Pareto front of `metric` against `cost` among the
    configurations of its own task (`task_key`: accuracies on two datasets measure nothing of each
    other, and an easy dataset's cheap run took a hard one's whole front off); None for one without a
    mean of either (a seed recorded null), which neither joins nor blocks the front."""
    pts = [(c.stats.get(metric, (math.nan,))[0], c.stats.get(cost, (math.nan,))[0]) for c in configs]
    front: set[int] = set()
    for members in task_groups(configs):
        front |= {members[i] for i in pareto_front([pts[j] for j in members])}
    return [None if any(math.isnan(v) for v in p) else i in front for i, p in enumerate(pts)]


def task_groups(configs: Sequence[Config]) -> list[list[int]]:
    """The indices of `configs` per task (`task_key`), in order of first appearance: what one front spans."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(task_key(c), []).append(i)
    return list(groups.values())
