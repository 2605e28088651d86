"""A process's later runs reuse what its first one built (src/training/reuse.py): the data, the pretrained
model, FLOP counts and the estimate's timings. Reused, they give exactly what building them afresh gives:
the same weights, the same random numbers after them, the same counts and the same trained numbers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import timm
import torch

from src.config import DataConfig, ModelConfig, RunConfig
from src.measurement.flops import counted_forward_flops, counted_step_flops
from src.models import load_pretrained
from src.record.io import read_jsonl
from src.strategies import apply_epoch, layer_groups, plan_schedule
from src.training import reuse
from src.training.run import run


def test_lru_keeps_its_most_recent_entries_only():
    store: reuse.Lru[int] = reuse.Lru(2)
    assert [store.get(k, lambda k=k: k * 10) for k in (1, 2, 1, 3)] == [10, 20, 10, 30]
    assert list(store.items) == [1, 3] and store.made == 3  # 2, the least recently used, went
    assert store.get(2, lambda: 21) == 21 and store.made == 4


def _counts() -> dict[str, int]:
    return {name: getattr(reuse, name).made for name in ("DATA", "MODELS", "FLOPS", "STEP_S", "PLANS", "REFERENCE_OUT")}


def _numbers(result: dict, run_dir) -> dict:
    rows = [{k: v for k, v in r.items() if not k.endswith("_s") and k not in ("elapsed_s", "train_s_cum")}
            for r in read_jsonl(run_dir / "metrics.jsonl")]
    best = torch.load(run_dir / "model_best.pt", weights_only=True)
    return {"val_acc": result["val_acc"], "test_acc": result["test_acc"], "train_flops": result["train_flops"],
            "inference_flops": result["inference_flops_per_image"], "rows": rows, "weights": best,
            "drift": {k: result[k] for k in ("weight_change", "cka", "cka_features", "imagenet_agreement")}}


def _same(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key


def test_a_second_run_reuses_the_first_runs_work_and_trains_what_a_fresh_process_trains(tiny_config, tmp_path):
    small = {"val_fraction": 0.1, "test_fraction": 0.1}
    first = tiny_config(dataset=small, strategy={"name": "layerwise", "unfreeze_depth": 1},
                        model={"drop_rate": 0.2})
    second = tiny_config(dataset=small | {"augment": "shift"}, optim={"lr": 2e-3}, model={"drop_rate": 0.2},
                         strategy={"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1})
    run(first, tmp_path / "first")
    before = _counts()
    reused = _numbers(run(second, tmp_path / "second"), tmp_path / "second")
    after = _counts()
    # the data (augmentation is the batches', not the data's), the model and the drift reference's
    # outputs on the probe images: not built again
    assert (after["DATA"], after["MODELS"], after["REFERENCE_OUT"]) == (before["DATA"], before["MODELS"],
                                                                       before["REFERENCE_OUT"]) == (1, 1, 1)
    assert after["FLOPS"] > before["FLOPS"]  # the second run's deeper phases are new structures
    again = _numbers(run(second, tmp_path / "again"), tmp_path / "again")
    assert _counts() == after  # a third run of a config seen: nothing counted, timed or loaded again
    reuse.clear()  # as a fresh process
    fresh = _numbers(run(second, tmp_path / "fresh"), tmp_path / "fresh")
    _same(reused, fresh)
    _same(again, fresh)
    assert fresh["train_flops"] > 0 and fresh["inference_flops"] > 0 and fresh["drift"]["cka"]


def test_another_image_size_gets_its_own_data_and_the_same_data_again_the_kept_one():
    a, id_a = reuse.dataset(DataConfig(image_size=16, train_per_class=3))
    c, id_c = reuse.dataset(DataConfig(image_size=16, train_per_class=3, augment="shift", hflip=True))
    assert reuse.DATA.made == 1 and c.train.images is a.train.images and c is not a and id_a == id_c
    b, _ = reuse.dataset(DataConfig(image_size=24, train_per_class=3))
    assert a.train.images.shape[-1] == 16 and b.train.images.shape[-1] == 24  # never the stale copy
    reuse.dataset(DataConfig(image_size=16, train_per_class=4))  # another subsample: loaded too
    assert reuse.DATA.made == 3 and len(reuse.DATA.items) == 1  # only the latest is kept


def _rng() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("cfg", [ModelConfig(name="test_efficientnet", pretrained=False),
                                 ModelConfig(name="tf_efficientnet_lite0")], ids=["random-start", "pretrained"])
def test_a_kept_model_is_the_one_a_build_gives_and_leaves_the_random_state_as_a_build_would(cfg):
    _seed(3)
    built, after_build = load_pretrained(cfg), _rng()
    copies = []
    for _ in range(2):
        _seed(3)
        copies.append(reuse.pretrained(cfg))
        state = _rng()
        assert torch.equal(state[0], after_build[0]) and np.array_equal(state[1], after_build[1])
        assert state[2] == after_build[2]
    assert reuse.MODELS.made == 1 and copies[0] is not copies[1]
    for name, tensor in built.state_dict().items():
        assert all(torch.equal(tensor, c.state_dict()[name]) for c in copies), name
    with torch.no_grad():
        next(copies[0].parameters()).add_(1.0)  # a run trains its copy: the kept model stays as built
    _seed(3)
    assert torch.equal(next(reuse.pretrained(cfg).parameters()), next(built.parameters()))
    _seed(4)  # another random state: built again, from it
    other = reuse.pretrained(cfg)
    _seed(4)
    assert reuse.MODELS.made == 2
    assert all(torch.equal(t, other.state_dict()[n]) for n, t in load_pretrained(cfg).state_dict().items())


def test_a_reused_flop_count_equals_the_count_of_each_run():
    """Each phase of a schedule counted on one model, then reused for another model of the same
    structure (another run's): the same numbers counted afresh, and another phase is its own entry."""
    strategy = RunConfig.from_dict({"strategy": {"name": "layerwise", "unfreeze_depth": 3, "unfreeze_every": 1}}).strategy
    counts = []
    for run_index in range(2):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
        groups = layer_groups(model, "coarse")
        schedule = plan_schedule(strategy, groups, 1e-3, 4)
        for epoch in range(4):
            apply_epoch(model, groups, schedule, epoch)
            got = reuse.step_flops(model, (3, 32, 32), 10)
            assert got == counted_step_flops(model, (3, 32, 32), 10), (run_index, epoch)
            counts.append(got)
            # a forward without autograd: one count serves every phase, whatever trains
            assert reuse.forward_flops(model, (3, 32, 32)) == counted_forward_flops(model, (3, 32, 32)), epoch
    assert len(set(counts[:4])) == 4 and counts[4:] == counts[:4]  # four phases, four counts, reused
    assert reuse.FLOPS.made == 5  # the four phases and one forward count, for both runs


def test_runs_that_end_training_other_groups_share_one_evaluation_timing(tiny_config, tmp_path):
    """The estimate times a training step once per phase, and an evaluation pass (eval mode, no
    autograd: what trains changes nothing in it) once for them all, though each run below ends its
    schedule with another set of trained groups."""
    from src.training.estimate import estimate
    from src.training.setup import setup

    for depth in (1, 2, 3):
        cfg = tiny_config(strategy={"name": "layerwise", "unfreeze_depth": depth}, trainer={"feature_cache": "off"})
        estimate(cfg, setup(cfg, tmp_path / str(depth)))
    assert sorted(key[0][0] for key in reuse.STEP_S.items) == ["forward", "step", "step", "step"]


def test_a_plan_is_made_once_per_structure_and_again_for_a_module_setting_no_parameter_holds():
    # What the feature cache can keep follows from the structure; a dropout's p (ViT's drop_rate
    # makes nn.Dropout modules in its blocks) decides it too and is in no parameter's shape
    def net(p: float) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(p), torch.nn.Linear(4, 2))

    made: list[float] = []
    answers = [reuse.planned_once("cut", net(p), lambda p=p: made.append(p) or f"p={p}") for p in (0.0, 0.0, 0.3)]
    assert answers == ["p=0.0", "p=0.0", "p=0.3"] and made == [0.0, 0.3]
    frozen = net(0.0)
    frozen[0].requires_grad_(False)  # which parameters train is structure too
    assert reuse.planned_once("cut", frozen, lambda: "frozen") == "frozen" and reuse.PLANS.made == 3


