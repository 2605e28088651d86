"""Run files in, analysis out: load runs, group seeds of one configuration, Pareto fronts, mean ± CI.

Used by the report (`src.reporting.page`), the W&B summary and the notebook, so all three show the same
numbers; what they conclude from them is `src.reporting.verdict`'s. Everything here reads only what a
run writes (result.json, metrics.jsonl, param_groups.json); nothing is recomputed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.config import OUR_SWEEPER, augment_name
from src.record.io import (
    CONFIG_FILE, GROUPS_FILE, METRICS_FILE, RESULT_FILE, SkippedFile, as_number, find_results, note_skipped,
    read_json_object, read_jsonl,
)
from src.record.schema import EpochRecord, RunRecord
from src.reporting.pareto import pareto_front
from src.reporting.robustness import (
    EFF_ROB, OOD_ACC, OOD_BALANCED, add_effective_robustness, ood_measures, ood_sets, ood_value,
)
from src.reporting.stats import mean_ci, paired

__all__ = ["Config", "Duplicate", "Run", "group_configs", "load_runs", "mean_curve", "ood_metrics", "pareto_front",
           "summary_rows", "trial_number", "win_map"]

# What makes two runs the same configuration (everything in result.json that is set, not measured,
# except the seed), besides the strategy's own knobs (`strategy_params`, whatever the strategy
# has). Runs that differ only in seed are pooled into one row with a CI. `dataset` stands for what
# the run measured: its `dataset_id` where result.json has one (`dataset_token`), not its name.
CONFIG_KEYS = (
    "strategy", "model", "dataset", "epochs", "image_size", "augment", "train_samples", "min_epoch_steps", "lr",
    "frozen_bn", "optimizer", "join_warmup_epochs",
)
# What runs written before a setting existed did, for settings added later (`augment`: from the
# run's config.yaml where it has one, see _with_augment).
KEY_DEFAULTS = {"min_epoch_steps": 0, "join_warmup_epochs": 0.0, "augment": "none"}
# Costs on offer for the x axis of accuracy-vs-cost plots.
COSTS = {"train_flops": "train FLOPs", "train_time_s": "train time (s)", "trainable_params": "trainable params"}
# The same costs in a sentence ("at 1/18 of its training FLOPs").
COST_WORDS = {"train_flops": "training FLOPs", "train_time_s": "training time", "trainable_params": "trainable parameters"}
# The accuracies a report can put against cost, in words.
METRIC_LABEL = {"val_acc": "validation accuracy", "test_acc": "test accuracy", "test_balanced_acc": "test balanced accuracy"}
# A sweep trial's folder in its re-runs (`rerun/trial_NNNN/seed_S`; older sweeps: `trial_NNNN`).
_TRIAL_DIR = re.compile(r"trial_(\d+)")
MEASURES = ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s", "trainable_params", "peak_mem_mb",
            "imagenet_agreement", "cka_features")


# A configuration's identity: (setting, value) pairs, CONFIG_KEYS first, then the strategy's knobs
# by name, so that strategies with different knobs need no common list of them.
ConfigKey = tuple[tuple[str, Any], ...]


@dataclass
class Run:
    dir: Path
    result: RunRecord
    metrics: list[EpochRecord] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)
    # measures derived across runs, not recorded by this one (effective robustness: src/reporting/robustness.py)
    derived: dict[str, float] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.result.completed

    def measure(self, name: str) -> Any:
        """A measure by name: a result.json field, an OOD set's `ood_acc/<set>`, or a derived one."""
        if name in self.derived:
            return self.derived[name]
        if name.startswith((OOD_ACC, OOD_BALANCED)):
            return ood_value(self.result, name)
        return self.result.get(name)

    def config_key(self, dataset: DatasetToken | None = None) -> ConfigKey:
        """The run's configuration; `dataset` (default: its own `dataset_token`) stands in for the
        dataset, so that a record without an identity can take the one its name has elsewhere."""
        r = self.result
        fixed = tuple((k, dataset or dataset_token(r)) if k == "dataset" else (k, _hashable(r.get(k, KEY_DEFAULTS.get(k))))
                      for k in CONFIG_KEYS)
        params = r.strategy_params if isinstance(r.strategy_params, dict) else {"strategy_params": r.strategy_params}
        return fixed + tuple((f"{k}", _hashable(v)) for k, v in sorted(params.items()))


