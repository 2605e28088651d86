"""A frozen prefix computed once (src/measurement/feature_cache.py): where the cut falls, that it is
refused where the model's forward is not a chain there, and that a run on the cached prefix trains
the same numbers as one that runs it every epoch, for fewer FLOPs, counted and cross-checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.measurement.feature_cache import NOTHING_BEFORE, Cut, SkipPrefix, frozen_prefix, skipping
from src.measurement.flops import analytic_step_flops
from src.record.io import read_jsonl
from src.strategies.schedule import GroupPlan, Schedule
from src.training.run import run


def schedule_training(model: nn.Module, *trained: str, frozen_bn: str = "all") -> Schedule:
    """A schedule in which the parameters of the modules `trained` train in epoch 0, the rest never."""
    names = [n for n, _ in model.named_parameters()]
    on = tuple(n for n in names if n.rsplit(".", 1)[0] in trained)
    off = tuple(n for n in names if n not in on)
    groups = (GroupPlan("frozen", 0, 1, 0, 0.0, None, (), off), GroupPlan("trained", 1, 0, 0, 1e-3, 0, (0,), on))
    return Schedule("test", 1, frozen_bn, groups)


class Chain(nn.Module):
    def __init__(self, skip: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1))
        self.head = nn.Linear(6, 5)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.body(h) + (h[:, :1, ::2, ::2] if self.skip else 0)  # a skip connection across body.1
        return self.head(h.mean((2, 3)))


def prepared(model: nn.Module, schedule: Schedule) -> nn.Module:
    """The model as apply_epoch leaves it for epoch 0: training mode, the trained group's parameters
    with gradients, and with frozen_bn="all" every BatchNorm layer in eval mode."""
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name in schedule.groups[1].param_names)
    if schedule.frozen_bn == "all":
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return model


def test_the_prefix_is_what_runs_before_the_first_trained_module_and_the_rest_runs_on_its_output():
    torch.manual_seed(0)
    model = Chain()
    schedule = schedule_training(model, "body.1", "head")
    cut = frozen_prefix(prepared(model, schedule), schedule, (3, 8, 8))
    # outermost modules, in the order they run: body.0 runs before body.1, the first to train
    assert cut == Cut(("stem", "body.0"), (4, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        cached = model.body[0](model.stem(x))
        assert torch.equal(SkipPrefix(model, cut.skipped)(cached), model(x))


def test_a_skip_connection_across_the_cut_is_refused_not_trained_wrong():
    torch.manual_seed(0)
    model = Chain(skip=True)
    schedule = schedule_training(model, "body.1", "head")
    reason = frozen_prefix(prepared(model, schedule), schedule, (3, 8, 8))
    assert isinstance(reason, str) and "not a chain of modules at body.0" in reason


def test_batch_statistics_in_the_prefix_and_nothing_before_the_first_trained_module_are_refused():
    model = Chain()
    schedule = schedule_training(model, "body.1", "head", frozen_bn="train")
    reason = frozen_prefix(prepared(model, schedule), schedule, (3, 8, 8))
    assert reason == "stem.1 updates BatchNorm statistics in training (frozen_bn=train)"
    everything = schedule_training(model, "stem.0", "body.0", "body.1", "head")
    assert frozen_prefix(prepared(model, everything), everything, (3, 8, 8)) == NOTHING_BEFORE


def test_the_check_leaves_running_statistics_as_they_were():
    # frozen_bn="eval": a BatchNorm layer that trains is in training mode; the check's forward of
    # random images must not move its running statistics
    torch.manual_seed(0)
    model = Chain()
    model.body.insert(2, nn.BatchNorm2d(6))
    schedule = schedule_training(model, "body.1", "body.2", "head", frozen_bn="eval")
    prepared(model, schedule)
    model.stem[1].eval()  # as apply_epoch sets frozen_bn="eval": the frozen group's BN keeps its statistics
    model.body[2].train()  # ... and the trained group's BN updates them
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert isinstance(frozen_prefix(model, schedule, (3, 8, 8)), Cut)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_skipping_swaps_modules_only_inside_the_block_and_their_hooks_do_not_fire():
    model = Chain()
    calls = []
    model.stem.register_forward_hook(lambda *_: calls.append("stem"))
    keys = list(model.state_dict())
    with skipping(model, ["stem", "body.0"]):
        assert isinstance(model.stem, nn.Identity) and isinstance(model.body[0], nn.Identity)
        model(torch.randn(1, 4, 8, 8))
    assert calls == [] and list(model.state_dict()) == keys and isinstance(model.stem, nn.Sequential)
    model(torch.randn(1, 3, 8, 8))
    assert calls == ["stem"]


def test_the_cached_pass_is_counted_as_the_analytic_count_of_the_prefix():
    # FlopCounterMode's count of the prefix (the whole forward less the rest's) against an
    # independent count from layer shapes, on the tiny test model's cut after its stem
    from src.config import RunConfig
    from src.models import build_model
    from src.training.estimate import cache_pass_flops
    from tests.conftest import TINY

    model = build_model(RunConfig.from_dict(TINY).model, 10)
    stem = [n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if not n.startswith(("conv_stem", "bn1"))]
    schedule = schedule_training(model, *stem)
    cut = frozen_prefix(prepared(model, schedule), schedule, (3, 32, 32))
    assert isinstance(cut, Cut) and cut.skipped == ("conv_stem", "bn1")
    analytic = analytic_step_flops(model, (3, 32, 32)).forward - analytic_step_flops(
        SkipPrefix(model, cut.skipped), cut.shape).forward
    conv = model.conv_stem
    by_hand = 2 * conv.out_channels * 16 * 16 * conv.in_channels * 3 * 3  # stride 2: 16 x 16 outputs
    assert cache_pass_flops(model, cut, (3, 32, 32)) == analytic == by_hand


def test_a_run_on_the_cached_prefix_trains_the_same_numbers_for_fewer_flops(tiny_config, tmp_path):
    strategy = {"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1}
    runs = {cache: run(tiny_config(strategy=strategy, trainer={"epochs": 3, "feature_cache": cache}), tmp_path / cache)
            for cache in ("off", "auto")}
    off, cached = runs["off"], runs["auto"]
    assert (off["feature_cache"], cached["feature_cache"]) == (False, True)
    assert cached["feature_cache_cut"] not in (None, "pre-logits") and cached["feature_cache_blocker"] is None
    # the same steps on the same values: every loss and accuracy, bit for bit
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "trainable_params")
    rows = {c: read_jsonl(tmp_path / c / "metrics.jsonl") for c in runs}
    assert [{k: r[k] for k in keys} for r in rows["auto"]] == [{k: r[k] for k in keys} for r in rows["off"]]
    assert (cached["test_acc"], cached["test_loss"]) == (off["test_acc"], off["test_loss"])
    # cost: the backward is the same work; the forward loses the prefix on every image of every epoch
    # but one pass (epochs x images seen, against the training images once)
    assert cached["train_flops_backward"] == off["train_flops_backward"]
    seen = 3 * off["passes_per_epoch"] * off["train_samples"]
    saved = off["train_flops_forward"] - cached["train_flops_forward"]
    prefix, rest = divmod(saved, seen - off["train_samples"])
    assert rest == 0 and 0 < prefix < off["inference_flops_per_image"]


def test_a_prefix_larger_than_the_memory_cap_is_not_cached_and_the_record_says_why(tiny_config, tmp_path):
    strategy = {"name": "layerwise", "unfreeze_depth": 2}
    result = run(tiny_config(strategy=strategy, trainer={"feature_cache_max_mb": 0.001}), tmp_path)
    assert result["feature_cache"] is False and "feature_cache_cut" not in result
    assert "would take" in result["feature_cache_blocker"]
    assert result["feature_cache_blocker"].endswith("(trainer.feature_cache_max_mb=0.001)")
    with pytest.raises(Exception, match="trainer.feature_cache_max_mb=-1.0 must be > 0"):
        tiny_config(trainer={"feature_cache_max_mb": -1})


def test_cached_runs_on_an_image_folder_read_from_the_mapped_decoded_data(tiny_config, tmp_path):
    """An image folder's splits come memory-mapped from the decoded-data cache (MappedImages, not
    tensors): the frozen backbone and a frozen prefix must cache them, and reuse what an earlier run
    of the process extracted, training exactly what the in-memory decode trains."""
    import numpy as np
    from PIL import Image

    from src.data.load import load_dataset
    from src.data.mapped import MappedImages
    from src.training import reuse

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    data = {"kind": "imagefolder", "root": str(tmp_path / "data"), "image_size": 32, "train_per_class": None,
            "cache_dir": str(tmp_path / "cache")}
    load_dataset(tiny_config(dataset=data).dataset)  # builds the entry: every run below maps it
    assert isinstance(load_dataset(tiny_config(dataset=data).dataset).train.images, MappedImages)
    for name, strategy in (("frozen", {"name": "frozen"}), ("prefix", {"name": "layerwise", "unfreeze_depth": 2})):
        results = {}
        for how in ("memory", "mapped", "mapped-again"):
            reuse.DATA.clear()
            made = reuse.EXTRACTED.made
            cfg = tiny_config(strategy=strategy, dataset=data | {"cache": "off" if how == "memory" else "auto"})
            results[how] = run(cfg, tmp_path / f"{name}-{how}")
            assert results[how]["status"] == "completed" and results[how]["feature_cache"] is True, results[how]
            # the second mapped run reuses the first's outputs; the in-memory one (other values' key: no)
            assert (reuse.EXTRACTED.made == made) == (how == "mapped-again"), how
        for how in ("mapped", "mapped-again"):
            for key in ("val_acc", "test_acc", "test_loss", "train_flops", "feature_cache_cut"):
                assert results[how].get(key) == results["memory"].get(key), (name, how, key)
