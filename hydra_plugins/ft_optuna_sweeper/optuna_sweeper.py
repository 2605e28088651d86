"""`hydra/sweeper=optuna`: hydra-optuna-sweeper 1.3's config and command-line syntax on Optuna 5,
searching with src.search (src/search/launched.py says how a trial goes through Hydra's launcher).

    python -m src.train -m hydra/sweeper=optuna 'strategy.lr_decay=tag(log, interval(1,10))' \
        'strategy.unfreeze_depth=range(0,8)' hydra.sweeper.n_trials=20

Sweep values, from the command line or `hydra.sweeper.params`, become Optuna distributions as in
hydra-optuna-sweeper 1.3: `interval(a,b)` a float (an int when both ends are ints), `tag(log,
interval(a,b))` the same on a log scale, `choice(...)` categorical, `range(a,b[,step])` an int (a
float with a float step). Unlike 1.3, `range` ends before `b`, as Python's range and Hydra's basic
sweeper do: `range(0,8)` is 0..7. A plain value is fixed for every trial.

Errors in the settings are one line (ConfigError) before any job starts, as for `src.sweep`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def param_spec(override: Override, text: str) -> dict[str, Any] | None:
    """A sweep override as src.search.sweep's param spec ({type, low, high, log, step} or
    {type: categorical, choices}); None for a plain (fixed) value."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return {"type": "categorical", "choices": list(override.sweep_iterator(transformer=Transformer.encode))}
    if isinstance(value, RangeSweep):
        numbers = list(override.sweep_iterator())
        if not numbers:
            from src.config import ConfigError

            raise ConfigError(f"{text}: the range holds no value")
        kind = "float" if any(isinstance(v, float) for v in (value.start, value.stop, value.step)) else "int"
        return {"type": kind, "low": numbers[0], "high": numbers[-1], "step": value.step}
    if isinstance(value, IntervalSweep):
        kind = "int" if isinstance(value.start, int) and isinstance(value.end, int) else "float"
        return {"type": kind, "low": value.start, "high": value.end, "log": "log" in value.tags}
    from src.config import ConfigError

    raise ConfigError(f"{text}: not a sweep Optuna can sample "
                      "(interval, tag(log, interval), range, choice)")


