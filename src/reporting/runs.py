"""Run folders in: each run's record, curves and schedule, and what identifies its configuration.

Reads only what a run writes (result.json, metrics.jsonl, param_groups.json, and config.yaml for
settings older records lack); nothing is recomputed. `src.reporting.configs` pools these runs by
configuration; the report, the W&B summary and the notebook all start here.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.config import OUR_SWEEPER, augment_name
from src.record.io import (CONFIG_FILE, GROUPS_FILE, METRICS_FILE, RESULT_FILE, RETRIED_FILE, SkippedFile, as_number,
                          find_results, note_skipped, read_json_object, read_jsonl)
from src.record.lock import in_use
from src.record.schema import EpochRecord, RunRecord
from src.reporting.robustness import EFF_ROB, OOD_ACC, OOD_BALANCED, ood_measures, ood_sets, ood_value
from src.reporting.stats import ANY, COST, SHARE, Range, mean_ci

__all__ = ["CONFIG_KEYS", "UNFINISHED", "ConfigKey", "DatasetToken", "Run", "dataset_token", "load_runs", "lr_grid",
           "mean_curve", "run_settings", "trial_number", "resume_hint", "unfinished_runs"]

# What makes two runs the same configuration (everything in result.json that is set, not measured,
# except the seed), besides the strategy's own knobs (`strategy_params`, whatever the strategy
# has). Runs that differ only in seed are pooled into one row with a CI. `dataset` stands for what
# the run measured: its `dataset_id` where result.json has one (`dataset_token`), not its name.
CONFIG_KEYS = (
    "strategy", "model", "dataset", "epochs", "image_size", "augment", "train_samples", "min_epoch_steps", "lr",
    "frozen_bn", "optimizer", "join_warmup_epochs", "weights_id",
)
# What runs written before a setting existed did, for settings added later (`augment`: from the
# run's config.yaml where it has one, see _with_augment).
KEY_DEFAULTS = {"min_epoch_steps": 0, "join_warmup_epochs": 0.0, "augment": "none", "weights_id": None}
# Settings of a run's config.yaml that say where or how it ran, or what it measured besides, not what
# was compared: never a reason to tell two runs' configurations apart (`run_settings`). The data is
# known by its dataset_id, and the seed is what a configuration pools.
SETUP_KEYS = (
    "seed", "logger.", "paths.", "dataset.kind", "dataset.name", "dataset.root", "dataset.tv_name", "dataset.flag",
    "dataset.download", "dataset.cache", "dataset.num_workers", "dataset.ood", "trainer.device",
    "trainer.num_threads", "trainer.eval_batch_size", "trainer.progress", "trainer.count_flops",
    "trainer.feature_cache", "trainer.save_model", "trainer.resume", "trainer.keep_checkpoints", "trainer.drift_probe",
    "trainer.dry_run",
)
# config.yaml settings that result.json records under another name (`_recorded`)
RECORDED_KEYS = ("strategy.", "model.name", "dataset.train_per_class")
# A sweep trial's folder in its re-runs (`rerun/trial_NNNN/seed_S`; older sweeps: `trial_NNNN`).
_TRIAL_DIR = re.compile(r"trial_(\d+)")


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
        return _hydra_job_number(hydra_file, hydra_file.stat().st_mtime_ns)
    except OSError:  # no such file: not a Hydra job's folder
        return None


def is_rerun(run_dir: Path) -> bool:
    """Whether a run folder is a re-run of a sweep trial on another seed (`rerun/trial_NNNN/seed_S`),
    not a run the search itself trained and selected on."""
    return any(_TRIAL_DIR.fullmatch(part) for part in Path(run_dir).parts)


def is_searched(run_dir: Path, sweeps: Collection[Path] = ()) -> bool:
    """Whether a run folder is a sweep trial's own run, the one the search trained and chose by: not a
    re-run, nor a multirun's job, but a job of our sweeper (`trial_number`) or a folder beside the
    `rerun/` of one of `sweeps` (a sweep's folder, where its job's Hydra record is gone)."""
    if is_rerun(run_dir):
        return False
    return Path(run_dir).parent in sweeps or trial_number(run_dir) is not None


def rerun_sweep(run_dir: Path) -> Path | None:
    """The sweep folder of a re-run (`SWEEP/rerun/trial_NNNN/seed_S`), or None for any other run."""
    parts = Path(run_dir).parts
    at = next((i for i in range(len(parts) - 1, -1, -1) if _TRIAL_DIR.fullmatch(parts[i])), None)
    return None if at is None or at < 1 else Path(*parts[:at - 1]) if at > 1 else Path(".")


# A report asks for each run's trial several times (labels, tables, the verdict): a sweep's 20 runs
# took 128 YAML parses, 2 s of its report. Keyed by the file's mtime, so a rewritten file is read again;
# libyaml's loader where PyYAML has it (the same safe subset, about ten times faster).
@functools.lru_cache(maxsize=4096)
def _hydra_job_number(hydra_file: Path, mtime_ns: int) -> int | None:
    try:
        text = hydra_file.read_text()
        if OUR_SWEEPER not in text:
            return None
        hydra = _hydra_section(text)
        num = hydra.get("job", {}).get("num")
        return num if isinstance(num, int) and OUR_SWEEPER in str(hydra.get("sweeper", {}).get("_target_", "")) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):  # a label, not worth failing a report for
        return None


def _hydra_section(text: str) -> dict[str, Any]:
    """The `hydra` mapping of a job's `.hydra/hydra.yaml` text; libyaml's loader where PyYAML has it
    (the same safe subset, about ten times faster). AttributeError where the file is no mapping."""
    return (yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get("hydra") or {}


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml, flat (`trainer.batch_size`), less SETUP_KEYS: every setting that may make
    two runs different configurations where result.json records only some (`CONFIG_KEYS`). Empty
    when the run has no readable config.yaml (a record written by hand, say)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return _settings(path, path.stat().st_mtime_ns)
    except OSError:
        return {}


@functools.lru_cache(maxsize=4096)
def _settings(path: Path, mtime_ns: int) -> dict[str, Any]:
    try:
        config = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(config, dict):
        return {}
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif not f"{prefix}{key}".startswith(SETUP_KEYS) and not _recorded(f"{prefix}{key}"):
                flat[f"{prefix}{key}"] = _hashable(value)
    walk(config, "")
    return flat


def _recorded(key: str) -> bool:
    """Whether result.json records this setting (CONFIG_KEYS, the strategy's knobs), where the key
    already compares it, and in its own normalised form: config.yaml's `dataset.augment: false` of a
    run written before presets is result.json's "none", no second configuration."""
    return key.startswith(RECORDED_KEYS) or key.rsplit(".", 1)[-1] in CONFIG_KEYS


def load_runs(roots: Iterable[Path], skipped: list[SkippedFile] | None = None) -> list[Run]:
    """Every run under the folders (multirun, sweep, or several), with its curves and schedule.

    Files that cannot be read (a truncated result.json, a half-written metrics line, a completed
    result without the strategy or seed the pooling needs) are left out and added to `skipped`,
    or logged as warnings without it (`src.record.io.find_results`); the other runs are all there."""
    runs = []
    for run_dir, result in find_results(roots, skipped):
        if result.completed and (bad := _unpoolable(result)):
            note_skipped(SkippedFile(run_dir / RESULT_FILE, f"a completed run with {bad}"), skipped)
            continue
        for name, raw in ((k, result.get(k)) for k in SHARE_MEASURES + COST_MEASURES):  # "0.9", true: said, not pooled
            if raw is not None and not isinstance(raw, float) and as_number(raw) is None:
                note_skipped(SkippedFile(run_dir / RESULT_FILE, f"{name} {json.dumps(raw)} is not a number: counted as "
                                                                "missing, the run's other numbers kept"), skipped)
        metrics_path, groups_path = run_dir / METRICS_FILE, run_dir / GROUPS_FILE
        metrics: list[EpochRecord] = []
        groups: dict[str, Any] = {}
        for path in (metrics_path, groups_path) if result.completed else ():
            if why := _not_a_file(path):  # a completed run wrote it: its curve or schedule is lost, said so
                note_skipped(SkippedFile(path, why), skipped)
        try:
            lines = read_jsonl(metrics_path, skipped) if metrics_path.is_file() else []
            if result.completed and not lines and metrics_path.is_file() and not metrics_path.read_bytes().strip():
                note_skipped(SkippedFile(metrics_path, "empty file: no epochs, so no curve"), skipped)
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


def _not_a_file(path: Path) -> str | None:
    """Why a run file is there but is not one (None for a file, or for no entry: written before it was)."""
    if path.is_file() or not (path.is_symlink() or path.exists()):
        return None
    return "a folder, not a file" if path.is_dir() else "a link that leads to no file (dangling, or a loop)"


# What a run folder without result.json means, said by src.report, its page and the end of a multirun.
UNFINISHED = "no result.json: the run was killed or is still running"
# An override value Hydra's grammar reads unquoted (src/config/checks.py: quoting_hint for the rest).
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./:+-]+")


