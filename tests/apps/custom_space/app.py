"""A sphere in w, x, y, z where z's range depends on x's value: 1.3's custom_search_space hook."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere4(cfg: DictConfig) -> float:
    return sum(float(cfg[k]) ** 2 for k in ("w", "x", "y", "z"))


def near_x(cfg: DictConfig, trial) -> None:
    """z within max_gap of the trial's x; w a new key (hence `+w`), in [0, 1]."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_gap, x + cfg.max_gap)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere4()
