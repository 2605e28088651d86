"""Layer groups and fine-tuning strategies.

A strategy turns a model's layer groups (declared by the model itself through timm's
`group_matcher`) into a schedule: for every group, the learning rate it trains at and the epochs in
which it trains. The schedule is plain data: computed before training, printed, written to
`param_groups.json`, and consulted by the training loop. Nothing here trains anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from timm.models._manipulate import group_parameters
from torch import nn

from src.config import ConfigError, StrategyConfig
from src.models import head_param_names


@dataclass(frozen=True)
class LayerGroup:
    name: str
    param_names: tuple[str, ...]
    num_params: int
    # The group's biases and norm scales/shifts (its 1-D tensors): what BitFit trains.
    bias_norm_names: tuple[str, ...] = ()
    bias_norm_params: int = 0


def is_bias_or_norm(param: torch.Tensor) -> bool:
    """Biases and norm scales/shifts are the 1-D tensors (conv and linear weights are not; neither
    are a ViT's position embedding and class token)."""
    return param.ndim <= 1


def _common_prefix(names: Sequence[str]) -> str:
    parts = [n.split(".")[:-1] or [n] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _group_name(names: Sequence[str]) -> str:
    """'blocks.3' for one module tree; 'blocks.6+conv_head+bn2' when a group spans several."""
    by_root: dict[str, list[str]] = {}
    for n in names:
        by_root.setdefault(n.split(".")[0], []).append(n)
    return "+".join(_common_prefix(members) or root for root, members in by_root.items())


def layer_groups(model: nn.Module, granularity: str = "coarse") -> list[LayerGroup]:
    """Trainable layer groups from bottom to top, the classifier head always last and on its own.

    Groups come from the model's own `group_matcher` (coarse: stem, stages, head; fine: blocks),
    so any timm architecture works without name rules written for one family.
    """
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"model {type(model).__name__} declares no group_matcher; layer groups are unknown")
    grouped = group_parameters(model, model.group_matcher(coarse=granularity == "coarse"))
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    small = {n for n, p in model.named_parameters() if is_bias_or_norm(p)}
    head = head_param_names(model)

    def group(name: str, names: Sequence[str]) -> LayerGroup:
        bn = tuple(n for n in names if n in small)
        return LayerGroup(name, tuple(names), sum(sizes[n] for n in names), bn, sum(sizes[n] for n in bn))

    groups = []
    for names in grouped.values():
        body = [n for n in names if n not in head]
        if body:
            groups.append(group(_group_name(body), body))
    groups.append(group("head", [n for n in sizes if n in head]))
    covered = sum(len(g.param_names) for g in groups)
    if covered != len(sizes):  # every parameter in exactly one group, or the counts would lie
        raise RuntimeError(f"layer groups cover {covered} of {len(sizes)} parameters")
    return groups


@dataclass(frozen=True)
class GroupPlan:
    name: str
    index: int  # 0 = bottom of the network
    depth: int  # distance from the top: head = 0
    num_params: int
    lr: float  # peak learning rate while the group trains
    start_epoch: int | None  # first epoch it trains, None = never
    epochs: tuple[int, ...]  # every epoch in which it trains


@dataclass(frozen=True)
class Schedule:
    strategy: str
    epochs: int
    frozen_bn: str
    groups: tuple[GroupPlan, ...]
    # "all": a training group trains all its parameters; "bias_norm" (BitFit): below the head, only
    # its biases and norm scales/shifts. GroupPlan.num_params counts what trains.
    params: str = "all"

    def trains(self, group: int, epoch: int) -> bool:
        start = self.groups[group].start_epoch
        return start is not None and epoch >= start

    def active(self, epoch: int) -> tuple[bool, ...]:
        return tuple(self.trains(i, epoch) for i in range(len(self.groups)))

    @property
    def trainable_params(self) -> int:
        """Parameters that train in at least one epoch."""
        return sum(g.num_params for g in self.groups if g.epochs)

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "epochs": self.epochs,
            "frozen_bn": self.frozen_bn,
            "params": self.params,
            "groups": [asdict(g) | {"epochs": list(g.epochs)} for g in self.groups],
        }

    def table(self) -> str:
        lines = [f"{'#':>2}  {'group':<24}{'params':>11}  {'lr':>9}  trains in epochs"]
        for g in reversed(self.groups):
            when = _epochs_text(g.epochs, self.epochs)
            lr = f"{g.lr:.2e}" if g.epochs else "-"
            lines.append(f"{g.index:>2}  {g.name:<24}{g.num_params:>11,}  {lr:>9}  {when}")
        return "\n".join(lines)


