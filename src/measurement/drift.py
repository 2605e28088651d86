"""How far fine-tuning moved the network from its pretrained start, per layer group.

Three measures, on the model the run selected (its best-validation epoch), recorded in result.json:

- relative weight change ‖W − W₀‖ / ‖W₀‖ over each group's parameters (all of a group's tensors
  as one vector). BatchNorm running statistics are buffers, not weights, and are not in it.
- linear CKA (Kornblith et al. 2019) between the pretrained and the fine-tuned network's output
  of each group on a fixed probe batch (the first `probe` validation images): 1 = the same
  representation up to rotation and scale, lower = the group now computes something else. The
  Gram-matrix form is used, so a feature map of any size costs an N×N matrix.
- ImageNet agreement: the fine-tuned backbone under the *original* ImageNet classifier, against the
  pretrained model, on the same target images: the share of images where both predict the same
  ImageNet class. A forgetting proxy that needs no ImageNet data. Only for ImageNet weights (hub or
  the offline package); a random start or a custom checkpoint has no ImageNet head to compare.

The head is a new layer for the new classes; it has no pretrained counterpart and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from src.record.schema import DriftMeasures
from src.strategies import LayerGroup


def group_output_modules(model: nn.Module, groups: Sequence[LayerGroup]) -> dict[str, str]:
    """For each body group, the module whose output is the group's output.

    That is the largest module that holds the group's last parameter and nothing of another group
    ('blocks.3' for a stage; 'bn2' for 'blocks.6+conv_head+bn2'), found from the parameter names
    that timm's group_matcher gave, not from rules for one model family.
    """
    owner = {n: g.name for g in groups for n in g.param_names}
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    for g in groups[:-1]:  # the last group is the head
        parts = g.param_names[-1].split(".")[:-1]
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            names = [f"{name}.{p}" for p, _ in modules[name].named_parameters()]
            if all(owner[n] == g.name for n in names):
                out[g.name] = name
                break
    return out


def relative_weight_change(
    model: nn.Module, reference: nn.Module, groups: Sequence[LayerGroup]
) -> dict[str, float]:
    now = dict(model.named_parameters())
    start = dict(reference.named_parameters())
    change: dict[str, float] = {}
    for g in groups[:-1]:
        diff = sum(float((now[n].detach().cpu().double() - start[n].detach().double()).pow(2).sum()) for n in g.param_names)
        norm = sum(float(start[n].detach().double().pow(2).sum()) for n in g.param_names)
        change[g.name] = (diff / norm) ** 0.5 if norm > 0 else float("nan")
    return change


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same N inputs (rows), each (N, anything)."""
    x = x.reshape(len(x), -1).float()
    y = y.reshape(len(y), -1).float()
    k, l = (x @ x.T).double(), (y @ y.T).double()  # N×N Gram matrices; centred in double
    n = len(k)
    h = torch.eye(n, dtype=k.dtype) - 1.0 / n
    kc, lc = h @ k @ h, h @ l @ h
    denom = kc.norm() * lc.norm()
    return float((kc * lc).sum() / denom) if denom > 0 else float("nan")


@torch.inference_mode()
def _outputs(model: nn.Module, where: dict[str, str], images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    with ExitStack() as stack:
        for group, name in where.items():
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor, group: str = group) -> None:
                got[group] = out.detach().float().cpu()
            stack.callback(modules[name].register_forward_hook(hook).remove)
        pre_logits = model.forward_head(model.forward_features(images), pre_logits=True)
    return got, pre_logits.float().cpu()


Outputs = tuple[dict[str, torch.Tensor], torch.Tensor]  # each group's output, and the pooled features


def reference_outputs(reference: nn.Module, where: dict[str, str], images: torch.Tensor) -> Outputs:
    """The pretrained model's side of the measures: its group outputs (`where`: group_output_modules)
    and pooled features on the probe batch, on the CPU. The same for every run of one model on one
    probe batch, so a caller may keep them (src/training/reuse.py)."""
    reference.eval()
    return _outputs(reference, where, images.float().cpu().contiguous())


def drift(
    model: nn.Module, reference: nn.Module, groups: Sequence[LayerGroup], images: torch.Tensor,
    imagenet_head: bool, start: Outputs | None = None,
) -> DriftMeasures:
    """The three measures for `model` (fine-tuned) against `reference` (the pretrained model with
    its original classifier, on the CPU). `images` is the normalised probe batch; `start`, where
    given, is `reference_outputs` on it, computed before. The caller times it (`drift_s`)."""
    was_training = model.training
    model.eval()
    reference.eval()
    device = next(model.parameters()).device
    where = group_output_modules(model, groups)
    tuned, tuned_pre = _outputs(model, where, images.to(device))
    start, start_pre = start if start is not None else reference_outputs(reference, where, images)
    model.train(was_training)
    agreement = None
    if imagenet_head:
        with torch.inference_mode():
            head = reference.get_classifier()
            agreement = float((head(tuned_pre).argmax(1) == head(start_pre).argmax(1)).float().mean())
    return DriftMeasures(
        drift_probe_images=len(images),
        weight_change=relative_weight_change(model, reference, groups),
        cka={g: linear_cka(start[g], tuned[g]) for g in where},
        cka_features=linear_cka(start_pre, tuned_pre),  # the pooled features the head sees
        imagenet_agreement=agreement,
    )
