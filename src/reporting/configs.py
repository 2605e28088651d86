"""Seeds pooled into configurations: which runs are the same configuration, their mean ± 95% CI
per measure, duplicates kept apart, and the labels that tell configurations apart.

What the report, the W&B summary and the notebook show is computed here once, so all three show the
same numbers; how configurations compare is `src.reporting.comparisons`, what the report concludes
from it `src.reporting.verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from src.record.io import as_number
from src.reporting.robustness import EFF_ROB, OOD_ACC, add_effective_robustness, ood_measures, ood_sets
from src.reporting.runs import CONFIG_KEYS, ConfigKey, DatasetToken, Run, dataset_token, is_searched, rerun_sweep, run_settings, trial_number
from src.reporting.stats import mean_ci

__all__ = ["Config", "Duplicate", "config_labels", "dataset_names", "group_configs", "ood_metrics"]

# The measures pooled over seeds (OOD sets' measures are added per set found).
MEASURES = ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s", "trainable_params", "peak_mem_mb",
            "imagenet_agreement", "cka_features")

# The accuracies a duplicate must repeat (what the answer ranks by); costs, times above all, are measured anew.
REPEATED = ("val_acc", "test_acc")


@dataclass(frozen=True)
class Duplicate:
    """A completed run left out of its configuration because another run of it has the same seed
    (a retried job, a copied folder, a configuration listed twice): `run` is a duplicate of `kept`."""

    run: Run
    kept: Run

    @property
    def apart(self) -> float:
        """How far its accuracies (REPEATED) are from the kept run's, at most (0.0 where they repeat or
        either has no number): a run repeats them bit for bit on a CPU, so a gap means that something
        else changed (the code, the device), and the counted run is one of two measures, not the measure."""
        gaps = [abs(a - b) for m in REPEATED
                if (a := as_number(self.run.measure(m))) is not None and (b := as_number(self.kept.measure(m))) is not None]
        return max(gaps, default=0.0)


@dataclass(frozen=True)
class Unfinished:
    """A configuration with runs of which none completed (each failed or was interrupted): nothing to
    place it by, so the answer names it as not counted rather than leave it out unseen."""

    key: ConfigKey
    label: str
    runs: list[Run]


class Configs(list):
    """`group_configs`' configurations (a list of Config), carrying the `Unfinished` ones beside them,
    so that every reader of the answer (`verdict.verdicts`) gets them without another argument."""

    unfinished: Sequence[Unfinished] = ()  # group_configs sets its own


@dataclass
class Config:
    """The runs of one configuration (one per seed) and their mean ± 95% CI per measure."""

    key: ConfigKey
    label: str
    runs: list[Run]
    stats: dict[str, tuple[float, float]]  # measure -> (mean, CI half-width; NaN with one seed)
    dataset: str = ""  # the dataset's name, with a short identity where two datasets share a name
    duplicates: list[Duplicate] = field(default_factory=list)  # same seed again: listed, never pooled
    lost: list[Run] = field(default_factory=list)  # failed or interrupted on a seed it has no completed run of
    # Its runs on a seed a sweep trial of it was chosen on (`is_searched`), where it has other seeds (the
    # trial's re-runs, a multirun's jobs): the luck that chose it lies in that configuration and seed,
    # whichever folder ran it (a CPU run repeats bit for bit), so pooling them would count it again (why
    # rerun_seeds refuse the searched seeds): listed, never pooled; the other seeds are the measure.
    selected_on: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dataset = self.dataset or str(self.runs[0].result.dataset)

    @property
    def strategy(self) -> str:
        return str(self.runs[0].result.strategy)

    @property
    def seeds(self) -> list[int]:
        return [r.result.seed for r in self.runs]  # type: ignore[misc]  # load_runs keeps integer seeds only

    def missing(self, measure: str) -> list[int]:
        """The seeds whose run has no number for `measure` (null, as a NaN or infinity is written): why
        `stats` has no mean of it, so that no answer passes over this configuration unsaid."""
        return [r.result.seed for r in self.runs if as_number(r.measure(measure)) is None]  # type: ignore[misc]

    @property
    def trials(self) -> list[int]:
        """The sweep trial numbers of its runs (empty outside a sweep): a configuration re-run on
        other seeds keeps its trial's number."""
        return sorted({n for r in self.runs + self.selected_on if (n := trial_number(r.dir)) is not None})

    @property
    def name(self) -> str:
        """The label, with the sweep trial it came from when there is one."""
        return self.named(self.label)

    def named(self, label: str) -> str:
        trials = self.trials
        return f"{label}, trial {', '.join(map(str, trials))}" if trials else label



