"""`hydra/sweeper=optuna`: this project's Hydra sweeper on Optuna 5, with pruning and result.json objectives.

Hydra finds it by scanning the `hydra_plugins` namespace package (no __init__.py in
hydra_plugins/ itself, so other plugins installed there still merge with this one). The search
itself is src.search's: storages with heartbeats, the study's identity, the exact budget, pruning.
"""
