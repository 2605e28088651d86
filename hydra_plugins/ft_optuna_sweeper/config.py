"""The sweeper's config, in hydra-optuna-sweeper 1.3's shape (`hydra.sweeper.{sampler, direction,
study_name, storage, n_trials, n_jobs, params}`), plus what that plugin never had: `objectives`
read from each job's result.json, `pruner`, `max_failed`, the heartbeat settings of a shared storage,
and `rerun_seeds` (the Pareto set re-run on more seeds, reported on test). 1.3's samplers: tpe,
random, cmaes, nsgaii, motpe (TPE, which is multi-objective in Optuna 5); grid is refused.

Kept free of heavy imports: Hydra imports every module of `hydra_plugins` when it scans for
plugins, in every Hydra application of this environment."""

# no `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.search.prune_spec import PruneSpec


@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """One objective only, and the `cmaes` package (checked before any job)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    consider_pruned_trials: bool = False
    use_separable_cma: bool = False


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """1.3's `motpe`: Optuna removed MOTPESampler in 4.0; TPESampler is multi-objective since 2.9."""

    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int = 10
    n_ei_candidates: int = 24


@dataclass
class GridSamplerConfig(SamplerConfig):
    """Registered so that `hydra/sweeper/sampler=grid` gets a one-line refusal naming it
    (settings.check_sampler), not Hydra's list of options: a grid does not fit an exact budget
    shared by workers."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # as in 1.3 (GridSampler needs a space); refused before it is built


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sampler reaches the sweeper as its config, not built: its settings are checked first
    # (settings.check_sampler), so that a bad one is one line and not Hydra's instantiation error.
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConfig = MISSING
    # maximize | minimize, or a list, one per objective; null: each objective's own direction.
    # Given, it must agree with the objectives (val_acc is maximised, train_flops minimised).
    direction: Any = None
    # What each trial is scored on, from its result.json (not the task function's return value).
    objectives: List[str] = field(default_factory=lambda: ["val_acc"])
    # null: sqlite in the sweep folder. Resume: the same storage and study_name. Several workers:
    # journal:/path/study.log or postgresql+psycopg://user@host/db.
    storage: Optional[str] = None
    study_name: Optional[str] = None  # null: "sweep" (src.search.launched.DEFAULT_STUDY)
    # Trials that complete or are pruned, exactly, however many workers share the study.
    n_trials: int = 20
    # Trials handed to the launcher at once (the joblib launcher runs them in parallel).
    n_jobs: int = 1
    # Stop after this many failed trials in one invocation (0: never).
    max_failed: int = 5
    # Several workers on one storage: each one's index (0, 1, ...). With a seeded sampler, each worker's
    # seed derives from the study's seed and this index, so the same command gives the same trials.
    # null: SLURM's array task id where there is one, else 0.
    worker_index: Optional[int] = None
    heartbeat_s: int = 20
    grace_s: int = 60
    pruner: PruneSpec = field(default_factory=PruneSpec)  # the one definition: src/search/prune_spec.py
    # key: sweep value (interval(1,10), tag(log, interval(...)), range(0,8), choice(...)) or a fixed value
    params: Optional[Dict[str, Any]] = None
    # After the search: every Pareto-optimal configuration again on these seeds, reported on test
    # as mean +/- 95% CI (<sweep dir>/pareto_rerun.json); rerun_overrides apply to those runs only.
    rerun_seeds: List[int] = field(default_factory=list)
    rerun_overrides: List[str] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="ft_optuna_sweeper")
for _name, _node in (("tpe", TPESamplerConfig), ("random", RandomSamplerConfig), ("nsgaii", NSGAIISamplerConfig),
                     ("cmaes", CmaEsSamplerConfig), ("motpe", MOTPESamplerConfig), ("grid", GridSamplerConfig)):
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="ft_optuna_sweeper")
