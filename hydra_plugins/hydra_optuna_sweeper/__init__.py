"""hydra-optuna-sweeper 1.3's module path, kept for configs that name its sweeper class in full.

lightning-hydra-template's `configs/hparams_search/*_optuna.yaml`, among others, set
`hydra.sweeper._target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper`: with this
package in place of 1.3's, that line builds this project's sweeper (hydra_plugins/ft_optuna_sweeper).
It replaces 1.3's plugin: the two are not installed together.
"""
