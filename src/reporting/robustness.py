"""Out-of-distribution accuracy and effective robustness (Taori et al. 2020), from result.json's `ood`.

A run's OOD measures are named `ood_acc/<set>` and `ood_balanced_acc/<set>` wherever a measure name
is taken (report tables, paired tests, the win map, W&B). Effective robustness `eff_rob/<set>` is how
far a run's OOD accuracy lies above the line that in-distribution test accuracy predicts. The line
is fitted across configurations (one point each: the mean over its seeds, so that a configuration
run on more seeds weighs no more) of one dataset, by least squares on the logit scale of both
accuracies: Taori et al. fit on a probit scale, logit is the same idea (a straight line where
accuracies bunch up near 0 or 1) without scipy's inverse normal, and on the accuracies here the two
differ little. Accuracies are clipped to [0.001, 0.999] so that 0 and 1 stay finite.

A run's effective robustness is its OOD accuracy minus the line's prediction at its test accuracy;
a configuration's is the mean over its seeds (with a CI, and comparable seed by seed in the paired
tests). Nothing here is measured: it is arithmetic on recorded accuracies.

`drift_correlations` asks whether the drift measures (how far fine-tuning moved the features,
src/measurement/drift.py) tell which runs keep their accuracy out of distribution: Spearman's rank
correlation across runs, pooled per dataset and per training-set size (a rank correlation, since
neither measure need be linear in the other).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from src.record.io import as_number
from src.reporting.stats import holm, mean_ci, spearman

ID_METRIC = "test_acc"  # the in-distribution accuracy that OOD accuracy is set against
OOD_ACC, OOD_BALANCED, EFF_ROB = "ood_acc/", "ood_balanced_acc/", "eff_rob/"
CLIP = 1e-3
# result.json's whole-network drift measures (src/measurement/drift.py), set against OOD accuracy
DRIFT_MEASURES = ("cka_features", "imagenet_agreement")
MIN_CORRELATED = 5  # fewer runs than this give no rank correlation worth printing


def ood_sets(results: Sequence[Any]) -> list[str]:
    """The OOD sets the records hold, in order of first appearance: each set's name, or, where these
    records hold one name for other images (its `id`, src.data.identity.ood_identity: another folder
    of that name, another `ood_per_class`), `name [id]` for each, so that no mean, pair or line mixes
    accuracies measured on other images. A record without an `id` (written before runs recorded
    one) joins the set of its name when only one identity goes by it, else it is `name [no id]`.
    Callers pass every record whose measures they compare: the names depend on all of them."""
    found: dict[str, dict[str | None, None]] = {}
    for r in results:
        for name, entry in (r.ood.items() if isinstance(r.ood, dict) else ()):
            found.setdefault(name, {})[_set_id(entry)] = None
    out = []
    for name, ids in found.items():
        known = [i for i in ids if i is not None]
        out += [name] if len(known) <= 1 else [f"{name} [{i[:ID_SHOWN] if i else 'no id'}]" for i in ids]
    return out


def split_sets(results: Sequence[Any]) -> list[str]:
    """One line per OOD set name these records hold for other images (`ood_sets` keeps them apart),
    so that a set missing from the tables (no configuration has every seed on one of them) is explained."""
    names = ood_sets(results)
    shared = dict.fromkeys(n.rpartition(" [")[0] for n in names if n.endswith("]") and " [" in n)
    return [f"OOD set {name!r} is other images in some runs ({', '.join(n for n in names if n.startswith(name + ' ['))}: "
            f"another folder of that name or another dataset.ood_per_class): reported apart, never averaged or paired"
            for name in shared]


ID_SHOWN = 6  # hex digits of an OOD set's id in its name, where two sets share a name (as dataset names do)


def _set_id(entry: Any) -> str | None:
    value = entry.get("id") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and value else None


def ood_entry(result: Any, name: str) -> Any:
    """The record's `ood` entry that a set name of `ood_sets` means: by name, or `name [id]` by name and id."""
    ood = result.ood if isinstance(result.ood, dict) else {}
    if name in ood:
        return ood[name]
    base, _, tag = name.rpartition(" [")
    entry = ood.get(base) if tag.endswith("]") else None
    if entry is None:
        return None
    mine = _set_id(entry)
    return entry if (mine[:ID_SHOWN] if mine else "no id") == tag[:-1] else None


def ood_measures(names: Sequence[str]) -> list[str]:
    """The per-run OOD measures of these sets (accuracy, balanced accuracy)."""
    return [p + n for n in names for p in (OOD_ACC, OOD_BALANCED)]


def ood_value(result: Any, measure: str) -> float | None:
    """`ood_acc/<set>` or `ood_balanced_acc/<set>` from a record's `ood` block (None when missing)."""
    for prefix, key in ((OOD_ACC, "acc"), (OOD_BALANCED, "balanced_acc")):
        if measure.startswith(prefix):
            entry = ood_entry(result, measure[len(prefix):])
            return as_number(entry.get(key)) if isinstance(entry, dict) else None
    raise KeyError(measure)


