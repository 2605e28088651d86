"""Experiment tracking: Weights & Biases, or its disabled run where nothing is tracked. Tracking never
fails a run.

Mode "auto" runs W&B online only when credentials are configured (WANDB_API_KEY or a netrc entry
from `wandb login`), otherwise offline into each run's own folder (`<run>/wandb/offline-run-*`).
Those folders sit at different depths: a multirun's jobs, its report's summary run
(`<dir>/report/wandb`), a sweep's trials (`<dir>/trial_NNNN/wandb`) and the Pareto set's re-runs
(`<dir>/rerun/trial_NNNN/seed_S/wandb`). One command uploads them all later, whatever the depth:

    find DIR -type d -name 'offline-run-*' -exec wandb sync {} +

(`SYNC_COMMAND`; add `--dry-run` after `wandb sync` to list what it would upload.) Any W&B error
(unreachable server, bad entity, a failing call mid-run) is logged as a warning, after which the
run goes on offline or untracked (`logger=none` is untracked too: W&B's `mode="disabled"` run).
Online is tried once per process: once it failed, a multirun's or sweep's later runs go offline at
once (`_attempts`), not after W&B's 60 s wait each.

Conventions a W&B user expects: every run is tagged with its strategy, dataset and model
(`run_tags`); a training run's per-epoch metrics are plotted against `epoch` (`define_metric`),
and validation accuracy is summarised as its best epoch (`val_acc.max` in the runs table), so the
selected epoch's value goes to the summary as `selected_val_acc` (`run_summary`). A study's summary
run logs the Pareto front as a table and a chart on a log cost axis (`Tracker.pareto`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import netrc
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from src.config import LoggerConfig
from src.record.io import as_number, dumps, finite_json
from src.record.schema import EpochRecord

log = logging.getLogger(__name__)

SYNC_COMMAND = "find {root} -type d -name 'offline-run-*' -exec wandb sync {{}} +"
# Per-epoch metrics summarised by their best epoch, not their last (W&B's default).
BEST_IS_MAX = ("val_acc", "val_balanced_acc")
# Measured per epoch (a metrics.jsonl line), plotted against the `epoch` step metric.
EPOCH_METRICS = tuple(f.name for f in dataclasses.fields(EpochRecord)
                      if f.name not in ("epoch", "lrs", "extra", "schema_version"))


def sync_command(root: Path | str) -> str:
    """The shell command that uploads every offline W&B run under `root`, at any depth."""
    return SYNC_COMMAND.format(root=shlex.quote(str(root)))  # a folder with a space is one argument


def run_tags(record: Any) -> list[str]:
    """A run's W&B tags: its strategy, dataset and model, as recorded in result.json (`record`: a
    RunRecord or its fields as a dict)."""
    return [str(v) for k in ("strategy", "dataset", "model") if (v := record.get(k)) not in (None, "")]


def run_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """A run's result for the W&B summary. The result's `val_acc` is the selected epoch's, which
    is not the best epoch's under trainer.select=last: it goes in as `selected_val_acc`, so that it
    does not overwrite the `val_acc.max` that `define_metric` keeps. The `ood` block becomes flat
    `ood_acc/<set>`, `ood_balanced_acc/<set>` and `ood_n/<set>` metrics."""
    out = {f"selected_{k}" if k in BEST_IS_MAX else k: v for k, v in result.items() if k not in ("ood", "per_class")}
    # each class's recall (its accuracy) as flat metrics, recall_test/<class>; the matrices are charts
    # (`log_confusions`)
    per_class = result.get("per_class") or {}
    for split in ("val", "test"):
        recalls = (per_class.get(split) or {}).get("recall") or []
        out |= {f"recall_{split}/{name}": r for name, r in zip(per_class.get("classes") or [], recalls)}
    # each OOD set's measures as flat summary metrics (ood_acc/<set>), as the report names them
    for name, entry in (result.get("ood") or {}).items():
        if isinstance(entry, Mapping):
            out |= {f"ood_acc/{name}": entry.get("acc"), f"ood_balanced_acc/{name}": entry.get("balanced_acc"),
                    f"ood_n/{name}": entry.get("n")}
    return out


def log_confusions(tracker: Tracker, result: Mapping[str, Any]) -> None:
    """A run's val and test confusion matrices (result.json's `per_class`) as W&B charts
    `confusion_val` and `confusion_test`; nothing for a record without them."""
    per_class = result.get("per_class") or {}
    for split in ("val", "test"):
        matrix = (per_class.get(split) or {}).get("confusion")
        if matrix:
            tracker.confusion(f"confusion_{split}", matrix, per_class.get("classes") or [],
                              f"{split} confusion matrix (selected model)")


def log10_column(name: str) -> str:
    """The column of a cost on a log axis: W&B's stock charts have no log scale, so the chart plots
    log10 of the cost (the raw cost is a column beside it)."""
    return f"log10 {name}"


def _log10(value: Any) -> float | None:
    v = as_number(value)
    return math.log10(v) if v is not None and v > 0 else None


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def table(self, key: str, rows: list[dict[str, Any]]) -> None: ...
    def images(self, paths: dict[str, Path]) -> None: ...
    def scatter(self, key: str, rows: list[dict[str, Any]], x: str, y: str, title: str) -> None: ...
    def lines(self, key: str, xs: list[list[float]], ys: list[list[float]], names: list[str], title: str) -> None: ...
    def pareto(self, key: str, rows: list[dict[str, Any]], metric: str, cost: str, title: str) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def confusion(self, key: str, matrix: list[list[int]], classes: list[str], title: str) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


DEFAULT_PROJECT = "finetune-strategies"


def project_of(cfg: LoggerConfig) -> str:
    """The W&B project, in W&B's own order: logger.project when given, else WANDB_PROJECT, else ours."""
    return cfg.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def env_tags() -> tuple[str, ...]:
    """WANDB_TAGS (comma-separated, as W&B reads it): W&B drops it once `tags=` is given, as every run does."""
    return tuple(t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip())


