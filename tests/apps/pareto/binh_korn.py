"""Binh and Korn's two objectives, both minimised: a Pareto front to find."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def binh_korn(cfg: DictConfig) -> tuple:
    x, y = float(cfg.x), float(cfg.y)
    return 4 * x * x + 4 * y * y, (x - 5) ** 2 + (y - 5) ** 2


if __name__ == "__main__":
    binh_korn()
