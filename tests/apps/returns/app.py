"""Returns what `+returns=` names, for the sweeper's reading of a task's return value: a number, a pair,
or what is no objective (NaN, a dict, None, three values). No config file: every key from the command line."""

import hydra
from omegaconf import DictConfig

RETURNS = {"number": 1.0, "pair": (1.0, 2.0), "a_nan": float("nan"), "dict": {"loss": 1.0, "cost": 2.0}, "none": None,
           "three": (1.0, 2.0, 3.0)}


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig):
    return RETURNS[cfg.returns]


if __name__ == "__main__":
    main()