def resume_hint(folder: Path) -> str:
    """The command that resumes a run folder without result.json: for a run or a multirun's job, with the
    setting that points it back here (the same command makes a new dated folder). A sweep's trial: the
    same command, unless the study counts it finished (its record lost since); one its sweep retried
    elsewhere: that folder. A folder in use (src.record.lock.in_use) is said to be."""
    if in_use(Path(folder)):  # asked of the kernel's lock table, without taking the lock
        return "a process is training in it now (its folder is locked): report again once it ends"
    if (retried := _retried(Path(folder))) is not None:
        return retried
    mode, sweeper = _hydra_mode(Path(folder) / ".hydra" / "hydra.yaml")
    if mode == "MULTIRUN" and OUR_SWEEPER not in sweeper:
        return f"the same command with {sweep_dir_override(_sweep_dir(Path(folder).resolve()))} resumes it"
    if mode == "RUN":
        return f"the same command with {sweep_dir_override(folder, 'hydra.run.dir')} resumes it"
    from src.reporting.search import recorded_finished  # at call time: the study opened only for this hint
    if (n := trial_number(folder)) is not None and (state := recorded_finished(Path(folder).parent, n)):
        return (f"its study records trial {n} as {state}: its result.json was lost after it finished (deleted, "
                "or a copy that left it out), and the same command does not train it again; restore the file")
    return "the same command resumes it"


