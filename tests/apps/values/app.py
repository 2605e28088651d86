"""Keeps the config each job received (SEEN), for what a swept value reaches the task as; `hook` is a
custom_search_space that suggests a string Hydra would misread unquoted. No config file of its own; conf/
holds one a test names with --config-dir."""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

SEEN: list[dict] = []
APP_DIR = Path(__file__).parent


def hook(cfg: DictConfig, trial) -> None:
    trial.suggest_categorical("+t", ["x,y", None])


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    SEEN.append(OmegaConf.to_container(cfg, resolve=True))
    return 0.0


if __name__ == "__main__":
    main()
