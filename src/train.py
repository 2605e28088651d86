"""Hydra entrypoint: `python -m src.train [overrides]`, `python -m src.train -m strategy=frozen,full,layerwise`.

Hydra stops here. The composed config is turned into a typed `RunConfig` (one-line error on a bad
key or value) and handed to the plain `run()`.
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":
    # Ctrl-C or SIGTERM while the imports below load (seconds): one line, nothing started yet.
    def _stopped_while_starting(signum: int, _frame: object) -> None:
        print(f"interrupted by {'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'} while starting: nothing was run",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, _stopped_while_starting)
    signal.signal(signal.SIGTERM, _stopped_while_starting)

import atexit
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, RunConfig
from src.models import PretrainedWeightsError
from src.reporting.page import publish
from src.record.io import RESULT_FILE, SkippedFile, find_results, format_table, write_json
from src.training.run import finished_status, interrupt_on_sigterm, preflight, run

log = logging.getLogger(__name__)


CONF = Path(__file__).resolve().parents[1] / "conf"
_CLAIMED: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """`${unique_dir:outputs/${now:...}}`: the folder, created now, or `<folder>_1`, `_2`, ... if a run
    started in the same second has it. mkdir is atomic, so two processes never share a folder (Hydra's
    `${now:%H-%M-%S}` alone gives both the same one: one result lost, metrics interleaved). Cached:
    every resolution in this process, and Hydra's copies of the config for each job, get the same one."""
    if path not in _CLAIMED:
        base = Path(path)
        missing = [a for a in base.parents if not a.exists()]  # deepest first
        base.parent.mkdir(parents=True, exist_ok=True)
        _MADE_PARENTS.extend(missing)
        candidate, n = base, 0
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                n += 1
                candidate = base.with_name(f"{base.name}_{n}")
        _CLAIMED[path] = str(candidate)
    return _CLAIMED[path]


def release_unused_dirs() -> None:
    """Remove the folders `unique_dir` claimed that are still empty. OmegaConf also resolves a value
    when a config merges over it (a preset setting hydra.sweep.dir), which claims a folder no run
    uses; and checks that fail before Hydra starts leave theirs unused. A released folder is claimed
    afresh (atomically) if it is resolved again."""
    for template, folder in list(_CLAIMED.items()):
        try:
            Path(folder).rmdir()  # only an empty folder: never one a run has written to
        except OSError:
            continue
        del _CLAIMED[template]
    for parent in _MADE_PARENTS:  # deepest first: a parent empties once its child is gone
        try:
            parent.rmdir()
        except OSError:
            pass
    _MADE_PARENTS.clear()


_MADE_PARENTS: list[Path] = []
OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True, replace=True)
atexit.register(release_unused_dirs)


def check_overrides(args: list[str]) -> None:
    """One-line errors for what Hydra would report in a multi-line block: an unknown config-group
    option (`strategy=bogus`) or key (`trainer.bogus=1`). Values are RunConfig's to check."""
    import dataclasses
    import typing

    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    for arg in args:
        if arg.startswith(("-", "+", "~", "hydra")) or "=" not in arg:
            continue  # flags, appends/deletions (checked later by RunConfig), Hydra's own settings
        key, value = arg.split("=", 1)
        parts = key.split(".")
        if len(parts) == 1 and (CONF / key).is_dir():
            options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
            # a multirun lists options with commas; sweep functions (choice(...), glob(...)) are Hydra's
            values = [] if "(" in value else [v.strip() for v in value.split(",")]
            for v in values:
                if v not in options:
                    raise ConfigError(f"{key}={v} is not allowed (options: {', '.join(options)})")
            continue
        if parts[0] not in sections:
            raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(sorted(sections))})")
        tp: Any = hints[parts[0]]
        for depth, name in enumerate(parts[1:], start=1):
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"unknown key '{key}' ({'.'.join(parts[:depth])} has no sub-keys)")
            fields = {f.name for f in dataclasses.fields(tp)}
            if name not in fields:
                raise ConfigError(f"unknown key '{key}' (allowed in {'.'.join(parts[:depth])}: {', '.join(sorted(fields))})")
            tp = typing.get_type_hints(tp)[name]


def to_run_config(cfg: DictConfig, group: str | None = None) -> RunConfig:
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    data.pop("hydra", None)
    if group and isinstance(data.get("logger"), dict) and not data["logger"].get("group"):
        data["logger"]["group"] = group
    return RunConfig.from_dict(data)