def test_the_lru_weighs_its_values_against_a_budget_and_keeps_the_newest():
    store: reuse.Lru[int] = reuse.Lru(8, weigh=float)
    store.budget = 10
    for k in (4, 5, 3):
        store.get(k, lambda k=k: k)
    assert list(store.items) == [5, 3]  # 4 + 5 + 3 > 10: the oldest went
    store.get(12, lambda: 12)
    assert list(store.items) == [12]  # over the budget alone, but the newest is kept


@pytest.mark.slow  # 33 s; the fast tier keeps the prefix cache's same-numbers check (tests/test_prefix_cache.py)
def test_a_frozen_prefix_is_extracted_once_and_a_reusing_run_trains_the_same_numbers(tiny_config, tmp_path):
    # two trials of a sweep that freeze the same bottom groups (depth 2; the second with gradual
    # unfreezing, which reaches depth 2 in the last of its 3 epochs, and another LR): the second
    # trains on the first one's cached prefix outputs
    epochs = {"drift_probe": 0, "epochs": 3}
    first = tiny_config(strategy={"name": "layerwise", "unfreeze_depth": 2}, trainer=epochs)
    second = tiny_config(strategy={"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1},
                         optim={"lr": 2e-3}, trainer=epochs)
    a = run(first, tmp_path / "first")
    assert reuse.EXTRACTED.made == 1 and a["feature_cache_cut"] not in (None, "pre-logits")
    b = run(second, tmp_path / "second")
    assert reuse.EXTRACTED.made == 1 and b["feature_cache_cut"] == a["feature_cache_cut"]
    # another cut, and another image size, are other outputs
    run(tiny_config(strategy={"name": "layerwise", "unfreeze_depth": 1}, trainer={"drift_probe": 0}), tmp_path / "d1")
    run(tiny_config(strategy={"name": "layerwise", "unfreeze_depth": 2}, dataset={"image_size": 40},
                    trainer={"drift_probe": 0}), tmp_path / "px40")
    assert reuse.EXTRACTED.made == 3
    reuse.clear()  # as a fresh process
    fresh = run(second, tmp_path / "fresh")
    rows = [read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("second", "fresh")]
    times = ("elapsed_s", "train_s_cum")
    assert [{k: v for k, v in r.items() if not k.endswith("_s") and k not in times} for r in rows[0]] == \
        [{k: v for k, v in r.items() if not k.endswith("_s") and k not in times} for r in rows[1]]
    assert (b["test_acc"], b["train_flops"]) == (fresh["test_acc"], fresh["train_flops"])
    # the reused pass still counts in the training time: what the configuration costs
    first_epoch = rows[0][0]
    assert b["train_time_s"] > first_epoch["epoch_train_s"]