def _epochs_text(epochs: Sequence[int], total: int) -> str:
    if not epochs:
        return "frozen"
    if len(epochs) == total:
        return f"all ({epochs[0]}-{epochs[-1]})"
    return f"{epochs[0]}-{epochs[-1]}"


# A strategy maps (number of groups, config, head LR) to one (lr, start_epoch) per group, bottom first.
Plan = list[tuple[float, int | None]]


def _frozen(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return [(0.0, None)] * (n - 1) + [(head_lr, 0)]


def _full(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    return [(head_lr * cfg.backbone_lr_scale, 0)] * (n - 1) + [(head_lr, 0)]


def _layerwise(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    depth = n - 1 if cfg.unfreeze_depth == "all" else cfg.unfreeze_depth
    plan: Plan = []
    for index in range(n):
        d = n - 1 - index  # distance from the top
        lr = head_lr / cfg.lr_decay**d
        plan.append((lr, d * cfg.unfreeze_every) if d <= depth else (0.0, None))
    return plan


def _lpft(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    """LP-FT (Kumar et al. 2022): a linear probe first, then everything fine-tuned. The head trains
    from epoch 0; the backbone joins at epoch `probe_epochs` at `backbone_lr_scale` x the head LR,
    so it starts from a trained head instead of a random one that distorts its features. (The head
    keeps its own LR in the second phase, where the paper lowers every LR.)"""
    return [(head_lr * cfg.backbone_lr_scale, cfg.probe_epochs)] * (n - 1) + [(head_lr, 0)]


def _surgical(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    """Surgical fine-tuning (Lee et al. 2023): one chosen backbone group (`surgical_group`, 0 = the
    stem) and the head train; every other group stays frozen."""
    plan: Plan = [(0.0, None)] * (n - 1) + [(head_lr, 0)]
    plan[cfg.surgical_group] = (head_lr * cfg.backbone_lr_scale, 0)
    return plan


def _bitfit(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    """BitFit (Ben Zaken et al. 2022): every group trains, but below the head only its biases and
    norm scales/shifts (Schedule.params="bias_norm"), all at the head's LR: so few, and so small a
    change, that the rate full fine-tuning uses would barely move them."""
    return [(head_lr, 0)] * n


def _l2sp(n: int, cfg: StrategyConfig, head_lr: float) -> Plan:
    """L2-SP (Li et al. 2018): full fine-tuning whose regulariser pulls the backbone toward its
    pretrained weights, alpha/2 ||w - w0||^2, and the new head toward 0, beta/2 ||w||^2
    (l2sp_penalty), in place of weight decay toward 0."""
    return _full(n, cfg, head_lr)


def l2sp_penalty(
    model: nn.Module, groups: Sequence[LayerGroup], alpha: float, beta: float
) -> Callable[[], torch.Tensor]:
    """The L2-SP term as a function of the live weights; the anchor is a copy of them now (call it
    before training, on the pretrained model). Norms and biases are left out, as weight decay skips them."""
    params = dict(model.named_parameters())
    weights = [[n for n in g.param_names if n not in set(g.bias_norm_names)] for g in groups]
    body = [(params[n], params[n].detach().clone()) for names in weights[:-1] for n in names]
    head = [params[n] for n in weights[-1]]

    def penalty() -> torch.Tensor:
        sp = sum(((w - w0) ** 2).sum() for w, w0 in body if w.requires_grad)
        decay = sum((w**2).sum() for w in head)
        return 0.5 * alpha * sp + 0.5 * beta * decay  # type: ignore[return-value]

    return penalty


STRATEGIES: dict[str, Callable[[int, StrategyConfig, float], Plan]] = {
    "bitfit": _bitfit,
    "l2sp": _l2sp,
    "frozen": _frozen,
    "full": _full,
    "layerwise": _layerwise,
    "lpft": _lpft,
    "surgical": _surgical,
}


def plan_schedule(cfg: StrategyConfig, groups: Sequence[LayerGroup], head_lr: float, epochs: int) -> Schedule:
    """The whole schedule of a run, fixed before training starts."""
    backbone = len(groups) - 1
    if cfg.unfreeze_depth != "all" and cfg.unfreeze_depth > backbone:
        raise ConfigError(
            f"strategy.unfreeze_depth={cfg.unfreeze_depth} exceeds this model's {backbone} backbone groups "
            f"(allowed: 0..{backbone} or 'all')"
        )
    if cfg.name == "surgical" and not 0 <= cfg.surgical_group < backbone:
        raise ConfigError(
            f"strategy.surgical_group={cfg.surgical_group} is not a backbone group of this model "
            f"(allowed: 0..{backbone - 1}, 0 = the stem)"
        )
    if cfg.name == "lpft" and not 0 < cfg.probe_epochs < epochs:
        raise ConfigError(
            f"strategy.probe_epochs={cfg.probe_epochs} must be in 1..{epochs - 1} (trainer.epochs={epochs}): "
            f"LP-FT needs a probe phase and a fine-tuning phase"
        )
    plan = STRATEGIES[cfg.name](len(groups), cfg, head_lr)
    params = "bias_norm" if cfg.name == "bitfit" else "all"
    out = []
    for index, (group, (lr, start)) in enumerate(zip(groups, plan)):
        trained = tuple(range(start, epochs)) if start is not None else ()
        if not math.isfinite(lr) or lr < 0:
            raise ConfigError(f"strategy {cfg.name} gave group {group.name} an invalid lr {lr!r}")
        head = index == len(groups) - 1
        size = group.bias_norm_params if params == "bias_norm" and not head else group.num_params
        out.append(GroupPlan(group.name, index, len(groups) - 1 - index, size, lr, start, trained))
    return Schedule(cfg.name, epochs, cfg.frozen_bn, tuple(out), params)


def apply_epoch(model: nn.Module, groups: Sequence[LayerGroup], schedule: Schedule, epoch: int) -> int:
    """Put the model in the state the schedule asks for at `epoch`; returns the trainable param count.

    Parameters of groups that are not training get `requires_grad=False`, so autograd stops at the
    lowest trainable group and frozen layers cost no backward pass. With `frozen_bn="eval"`, their
    BatchNorm layers also keep their running statistics (eval mode), so a frozen group's state is
    bitwise unchanged by training.
    """
    model.train()
    active = schedule.active(epoch)
    group_of = {name: i for i, g in enumerate(groups) for name in g.param_names}
    # BitFit: below the head, only biases and norm scales/shifts ever train.
    allowed = None if schedule.params == "all" else {n for g in groups[:-1] for n in g.bias_norm_names} | set(groups[-1].param_names)
    trainable = 0
    for name, param in model.named_parameters():
        on = active[group_of[name]] and (allowed is None or name in allowed)
        param.requires_grad_(on)
        trainable += param.numel() if on else 0
    if schedule.frozen_bn == "eval":
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                own = [f"{module_name}.{n}" for n, _ in module.named_parameters(recurse=False)]
                if own and not any(active[group_of[n]] for n in own):
                    module.eval()
    return trainable
