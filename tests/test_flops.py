"""The FLOP counter against an analytic count, per layer type the models use, and on whole models."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.measurement.flops import CORRECTIONS, analytic_step_flops, counted_forward_flops, counted_step_flops, meta_copy


def _conv_fwd(n, c_in, c_out, k, hw_out, groups):
    return 2 * n * c_out * hw_out * hw_out * (c_in // groups) * k * k


class Wrap(nn.Module):
    """A single layer plus pooling so cross-entropy can be applied; optionally a trainable prelude
    so the layer's input requires grad (as every layer above the lowest trainable one does)."""

    def __init__(self, layer: nn.Module, in_ch: int, prelude: bool):
        super().__init__()
        self.prelude = nn.Conv2d(in_ch, in_ch, 1, bias=False) if prelude else nn.Identity()
        self.layer = layer

    def forward(self, x):
        out = self.layer(self.prelude(x))
        return out.flatten(1) if out.ndim == 4 else out


@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize(
    "kind,layer,in_ch,expected_fwd",
    [
        ("conv", nn.Conv2d(8, 16, 3, padding=1, bias=False), 8, _conv_fwd(2, 8, 16, 3, 6, 1)),
        ("depthwise", nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), 16, _conv_fwd(2, 16, 16, 3, 6, 16)),
        ("grouped", nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False), 16, _conv_fwd(2, 16, 32, 3, 3, 4)),
    ],
)
def test_conv_layers_match_analytic(kind, layer, in_ch, expected_fwd, input_grad):
    model = Wrap(layer, in_ch, prelude=input_grad)
    shape = (in_ch, 6, 6)
    counted, analytic = counted_step_flops(model, shape, 10), analytic_step_flops(model, shape)
    prelude_fwd = 2 * 2 * in_ch * in_ch * 36 if input_grad else 0
    assert analytic.forward * 2 == expected_fwd + prelude_fwd  # per sample: batch of 2 halved
    assert counted == analytic
    # backward: grad-weight always, grad-input only when the input needs it
    layer_bwd = expected_fwd // 2 * (2 if input_grad else 1)
    assert counted.backward == layer_bwd + (prelude_fwd // 2 if input_grad else 0)


def test_linear_matches_analytic():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    counted, analytic = counted_step_flops(model, (3, 4, 4), 10), analytic_step_flops(model, (3, 4, 4))
    assert counted.forward == analytic.forward == 2 * 48 * 10
    assert counted.backward == 2 * 48 * 10  # input needs no grad: weight gradient only


def test_torch_counter_needed_the_depthwise_correction():
    """Documents why src.measurement.flops carries its own convolution_backward formula: if torch fixes it,
    this shows the raw counter agreeing and the correction can go."""
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    x = torch.randn(2, 16, 6, 6)
    with FlopCounterMode(display=False) as raw:
        conv(x).sum().backward()
    fwd = _conv_fwd(2, 16, 16, 3, 6, 16)
    corrected = counted_step_flops(Wrap(conv, 16, prelude=False), (16, 6, 6), 10)
    assert corrected.backward * 2 == fwd  # weight gradient only
    assert raw.get_total_flops() in (2 * fwd, fwd + 16 * fwd)  # fixed, or over-counted by `groups`


def test_efficientnet_lite0_full_training_counts():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    counted = counted_step_flops(model, (3, 224, 224), 10)
    analytic = analytic_step_flops(model, (3, 224, 224))
    assert counted == analytic
    # the published figure: ~0.39 GMACs at 224 px (0.77 GFLOPs)
    assert 0.75e9 < counted.forward < 0.80e9
    # backward of a full fine-tune is about twice the forward (only the stem conv skips grad-input)
    assert 2.9 < counted.total / counted.forward < 3.0
    assert counted_forward_flops(model, (3, 224, 224)) == counted.forward


def test_frozen_prefix_gets_no_backward():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    totals = []
    for keep in ("classifier", "blocks.6", "blocks.5", "blocks.4"):
        trainable = ("classifier", "blocks.6", "blocks.5", "blocks.4")[: ("classifier", "blocks.6", "blocks.5", "blocks.4").index(keep) + 1]
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(trainable) or (keep != "classifier" and n.startswith(("conv_head", "bn2"))))
        c = counted_step_flops(model, (3, 64, 64), 10)
        assert c == analytic_step_flops(model, (3, 64, 64))
        totals.append(c.total)
    assert totals == sorted(totals) and len(set(totals)) == 4


def test_a_meta_copy_is_the_model_on_meta_without_its_values():
    # meta_copy skips copying the weights' values; it must give what deepcopy(...).to("meta") gives:
    # the same parameters and buffers by name and shape, which train, the modes; a shared weight
    # still shared (tied embeddings); and the original untouched
    model = timm.create_model("tf_efficientnet_lite0", num_classes=7)
    model.blocks[:2].requires_grad_(False)
    model.blocks[0].eval()
    model.tied = nn.Linear(1280, 7)
    model.tied.weight = model.classifier.weight
    fast, slow = meta_copy(model), copy.deepcopy(model).to("meta")

    def described(m: nn.Module) -> list:
        params = m.named_parameters(remove_duplicate=False)
        return [[(n, tuple(t.shape), t.dtype, t.device.type, t.requires_grad, type(t)) for n, t in params],
                [(n, tuple(t.shape), t.dtype, t.device.type) for n, t in m.named_buffers()],
                [(n, sub.training) for n, sub in m.named_modules()]]

    assert described(fast) == described(slow)
    # (`.to("meta")` gives each module a parameter of its own: the tie was lost there)
    assert fast.tied.weight is fast.classifier.weight and fast.tied.weight is not model.classifier.weight
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    # and the counts are those of the copy made the old way
    del model.tied
    old = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as fwd:
        loss = torch.nn.functional.cross_entropy(old(torch.zeros((2, 3, 32, 32), device="meta")),
                                                 torch.zeros(2, dtype=torch.long, device="meta"))
    with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as bwd:
        loss.backward()
    counted = counted_step_flops(model, (3, 32, 32), 7)
    assert (counted.forward, counted.backward) == (fwd.get_total_flops() // 2, bwd.get_total_flops() // 2) != (0, 0)
