"""`hydra/sweeper=optuna`: a drop-in for hydra-optuna-sweeper 1.3 on Optuna 5, for any Hydra app.

    python my_app.py -m hydra/sweeper=optuna 'x=interval(-5, 5)' 'y=choice(1, 2)' hydra.sweeper.n_trials=20

The task function's return value is the trial's objective (a float, or one value per `direction`),
as in 1.3 (_search.py runs the search); the task may call `report(step, value)` each step so that
the pruner can stop it (_report.py). An application can bring its own sweep driver instead: a task
marked with `sweep_with("pkg.module.Driver")` has `Driver(sweeper).sweep(arguments)` run the sweep
with the same settings (src.train's scores each trial on its result.json: src/sweep_driver.py).

Where 1.3's defaults and an application driver's differ (storage, study name, n_jobs), a null
setting means 1.3's here and the driver's own there (docs/sweeps.md lists both).
"""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ft_optuna_sweeper import settings
from hydra_plugins.ft_optuna_sweeper.errors import SettingError

log = logging.getLogger(__name__)
DRIVER_ATTR = "__optuna_sweep_driver__"
# Keys only an application's driver reads (src.train's): refused for a task scored by its return value.
DRIVER_ONLY = {"objectives": "the task's return value is the objective; say which way with hydra.sweeper.direction",
               "rerun_seeds": "it is src.train's", "rerun_overrides": "it is src.train's",
               "worker_index": "workers sharing one budget are src.train's; here each invocation runs n_trials"}


def sweep_with(driver: str) -> Callable[[TaskFunction], TaskFunction]:
    """Mark a task function (under @hydra.main) as swept by `driver`, a dotted path to a class built
    with the sweeper and whose `sweep(arguments)` runs the sweep."""
    def mark(task: TaskFunction) -> TaskFunction:
        setattr(task, DRIVER_ATTR, driver)
        return task
    return mark