# What a run measured: ("id", result.json's `dataset_id`), or ("name", its dataset name) for a record
# written before runs recorded an identity.
DatasetToken = tuple[str, str]


def dataset_token(result: RunRecord) -> DatasetToken:
    ident = result.get("dataset_id")
    return ("id", ident) if isinstance(ident, str) and ident else ("name", str(result.dataset))


@dataclass(frozen=True)
class Duplicate:
    """A completed run left out of its configuration because another run of it has the same seed
    (a retried job, a copied folder, a configuration listed twice): `run` is a duplicate of `kept`."""

    run: Run
    kept: Run


@dataclass
class Config:
    """The runs of one configuration (one per seed) and their mean ± 95% CI per measure."""

    key: ConfigKey
    label: str
    runs: list[Run]
    stats: dict[str, tuple[float, float]]  # measure -> (mean, CI half-width; NaN with one seed)
    dataset: str = ""  # the dataset's name, with a short identity where two datasets share a name
    duplicates: list[Duplicate] = field(default_factory=list)  # same seed again: listed, never pooled

    def __post_init__(self) -> None:
        self.dataset = self.dataset or str(self.runs[0].result.dataset)

    @property
    def strategy(self) -> str:
        return str(self.runs[0].result.strategy)

    @property
    def seeds(self) -> list[int]:
        return [r.result.seed for r in self.runs]  # type: ignore[misc]  # load_runs keeps integer seeds only

    @property
    def trials(self) -> list[int]:
        """The sweep trial numbers of its runs (empty outside a sweep): a configuration re-run on
        other seeds keeps its trial's number."""
        return sorted({n for r in self.runs if (n := trial_number(r.dir)) is not None})

    @property
    def name(self) -> str:
        """The label, with the sweep trial it came from when there is one."""
        return self.named(self.label)

    def named(self, label: str) -> str:
        trials = self.trials
        return f"{label}, trial {', '.join(map(str, trials))}" if trials else label


def trial_number(run_dir: Path) -> int | None:
    """The sweep trial a run folder belongs to, or None: the innermost `trial_NNNN` in its path
    (a re-run of the Pareto set: `rerun/trial_NNNN/seed_S`), or the Hydra job number of a job that
    `hydra/sweeper=optuna` launched (its `.hydra/hydra.yaml` names our sweeper; the job number is the
    trial number)."""
    for part in reversed(Path(run_dir).parts):
        if m := _TRIAL_DIR.fullmatch(part):
            return int(m.group(1))
    hydra_file = Path(run_dir) / ".hydra" / "hydra.yaml"
    try:
        text = hydra_file.read_text() if hydra_file.is_file() else ""
        if OUR_SWEEPER not in text:
            return None
        hydra = (yaml.safe_load(text) or {}).get("hydra", {})
        num = hydra.get("job", {}).get("num")
        return num if isinstance(num, int) and OUR_SWEEPER in str(hydra.get("sweeper", {}).get("_target_", "")) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):  # a label, not worth failing a report for
        return None


