"""Counting training FLOPs, and an independent analytic count to check the counter against.

The count comes from torch's `FlopCounterMode` run over a real forward and backward pass, so it
sees exactly what autograd does (a frozen prefix of the network gets no backward). The pass runs on
a copy of the model on the meta device: no arithmetic, no change to the real model.

`FlopCounterMode` (torch 2.14) over-counts the weight gradient of grouped and depthwise
convolutions by the number of groups (its `convolution_backward` formula ignores `groups`), which
inflates an EfficientNet's backward several-fold. We pass a corrected formula for that op; the
tests pin the counter to the analytic count per layer type and on whole models.
Convention: one multiply-add = 2 FLOPs; only convolutions and matrix products are counted (norms,
activations and pooling are a few percent and are not counted by either method).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per sample of one training step."""

    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward


def conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape,
    **kwargs,
) -> int:
    """Backward of a convolution: each of grad-input and grad-weight costs as much as the forward.

    The forward count from the weight's shape (C_out, C_in / groups, k, k) is already per group,
    which is what torch's own backward formula misses for grad-weight.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


CORRECTIONS = {torch.ops.aten.convolution_backward: conv_backward_flop}


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every parameter and buffer on the meta device (shapes, no data): what
    `copy.deepcopy(model).to("meta")` gives, without first copying every weight's values (a tenth
    of the time: 30 ms against 260 ms for EfficientNet-Lite0 on a busy 2-core host). A parameter's
    requires_grad and a weight two modules share carry over, as deepcopy's memo keeps them."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def counted_step_flops(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, batch: int = 2) -> StepFlops:
    """FLOPs per sample of forward + backward as the model is now set up (requires_grad, train/eval)."""
    meta = meta_copy(model)
    x = torch.zeros((batch, *input_shape), device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as fwd:
        loss = F.cross_entropy(meta(x), y)
    backward = 0
    if loss.requires_grad:
        with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as bwd:
            loss.backward()
        backward = bwd.get_total_flops()
    return StepFlops(forward=fwd.get_total_flops() // batch, backward=backward // batch)


def counted_forward_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 2) -> int:
    """Inference FLOPs per sample."""
    meta = meta_copy(model)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as fwd:
        meta(torch.zeros((batch, *input_shape), device="meta"))
    return fwd.get_total_flops() // batch


def analytic_step_flops(model: nn.Module, input_shape: tuple[int, ...], batch: int = 2) -> StepFlops:
    """Independent count from layer shapes: conv and linear forward = 2 * outputs * fan-in per group;
    backward adds one forward's worth for grad-input (if the input needs a gradient) and one for
    grad-weight (if the weight trains)."""
    totals = {"forward": 0, "backward": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        weight = module.weight
        fan_in = weight.shape[1:].numel() if isinstance(module, nn.modules.conv._ConvNd) else weight.shape[1]
        forward = 2 * output.numel() * fan_in
        totals["forward"] += forward
        totals["backward"] += forward * (int(inputs[0].requires_grad) + int(weight.requires_grad))

    meta = meta_copy(model)
    handles = [
        m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    try:
        meta(torch.zeros((batch, *input_shape), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return StepFlops(forward=totals["forward"] // batch, backward=totals["backward"] // batch)