def _plain(node: Any) -> Any:
    """A config node (Hydra hands the sweeper DictConfig and ListConfig) as plain dicts and lists."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _grid(params: dict[str, dict[str, Any]], custom_search_space: str | None) -> dict[str, list[Any]]:
    """A GridSampler's grid: every value of every searched key. Its points are listed before any trial, so
    what a custom_search_space hook suggests has no place on it: Optuna's grid refuses it at the first
    trial (a traceback, and failed trials in a stored study); refused here in one line instead."""
    from hydra_plugins.ft_optuna_sweeper.space import grid_choices

    if custom_search_space:
        raise SettingError(f"hydra.sweeper.custom_search_space={custom_search_space}: hydra/sweeper/sampler=grid "
                           "lists its points from hydra.sweeper.params before any trial, and a hook's parameters are "
                           "not on it: give them in hydra.sweeper.params as choice or range, or use another sampler")
    return {k: grid_choices(k, p) for k, p in params.items()}


class OptunaSweeper(Sweeper):
    """Hydra's Sweeper interface: 1.3's search for any task, or the task's own driver."""

    def __init__(self, sampler: Any, direction: Any = None, storage: str | None = None, study_name: str | None = None,
                 n_trials: int = 20, n_jobs: int | None = None, max_failure_rate: float = 0.0,
                 max_failed: int | None = None, search_space: Any = None, custom_search_space: str | None = None,
                 params: Any = None, worker_index: int | None = None, heartbeat_s: int = 20, grace_s: int = 60,
                 pruner: Any = None, objectives: Any = None, rerun_seeds: Any = (), rerun_overrides: Any = (),
                 **unknown: Any) -> None:
        self.sampler_cfg, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate, self.max_failed = n_trials, n_jobs, max_failure_rate, max_failed
        self.search_space, self.custom_search_space, self.params = search_space, custom_search_space, params
        self.worker_index, self.heartbeat_s, self.grace_s, self.pruner = worker_index, heartbeat_s, grace_s, pruner
        self.objectives, self.rerun_seeds, self.rerun_overrides = objectives, rerun_seeds, rerun_overrides
        # `+hydra.sweeper.KEY=...` reaches here too: refused (one line) when the sweep starts
        self.unknown = unknown
        self.allowed = inspect.signature(OptunaSweeper).parameters.keys() - {"unknown"}
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> Any:
        driver = getattr(self.task_function, DRIVER_ATTR, None)
        if driver is not None:
            from hydra.utils import get_class

            return get_class(driver)(self).sweep(arguments)
        from hydra_plugins.ft_optuna_sweeper import ending

        # every setting checked before the first trial; a bad one, Ctrl-C or SIGTERM: one line, an exit code
        return ending.run(lambda: self._search(arguments))

    def _check(self) -> None:
        """The settings a task scored by its return value takes, each refused in one line."""
        settings.check_unknown(self.unknown, self.allowed)
        for key, why in DRIVER_ONLY.items():
            if self.__dict__[key]:
                raise SettingError(f"hydra.sweeper.{key} is not a setting for this app ({why})")
        settings.check_names(self.storage, self.study_name)
        for key, value, low in (("n_trials", self.n_trials, 1), ("n_jobs", self.n_jobs, 1), ("max_failed", self.max_failed, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise SettingError(f"hydra.sweeper.{key}={value!r} must be an integer >= {low}")
        rate = self.max_failure_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise SettingError(f"hydra.sweeper.max_failure_rate={rate!r} must be a number in [0, 1]")

    def directions(self) -> list[str]:
        """`direction` as a list of Optuna's names; null: minimize (1.3's default)."""
        given = _plain(self.direction)
        listed = ["minimize"] if given is None else given if isinstance(given, list) else [given]
        names = [str(getattr(d, "name", d)).lower() for d in listed]
        if not names or any(n not in ("minimize", "maximize") for n in names):
            raise SettingError(f"hydra.sweeper.direction={given!r}: each must be minimize or maximize")
        return names

    def _search(self, arguments: list[str]) -> None:
        import optuna

        from hydra_plugins.ft_optuna_sweeper import _report as report, _search as search
        from hydra_plugins.ft_optuna_sweeper.prune_spec import PruneSpec
        from hydra_plugins.ft_optuna_sweeper._pruners import optuna_pruner, resolve
        from hydra_plugins.ft_optuna_sweeper.space import param_override, split_space

        self._check()
        custom = settings.custom_hook(self.custom_search_space) if self.custom_search_space else None
        directions = self.directions()
        spec = PruneSpec.from_dict(_plain(self.pruner) if self.pruner is not None else {})
        mode = resolve(spec, len(directions))
        given = _plain(self.params)
        from_config = search.space_from_config(_plain(self.search_space), given)
        swept, fixed = split_space([param_override(k, v) for k, v in (given or {}).items()] + list(arguments),
                                   config_loader=self.hydra_context.config_loader)
        fixed_keys = {f.split("=", 1)[0] for f in fixed}
        params = {k: v for k, v in (from_config | swept).items() if k not in fixed_keys}  # the fixed value wins (1.3)
        self._check_composes(params, fixed)
        sampler_cfg = settings.sampler_config(self.sampler_cfg)
        settings.check_sampler(sampler_cfg, len(directions))
        n_trials, grid = int(self.n_trials), None
        if issubclass(settings.sampler_class(sampler_cfg), optuna.samplers.GridSampler):  # given its grid once built
            grid = _grid(params, self.custom_search_space)
        url = report.absolute_storage(self.storage)  # what the jobs open too, wherever they run
        file = report.storage_file(url)
        if file is not None and file.parent.resolve().is_relative_to(self.sweep_dir.resolve()):
            file.parent.mkdir(parents=True, exist_ok=True)  # in the sweep folder (${hydra.sweep.dir}/...), not made yet
        storage = report.open_storage(url)
        study = optuna.create_study(study_name=self.study_name, storage=storage, directions=directions,
                                    sampler=optuna.samplers.RandomSampler(), load_if_exists=True, pruner=optuna_pruner(mode, spec))
        study.sampler = search.sampler_for(study, sampler_cfg, grid)  # its seed moved on by the trials the study holds
        shown = report.shown_url(url) if url else "memory"  # no password in a line or the log
        search.check_resumed(study, directions, params, shown)
        log.info("study %s (%s) in %s: sampler %s, pruner %s", study.study_name, ", ".join(directions),
                 shown, type(study.sampler).__name__, mode)
        if grid is not None:  # the points a stored study has not run yet (Optuna's grid would run done ones again)
            n_trials = min(n_trials, search.grid_left(study, grid))
            log.info("a grid of %d points: n_trials=%d", math.prod(len(v) for v in grid.values()), n_trials)
        plan = search.Plan(study=study, params=params, fixed=fixed, n_trials=n_trials,
                           n_jobs=2 if self.n_jobs is None else int(self.n_jobs),
                           max_failure_rate=float(self.max_failure_rate), max_failed=int(self.max_failed or 0),
                           custom=custom, named=self.study_name is not None,
                           config=self.config, storage=self.storage,
                           one_by_one=str(self.config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"))
        key = str(self.sweep_dir.resolve())
        report.save_study_file(self.sweep_dir, study, url, mode, spec)
        report.LIVE[key] = (study, storage, mode, spec)
        try:
            search.run(plan, self._launch)
        finally:
            report.LIVE.pop(key, None)
        search.conclude(study, self.sweep_dir)

    def _check_composes(self, params: dict[str, dict[str, Any]], fixed: list[str]) -> None:
        """Every job's config composes: each key at each end of its range, each choice, with the fixed
        overrides (Hydra's validate_batch_is_legal). A key not in the config, a value of the wrong type or a
        config group option that does not exist is one line naming it now, not a failed trial and Hydra's
        report of it once trials have started (the stored study keeping the failed trial)."""
        from hydra.errors import HydraException

        from hydra_plugins.ft_optuna_sweeper.space import corners

        for corner in corners(params) or [[]]:
            try:
                self.validate_batch_is_legal([corner + fixed])
            except HydraException as err:  # Hydra's words, and its cause's (which names the key), in one line
                text = f"{err}\n{err.__cause__ or ''}".split("Config search path:")[0]
                said = [line.strip().rstrip(".:") for line in text.splitlines() if line.strip()
                        and not line.strip().startswith(("object_type=", "reference_type=", "full_key:"))]
                said = list(dict.fromkeys(said))  # the cause often repeats the message
                raise SettingError(f"the search space does not compose with this app's config at "
                                   f"{' '.join(corner + fixed)}: {'; '.join(said)}") from None

    def _launch(self, overrides: list[list[str]], first: int) -> Sequence[Any]:
        """Hydra's launcher, the jobs numbered from `first` (their trial numbers)."""
        return self.launcher.launch(overrides, initial_job_idx=first)
