"""`hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper`, 1.3's class path: ours, under that name.

A subclass, not a re-export: Hydra finds a sweeper by the module and name its class was defined with."""

from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper as _Ours


class OptunaSweeper(_Ours):
    """hydra/sweeper=optuna (hydra_plugins/ft_optuna_sweeper), for configs that name 1.3's class."""
