"""A task that reports each epoch's loss as its training library hands it over: a numpy float32, a 0-d
torch tensor, a one-element array; `+twice=true` reports each step twice; `diverge=true` makes it NaN from the first epoch on. Each epoch it
runs is appended to `epochs.log` in the sweep folder, with its trial number."""

from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hydra_plugins.ft_optuna_sweeper import report

AS = {"float32": np.float32, "tensor": torch.tensor, "array": lambda v: np.array([v]), "float": float}


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    loss = 10.0
    for epoch in range(4):
        loss = float("nan") if cfg.diverge else loss * (1 - cfg.lr)
        with open(Path(hc.runtime.cwd, hc.sweep.dir, "epochs.log"), "a") as log:
            log.write(f"{hc.job.num} {epoch}\n")
        report(epoch, AS[cfg.kind](loss))
        if cfg.get("twice"):  # a second report of the same step (a validation loop that reports too, say)
            report(epoch, AS[cfg.kind](loss * 100))
    return loss


if __name__ == "__main__":
    main()
