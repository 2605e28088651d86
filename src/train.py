"""Hydra entrypoint: `python -m src.train [overrides]`, `python -m src.train -m strategy=frozen,full,layerwise`.

Hydra stops here. The config gate (src/gate.py: schemas registered with Hydra, every job checked
before a folder is made) turns the composed config into a typed `RunConfig`, or one error line, and
the plain `run()` gets it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from src import exits  # light: how the process ends, before the imports below load (seconds)

    exits.while_starting()

import contextlib
import io
import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ft_optuna_sweeper import sweep_with
from hydra_plugins.ft_ray_launcher.launcher import register as register_ray
from hydra_plugins.ft_submitit_launcher.launcher import register as register_launchers
from src import exits
from src.config import OUR_SWEEPER, ConfigError, FolderRefused, RunConfig, from_cwd
from src.cli_args import resolvable_cfg
from src.completion import completion_line, completion_script, wants_completion
from src.gate import CONF, SCHEMA_PREFIX, install, output_setting, precheck, release_unused_dirs, to_run_config
from src.multirun_stop import multirun_started, said
from src.record.io import RESULT_FILE, DiskFull, OutOfRoom, SkippedFile, find_results, no_room, no_room_line, write_json

# torch, timm, scipy and matplotlib (src.training.run and .estimate, src.reporting.tables and .publish)
# are imported where a job trains or a multirun reports, not here: a command line the checks refuse
# answers in 0.4 s instead of 5.9, `--help` and shell completion in 1.4 s.

log = logging.getLogger(__name__)
# The schemas and the `${unique_dir:...}` resolver, before @hydra.main composes: here, at the entrypoint's
# import, so a job process that only unpickles `main` (a launcher's) has them too.
install()
register_launchers()  # hydra/launcher=submitit_slurm|submitit_local: ours (hydra_plugins/ft_submitit_launcher)
register_ray()  # hydra/launcher=ray: ours (hydra_plugins/ft_ray_launcher), where the ray extra is installed


def _multirun_group(hc) -> str | None:
    return multirun_group(hc) if hc.mode == RunMode.MULTIRUN else None


def multirun_group(hydra_node: Any) -> str:
    """The W&B group of a multirun's or sweep's runs when logger.group is not set (`hydra_node`: the
    config's `hydra` node): WANDB_RUN_GROUP, else a sweep's study name, as its re-runs' group is
    `<study>-rerun` (the folder's name put the parent of paths.output_dir in it, so that workers of one
    study in other folders landed in other groups), else the last parts of the multirun's folder
    (multirun/DATE/TIME -> multirun-DATE-TIME). The jobs and the summary run both take it from here."""
    from src.reporting.tracking import study_group

    if str(OmegaConf.select(hydra_node, "sweeper._target_", default="")).startswith(OUR_SWEEPER):
        from src.search.job import DEFAULT_STUDY

        return study_group(OmegaConf.select(hydra_node, "sweeper.study_name", default=None) or DEFAULT_STUDY)
    return study_group("-".join(Path(hydra_node.sweep.dir).parts[-3:]))


def _hydra_record(task_cfg: DictConfig, run_dir: Path) -> None:
    """The job's `.hydra/` (config.yaml, hydra.yaml, overrides.yaml), as Hydra's run_job writes it,
    each file whole; called once the folder is this run's. conf/config.yaml sets
    hydra.output_subdir=null: Hydra wrote these before the task could look at the folder, so a
    command refused there (another seed, a folder in use, a finished run kept) left the earlier
    run's record saying what it did not run."""
    from src.record.io import write_text

    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}: what Hydra saves as hydra.yaml
    assert hydra_cfg is not None
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra_cfg),
                       ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        write_text(folder / name, OmegaConf.to_yaml(node))


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
@sweep_with("src.sweep_driver.ProjectSweep")  # hydra/sweeper=optuna scores our trials on result.json, not the return value
def main(cfg: DictConfig) -> float:
    from src.record.lock import FolderInUse
    from src.training.job_dir import multirun_job_dir
    from src.training.run import RunDirTaken, run

    hc = HydraConfig.get()
    exits.install()  # also in launcher processes (joblib, submitit) that never ran cli()
    quiet_full_log_files()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        run_cfg = to_run_config(cfg, _multirun_group(hc))
        if hc.job.chdir:  # Hydra has moved into the job's folder: relative paths name files where the command ran
            run_cfg = from_cwd(run_cfg, Path(hc.runtime.cwd))
        if multirun and not str(OmegaConf.select(hc, "sweeper._target_", default="")).startswith(OUR_SWEEPER):
            out = multirun_job_dir(out, run_cfg)  # its folder by config, not by its place in this sweep's order
        with _trial_reporter(hc, run_cfg, out) if multirun else contextlib.nullcontext() as on_epoch:
            result = run(run_cfg, out, run_name=out.name, on_epoch=on_epoch, on_claimed=lambda d: _hydra_record(cfg, d))
    except KeyboardInterrupt as err:  # said by whoever runs this job: src.exits.run_task, or our sweeper
        raise exits.stopped(err, recorded(out / RESULT_FILE, Path(hc.sweep.dir) if multirun else None)) from None
    except Exception as err:
        if multirun and isinstance(err, (RunDirTaken, FolderInUse)):
            # Another config's finished run in this job's folder (a fixed hydra.sweep.dir run with
            # other values), or another process training there now: kept, and the multirun ends with
            # the line, as a full disk ends it (OutOfRoom is the one exception Hydra does not keep as
            # a job's result).
            raise OutOfRoom(str(err), exits.USER_ERROR) from None
        dry = OmegaConf.select(cfg, "trainer.dry_run", default=False) is True
        record = (_record_dry_failure if dry else _record_failure)(out, err)  # a dry run records no result, failed or not
        if full_error():
            raise
        if (full := no_room(err, sqlite=_storage_file(hc))) is not None:
            raise OutOfRoom(out_of_room(full, out, _places(hc, cfg))) from None
        if not multirun:
            if exits.is_user_error(err):
                raise exits.UserError(str(err)) from err
            where = f" (recorded in {out / RESULT_FILE})" if (out / RESULT_FILE).is_file() else ""
            raise exits.Failed(f"run failed: {type(err).__name__}: {err}{where}") from err
        # One failed job must not stop the others: its result.json says status "failed" and why;
        # the table at the end lists it and the exit code is non-zero.
        if isinstance(err, FolderRefused):  # the end table lists the folder: "no result.json"
            log.error("run refused (%s); %s is left as it was", err, out)
        else:
            log.error("run failed (%s: %s); recorded in %s", type(err).__name__, err, record)
        return float("nan")
    if result.get("status") == "dry_run":
        return float("nan")
    if not multirun:  # a multirun's jobs are summed up in its table at the end
        print(result_line(result, out), flush=True)
    return float(result["val_acc"])


