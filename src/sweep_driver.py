"""src.train's side of `hydra/sweeper=optuna`: the sweep driver behind `make sweep` (`python -m src.train -m
sweep=default`) and `python -m src.train -m hydra/sweeper=optuna ...`.

The plugin (hydra_plugins/ft_optuna_sweeper) sweeps any Hydra app, scoring a trial by its task's
return value. src.train's task declares this driver instead (`sweep_with` in src/train.py), and the
plugin hands it the sweeper's settings: a study searched with src.search (src/search/launched.py),
each trial scored on its result.json's objectives, with an exact budget shared by workers,
heartbeats and retry, pruning from each epoch, the study's identity, and re-runs of the Pareto set.

Sweep values are parsed by the plugin (hydra_plugins/ft_optuna_sweeper/space.py, as 1.3 does). One
addition: `groups` as a bound of a range or interval is the model's number of backbone layer groups
(`range(0, groups)`: every unfreeze depth the model has).

Errors in the settings are one line (ConfigError, exit 2) before any job starts. Ctrl-C or SIGTERM
ends the sweep with one line saying what the study recorded and how to resume (exit 130 / 143;
src/exits.py decides how the process ends). Imports of the training code are inside the methods:
the sweeper is built in every `src.train -m` process, whatever it sweeps.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.ft_optuna_sweeper import settings
from hydra_plugins.ft_optuna_sweeper import space as plugin_space

log = logging.getLogger(__name__)
# Settings of the plugin this driver does not read; given, they are refused (one line each).
NOT_HERE = {"search_space": "give the space in hydra.sweeper.params",
            "custom_search_space": "every searched key is a sweep value in hydra.sweeper.params"}


def _plain(node: Any) -> Any:
    """A config node (Hydra hands the sweeper DictConfig and ListConfig) as plain dicts and lists."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node



_BOUNDED = re.compile(r"\b(range|interval)\s*\(")
_GROUPS = re.compile(r"\bgroups\b")


def with_groups(text: str, groups: int) -> str:
    """`key=range(0, groups)` with the model's group count for `groups` (only inside a range or
    interval, so a choice of the word stays as it is)."""
    key, eq, value = text.partition("=")
    return key + eq + _GROUPS.sub(str(groups), value) if eq and _BOUNDED.search(value) else text



# `groups` before the model's count is known: large, so that a range such as range(2, groups) still
# parses (Hydra refuses range(2, 1)); that first split only finds the fixed overrides and the model.
UNKNOWN_GROUPS = 1_000_000


