"""A task that returns x**2, and stalls in the trial numbered `stall_at` until a signal stops it,
after saying so with a file `<marks>/<trial number>` (what a test waits for before sending it)."""

import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def stall(cfg: DictConfig) -> float:
    number = HydraConfig.get().job.num
    if cfg.marks:
        (Path(cfg.marks) / str(number)).write_text("started")
    if number == cfg.stall_at:
        time.sleep(120)
    return float(cfg.x) ** 2


if __name__ == "__main__":
    stall()