def load_runs(roots: Iterable[Path], skipped: list[SkippedFile] | None = None) -> list[Run]:
    """Every run under the folders (multirun, sweep, or several), with its curves and schedule.

    Files that cannot be read (a truncated result.json, a half-written metrics line, a completed
    result without the strategy or seed the pooling needs) are left out and added to `skipped`,
    or logged as warnings without it (`results.find_results`); the other runs are all there."""
    runs = []
    for run_dir, result in find_results(roots, skipped):
        if result.completed and (bad := _unpoolable(result)):
            note_skipped(SkippedFile(run_dir / RESULT_FILE, f"a completed run with {bad}"), skipped)
            continue
        metrics_path, groups_path = run_dir / METRICS_FILE, run_dir / GROUPS_FILE
        metrics: list[EpochRecord] = []
        groups: dict[str, Any] = {}
        try:
            lines = read_jsonl(metrics_path, skipped) if metrics_path.is_file() else []
            metrics = [EpochRecord.from_json(line) for line in lines]
        except OSError as err:  # the run is still reported; only its curve is missing
            note_skipped(SkippedFile(metrics_path, f"unreadable ({err.strerror or type(err).__name__})"), skipped)
        except ValueError as err:  # a line with no version number
            note_skipped(SkippedFile(metrics_path, str(err)), skipped)
        try:
            groups = read_json_object(groups_path) if groups_path.is_file() else {}
        except ValueError as err:
            note_skipped(SkippedFile(groups_path, str(err)), skipped)
        runs.append(Run(run_dir, _with_augment(run_dir, result), metrics, groups))
    return runs


def _with_augment(run_dir: Path, result: RunRecord) -> RunRecord:
    """The record with its augmentation preset: result.json written before presets existed has none,
    but the run's config.yaml has `dataset.augment` (true/false then), so that an augmented old run
    is not pooled with unaugmented ones."""
    if result.augment is not None:
        return result
    try:
        value = (yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}).get("dataset", {}).get("augment")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):  # then the default, as for settings added later
        return result
    return result.replace(augment=augment_name(value)) if isinstance(value, (bool, str)) else result