def _multirun_group(hc) -> str | None:
    if hc.mode != RunMode.MULTIRUN:
        return None
    return sweep_group(Path(hc.sweep.dir))


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a multirun: the last parts of its folder (multirun/DATE/TIME -> multirun-DATE-TIME)."""
    return "-".join(sweep_dir.parts[-3:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    interrupt_on_sigterm()  # also in launcher processes (joblib, submitit) that never ran cli()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        run_cfg = to_run_config(cfg, _multirun_group(hc))
        result = run(run_cfg, out, run_name=out.name)
    except KeyboardInterrupt as err:
        stopped(err, out / RESULT_FILE if (out / RESULT_FILE).is_file() else None,
                Path(hc.sweep.dir) if multirun else None)
    except Exception as err:
        _record_failure(out, err)
        if full_error():
            raise
        if not multirun:
            user_error = isinstance(err, (ConfigError, PretrainedWeightsError))
            where = f" (recorded in {out / RESULT_FILE})" if (out / RESULT_FILE).is_file() and not user_error else ""
            print(f"error: {err if user_error else f'run failed: {type(err).__name__}: {err}'}{where}",
                  file=sys.stderr)
            sys.exit(2 if user_error else 1)
        # One failed job must not stop the others: its result.json says status "failed" and why;
        # the table at the end lists it and the exit code is non-zero.
        log.error("run failed (%s: %s); recorded in %s", type(err).__name__, err, out / RESULT_FILE)
        return float("nan")
    return float(result["val_acc"])


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1 (Hydra's own switch) shows the whole traceback instead of one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _record_failure(out: Path, err: BaseException) -> None:
    """A job that failed before run() could record anything still leaves a result.json saying so,
    so that no failed job is missing from a table. Never replaces an existing record."""
    if (out / RESULT_FILE).exists():
        return
    try:
        write_json(out / RESULT_FILE, {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                       "failed_epoch": -1, "run_dir": str(out)})
    except OSError:
        pass  # the folder itself cannot be written; the error line says why


def stopped(err: BaseException, record: Path | None, sweep_dir: Path | None) -> None:
    """Ctrl-C or SIGTERM: one line saying what was recorded and where, then exit 130 (SIGINT) or
    143 (SIGTERM), the shell's codes for a process ended by those signals."""
    term = "SIGTERM" in str(err)
    what = f"status 'interrupted' recorded in {record}" if record else "no run was in progress"
    kept = f"; finished runs are kept in {sweep_dir} (python -m src.report {sweep_dir})" if sweep_dir else ""
    print(f"interrupted by {'SIGTERM' if term else 'Ctrl-C'}: {what}{kept}", file=sys.stderr, flush=True)
    sys.exit(143 if term else 130)


class ComparisonTable(Callback):
    """Once the multirun ends: the comparison table of every run in the sweep directory, the HTML
    report in `<sweep dir>/report/`, and the study's summary run in W&B."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        skipped: list[SkippedFile] = []
        rows = find_results([sweep_dir], skipped)
        for bad in skipped:
            print(f"warning: skipped {bad}", file=sys.stderr, flush=True)
        unreadable = {b.path.parent: b.reason for b in skipped}
        # A job folder (Hydra writes .hydra/ into each) with no result.json: a job that died
        # without recording anything. It is listed, never silently left out.
        recorded = {d for d, _ in rows}
        lost = [d for d in sorted(p.parent for p in sweep_dir.glob("*/.hydra")) if d not in recorded]
        rows += [(d, {"status": "failed", "error": f"result.json {unreadable[d]}" if d in unreadable else "no result.json"})
                 for d in lost]
        if rows:
            print(f"\n{len(rows)} runs in {sweep_dir}:\n{format_table(rows)}", flush=True)
            try:  # only the logger section: the rest of `config` holds unresolved sweep values
                logger = RunConfig.from_dict({"logger": OmegaConf.to_container(config.logger, resolve=True)}).logger
            except ConfigError:  # the jobs have reported it already
                logger = None
            if logger is not None:
                page = publish([sweep_dir], sweep_dir / "report", logger, sweep_group(sweep_dir))
                if page:
                    print(f"report: {page}", file=sys.stderr, flush=True)
        failed = [d.name for d, r in rows if r.get("status") != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def expand_jobs(overrides: list[str], multirun: bool, config_name: str = "config") -> tuple[list[list[str]], DictConfig]:
    """The override list of every job Hydra will launch (the basic sweeper's expansion: sweep
    values from the command line and from `hydra.sweeper.params`), and the composed config with
    its `hydra` node (unresolved: resolving it would create the output folder)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    base = compose("config" if config_name is None else config_name, overrides=overrides if not multirun else fixed,
                   return_hydra_config=True)
    if not multirun:
        return [overrides], base
    sweeper = OmegaConf.select(base, "hydra.sweeper._target_", default="")
    if not str(sweeper).endswith("BasicSweeper"):
        return [fixed], base  # another sweeper picks the values itself: check what is fixed
    params = OmegaConf.to_container(base.hydra.sweeper.params, resolve=False) if base.hydra.sweeper.get("params") else {}
    everything = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    return BasicSweeper.split_arguments(parser.parse_overrides(everything), None)[0], base