def result_line(result: dict[str, Any], out: Path) -> str:
    """What a single run ends by printing: its accuracies, cost and folder. A pruned run (a sweep
    trial's folder, kept by a single run of its config) was never tested: no test_acc, said as '-'."""
    flops = result.get("train_flops")
    acc = lambda key: f"{result[key]:.4f}" if isinstance(result.get(key), (int, float)) else "-"  # noqa: E731
    status = str(result.get("status"))
    if status == "pruned" and isinstance(result.get("pruned_epoch"), int):  # 0-based, as the log's epoch N/M is not
        status += f" after epoch {result['pruned_epoch'] + 1}" + (f" ({result['reason']})" if result.get("reason") else "")
    return (f"{status}: val_acc {acc('val_acc')}  test_acc {acc('test_acc')}  "
            f"train_flops {f'{flops:.3e}' if flops is not None else 'not counted'}  "
            f"train_time {result.get('train_time_s', 0):.1f}s  total {result.get('total_time_s') or 0:.1f}s  in {out}")


def out_of_room(full: DiskFull, out: Path, places: list[tuple[Path, str]]) -> str:
    """A run that met a full disk: one line naming the file and the setting that put it there, and
    whether result.json records the failure. Raised as OutOfRoom, it also ends a multirun."""
    record = out / RESULT_FILE
    kept = record.is_file() and full.path is not None and Path(os.path.abspath(full.path)) != record.absolute()
    return no_room_line(full, places) + (f"; the run is recorded as failed in {record}" if kept else
                                         "; the run could not be recorded")


