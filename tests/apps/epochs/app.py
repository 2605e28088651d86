"""A trial that "trains" for some epochs and reports its loss after each: the pruning API in use.

The loss curve is a pure function of lr: lr far from 0.1 stays high, so the pruner has something to stop.
Each epoch it runs is appended to `epochs.log` in the job's folder, with the process id (what a test counts).
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hydra_plugins.ft_optuna_sweeper import report


@hydra.main(version_base=None, config_path="conf", config_name="config")
def train(cfg: DictConfig) -> float:
    loss = 0.0
    for epoch in range(cfg.epochs):
        loss = abs(cfg.lr - 0.1) + 1.0 / (epoch + 1)
        with open(Path.cwd() / "epochs.log", "a") as log:
            log.write(f"{epoch} {os.getpid()}\n")
        report(epoch, loss)
    return loss


if __name__ == "__main__":
    train()
