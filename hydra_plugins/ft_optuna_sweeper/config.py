"""The sweeper's config: hydra-optuna-sweeper 1.3's schema (`hydra.sweeper.{sampler, direction,
study_name, storage, n_trials, n_jobs, max_failure_rate, search_space, custom_search_space, params}`)
on Optuna 5, plus what that plugin never had: `pruner`, and, for a resumable study shared by
workers, `max_failed`, the heartbeat settings and `worker_index`. The keys only an application's
own sweep driver reads (`objectives`, `rerun_seeds`, `rerun_overrides`: src.train's) are declared
here too, so that one schema types every key; any other application is refused them.

Every sampler 1.3 offered, with every argument its Optuna 5 class takes as a plain value (an
argument that takes an object, e.g. `constraints_func`, is a config with its own `_target_`):
tpe, random, cmaes, nsgaii, qmc, grid, and motpe, which is TPESampler (Optuna removed
MOTPESampler in 4.0; TPESampler is multi-objective since 2.9). Defaults are Optuna 5's own, but
TPE's `constant_liar`, true here (Optuna's and 1.3's: false): trials running meanwhile (another
worker's, or a batch of n_jobs asked together) count as bad guesses at their points, so TPE does not
propose the same region to each of them; with one trial running at a time it changes nothing.

Kept free of heavy imports: Hydra imports every module of `hydra_plugins` when it scans for
plugins, in every Hydra application of this environment."""

# no `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from hydra_plugins.ft_optuna_sweeper.prune_spec import PruneSpec


@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    gamma: Optional[Any] = None
    weights: Optional[Any] = None
    multivariate: Optional[bool] = None
    group: bool = False
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = True
    constraints_func: Optional[Any] = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation: Optional[Any] = None
    mutation_prob: Optional[float] = None
    crossover: Optional[Any] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None
    elite_population_selection_strategy: Optional[Any] = None
    child_generation_strategy: Optional[Any] = None
    after_trial_strategy: Optional[Any] = None


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """One objective only, and the `cmaes` package (checked before any job)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    independent_sampler: Optional[Any] = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Optional[Any] = None


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Optional[Any] = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class MOTPESamplerConfig(TPESamplerConfig):
    """1.3's `motpe`: Optuna removed MOTPESampler in 4.0; TPESampler is multi-objective since 2.9."""

    # 1.3's (MOTPESampler's) name for TPESampler's n_ei_candidates, which MOTPESampler passed it on as:
    # given, it is that (settings.sampler_config); null, n_ei_candidates counts
    n_ehvi_candidates: Optional[int] = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    """Built by the sweeper from the search space, as 1.3 did (`_partial_`: the grid is given later).
    Every value of every searched key is on the grid (space.grid_choices); n_trials is cut to the
    grid's size."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sampler reaches the sweeper as its config, not built: its settings are checked first
    # (settings.check_sampler), so that a bad one is one line and not Hydra's instantiation error.
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConfig = MISSING
    # minimize | maximize, or a list of them, one per objective (the task returns a sequence then).
    # null: minimize, as 1.3 (src.train: each of its objectives' own direction).
    direction: Any = None
    # null: in memory (1.3's default; src.train: a sqlite file in the sweep folder). Resume: the same
    # storage and study_name. Several workers: journal:/path/study.log or postgresql+psycopg://...
    storage: Optional[str] = None
    # null: a name Optuna makes up (1.3's default; src.train: "sweep").
    study_name: Optional[str] = None
    # How many trials. An application's own driver may count them exactly, with several workers
    # sharing one study (src.train's does: trials that complete or are pruned).
    n_trials: int = 20
    # Trials handed to the launcher at once. null: 2, 1.3's default (src.train: 1).
    n_jobs: Optional[int] = None
    # 1.3's: the share of one batch's trials that may fail before the sweep stops (0.0: none may).
    max_failure_rate: float = 0.0
    # Ours: stop after this many failed trials in one invocation (0: never). null: only
    # max_failure_rate counts (src.train: 5, and max_failure_rate is not used).
    max_failed: Optional[int] = None
    # 1.3's deprecated way to give the space: key -> {type: int|float|categorical, low, high, step, log, choices}
    search_space: Optional[Dict[str, Any]] = None
    # A dotted path to `f(cfg, trial)`, called on each trial after its params are suggested: it may
    # suggest more (1.3's hook).
    custom_search_space: Optional[str] = None
    # key: sweep value (interval(1,10), tag(log, interval(...)), range(0,8), choice(...)) or a fixed value
    params: Optional[Dict[str, Any]] = None
    # Several workers on one storage: each one's index (0, 1, ...). With a seeded sampler, each worker's
    # seed derives from the study's seed and this index. null: SLURM's array task id where there is one, else 0.
    worker_index: Optional[int] = None
    heartbeat_s: int = 20
    grace_s: int = 60
    # Stop hopeless trials early: the task reports each step (hydra_plugins.ft_optuna_sweeper._report).
    pruner: PruneSpec = field(default_factory=PruneSpec)
    # src.train's only: what each trial is scored on, from its result.json; and the Pareto set
    # re-run on more seeds, reported on test.
    objectives: Optional[List[str]] = None
    rerun_seeds: List[int] = field(default_factory=list)
    rerun_overrides: List[str] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="ft_optuna_sweeper")
for _name, _node in (("tpe", TPESamplerConfig), ("random", RandomSamplerConfig), ("nsgaii", NSGAIISamplerConfig),
                     ("cmaes", CmaEsSamplerConfig), ("motpe", MOTPESamplerConfig), ("qmc", QMCSamplerConfig),
                     ("grid", GridSamplerConfig)):
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="ft_optuna_sweeper")