def study_group(default: str) -> str:
    """The W&B group of a multirun's or sweep's runs when logger.group is not set: WANDB_RUN_GROUP,
    W&B's own setting, else `default`. The jobs and the study's summary run use it alike."""
    return os.environ.get("WANDB_RUN_GROUP") or default


def wandb_credentials_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(cfg: LoggerConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_configured() else "offline"


class WandbTracker:
    """A W&B run that degrades to a warning instead of an exception; with no run (never started, or
    finished after a failure), every call is skipped."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # any W&B failure mid-run: keep training, stop tracking
            log.warning("W&B %s failed (%s: %s); tracking disabled for this run", what, type(err).__name__, err)
            self.finish(exit_code=1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._guard("log", lambda: self.run.log(metrics, step=step))

    def requirements(self) -> None:
        """The run's files/requirements.txt, as W&B writes it (`name==version` per installed
        distribution), saved with the run (uploaded by `wandb sync` like W&B's own)."""

        def save() -> None:
            path = Path(self.run.dir) / REQUIREMENTS
            path.write_text(installed_packages())
            self.run.save(str(path), base_path=self.run.dir, policy="now")

        self._guard("requirements", save)

    def table(self, key: str, rows: list[dict[str, Any]]) -> None:
        """A wandb.Table with one column per key of the rows (lists and dicts as JSON text)."""

        def log_table() -> None:
            import wandb

            columns = list(dict.fromkeys(k for r in rows for k in r))
            # NaN as null, as in the run files: W&B's table JSON is read by strict parsers too
            cell = lambda v: dumps(v) if isinstance(v, (list, dict, tuple)) else finite_json(v)  # noqa: E731
            table = wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])
            # commit=False: joins the next history row instead of taking a step of its own, which
            # would push the epoch steps that run() logs explicitly out of order.
            self.run.log({key: table}, commit=False)

        self._guard(f"table {key}", log_table)

    def images(self, paths: dict[str, Path]) -> None:
        def log_images() -> None:
            import wandb

            self.run.log({k: wandb.Image(str(p)) for k, p in paths.items()}, commit=False)

        self._guard("images", log_images)

    def scatter(self, key: str, rows: list[dict[str, Any]], x: str, y: str, title: str, log_x: bool = False) -> None:
        """A scatter chart of `y` against `x`, one point per row; with `log_x`, against log10 of `x`
        (`log10_column`), the raw `x` kept as a column."""

        def log_scatter() -> None:
            import wandb

            columns = ["config", x] + ([log10_column(x)] if log_x else []) + [y]
            data = [[r["config"], r.get(x)] + ([_log10(r.get(x))] if log_x else []) + [r.get(y)] for r in rows]
            table = wandb.Table(columns=columns, data=data)
            self.run.log({key: wandb.plot.scatter(table, log10_column(x) if log_x else x, y, title=title)}, commit=False)

        self._guard(f"scatter {key}", log_scatter)

    def lines(self, key: str, xs: list[list[float]], ys: list[list[float]], names: list[str], title: str) -> None:
        def log_lines() -> None:
            import wandb

            self.run.log({key: wandb.plot.line_series(xs=xs, ys=ys, keys=names, title=title, xname="epoch")},
                         commit=False)

        self._guard(f"lines {key}", log_lines)

    def pareto(self, key: str, rows: list[dict[str, Any]], metric: str, cost: str, title: str) -> None:
        """The Pareto front (`rows`: its configurations) as a table `key`, by rising cost, and as a
        line chart `<key>_chart` of `metric` against log10 of `cost`, so that the dashboard shows
        the front without the report's PNG."""

        def log_front() -> None:
            import wandb

            ordered = sorted(rows, key=lambda r: (as_number(r.get(cost)) or math.inf, -(as_number(r.get(metric)) or 0)))
            columns = ["config", "strategy", "seeds", "task", metric, f"{metric}_ci95", cost, log10_column(cost)]
            data = [[r.get("config"), r.get("strategy"), r.get("seeds"), r.get("task"), finite_json(r.get(metric)),
                     finite_json(r.get(f"{metric}_ci95")), finite_json(r.get(cost)), _log10(r.get(cost))] for r in ordered]
            table = wandb.Table(columns=columns, data=data)
            # one line per task: a front is drawn within a dataset and training-set size, and one line
            # through two tasks' fronts would join points that measure nothing of each other
            stroke = "task" if len({r.get("task") for r in rows}) > 1 else None
            chart = wandb.plot.line(table, log10_column(cost), metric, stroke=stroke, title=title)
            self.run.log({key: table, f"{key}_chart": chart}, commit=False)

        self._guard(f"pareto {key}", log_front)

    def confusion(self, key: str, matrix: list[list[int]], classes: list[str], title: str) -> None:
        """A confusion matrix (rows true, columns predicted: counts) as W&B's confusion-matrix chart."""

        def log_matrix() -> None:
            import wandb

            # the chart takes one (true, predicted) pair per image: each cell's count of them
            pairs = [(i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(int(n))]
            chart = wandb.plot.confusion_matrix(y_true=[p[0] for p in pairs], preds=[p[1] for p in pairs],
                                                class_names=list(classes), title=title)
            self.run.log({key: chart}, commit=False)

        self._guard(f"confusion {key}", log_matrix)

    def define_epoch_metrics(self) -> None:
        """Per-epoch metrics on `epoch` as their x axis; validation accuracy summarised by its best epoch."""

        def define() -> None:
            self.run.define_metric("epoch")
            for name in EPOCH_METRICS:
                self.run.define_metric(name, step_metric="epoch", summary="max" if name in BEST_IS_MAX else None)
            self.run.define_metric("lr/*", step_metric="epoch")  # one LR per layer group

        self._guard("define_metric", define)

    def summary(self, values: dict[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:
                log.warning("W&B finish failed (%s: %s)", type(err).__name__, err)


REQUIREMENTS = "requirements.txt"


@functools.lru_cache(maxsize=1)
def installed_packages() -> str:
    """The installed distributions, one `name==version` line each, in W&B's order: read once per
    process (a process does not change its environment between a sweep's trials)."""
    from wandb.util import working_set

    # an editable install can be listed twice (its dist-info and the source tree's egg-info): once here
    return "".join(dict.fromkeys(f"{d.key}=={d.version}\n" for d in working_set()))


def new_run_id() -> str:
    """A W&B run id of its own for each run. W&B reads WANDB_RUN_ID at every init: a multirun's jobs
    and its summary run all took that one id, and `wandb sync` wrote them into one W&B run."""
    from wandb.sdk.lib.runid import generate_id  # W&B's own ids: 8 characters of [a-z0-9]

    if os.environ.get("WANDB_RUN_ID"):
        log.warning("WANDB_RUN_ID is not used: each run is a W&B run with an id of its own (one id for "
                    "every run merged a study's runs into one when synced)")
    return generate_id()


def make_tracker(
    cfg: LoggerConfig, run_dir: Path, name: str, config: dict[str, Any], job_type: str,
    tags: Sequence[str] = (), per_epoch: bool = False,
) -> WandbTracker:
    """A tracker for one run: a W&B run, or W&B's own disabled run (`untracked`) when logging is off
    or W&B cannot start. `tags` join logger.tags (see `run_tags`); `per_epoch` declares the
    per-epoch metrics of a training run."""
    # WANDB_MODE=disabled (W&B's own off switch, read under logger.mode=auto) is tracking off too: it
    # went to wandb.init with a run folder, and failed over to "tracking disabled" with a warning
    mode = resolve_mode(cfg)
    if cfg.kind == "none" or mode == "disabled":
        return untracked()
    try:
        import wandb
    except ImportError:
        log.warning("logger.kind=wandb but wandb is not installed; not tracking")
        return WandbTracker(None)
    kwargs = dict(
        project=project_of(cfg),
        entity=cfg.entity,
        group=cfg.group,
        name=name,
        job_type=job_type,
        # WANDB_NOTES read here, as WANDB_PROJECT is: W&B reads its variables once per process
        notes=cfg.notes if cfg.notes is not None else os.environ.get("WANDB_NOTES"),
        # W&B refuses tags over 64 characters; the same tag twice is one tag
        tags=list(dict.fromkeys(t[:64] for t in (*cfg.tags, *env_tags(), *tags))),
        config=config,
        dir=str(run_dir),
        # requirements.txt is written below from a list read once per process: W&B's own reads every
        # installed package's metadata at each init (0.1-0.25 s a trial of a sweep, the same list each time)
        settings=wandb.Settings(console="off", silent=True, init_timeout=INIT_TIMEOUT_S, x_save_requirements=False),
    )
    global _online_failed
    for attempt in _attempts(mode):
        try:
            # not WANDB_RUN_ID (new_run_id), and a new id for each attempt: W&B holds a failed one's
            run = wandb.init(mode=attempt, id=new_run_id(), **kwargs)
            if attempt != mode:
                log.warning("W&B running offline instead; upload later with `%s`", sync_command(run_dir))
            tracker = WandbTracker(run)
            tracker.requirements()
            if per_epoch:
                tracker.define_epoch_metrics()
            return tracker
        except Exception as err:
            log.warning("W&B init (%s) failed: %s: %s", attempt, type(err).__name__, err)
            if attempt == "online":
                _online_failed = f"{type(err).__name__}: {err}".splitlines()[0]
    log.warning("W&B unavailable; this run is not tracked (local files are complete)")
    return untracked()


# W&B's wait for its server at each init, in seconds; a server not reached within it leaves the run offline.
INIT_TIMEOUT_S = 60
# Why W&B online failed in this process, once it has (None until then). A multirun's jobs and a
# sweep's trials run in one process: each waited the whole timeout for the server the first could not
# reach, 60 s a job; the later ones go offline at once (synced later, as the first).
_online_failed: str | None = None


def _attempts(mode: str) -> list[str]:
    """The modes to try in turn: online falls back to offline, and is skipped once it failed here."""
    if mode != "online":
        return [mode]
    if _online_failed is not None:
        log.warning("W&B online failed earlier in this process (%s): running offline", _online_failed)
        return ["offline"]
    return ["online", "offline"]


def untracked() -> WandbTracker:
    """W&B's disabled run (`wandb.init(mode="disabled")`): the calls a tracked run gets, each doing
    nothing, no file written and no service started. Should even that fail, a tracker with no run,
    which skips every call: not tracking never fails a run."""
    try:
        import wandb

        return WandbTracker(wandb.init(mode="disabled", settings=wandb.Settings(console="off", silent=True)))
    except Exception as err:
        log.warning("W&B's disabled run failed to start (%s: %s); not tracking", type(err).__name__, err)
        return WandbTracker(None)