def split_space(arguments: list[str], groups: int | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The plugin's split (hydra.sweeper.params' overrides first, then the command line's), with
    `groups` in a range or interval read as the model's group count. Without it (None), a first look
    whose ranges are checked, and a key both swept and fixed warned about, once split with it."""
    final = groups is not None
    return plugin_space.split_space([with_groups(a, groups if final else UNKNOWN_GROUPS) for a in arguments],
                                    final=final)


@contextlib.contextmanager
def outside_hydra() -> Any:
    """The running Hydra set aside for a while: src.gate composes training configs with Hydra's
    compose API (the same checks as `src.train`'s precheck), which refuses to start inside a running app."""
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if running is not None:
            GlobalHydra.instance().initialize(running)


# Settings that decide which images and labels a trial's train/val/test hold (src.data.identity): a
# search over one of them has no one dataset to record.
DATA_KEYS = tuple(f"dataset.{k}" for k in ("kind", "name", "root", "tv_name", "flag", "val_fraction", "test_fraction",
                                            "split_seed"))


def _data_identity(base: Any, params: dict[str, Any]) -> str | None:
    """The identity of the data every trial trains on, for the study to record and check on resume;
    None when the search moves the data itself or its files cannot be listed (the trial says why)."""
    from src.data.identity import dataset_identity_or_none

    if any(key in DATA_KEYS for key in params):
        return None
    return dataset_identity_or_none(base.dataset)


def _weights_identity(base: Any, params: dict[str, Any]) -> str | None:
    """The identity of model.checkpoint_path's file, for the study to record and check on resume;
    None when the search moves the model itself or there is no such file."""
    from src.models import weights_identity

    if any(key.startswith("model.") for key in params):
        return None
    return weights_identity(base.model)


@dataclass(frozen=True)
class Space:
    """The search space and what every trial gets, checked: `params` (src.search.space's specs),
    the `fixed` overrides, the model's layer `groups` and the composed base config (a RunConfig)."""

    params: dict[str, dict[str, Any]]
    fixed: list[str]
    groups: int
    base: Any


class ProjectSweep:
    """One sweep of src.train: the sweeper's settings (hydra_plugins/ft_optuna_sweeper/optuna_sweeper.py),
    with src.train's defaults where they are null, searched with src.search."""

    def __init__(self, sweeper: Any) -> None:
        self.__dict__.update(vars(sweeper))  # the settings, the launcher, the config, the sweep folder
        self.objectives = _plain(self.objectives) if self.objectives is not None else ["val_acc"]
        self.n_jobs = 1 if self.n_jobs is None else self.n_jobs
        self.max_failed = 5 if self.max_failed is None else self.max_failed
        from src.search.job import DEFAULT_STUDY

        self.given_study_name = self.study_name
        self.study_name = self.study_name or DEFAULT_STUDY
        self.rerun_seeds, self.rerun_overrides = _plain(self.rerun_seeds or []), _plain(self.rerun_overrides or [])

    def sweep(self, arguments: list[str]) -> Any:
        """Check every setting, search, then the Pareto set, the summary and the re-runs. How the
        process ends is src.exits.run_task's: this raises what happened with what the study holds
        (a user error, max_failed failed trials or a failed re-run, a full disk, Ctrl-C or SIGTERM)."""
        import optuna

        from src import exits
        from src.record.io import OutOfRoom, no_room, no_room_line
        from src.search import launched

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # Heartbeats with ask/tell: we run the heartbeat thread ourselves around each launch.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        # As Hydra does before each job: the checks below compose trial configs with the run's
        # hydra.searchpath (src.gate.compose_train), so a preset or strategy kept there is found.
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(copy.deepcopy(self.config))
        search = None
        try:
            with outside_hydra():
                space = self._space(arguments)
                search, mode = self._open(space)
                if search is None:  # a dry run: every setting checked, no study opened; what trials will cost
                    from src.search.dry_run import corners, report

                    found, costly = corners(space.params, space.fixed, space.groups)
                    print(report(found, costly, list(space.params), int(self.n_trials)), flush=True)
                    return None
            return self._conclude(search, mode, launched.search(search, self._launch, space.groups))
        except OutOfRoom as err:  # a trial's job met a full disk; its line names the file and the setting
            raise OutOfRoom(f"{err.line}; {self._recorded(search)}", err.code) from None
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM, here or in a job
            raise exits.stopped(err, self._recorded(search)) from None
        except Exception as err:
            if exits.is_user_error(err):  # one line and exit 2, not Hydra's report of an Exception
                raise exits.UserError(str(err)) from err
            full = no_room(err, sqlite=self._sqlite_file())
            if full is None:
                raise
            raise OutOfRoom(f"{no_room_line(full, self._places())}; {self._recorded(search)}") from None

    def _recorded(self, search: Any) -> str:
        """What the study holds, and how to go on: for the line that ends the sweep."""
        from src.search import launched

        if search is None:
            return "nothing was recorded (no trial had started)"
        try:
            return launched.recorded(search.study, search.total, self._where())
        except Exception:  # noqa: BLE001  (the storage itself may be what cannot be read now)
            return f"the study is in {self._where()}; run the same command to resume"

    def _places(self) -> list[tuple[Path, str]]:
        """Where the sweep writes, each with the setting that chose it (src.record.io.no_room_line)."""
        from src.gate import output_setting

        key, value = output_setting(self.config.hydra, True, OmegaConf.select(self.config, "paths.output_dir", default=None))
        places = [(self.sweep_dir, f"{key}={value}")]
        if self.storage and self._sqlite_file() is not None:
            places.append((self._sqlite_file(), f"hydra.sweeper.storage={self.storage}"))
        return places

    def _sqlite_file(self) -> Path | None:
        """The study's storage file (sqlite or journal), None for a database server."""
        url = self._url()
        if url.startswith("journal:"):
            return Path(url.removeprefix("journal:"))
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def _conclude(self, search: Any, mode: str, failed: str | None) -> Any:
        """The Pareto set and the summary, printed and saved; the Pareto set re-run on rerun_seeds."""
        from src.exits import Failed
        from src.record.io import write_json
        from src.search.rerun import format_rerun, rerun_pareto
        from src.search.results import format_pareto, format_summary, pareto_rows, summarise
        from src.training.run import DivergedError

        study, objectives = search.study, search.objectives
        rows = pareto_rows(study, objectives, self.sweep_dir)
        write_json(self.sweep_dir / "pareto.json", rows)
        # Which metric each front is on: this one selects on validation, the report's shows test.
        print(f"\nPareto set of study {study.study_name} on {' vs '.join(objectives)} ({len(rows)} trials; the "
              f"report's front is on test_acc vs train_flops):\n{format_pareto(rows)}", flush=True)
        summary = summarise(study, objectives, int(self.config.trainer.epochs), self.sweep_dir) | {"pruner": mode}
        write_json(self.sweep_dir / "summary.json", summary)
        print(format_summary(summary), flush=True)
        if failed:
            raise Failed(failed)
        if self.rerun_seeds and rows:
            try:
                with outside_hydra():
                    rerun = rerun_pareto(study, rows, search.fixed + self.rerun_overrides, self.rerun_seeds,
                                         self.sweep_dir / "rerun", study.study_name)
            except DivergedError as err:
                raise Failed(str(err)) from err
            write_json(self.sweep_dir / "pareto_rerun.json", rerun)
            print(f"\nPareto set re-run on seeds {self.rerun_seeds} (mean ± 95% CI):\n{format_rerun(rerun)}\n"
                  f"saved {self.sweep_dir / 'pareto_rerun.json'}", flush=True)
        return rows

    def _url(self) -> str:
        from src.search.job import storage_url

        return storage_url(self.storage, self.sweep_dir)

    def _where(self) -> str:
        from hydra_plugins.ft_optuna_sweeper._report import shown_url

        return shown_url(self._url())  # no password in a message

    def _space(self, arguments: list[str]) -> Space:
        """The sweeper's settings and the search space, checked (one line each)."""
        from src.config import ConfigError
        from src.gate import check_overrides, to_run_config
        from src.search.space import check_space
        from src.training.run import preflight

        self._check_keys()
        settings.check_numbers({k: getattr(self, k) for k in ("n_trials", "n_jobs", "max_failed", "heartbeat_s", "grace_s")})
        settings.check_names(self.storage, self.given_study_name)
        given = OmegaConf.to_container(self.params, resolve=False) if self.params else {}
        everything = [plugin_space.param_override(k, v) for k, v in (given or {}).items()] + list(arguments)
        params, fixed = split_space(everything)  # split again below, with the model's groups
        if not params:
            raise ConfigError("hydra/sweeper=optuna needs a search space: a sweep value such as "
                              "'strategy.lr_decay=interval(1,10)' on the command line or in hydra.sweeper.params")
        base = check_overrides(fixed)
        base_cfg = to_run_config(base)
        groups, composed = preflight(base_cfg), fixed
        params, fixed = split_space(everything, groups)  # `groups` in a range is the model's own count
        check_space(params, fixed, groups, base if fixed == composed else None)
        return Space(params, fixed, groups, base_cfg)

    def _open(self, space: Space) -> tuple[Any, str]:
        """The rest of the settings checked (one line each), then the study created or resumed; with
        trainer.dry_run=true, nothing is opened or written (the search is None)."""
        from src.config import ConfigError
        from src.gate import check_overrides
        from src.search import launched
        from src.search.pruning import PruneSpec, optuna_pruner, resolve
        from src.search.rerun_settings import check_rerun, search_seeds
        from hydra_plugins.ft_optuna_sweeper._search import requeue_interrupted
        from src.search.results import DONE
        from src.search.space import OBJECTIVES, check_objectives
        from src.search.storage import make_storage, storage_file
        from src.search.study import claim_or_forget, open_study, study_exists, study_identity

        params, fixed, groups, base_cfg = space.params, space.fixed, space.groups, space.base
        spec = PruneSpec.from_dict(_plain(self.pruner) if self.pruner is not None else {})
        objectives = check_objectives(list(self.objectives), base_cfg, params)
        directions = [OBJECTIVES[o] for o in objectives]
        self._check_direction(directions, objectives)
        sampler_cfg = settings.sampler_config(self.sampler_cfg)
        if str(sampler_cfg.get("_target_", "")).endswith("GridSampler"):
            raise ConfigError("hydra/sweeper/sampler=grid is not supported by src.train's sweep: a grid has no place in "
                              "an exact budget shared by workers; use tpe, random or nsgaii (or a multirun: -m key=a,b,c)")
        settings.check_sampler(sampler_cfg, len(objectives))
        check_rerun(self.rerun_seeds, self.rerun_overrides, search_seeds(base_cfg.seed, params), params)
        settings.worker_index(self.worker_index)  # checked before the study is opened
        if self.rerun_seeds:
            check_overrides(fixed + self.rerun_overrides)
        mode = resolve(spec, objectives)
        if space.base.trainer.dry_run:
            return None, mode
        made, file = not self.sweep_dir.exists(), storage_file(self._url())
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the default storage lives in it
        try:
            new_file = file if file is not None and not file.exists() else None
            storage = make_storage(self._url(), int(self.heartbeat_s), int(self.grace_s))
            identity = study_identity(base_cfg, params, objectives, _data_identity(base_cfg, params),
                                      _weights_identity(base_cfg, params))
            made_now = not study_exists(storage, self.study_name)
            study = open_study(storage, self.study_name, directions, identity,
                               optuna_pruner(mode, spec, base_cfg.trainer.epochs), self._where(), metric_names=objectives)
            claim_or_forget(self.sweep_dir, study, self._where(), storage, made_now, new_file)
        except BaseException:  # a storage that cannot be opened left an empty sweep folder behind (or sweeps-out/STUDY)
            if made and not any(self.sweep_dir.iterdir()):
                with contextlib.suppress(OSError):  # another worker's files arrived meanwhile: its folder now
                    self.sweep_dir.rmdir()
            raise
        # The sampler is built here, from its checked config, with the seed moved on.
        study.sampler = instantiate(self._seeded(sampler_cfg, study))
        requeue_interrupted(study)
        log.info("study %s (%s) in %s: %s; pruner %s", self.study_name, ", ".join(
            f"{d} {o}" for d, o in zip(directions, objectives)), self._where(), launched.trials_done(len(study.get_trials(
                deepcopy=False, states=DONE)), int(self.n_trials)), mode)
        search = launched.Search(study=study, storage=storage, params=params, fixed=fixed, objectives=objectives,
                                 total=int(self.n_trials), n_jobs=max(int(self.n_jobs), 1),
                                 max_failed=int(self.max_failed), poll_s=min(float(self.heartbeat_s), 5.0),
                                 worker=settings.worker_index(self.worker_index) or 0, sweep_dir=self.sweep_dir)
        return search, mode

    def _check_keys(self) -> None:
        """Keys the plugin has and this driver does not read: refused, one line each, not ignored."""
        from src.config import ConfigError

        from src.search.job import SWEEPER_TARGET

        settings.check_unknown(self.unknown, self.allowed)
        config = getattr(self, "config", None)  # None: built without Hydra's setup (a test)
        target = SWEEPER_TARGET if config is None else OmegaConf.select(config, "hydra.sweeper._target_", default=SWEEPER_TARGET)
        if target != SWEEPER_TARGET:  # the jobs find their trial (pruning, run_dir) by this name
            raise ConfigError(f"hydra.sweeper._target_={target}: src.train's trials need {SWEEPER_TARGET} (drop the "
                              "_target_ line: hydra/sweeper=optuna sets it)")
        for key, instead in NOT_HERE.items():
            if getattr(self, key) is not None:
                raise ConfigError(f"hydra.sweeper.{key} is not used by src.train's sweep: {instead}")
        if self.max_failure_rate != 0.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not used by src.train's sweep: "
                              "it stops after hydra.sweeper.max_failed failed trials")

    def _check_direction(self, directions: list[str], objectives: list[str]) -> None:
        from src.config import ConfigError

        if self.direction is None:
            return
        given = [str(d) for d in self.direction] if OmegaConf.is_list(self.direction) or \
            isinstance(self.direction, list) else [str(self.direction)]
        if given != directions:
            raise ConfigError(f"hydra.sweeper.direction={given} does not fit hydra.sweeper.objectives="
                              f"{objectives} ({directions}); leave direction unset to take the objectives' own")

    def _seeded(self, sampler: Any, study: Any) -> Any:
        """A seeded sampler restarted on a resumed study would propose the same parameters again,
        and workers sharing a study with one seed would propose the same trials: each worker's seed
        derives from the study's seed, the worker's index (settings.worker_index) and the number of
        trials that worker asked already. Worker 0 keeps the one-worker rule (seed + trials so far).
        A worker on a shared storage whose index is not known mixes in its process id instead: never
        the same trials as another worker, but not reproducible (said once)."""
        if not (isinstance(sampler, dict) and sampler.get("seed") is not None):
            return sampler
        index = settings.worker_index(self.worker_index)
        if index is None and self.storage:
            log.warning("several workers may share this study: the sampler's seed is mixed with the process id, so "
                        "the trials are not reproducible; give each worker hydra.sweeper.worker_index=0, 1, ...")
        worker = 0 if index is None else index
        own = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker", 0) == worker)
        if index is None and self.storage:
            mix = [int(sampler["seed"]), worker, own, os.getpid()]
        elif worker == 0:  # the one-worker rule, as for any app's resumed study
            return dict(settings.seed_moved_on(sampler, own))
        else:
            mix = [int(sampler["seed"]), worker, own]
        import numpy as np  # numpy's seed mixer: independent streams per (seed, worker, resume point)

        return dict(sampler, seed=int(np.random.SeedSequence(mix).generate_state(1)[0]))

    def _launch(self, overrides: list[list[str]], first: int) -> Sequence[Path | None]:
        returns = self.launcher.launch(overrides, initial_job_idx=first)
        return [Path(str(r.hydra_cfg.hydra.runtime.output_dir)) if r.hydra_cfg is not None else None
                for r in returns]