def split_space(arguments: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Overrides (hydra.sweeper.params' first, then the command line's) as the search space and the
    fixed overrides every job gets. A key given twice: the later one wins, as in Hydra."""
    params: dict[str, dict[str, Any]] = {}
    fixed: dict[str, str] = {}
    for text, override in zip(arguments, OverridesParser.create().parse_overrides(arguments)):
        key = override.get_key_element()
        spec = param_spec(override, text)
        params.pop(key, None)
        fixed.pop(key, None)
        if spec is None:
            fixed[key] = text
        else:
            params[key] = spec
    return params, list(fixed.values())


@contextlib.contextmanager
def outside_hydra() -> Any:
    """The running Hydra set aside for a while: src.gate composes training configs with Hydra's
    compose API (the same checks as `src.sweep`), which refuses to start inside a running app."""
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if running is not None:
            GlobalHydra.instance().initialize(running)


class OptunaSweeper(Sweeper):
    """Hydra's Sweeper interface over src.search.launched.search."""

    def __init__(self, sampler: Any, direction: Any, objectives: Any, storage: str | None, study_name: str | None,
                 n_trials: int, n_jobs: int, max_failed: int, heartbeat_s: int, grace_s: int, pruner: Any,
                 params: Any) -> None:
        self.sampler_cfg, self.direction, self.objectives = sampler, direction, objectives
        from src.search.launched import DEFAULT_STUDY

        self.storage, self.n_trials, self.n_jobs = storage, n_trials, n_jobs
        self.study_name = study_name or DEFAULT_STUDY
        self.max_failed, self.heartbeat_s, self.grace_s = max_failed, heartbeat_s, grace_s
        self.pruner, self.params = pruner, params

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        from src.search import launched
        from src.search.sweep import OBJECTIVES, format_pareto, format_summary, pareto_rows, summarise
        from src.record.io import write_json

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # Heartbeats with ask/tell: we run the heartbeat thread ourselves around each launch.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the default storage lives in it
        from src.config import ConfigError

        try:
            with outside_hydra():
                search, groups, mode = self._open(arguments)
        except ConfigError as err:  # one line and exit 2, as for every other setting (not Hydra's traceback)
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        launched.LIVE[(self._url(), self.study_name)] = search.study
        try:
            failed = launched.search(search, self._launch, groups)
        finally:
            launched.LIVE.pop((self._url(), self.study_name), None)
        study, objectives = search.study, search.objectives
        rows = pareto_rows(study, objectives)
        write_json(self.sweep_dir / "pareto.json", rows)
        summary = summarise(study, objectives, int(self.config.trainer.epochs)) | {"pruner": mode}
        write_json(self.sweep_dir / "summary.json", summary)
        log.info("Pareto set of study %s (%d trials; %s):\n%s", study.study_name, len(rows),
                 ", ".join(f"{OBJECTIVES[o]} {o}" for o in objectives), format_pareto(rows))
        log.info("%s", format_summary(summary))
        if failed:
            print(failed, file=sys.stderr, flush=True)
            sys.exit(1)
        return rows

    def _url(self) -> str:
        from src.search.launched import storage_url

        return storage_url(self.storage, self.sweep_dir)

    def _open(self, arguments: list[str]) -> tuple[Any, int, str]:
        """Every setting checked (one line each), then the study created or resumed."""
        from src.config import ConfigError
        from src.gate import check_overrides, compose_train, to_run_config
        from src.search import launched
        from src.search.pruning import PruneSpec, optuna_pruner, resolve
        from src.search.sweep import (OBJECTIVES, check_objectives, check_space, claim_out_dir, make_storage,
                                      open_study, requeue_interrupted, study_identity)
        from src.training.run import preflight

        given = OmegaConf.to_container(self.params, resolve=False) if self.params else {}
        params, fixed = split_space([f"{k}={v}" for k, v in (given or {}).items()] + list(arguments))
        if not params:
            raise ConfigError("hydra/sweeper=optuna needs a search space: a sweep value such as "
                              "'strategy.lr_decay=interval(1,10)' on the command line or in hydra.sweeper.params")
        check_overrides(fixed)
        base_cfg = to_run_config(compose_train(fixed))
        groups = preflight(base_cfg)
        check_space(params, fixed, groups)
        objectives = check_objectives(list(self.objectives), base_cfg, params)
        directions = [OBJECTIVES[o] for o in objectives]
        if self.direction is not None:
            given_dirs = [str(d) for d in self.direction] if OmegaConf.is_list(self.direction) or \
                isinstance(self.direction, list) else [str(self.direction)]
            if given_dirs != directions:
                raise ConfigError(f"hydra.sweeper.direction={given_dirs} does not fit hydra.sweeper.objectives="
                                  f"{objectives} ({directions}); leave direction unset to take the objectives' own")
        spec = PruneSpec.from_dict(OmegaConf.to_container(self.pruner) if self.pruner is not None else {})
        mode = resolve(spec, objectives)
        url = self._url()
        where = url.split("@")[-1]
        storage = make_storage(url, int(self.heartbeat_s), int(self.grace_s))
        study = open_study(storage, self.study_name, directions, study_identity(base_cfg, params, objectives),
                           optuna_pruner(mode, spec, base_cfg.trainer.epochs), where, metric_names=objectives)
        claim_out_dir(self.sweep_dir, study, where)
        # Hydra hands the sampler built; it is built again from its config, with the seed moved on.
        sampler_cfg = OmegaConf.to_container(self.config.hydra.sweeper.sampler, resolve=True)
        study.sampler = instantiate(self._seeded(sampler_cfg, study))
        requeue_interrupted(study)
        log.info("study %s (%s) in %s: %d of %d trials done; pruner %s", self.study_name, ", ".join(
            f"{d} {o}" for d, o in zip(directions, objectives)), where, len(study.get_trials(
                deepcopy=False, states=launched.DONE)), self.n_trials, mode)
        search = launched.Search(study=study, params=params, fixed=fixed, objectives=objectives,
                                 total=int(self.n_trials), n_jobs=max(int(self.n_jobs), 1),
                                 max_failed=int(self.max_failed), poll_s=min(float(self.heartbeat_s), 5.0))
        return search, groups, mode

    def _seeded(self, sampler: Any, study: Any) -> Any:
        """A seeded sampler restarted on a resumed study would propose the same parameters again:
        the seed moves on with the trials already there (src.search.sweep._open does the same)."""
        if isinstance(sampler, dict) and sampler.get("seed") is not None:
            seed = int(sampler["seed"]) + len(study.get_trials(deepcopy=False))
            if self.storage:  # workers sharing a study must not propose the same trials
                seed = hash((seed, os.getpid())) % 2**31
            sampler = dict(sampler, seed=seed)
        return sampler

    def _launch(self, overrides: list[list[str]], first: int) -> Sequence[Path | None]:
        returns = self.launcher.launch(overrides, initial_job_idx=first)
        return [Path(str(r.hydra_cfg.hydra.runtime.output_dir)) if r.hydra_cfg is not None else None
                for r in returns]
