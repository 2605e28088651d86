"""Search: the project's one Optuna search (the loop behind `hydra/sweeper=optuna` and `make sweep`), its studies, and the rules that stop hopeless trials early."""