def group_configs(runs: Sequence[Run]) -> Configs:
    """Completed runs pooled by configuration, in order of first appearance, one run per seed: a
    second completed run of a configuration on a seed it has (a retried job, a copied folder) is a
    `Duplicate` of the first in folder order, listed and never averaged in.

    Runs are the same configuration only on the same data: a dataset is known by its `dataset_id`
    (`dataset_token`), so two folders that share a name are two datasets. A record written before
    runs recorded an identity has only its name; it joins the runs that have one when exactly one
    identity goes by that name among these runs, and otherwise stays apart."""
    done = [r for r in runs if r.completed]
    # failed or interrupted: what the answer is not on (a pruned trial was stopped by design)
    stopped = [r for r in runs if r.result.status in ("failed", "interrupted") and isinstance(r.result.strategy, str)
               and isinstance(r.result.seed, int) and not isinstance(r.result.seed, bool)]
    tokens = _resolved_tokens(done + stopped)
    keys = _with_unrecorded(done + stopped, {id(r): r.config_key(tokens[id(r)]) for r in done + stopped})
    pooled: dict[ConfigKey, list[Run]] = {}
    duplicates: dict[ConfigKey, list[Duplicate]] = {}
    for run in done:
        key = keys[id(run)]
        members = pooled.setdefault(key, [])
        same_seed = next((m for m in members if m.result.seed == run.result.seed), None)
        if same_seed is None:
            members.append(run)
        else:
            duplicates.setdefault(key, []).append(Duplicate(run, same_seed))
    lost: dict[ConfigKey, list[Run]] = {}
    for run in stopped:  # a seed that failed once and completed on a retry is counted, not lost
        if (key := keys[id(run)]) in pooled and run.result.seed not in {m.result.seed for m in pooled[key]}:
            lost.setdefault(key, []).append(run)
    selected_on = _selected_on(pooled, duplicates)
    unfinished: dict[ConfigKey, list[Run]] = {}
    for run in stopped:  # a configuration no seed of which completed: told apart by its label as well
        if (key := keys[id(run)]) not in pooled:
            unfinished.setdefault(key, []).append(run)
    names = dataset_names(done + stopped, tokens)
    labels = config_labels(list(pooled) + list(unfinished), names)
    measures = MEASURES + tuple(ood_measures(ood_sets([r.result for m in pooled.values() for r in m])))
    configs = Configs()
    configs.unfinished = [Unfinished(key, labels[key], members) for key, members in unfinished.items()]
    for key, members in pooled.items():
        stats = {}
        for m in measures:
            # a null (a NaN when written) in any seed leaves the measure out: no mean over fewer seeds
            values = [v for r in members if (v := as_number(r.measure(m))) is not None]
            if len(values) == len(members):
                stats[m] = mean_ci(values)
        configs.append(Config(key, labels[key], members, stats, names[dict(key)["dataset"]], duplicates.get(key, []),
                              lost.get(key, []), selected_on.get(key, [])))
    add_effective_robustness(configs)  # eff_rob/<set>: needs every configuration's means first
    return configs


def _selected_on(pooled: dict[ConfigKey, list[Run]], duplicates: dict[ConfigKey, list[Duplicate]]) -> dict[ConfigKey, list[Run]]:
    """Per configuration with runs on other seeds too, its runs on the seeds a sweep trial of it was
    chosen on (`Config.selected_on`), taken out of `pooled` and `duplicates` (in place): a multirun's
    seed-0 job was kept as the first in folder order and the trial's own run called its duplicate, and
    the trial's re-runs on seeds 1-3 the duplicates of the multirun's, which left the re-runs' one new
    seed as the whole measure, and the multirun's jobs said to be what the trial was selected on."""
    out = {}
    for key, members in pooled.items():
        twins = [d.run for d in duplicates.get(key, [])]
        sweeps = {s for r in members + twins if (s := rerun_sweep(r.dir)) is not None}
        chosen = {r.result.seed for r in members + twins if is_searched(r.dir, sweeps)}
        if chosen and any(m.result.seed not in chosen for m in members):
            out[key] = [r for r in members + twins if r.result.seed in chosen]
            pooled[key] = [m for m in members if m.result.seed not in chosen]
            duplicates[key] = [d for d in duplicates.get(key, []) if d.run.result.seed not in chosen]
    return out