def _retried(folder: Path) -> str | None:
    try:
        note = json.loads((folder / RETRIED_FILE).read_text())
        return f"its trial {note['trial']} was retried as trial {note['retried_as']}, in {note['run_dir']}: nothing to resume here"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sweep_dir(job: Path) -> Path:
    """A multirun job's sweep folder: the nearest one above it holding Hydra's multirun.yaml (a
    hydra.sweep.subdir may nest), else its parent (this project's subdir, N_strategy)."""
    return next((d for d in job.parents if (d / "multirun.yaml").is_file()), job.parent)


def sweep_dir_override(sweep_dir: Path, key: str = "hydra.sweep.dir") -> str:
    """`hydra.sweep.dir=DIR` (or `key`=DIR), quoted for the shell where needed: what points the same
    command back at its folder, where one without it would start a new dated one and train it all again."""
    text = str(Path(sweep_dir).resolve())
    return f"{key}={text}" if _BARE_VALUE.fullmatch(text) else f"'{key}=\"{text}\"'"


def _hydra_mode(hydra_file: Path) -> tuple[str, str]:
    """(hydra.mode, the sweeper's _target_) of a job's Hydra record, or ("", "") where it has none."""
    try:
        hydra = _hydra_section(hydra_file.read_text())
        return str(hydra.get("mode") or ""), str((hydra.get("sweeper") or {}).get("_target_") or "")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):  # a hint, not worth failing a report for
        return "", ""


def unfinished_runs(roots: Iterable[Path]) -> list[Path]:
    """Every folder under `roots` that holds a run's files (its config.yaml, or the `.hydra/` Hydra
    writes into each job's folder) but no result.json, in path order: a job killed (SIGKILL, the OOM
    killer) before it could record anything, or one still running. find_results cannot see them, so
    a report that said nothing would answer as if they had never been started."""
    found: dict[Path, Path] = {}
    for root in roots:
        marks = [*root.rglob(CONFIG_FILE), *root.rglob(".hydra")]
        for folder in [root, *(p.parent for p in marks if p.parent.name != ".hydra")]:
            if _holds_a_run(folder) and not (folder / RESULT_FILE).exists() and not (folder / _DRY_RUN_FILE).exists():
                found.setdefault(folder.resolve(), folder)
    return sorted(found.values())


_DRY_RUN_FILE = "estimate.json"  # a dry run's only record (src.training.estimate.ESTIMATE_FILE): it ended as asked

def _holds_a_run(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or (folder / ".hydra").is_dir()


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
    """A setting as a dict key: a list or mapping where a scalar was (a hand-edited file) as its JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _unpoolable(result: RunRecord) -> str | None:
    """Why a completed run cannot be pooled by seed (None if it can): no strategy name or integer seed,
    or a number a measure cannot be (test_acc 7.5 printed "4.210 [0.000, 1.000]")."""
    if not isinstance(result.strategy, str):
        return f"no strategy name (strategy: {json.dumps(result.strategy)})"
    seed = result.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"no integer seed (seed: {json.dumps(seed)})"
    for name in SHARE_MEASURES + COST_MEASURES + tuple(ood_measures(ood_sets([result]))):
        low, high = measure_range(name)
        value = as_number(ood_value(result, name) if name.startswith((OOD_ACC, OOD_BALANCED)) else result.get(name))
        if value is not None and not low - SLACK <= value <= high + SLACK:
            return f"{name} {value:g}, which it cannot be (not in [{low:g}, {high:g}])"
    return None


# What each measure can be: the intervals printed of it are cut there, and a record past it is refused.
SHARE_MEASURES = ("val_acc", "test_acc", "test_balanced_acc", "imagenet_agreement", "cka_features")
COST_MEASURES = ("train_flops", "train_time_s", "trainable_params", "peak_mem_mb")
SLACK = 1e-6  # a CKA computed as 1 + 2e-16 is rounding, not rot


def measure_range(measure: str) -> Range:
    """The values `measure` can take (`stats.format_ci` cuts its intervals there): a share of images
    in [0, 1], an OOD set's accuracy too, effective robustness (an OOD accuracy above a predicted
    one) in [-1, 1], a cost at least 0."""
    if measure in SHARE_MEASURES or measure.startswith((OOD_ACC, OOD_BALANCED)):
        return SHARE
    if measure.startswith(EFF_ROB):
        return (-1.0, 1.0)
    return COST if measure in COST_MEASURES else ANY


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

