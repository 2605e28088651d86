"""Search: Optuna studies over the training config (the sweep driver) and the rules that stop hopeless trials early."""
