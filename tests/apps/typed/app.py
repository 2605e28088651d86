"""An app with a typed schema (a dataclass in Hydra's ConfigStore) and a config group, `model`: what the
sweeper must compose each job's config against before any trial."""

from dataclasses import dataclass, field
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class Optim:
    lr: float = 0.1
    steps: int = 3


@dataclass
class Config:
    optim: Optim = field(default_factory=Optim)
    model: Any = MISSING


ConfigStore.instance().store(name="schema", node=Config)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float:
    return (cfg.optim.lr - 0.3) ** 2 + cfg.model.size * 0.01 + cfg.optim.steps * 0.001


if __name__ == "__main__":
    main()