def _with_unrecorded(runs: Sequence[Run], keys: dict[int, ConfigKey]) -> dict[int, ConfigKey]:
    """Each run's key (by `id(run)`), with the config.yaml settings (`run_settings`) on which runs that
    result.json calls one configuration differ: a multirun over `trainer.batch_size` or a sweep over
    `optim.weight_decay` was pooled as one configuration, every seed after the first a "duplicate".
    Only settings that differ are added, so a study whose runs differ in recorded settings alone keeps
    its keys and labels; a run without a config.yaml keeps its key (its settings are not known), and a
    setting some config.yaml files lack (written before it existed) is not compared."""
    groups: dict[ConfigKey, list[Run]] = {}
    for r in runs:
        groups.setdefault(keys[id(r)], []).append(r)
    out = dict(keys)
    for key, members in groups.items():
        found = [(r, run_settings(r.dir)) for r in members] if len(members) > 1 else []
        known = [s for _, s in found if s]
        # keys every one of them has: a config.yaml written before a setting existed lacks it, and
        # that alone (None against the default) is no difference
        common = set.intersection(*(set(s) for s in known)) if known else set()
        differ = sorted(k for k in common if len({repr(s[k]) for s in known}) > 1)
        for r, settings in found:
            if differ and settings:
                out[id(r)] = key + tuple((k, settings.get(k)) for k in differ)
    return _with_across(groups, out)


def _with_across(groups: dict[ConfigKey, list[Run]], keys: dict[int, ConfigKey]) -> dict[int, ConfigKey]:
    """`keys` with the config.yaml settings that are one value inside each configuration but differ
    between configurations (an older study's layerwise at trainer.batch_size=32 reported with a newer
    study's frozen and full at 16): they split nothing, but the labels (`config_labels`) name them, where
    a bare "layerwise" against "full" read as a comparison of strategies alone. Only configurations whose
    every run has a config.yaml get them (a run without one would be split from its seeds)."""
    settings = {key: [run_settings(r.dir) for r in members] for key, members in groups.items()}
    known = {key: s for key, s in settings.items() if all(s)}
    common = set.intersection(*(set(x) for s in known.values() for x in s)) if known else set()
    names = {n for k in keys.values() for n, _ in k}
    uniform = {n for n in common - names if all(len({repr(x[n]) for x in s}) == 1 for s in known.values())}
    across = sorted(n for n in uniform if len({repr(s[0][n]) for s in known.values()}) > 1)
    if not across:
        return keys
    out = dict(keys)
    for key, members in groups.items():
        if key in known:
            for r in members:
                out[id(r)] = keys[id(r)] + tuple((n, known[key][0][n]) for n in across)
    return out


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


# The settings of CONFIG_KEYS that every strategy has and a study keeps the same for all of them: where they
# differ between strategies, the strategy alone no longer names what was compared. The task's (dataset,
# training-set size: compared only within one) and the strategy itself are not among them.
ACROSS = tuple(n for n in CONFIG_KEYS if n not in ("strategy", "dataset", "train_samples"))


def config_labels(keys: list[ConfigKey], datasets: dict[DatasetToken, str] | None = None) -> dict[ConfigKey, str]:
    """The strategy name, plus whichever settings tell configurations of that strategy apart (a
    dataset by its name, `dataset_names`), and the settings every strategy has (ACROSS) where they differ
    among all the configurations: a folder mixing an older study at 96 px with a newer one at 32 px
    labelled each strategy's one configuration by its name alone, and the answer ranked strategies that
    differed in more than the strategy."""
    across = {n for n in dict.fromkeys(n for k in keys for n, _ in k) if (n in ACROSS or "." in n)  # config.yaml's: "trainer.x"
              and len({dict(k)[n] for k in keys if n in dict(k)}) > 1}
    out = {}
    for key in keys:
        strategy = dict(key)["strategy"]
        same = [dict(k) for k in keys if dict(k)["strategy"] == strategy]
        names = list(dict.fromkeys(name for k in keys if dict(k)["strategy"] == strategy for name, _ in k))
        differing = [n for n in names if n != "strategy" and (n in across or len({k.get(n) for k in same}) > 1)]
        mine = dict(key)
        shown = lambda n: (datasets or {}).get(mine[n], mine[n][1]) if n == "dataset" and isinstance(mine.get(n), tuple) \
            else _short(mine.get(n))  # noqa: E731
        # a setting only some keys carry (config.yaml's, where it told runs apart: _with_unrecorded) is
        # shown where it is known, never as "=None" on configurations it did not split
        extra = ", ".join(f"{n}={shown(n)}" for n in differing if n in mine)
        out[key] = f"{strategy} ({extra})" if extra else str(strategy)
    return out


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)