def _hashable(value: Any) -> Any:
    """A setting as a dict key: a list or mapping where a scalar was expected (a hand-edited or
    foreign result.json) becomes its JSON text instead of failing the pooling of every run."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _unpoolable(result: RunRecord) -> str | None:
    """Why a completed run cannot be pooled by seed (None if it can): no strategy name or no integer seed."""
    if not isinstance(result.strategy, str):
        return f"no strategy name (strategy: {json.dumps(result.strategy)})"
    seed = result.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"no integer seed (seed: {json.dumps(seed)})"
    return None


def group_configs(runs: Sequence[Run]) -> list[Config]:
    """Completed runs pooled by configuration, in order of first appearance, one run per seed: a
    second completed run of a configuration on a seed it has (a retried job, a copied folder) is a
    `Duplicate` of the first in folder order, listed and never averaged in.

    Runs are the same configuration only on the same data: a dataset is known by its `dataset_id`
    (`dataset_token`), so two folders that share a name are two datasets. A record written before
    runs recorded an identity has only its name; it joins the runs that have one when exactly one
    identity goes by that name among these runs, and otherwise stays apart."""
    done = [r for r in runs if r.completed]
    tokens = _resolved_tokens(done)
    pooled: dict[ConfigKey, list[Run]] = {}
    duplicates: dict[ConfigKey, list[Duplicate]] = {}
    for run in done:
        key = run.config_key(tokens[id(run)])
        members = pooled.setdefault(key, [])
        same_seed = next((m for m in members if m.result.seed == run.result.seed), None)
        if same_seed is None:
            members.append(run)
        else:
            duplicates.setdefault(key, []).append(Duplicate(run, same_seed))
    names = dataset_names(done, tokens)
    labels = _labels(list(pooled), names)
    measures = MEASURES + tuple(ood_measures(ood_sets([r.result for m in pooled.values() for r in m])))
    configs = []
    for key, members in pooled.items():
        stats = {}
        for m in measures:
            # a null (a NaN when written) in any seed leaves the measure out: no mean over fewer seeds
            values = [v for r in members if (v := as_number(r.measure(m))) is not None]
            if len(values) == len(members):
                stats[m] = mean_ci(values)
        configs.append(Config(key, labels[key], members, stats, names[dict(key)["dataset"]], duplicates.get(key, [])))
    add_effective_robustness(configs)  # eff_rob/<set>: needs every configuration's means first
    return configs


def _resolved_tokens(runs: Sequence[Run]) -> dict[int, DatasetToken]:
    """Each run's dataset token (by `id(run)`), a name-only one replaced by the identity that name
    has when it has exactly one among `runs`."""
    ids_of: dict[str, set[str]] = {}
    for r in runs:
        kind, value = dataset_token(r.result)
        if kind == "id":
            ids_of.setdefault(str(r.result.dataset), set()).add(value)
    out = {}
    for r in runs:
        token = dataset_token(r.result)
        known = ids_of.get(str(r.result.dataset), set())
        out[id(r)] = ("id", next(iter(known))) if token[0] == "name" and len(known) == 1 else token
    return out


def dataset_names(runs: Sequence[Run], tokens: dict[int, DatasetToken]) -> dict[DatasetToken, str]:
    """Each dataset's name for tables and sentences: its recorded name, with the start of its
    identity in brackets where another dataset among these runs has the same name ("photos
    [3fa2c1]"; "[no id]" for records without one)."""
    first: dict[DatasetToken, str] = {}
    for r in runs:
        first.setdefault(tokens[id(r)], str(r.result.dataset))
    shared = {n for n in first.values() if sum(v == n for v in first.values()) > 1}
    return {t: f"{n} [{t[1][:6] if t[0] == 'id' else 'no id'}]" if n in shared else n for t, n in first.items()}


def ood_metrics(configs: Sequence[Config]) -> list[str]:
    """The OOD accuracy and effective-robustness measures these configurations have, per OOD set."""
    names = ood_sets([r.result for c in configs for r in c.runs])
    return [m for n in names for m in (OOD_ACC + n, EFF_ROB + n) if any(m in c.stats for c in configs)]


def _labels(keys: list[ConfigKey], datasets: dict[DatasetToken, str] | None = None) -> dict[ConfigKey, str]:
    """The strategy name, plus whichever settings tell configurations of that strategy apart (a
    dataset by its name, `dataset_names`)."""
    out = {}
    for key in keys:
        strategy = dict(key)["strategy"]
        same = [dict(k) for k in keys if dict(k)["strategy"] == strategy]
        names = list(dict.fromkeys(name for k in keys if dict(k)["strategy"] == strategy for name, _ in k))
        differing = [n for n in names if n != "strategy" and len({k.get(n) for k in same}) > 1]
        mine = dict(key)
        shown = lambda n: (datasets or {}).get(mine[n], mine[n][1]) if n == "dataset" and isinstance(mine.get(n), tuple) \
            else _short(mine.get(n))  # noqa: E731
        extra = ", ".join(f"{n}={shown(n)}" for n in differing)
        out[key] = f"{strategy} ({extra})" if extra else str(strategy)
    return out


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def mean_curve(runs: Sequence[Run], key: str = "val_acc") -> tuple[list[int], list[float], list[float]]:
    """Per epoch that every run recorded: mean and 95% CI half-width of `key` over the runs that
    have a number for it there (NaN where none has: a gap in the line, not a crash). Epochs are
    matched by the records' own `epoch`, so a line skipped as unreadable does not shift the rest."""
    by_epoch = [{rec.get("epoch", i): rec.get(key) for i, rec in enumerate(r.metrics)} for r in runs]
    common = set.intersection(*(set(d) for d in by_epoch)) if by_epoch else set()
    epochs, means, halves = [], [], []
    for e in sorted(x for x in common if isinstance(x, int)):
        values = [v for d in by_epoch if (v := as_number(d[e])) is not None]
        m, h = mean_ci(values) if values else (math.nan, math.nan)
        epochs.append(e + 1)
        means.append(m)
        halves.append(0.0 if math.isnan(h) else h)
    return epochs, means, halves


def lr_grid(run: Run) -> tuple[list[str], list[list[float]]]:
    """Group names (input side first) and, per group and epoch, its peak LR where it trains, else 0.

    From param_groups.json, the schedule the run wrote before training (the LR each group was
    built with; warmup and cosine scale all groups alike). The tests check that the optimizer
    followed it."""
    groups = run.groups.get("groups", [])
    epochs = int(run.groups.get("epochs", len(run.metrics)))
    names = [g["name"] for g in groups]
    return names, [[(as_number(g["lr"]) or 0.0) if e in g["epochs"] else 0.0 for e in range(epochs)] for g in groups]


def task_key(config: Config) -> tuple:
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


def paired_rows(configs: Sequence[Config], metric: str = "test_acc") -> list[dict[str, Any]]:
    """Every pair of configurations on the same task (`task_key`) that share at least two seeds:
    metric(A) − metric(B) on the common seeds, with its 95% CI and the paired t-test's p-value."""
    rows = []
    for i, a in enumerate(configs):
        for b in configs[i + 1:]:
            if task_key(a) != task_key(b):
                continue
            test = paired_on_common_seeds(a, b, metric)
            if test is not None:
                rows.append({"a": a.label, "b": b.label, "metric": metric} | test)
    return rows


def summary_rows(configs: Sequence[Config], metric: str = "test_acc", cost: str = "train_flops") -> list[dict[str, Any]]:
    """One row per configuration: seeds, mean and 95% CI of each measure, and Pareto membership
    (on `metric` against `cost`)."""
    pts = [(c.stats.get(metric, (math.nan,))[0], c.stats.get(cost, (math.nan,))[0]) for c in configs]
    front = set(pareto_front(pts))
    rows = []
    for i, c in enumerate(configs):
        row: dict[str, Any] = {"config": c.label, "strategy": c.strategy, "seeds": len(c.runs)}
        for m, (mean, half) in c.stats.items():
            row[m] = mean
            row[f"{m}_ci95"] = None if math.isnan(half) else half
        row["pareto"] = i in front
        row["run_dirs"] = [str(r.dir) for r in c.runs]
        row["duplicates"] = [{"run": str(d.run.dir), "of": str(d.kept.dir)} for d in c.duplicates]
        rows.append(row)
    return rows


def per_class_label(config: Config) -> str:
    n = config.runs[0].result.train_per_class
    return "all" if n is None else str(n)


def _untasked(key: ConfigKey) -> ConfigKey:
    return tuple((k, None if k in ("dataset", "train_samples") else v) for k, v in key)


def win_map(configs: Sequence[Config], metric: str = "test_acc", level: float = 0.05) -> list[dict[str, Any]]:
    """Which strategy wins, per dataset and training-set size (a cell of `experiment=data_size_grid`).

    In each cell: every configuration's mean ± 95% CI of `metric`, the winner (highest mean), and
    for each other configuration the paired difference to the winner on their common seeds. A
    configuration whose paired test does not separate it from the winner (p ≥ `level`, or fewer
    than two common seeds) is `tied` with it: the seeds cannot say that the winner is better."""
    # The strategy's name, plus the settings that tell its configurations apart across the map; the
    # dataset and training-set size are the cell's own, so a row keeps one name in every cell.
    labels = _labels([_untasked(c.key) for c in configs])
    cells: dict[tuple, list[Config]] = {}
    for c in configs:
        if metric in c.stats:
            cells.setdefault(task_key(c), []).append(c)
    rows = []
    for members in cells.values():
        dataset = members[0].dataset
        members = sorted(members, key=lambda c: -c.stats[metric][0])
        best = members[0]
        label = {id(c): labels[_untasked(c.key)] for c in members}
        entries = []
        for c in members:
            mean, half = c.stats[metric]
            entry: dict[str, Any] = {"config": label[id(c)], "strategy": c.strategy, "seeds": len(c.runs),
                                     "mean": mean, "ci95": None if math.isnan(half) else half}
            if c is not best:
                test = paired_on_common_seeds(best, c, metric)
                if test is not None:
                    entry |= {"behind": test["diff"], "behind_ci95": test["ci95"], "p": test["p"],
                              "tied": test["p"] >= level}
                else:
                    entry |= {"behind": best.stats[metric][0] - mean, "behind_ci95": None, "p": None, "tied": True}
            entries.append(entry)
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
    return f"{cheap / dear:.0%}"