def label(measure: str) -> str:
    """A measure's name in words: 'art_painting accuracy', 'art_painting effective robustness'."""
    for prefix, words in ((OOD_ACC, "accuracy"), (OOD_BALANCED, "balanced accuracy"), (EFF_ROB, "effective robustness")):
        if measure.startswith(prefix):
            return f"{measure[len(prefix):]} {words}"
    return measure


def logit(p: float) -> float:
    p = min(max(p, CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def expit(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@dataclass(frozen=True)
class Fit:
    """logit(OOD accuracy) = intercept + slope * logit(ID test accuracy), over `points` configurations."""

    dataset: Any
    ood: str
    slope: float
    intercept: float
    points: int

    def predict(self, id_acc: float) -> float:
        return expit(self.intercept + self.slope * logit(id_acc))


# A line through two points fits both exactly: every effective robustness would be 0, which says nothing.
MIN_POINTS = 3


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of logit(ys) on logit(xs); None with fewer than MIN_POINTS
    points or fewer than two distinct xs."""
    lx, ly = [logit(x) for x in xs], [logit(y) for y in ys]
    if len(lx) < MIN_POINTS or len(set(lx)) < 2:
        return None
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    return slope, my - slope * mx


def fits(configs: Sequence[Any]) -> list[Fit]:
    """One line per dataset and OOD set, over the configurations with a mean for both accuracies."""
    out = []
    by_dataset: dict[Any, list[Any]] = {}
    for c in configs:
        by_dataset.setdefault(c.dataset, []).append(c)
    names = ood_sets([r.result for c in configs for r in c.runs])  # as the configurations' stats name them
    for dataset, members in by_dataset.items():
        for name in names:
            placed = [c for c in members if ID_METRIC in c.stats and OOD_ACC + name in c.stats]
            line = fit_line([c.stats[ID_METRIC][0] for c in placed], [c.stats[OOD_ACC + name][0] for c in placed])
            if line is not None:
                out.append(Fit(dataset, name, line[0], line[1], len(placed)))
    return out


def add_effective_robustness(configs: Sequence[Any]) -> list[Fit]:
    """Each run's `eff_rob/<set>` (into `run.derived`) and each configuration's mean ± CI over its
    seeds (into `config.stats`, when every seed has one), from `fits(configs)`. Returns the fits."""
    lines = fits(configs)
    for fit in lines:
        key = EFF_ROB + fit.ood
        for c in configs:
            if c.dataset != fit.dataset:
                continue
            values = []
            for r in c.runs:
                id_acc, ood_acc = as_number(r.result.get(ID_METRIC)), ood_value(r.result, OOD_ACC + fit.ood)
                if id_acc is not None and ood_acc is not None:
                    r.derived[key] = ood_acc - fit.predict(id_acc)
                    values.append(r.derived[key])
            if values and len(values) == len(c.runs):
                c.stats[key] = mean_ci(values)
    return lines


def drift_correlations(configs: Sequence[Any], measures: Sequence[str]) -> list[dict[str, Any]]:
    """Spearman's ρ across the configurations' runs between each drift measure (`DRIFT_MEASURES`) and
    each of `measures` (OOD accuracy, effective robustness): per dataset (the configurations' own,
    by identity) over all its runs ("per_class": "pooled"), then per training-set size. Runs missing
    either value are left out of that pair; a pair with fewer than MIN_CORRELATED runs, or a constant
    side, gives no row. Each row's `p` treats its runs as independent, which seeds of one configuration
    are not (they share everything but the seed: `configs` says how many configurations the runs
    are), and a dataset's rows are many tests at once: `p_holm` is p adjusted by Holm's method over
    all of that dataset's rows, the p to read before calling any of them a finding."""
    rows: list[dict[str, Any]] = []
    by_dataset: dict[Any, list[Any]] = {}
    config_of = {id(r): c for c in configs for r in c.runs}
    for c in configs:
        by_dataset.setdefault(c.dataset, []).extend(c.runs)
    for dataset, members in by_dataset.items():
        sizes = sorted({r.result.train_per_class for r in members}, key=lambda n: (n is None, n or 0))  # "all" last
        groups = [("pooled", members)] if len(sizes) > 1 else []
        groups += [("all" if n is None else str(n), [r for r in members if r.result.train_per_class == n]) for n in sizes]
        for drift in DRIFT_MEASURES:
            for measure in measures:
                for per_class, group in groups:
                    kept = [(r, x, y) for r in group if (x := as_number(r.measure(drift))) is not None
                            and (y := as_number(r.measure(measure))) is not None]
                    if len(kept) < MIN_CORRELATED:
                        continue
                    rho, p = spearman([x for _, x, _ in kept], [y for _, _, y in kept])
                    if not math.isnan(rho):
                        rows.append({"dataset": dataset, "per_class": per_class, "drift": drift, "measure": measure,
                                     "rho": rho, "p": p, "runs": len(kept),
                                     "configs": len({id(config_of[id(r)]) for r, _, _ in kept})})
    for dataset in by_dataset:
        family = [row for row in rows if row["dataset"] == dataset]
        for row, adjusted in zip(family, holm([row["p"] for row in family])):
            row["p_holm"] = adjusted
    return rows