def _places(hc: Any, cfg: DictConfig) -> list[tuple[Path, str]]:
    """Where this job writes, each with the setting that chose it: for no_room_line."""
    multirun = hc.mode == RunMode.MULTIRUN
    key, value = output_setting(hc, multirun, OmegaConf.select(cfg, "paths.output_dir", default=None))
    # the sweep folder, or this run's: never hc.sweep.dir in a single run (resolving it makes a folder)
    places = [(Path(hc.sweep.dir if multirun else hc.runtime.output_dir), f"{key}={value}")]
    storage = _storage_file(hc)
    if storage is not None and OmegaConf.select(hc, "sweeper.storage", default=None):
        places.append((storage, f"hydra.sweeper.storage={OmegaConf.select(hc, 'sweeper.storage')}"))
    cache = OmegaConf.select(cfg, "dataset.cache_dir", default=None)
    if cache:
        places.append((Path(cache), f"dataset.cache_dir={cache}"))
    return places


def _storage_file(hc: Any) -> Path | None:
    """The file of our Optuna sweeper's study storage (sqlite or a journal; null: the sweep folder's optuna.db)."""
    if hc.mode != RunMode.MULTIRUN or not str(OmegaConf.select(hc, "sweeper._target_", default="")).startswith(OUR_SWEEPER):
        return None
    url = str(OmegaConf.select(hc, "sweeper.storage", default=None) or f"sqlite:///{Path(hc.sweep.dir).absolute() / 'optuna.db'}")
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def quiet_full_log_files() -> None:
    """A log file on a full disk stops logging, quietly: Python's logging would print a traceback
    for every record it cannot write. What could not be written is said once, by the run's own
    error line. Any other logging error is reported as logging does. Set on the class, so that it
    holds for every log file of the process, also those a library opens later: wandb.init adds a
    FileHandler for wandb/debug.log in the run folder, and on a full disk each of its records printed
    a 'Logging error' traceback (60 lines for one smoke run), beside the one line the run ended with."""
    logging.FileHandler.handleError = _log_file_error  # type: ignore[method-assign]


def _log_file_error(handler: logging.FileHandler, record: logging.LogRecord) -> None:
    if no_room(sys.exc_info()[1]) is not None:
        handler.setLevel(logging.CRITICAL + 1)
    else:
        logging.Handler.handleError(handler, record)


