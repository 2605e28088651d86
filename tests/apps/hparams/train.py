"""A lightning-hydra-template-shaped app: `python train.py -m hparams_search=sphere_optuna`.

Its config has an `hparams_search` group (null by default), and the task returns the metric that
`optimized_metric` names, as the template's `train.py` does.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def train(cfg: DictConfig) -> float:
    metrics = {"val/loss": (cfg.model.lr - 0.01) ** 2 + cfg.model.dropout, "val/acc": 1.0 - cfg.model.dropout}
    return metrics[cfg.optimized_metric] if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    train()