def job_config(job: list[str], config_name: str, composed: dict[tuple[str, ...], DictConfig]) -> DictConfig:
    """The job's config as Hydra composes it, at a fraction of the cost for a large multirun: the
    defaults list (config groups, additions, deletions) is composed once per distinct choice, and
    plain `key=value` overrides are set on a copy (a 120-job grid composes 8 times, not 120).
    Hydra's own settings (hydra.*, hydra/...) do not change the job's config and are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(job)
    structural, values = [], []
    for text, override in zip(job, parsed):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        plain = not (override.is_add() or override.is_delete() or override.is_force_add()) and \
            not ("." not in key and (CONF / key).is_dir())
        (values if plain else structural).append((text, override))
    key = tuple(text for text, _ in structural)
    if key not in composed:
        composed[key] = compose(config_name, overrides=list(key))
    cfg = composed[key].copy()
    for _, override in values:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def _check_output_dir(hydra_cfg: DictConfig, multirun: bool) -> None:
    """The run (or multirun) folder can be created and written, and a fixed one holds no finished
    run that this one would overwrite. Only the part before the first interpolation is looked at:
    resolving `${unique_dir:...}` would create the folder."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = str(OmegaConf.to_container(hydra_cfg.sweep if multirun else hydra_cfg.run, resolve=False)["dir"])
    prefix = value.split("${", 1)[0]
    existing = Path(prefix or ".").absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={value}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={value}: cannot write in {existing} ({err.strerror or err})") from None
    if "${" in value:
        return
    finished = [path for path in sorted(Path(value).glob(f"*/{RESULT_FILE}" if multirun else RESULT_FILE))
                if finished_status(path)]
    if finished:
        raise ConfigError(f"{key}={value} already holds {len(finished)} finished run(s) ({finished[0]}); they are "
                          "kept: choose another folder or move them away")


def precheck(argv: list[str]) -> int:
    """Every job's configuration checked before Hydra creates a folder or job 0 trains: a value that
    cannot run in job 5 of 9 stops the multirun now, not after job 4. Returns the number of jobs
    checked (0 when Hydra is only asked for help, its config or shell completion)."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.cfg or args.shell_completion or args.info or args.config_path \
            or args.config_dir:
        return 0
    check_overrides(args.overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
            jobs, base = expand_jobs(list(args.overrides), args.multirun, args.config_name or "config")
            _check_output_dir(base.hydra, args.multirun)
            varying = {o.split("=", 1)[0] for job in jobs for o in job if sum(o in j for j in jobs) < len(jobs)}
            composed: dict[tuple[str, ...], DictConfig] = {}
            for number, job in enumerate(jobs):
                where = "" if len(jobs) == 1 else f"job {number} of {len(jobs)} ({' '.join(o for o in job if o.split('=', 1)[0] in varying)}): "
                try:
                    preflight(to_run_config(job_config(job, args.config_name or "config", composed)))
                except ConfigError as err:
                    raise ConfigError(f"{where}{err}") from None
                except (HydraException, OmegaConfBaseException) as err:
                    raise ConfigError(f"{where}{_one_line(err)}") from None
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line(err)) from None
    return len(jobs)


def cli(argv: list[str]) -> None:
    """`python -m src.train`: the checks, then Hydra. Ctrl-C and SIGTERM end it with one line."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt_on_sigterm()
    try:
        try:
            precheck(argv)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        finally:
            release_unused_dirs()
        main()
    except KeyboardInterrupt as err:
        stopped(err, None, None)


if __name__ == "__main__":
    cli(sys.argv[1:])