def _trial_reporter(hc: Any, run_cfg: RunConfig, out: Path) -> contextlib.AbstractContextManager[Any]:
    """A job of `hydra/sweeper=optuna` reports each epoch to its Optuna trial, which may stop it
    (src.search.job.trial_reporter); nothing for any other multirun job."""
    sweeper = OmegaConf.to_container(hc.sweeper, resolve=True)
    if not str(sweeper.get("_target_", "")).startswith(OUR_SWEEPER):
        return contextlib.nullcontext()
    from src.search.job import trial_reporter  # optuna is loaded only by the jobs that need it

    return trial_reporter(sweeper, str(hc.sweep.dir), int(hc.job.num), run_cfg, out)


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1 (Hydra's own switch) shows the whole traceback instead of one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _record_failure(out: Path, err: BaseException) -> Path:
    """A job that failed before run() could record anything still leaves a result.json saying so,
    so that no failed job is missing from a table. Never replaces an existing record, and never writes
    into a folder run() refused as it found it (FolderRefused: a damaged or foreign checkpoint in a
    killed run's folder, say): that folder is left byte for byte, to be resumed once the cause is gone. Returns its path."""
    if isinstance(err, FolderRefused) or (out / RESULT_FILE).exists():
        return out / RESULT_FILE
    try:
        write_json(out / RESULT_FILE, {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                       "failed_epoch": -1, "run_dir": str(out)})
    except OSError:
        pass  # the folder itself cannot be written; the error line says why
    return out / RESULT_FILE


def _record_dry_failure(out: Path, err: BaseException) -> Path:
    """A dry job that cannot start says why in its estimate.json, for the dry multirun's total: as a
    result.json {"status": "failed"} it was a run that never ran, listed by src.report, and the total
    left it out as if it had not been asked for. A folder run() refused is left as it was. Returns its path."""
    from src.training.estimate import ESTIMATE_FILE

    if isinstance(err, FolderRefused):
        return out / ESTIMATE_FILE
    try:
        write_json(out / ESTIMATE_FILE, {"error": f"{type(err).__name__}: {err}"})
    except OSError:
        pass  # the folder itself cannot be written; the error line says why
    return out / ESTIMATE_FILE


def recorded(record: Path, sweep_dir: Path | None) -> str:
    """What a stopped run kept, and where: for the line src.exits prints."""
    what = f"status 'interrupted' recorded in {record}" if record.is_file() else "no run was in progress"
    # shell-quoted: a folder with a space ("my runs") split the printed command into two arguments
    kept = f"; finished runs are kept in {sweep_dir} (python -m src.report {shlex.quote(str(sweep_dir))})" if sweep_dir else ""
    return what + kept


class ComparisonTable(Callback):
    """Once the multirun ends: the comparison table of every run in the sweep directory, the HTML
    report in `<sweep dir>/report/`, and the study's summary run in W&B."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A dry multirun's total is of the estimates its own jobs write: a folder used again
        # (hydra.sweep.dir=...) still holds an earlier dry run's, for jobs no longer asked for.
        self.started = time.time()
        multirun_started(Path(config.hydra.sweep.dir))  # what Ctrl-C names when the jobs run elsewhere (joblib)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if OmegaConf.select(config, "trainer.dry_run", default=False):
            # an Optuna sweep's dry run ran no jobs: its driver printed the trials' bracket
            if not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).startswith(OUR_SWEEPER):
                total, cannot, jobs = dry_run_total(sweep_dir, self.started)
                print(total, flush=True)
                if cannot:  # as the real multirun would end: those jobs would fail
                    raise exits.Failed(f"{len(cannot)} of {jobs} dry-run jobs cannot start: {', '.join(cannot)}")
            return
        skipped: list[SkippedFile] = []
        rows = find_results([sweep_dir], skipped)
        for bad in skipped:
            print(f"warning: skipped {bad}", file=sys.stderr, flush=True)
        unreadable = {b.path.parent: b.reason for b in skipped}
        # A job folder (Hydra writes .hydra/ into each) with no result.json: a job that died
        # without recording anything. It is listed, never silently left out (src.report says so too).
        from src.reporting.runs import unfinished_runs

        lost = sorted({*unreadable, *unfinished_runs([sweep_dir])})
        rows += [(d, {"status": "failed", "error": f"result.json {unreadable[d]}" if d in unreadable else "no result.json"})
                 for d in lost]
        if rows:
            from src.reporting.tables import console_summary

            try:
                summary = console_summary(rows)
            except Exception as err:  # the runs are saved; a failing summary must not end the multirun in a traceback
                summary = f"(no summary: {type(err).__name__}: {err}; python -m src.report {shlex.quote(str(sweep_dir))} tries again)"
            print(f"\n{len(rows)} runs in {sweep_dir}:\n{summary}", flush=True)
            try:  # only the logger section: the rest of `config` holds unresolved sweep values
                logger = RunConfig.from_dict({"logger": OmegaConf.to_container(config.logger, resolve=True)}).logger
            except ConfigError:  # the jobs have reported it already
                logger = None
            if logger is not None:
                from src.reporting.publish import publish

                problems: list[str] = []
                page = publish([sweep_dir], sweep_dir / "report", logger, multirun_group(config.hydra), problems=problems)
                for line in problems:  # no report, a figure not drawn, no W&B summary: said, not buried in a log
                    print(f"warning: {line}", file=sys.stderr, flush=True)
                if page:
                    print(f"report: {page}", file=sys.stderr, flush=True)
        plain = not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).startswith(OUR_SWEEPER)
        if not rows and plain:  # ended with exit 0 and no line: its jobs had written their runs elsewhere
            raise exits.Failed(f"no run under {sweep_dir}: the jobs wrote no folder there (a job started in another "
                               "folder, or a hydra.sweep.subdir that leads out of it?); nothing to compare or report")
        # a run an Optuna sweeper's pruner stopped ended as it should (its result.json says why)
        failed = [d.name for d, r in rows if r.get("status") not in ("completed", "pruned")]
        # An Optuna sweep's failed or interrupted trials are the study's to judge (max_failed; an
        # interrupted trial runs again on resume): its exit code is the sweeper's.
        if failed and plain:
            from src.reporting.runs import sweep_dir_override

            # what to do, not only what happened: the folder named, as a multirun's default one is dated
            raise exits.Failed(f"{len(failed)} of {len(rows)} runs did not complete: {', '.join(failed)}; the same "
                               f"command with {sweep_dir_override(sweep_dir)} runs them again (each from its last "
                               "checkpoint) and keeps the others")


def dry_run_total(sweep_dir: Path, since: float | None = None) -> tuple[str, list[str], int]:
    """A dry multirun's end: each job's estimate (its estimate.json, written at or after `since`, the
    multirun's start) and the total of those that can start; the folders of those that cannot (their
    estimate.json says why), and the number of jobs."""
    from src.training.estimate import ESTIMATE_FILE, Estimate, total_line

    found = list(sweep_dir.glob(f"*/{ESTIMATE_FILE}"))
    # a second of slack: a file system's clock may be coarser than time.time()
    ours = [p for p in found if since is None or p.stat().st_mtime >= since - 1.0]
    old = f"({len(found) - len(ours)} {ESTIMATE_FILE} of an earlier dry run in this folder left out)" \
        if len(ours) < len(found) else None
    # in job order: folders are named by job number first (`0`, `10`, `2_full`), so by that number
    jobs = sorted(ours,
                  key=lambda p: (int(p.parent.name.split("_")[0]) if p.parent.name.split("_")[0].isdigit() else 1 << 30,
                                 p.parent.name))
    records = [json.loads(p.read_text()) for p in jobs]
    cannot = [p.parent.name for p, r in zip(jobs, records) if "error" in r]
    kept = sum("kept" in r for r in records)
    estimates = [Estimate.from_dict(r) for r in records if "error" not in r and "kept" not in r]
    lines = [f"{p.parent.name:>6}  " + (f"cannot start: {r['error']}" if "error" in r else
                                        f"kept: holds a {r['kept']} run of this config, nothing to train" if "kept" in r
                                        else Estimate.from_dict(r).line().removeprefix("estimate: "))
             for p, r in zip(jobs, records)]
    return "\n".join(["", f"{len(jobs)} dry-run jobs in {sweep_dir}:", *lines, total_line(estimates, len(cannot), kept),
                      *([old] if old else [])]), cannot, len(jobs)


def cli(argv: list[str]) -> None:
    """`python -m src.train`: the checks, then Hydra; src.exits says how it ended, in one line."""
    command = wants_completion(argv)
    exits.run_task(lambda: completion(command) if command else _checked_main(argv))


def _checked_main(argv: list[str]) -> None:
    sys.argv[1:] = argv = resolvable_cfg(argv)  # what @hydra.main reads
    try:
        precheck(argv)
    finally:
        release_unused_dirs()
    try:
        main()
    except KeyboardInterrupt as err:
        raise said(err) from None


def completion(command: str) -> None:
    """`-sc install=bash` and the queries its bash function makes, answered by Hydra, taught
    `python -m src.train` (src.completion); the schemas' own names
    (`strategy=base_layerwise`) are not offered."""
    if command.startswith("query") and "COMP_LINE" in os.environ:
        os.environ["COMP_LINE"] = completion_line(os.environ["COMP_LINE"])
    answer = io.StringIO()
    with contextlib.redirect_stdout(answer):
        main()
    if command.startswith("install"):
        print(completion_script(answer.getvalue()), end="")
    else:
        print(" ".join(w for w in answer.getvalue().split() if f"={SCHEMA_PREFIX}" not in w))


if __name__ == "__main__":
    cli(sys.argv[1:])
