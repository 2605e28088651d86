"""What `hydra.sweeper.pruner` holds: defined once, by the sweeper plugin (hydra_plugins/ft_optuna_sweeper/
prune_spec.py), whose config schema types it; the project's pruning rules (src/search/pruning.py) take it."""

from hydra_plugins.ft_optuna_sweeper.prune_spec import PRUNERS, PruneSpec

__all__ = ["PRUNERS", "PruneSpec"]
