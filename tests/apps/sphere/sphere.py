"""The sum of squares of x and y, the sweeper's smallest objective; `fail=true` makes every trial raise."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("fail", False):
        raise RuntimeError("the sphere app was told to fail")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    sphere()
