"""Optimizer param groups and the learning-rate schedule.

Every layer group gets its optimizer param groups once, at the start, with its real peak `lr`
written in (not a `lr_scale` that only timm's schedulers read). Gradual unfreezing never adds groups
mid-run, which would break torch schedulers and resuming: a group that is not training yet has
`requires_grad=False` and a scheduled LR of 0.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from src.config import OptimConfig
from src.strategies import LayerGroup, Schedule, is_bias_or_norm


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Norm scales/shifts and biases: decaying them toward 0 hurts and is standard to skip.
    return is_bias_or_norm(param) or name.endswith(".bias")


def param_groups(
    model: nn.Module, groups: Sequence[LayerGroup], schedule: Schedule, weight_decay: float
) -> list[dict]:
    """One optimizer group per (layer group, decay / no-decay) pair that has parameters."""
    params = dict(model.named_parameters())
    out = []
    for group, plan in zip(groups, schedule.groups):
        split: dict[bool, list[torch.Tensor]] = {False: [], True: []}
        for name in group.param_names:
            split[_no_decay(name, params[name])].append(params[name])
        for no_decay, tensors in split.items():
            if tensors:
                out.append(
                    {
                        "params": tensors,
                        "lr": plan.lr,
                        "weight_decay": 0.0 if no_decay else weight_decay,
                        "layer_group": plan.index,
                        "name": f"{plan.name}{'/no_decay' if no_decay else ''}",
                    }
                )
    return out


def build_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer class `optim.optimizer._target_` names (one of src.config's OPTIMIZERS: a closed
    set, so the name is an import), given `groups` and the knobs its config sets (betas, momentum):
    what Hydra's `_partial_` instantiation made, in plain Python, as everything below the entrypoint
    is. Each group carries its real `lr` and `weight_decay`, so the class's own defaults for those
    are never used."""
    module, _, name = cfg.optimizer._target_.rpartition(".")
    return getattr(importlib.import_module(module), name)(groups, **cfg.optimizer.knobs())


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from ~0, then cosine down to `min_ratio`.

    Warmup protects the pretrained weights from the large, noisy gradients the random new head
    sends back in the first steps.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, schedule: Schedule, steps_per_epoch: int
) -> LambdaLR:
    """A per-step torch scheduler whose per-group factor is 0 while that group is frozen.

    With `join_warmup_epochs`, a group that joins after epoch 0 also ramps up from its first step:
    its Adam moments start at zero there, so without a ramp its first updates have full size in
    every coordinate, on weights the head was not trained to expect."""
    total = steps_per_epoch * schedule.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    join = round(cfg.join_warmup_epochs * steps_per_epoch)

    def factor(layer_group: int):
        start = schedule.groups[layer_group].start_epoch

        def f(step: int) -> float:
            epoch = min(step // steps_per_epoch, schedule.epochs - 1)
            if not schedule.trains(layer_group, epoch):
                return 0.0
            value = warmup_cosine(step, total, warmup, cfg.min_lr_ratio)
            if start and join > 0:
                value *= min(1.0, (step - start * steps_per_epoch + 1) / join)
            return value

        return f

    return LambdaLR(optimizer, [factor(g["layer_group"]) for g in optimizer.param_groups])
