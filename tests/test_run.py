"""run() end to end on a tiny real model: the files it writes, frozen backbones, W&B offline."""

from __future__ import annotations

import json

import pytest
import torch

from src.record.digest import signed
from src.record.io import read_json_object, read_jsonl
from src.training.run import run

REQUIRED = (
    "strategy model dataset seed epochs image_size train_samples val_acc test_acc val_balanced_acc "
    "test_balanced_acc trainable_params total_params train_flops train_time_s images_per_s peak_mem_mb"
).split()


def test_run_writes_config_metrics_groups_and_result(tiny_config, tmp_path):
    # feature_cache off: every epoch's FLOPs are its own steps' (a cached frozen prefix adds a one-off pass)
    cfg = tiny_config(strategy={"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1},
                      trainer={"epochs": 3, "feature_cache": "off"})
    result = run(cfg, tmp_path)
    raw = json.loads((tmp_path / "result.json").read_text())
    on_disk = read_json_object(tmp_path / "result.json")  # its digest checked, and left out
    assert on_disk == result and raw == signed(result)  # run() returns what readers read; the file adds the digest
    for key in REQUIRED:
        assert on_disk[key] is not None, key
    assert on_disk["status"] == "completed" and 0 <= on_disk["test_acc"] <= 1
    assert on_disk["pretrained_weights"] == "none (random init)"  # the tiny test model is not pretrained
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    groups = json.loads((tmp_path / "param_groups.json").read_text())
    names = [g["name"] for g in groups["groups"]]
    # gradual unfreezing: trainable params and train FLOPs per epoch grow as groups thaw
    assert metrics[0]["trainable_params"] < metrics[1]["trainable_params"] < metrics[2]["trainable_params"]
    flops = [m["train_flops_cum"] for m in metrics]
    assert flops[1] - flops[0] > flops[0] > 0 and flops[2] - flops[1] > flops[1] - flops[0]
    # a group's LR is 0 until its epoch comes, then its own scheduled value
    below = names[-2]
    assert metrics[0][f"lr/{below}"] == 0.0 and metrics[1][f"lr/{below}"] > 0
    assert groups["groups"][-2]["epochs"] == [1, 2]
    assert on_disk["train_flops"] == flops[-1]
    assert (tmp_path / "config.yaml").read_text().startswith("model:")


@pytest.mark.slow  # four runs, 23-26 s: tests/test_strategies.py checks their schedules in the fast tier
def test_lpft_and_surgical_move_only_what_their_schedules_train(tiny_config, tmp_path):
    # LP-FT: the head alone for 2 epochs, then every group; the feature cache cannot apply. Drift is
    # measured on the selected model: the last one here (best_val might pick a probe-phase epoch).
    lpft = run(tiny_config(strategy={"name": "lpft", "probe_epochs": 2}, trainer={"epochs": 3, "select": "last"}),
               tmp_path / "lpft")
    metrics = read_jsonl(tmp_path / "lpft" / "metrics.jsonl")
    assert metrics[0]["trainable_params"] == metrics[1]["trainable_params"] < metrics[2]["trainable_params"]
    assert metrics[2]["trainable_params"] == lpft["total_params"] and lpft["feature_cache"] is False
    # result.json records the strategy's own knobs, and only those
    assert lpft["strategy_params"] == {"backbone_lr_scale": 0.1, "probe_epochs": 2}
    assert all(v > 0 for v in lpft["weight_change"].values())  # drift sees every group move
    # Surgical on group 1: drift finds that group, and only it, moved.
    surgical = run(tiny_config(strategy={"name": "surgical", "surgical_group": 1}, trainer={"epochs": 2, "select": "last"}),
                   tmp_path / "surgical")
    change = list(surgical["weight_change"].values())
    assert change[1] > 0 and [c for i, c in enumerate(change) if i != 1] == [0.0] * (len(change) - 1)
    assert surgical["strategy_params"] == {"backbone_lr_scale": 0.1, "surgical_group": 1}
    # group 0 (the stem: conv_stem, bn1) never trains: its output is computed once
    assert surgical["feature_cache"] is True and surgical["feature_cache_cut"] == "bn1"
    # BitFit: weights of convolutions (ndim > 1) below the head are bitwise unchanged, biases and norms moved.
    from src.models import build_model
    from src.training.run import seed_everything

    cfg = tiny_config(strategy={"name": "bitfit"}, trainer={"epochs": 2, "select": "last", "save_model": True})
    seed_everything(cfg.seed)
    start = build_model(cfg.model, 10).state_dict()
    bitfit = run(cfg, tmp_path / "bitfit")
    end = torch.load(tmp_path / "bitfit" / "model.pt", weights_only=True)
    head = {k for k in end if k.startswith("classifier.")}
    big = [k for k, v in end.items() if v.ndim > 1 and k not in head and v.is_floating_point()]
    small = [k for k, v in end.items() if v.ndim == 1 and k not in head and ("weight" in k or "bias" in k)]
    assert big and all(torch.equal(end[k], start[k]) for k in big)
    assert any(not torch.equal(end[k], start[k]) for k in small)
    assert bitfit["trainable_params"] < bitfit["total_params"] / 10
    # the stem's convolution (no bias) is the one module before bn1's trained scale and shift
    assert bitfit["feature_cache"] is True and bitfit["feature_cache_cut"] == "conv_stem"


@pytest.mark.slow  # two runs, 7-13 s
def test_l2sp_keeps_the_backbone_nearer_its_start_than_full(tiny_config, tmp_path):
    common = {"trainer": {"epochs": 2, "select": "last"}, "optim": {"lr": 0.01}}
    full = run(tiny_config(strategy={"name": "full", "backbone_lr_scale": 1.0}, **common), tmp_path / "full")
    l2sp = run(tiny_config(strategy={"name": "l2sp", "backbone_lr_scale": 1.0, "l2sp_alpha": 100.0}, **common),
               tmp_path / "l2sp")
    assert l2sp["strategy_params"]["l2sp_alpha"] == 100.0 and "l2sp_alpha" not in full["strategy_params"]
    # a strong pull toward the pretrained weights: every group moves less than under full fine-tuning
    assert all(l2sp["weight_change"][g] < full["weight_change"][g] for g in full["weight_change"])


def test_frozen_backbone_is_bitwise_unchanged_and_head_trains(tiny_config, tmp_path):
    from src.models import build_model
    from src.training.run import seed_everything

    cfg = tiny_config(strategy={"name": "frozen"}, trainer={"select": "last", "save_model": True})
    seed_everything(cfg.seed)
    before = build_model(cfg.model, 10).state_dict()
    result = run(cfg, tmp_path)
    after = torch.load(tmp_path / "model.pt", weights_only=True)
    head = {"classifier.weight", "classifier.bias"}
    backbone = [k for k in before if k not in head]
    assert len(backbone) > 50
    for key in backbone:  # weights and BatchNorm running statistics alike
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert result["trainable_params"] == sum(after[k].numel() for k in head)


def test_same_seed_same_metrics(tiny_config, tmp_path):
    cfg = tiny_config(strategy={"name": "full"})
    a, b = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl")[-1]["train_loss"] == read_jsonl(tmp_path / "b" / "metrics.jsonl")[-1]["train_loss"]
    assert a["test_acc"] == b["test_acc"]


def test_wandb_offline_logs_metrics_that_read_back(tiny_config, tmp_path, monkeypatch):
    from tests import wandb_files

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no credentials: auto means offline
    cfg = tiny_config(strategy={"name": "full"}, logger={"kind": "wandb", "mode": "auto", "group": "g1"})
    result = run(cfg, tmp_path)
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    # run() has finished its W&B run, but in this process wandb-core may not have written the file
    # yet: read it once its exit record, the last one, is there
    wandb_files.closed(files[0])
    history = wandb_files.history(files[0])
    local = read_jsonl(tmp_path / "metrics.jsonl")
    assert [h["val_acc"] for h in history] == pytest.approx([m["val_acc"] for m in local])
    assert [h["train_loss"] for h in history] == pytest.approx([m["train_loss"] for m in local])
    summary = wandb_files.summary(files[0])
    assert summary["test_acc"] == pytest.approx(result["test_acc"])
    assert summary["train_flops"] == result["train_flops"]
    info = wandb_files.run_info(files[0])
    assert info.run_group == "g1" and info.job_type == "full"
    assert wandb_files.config(files[0])["strategy"]["name"] == "full"


def test_wandb_failure_never_fails_the_run(tiny_config, tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("W&B server unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = tiny_config(logger={"kind": "wandb", "mode": "online"})
    result = run(cfg, tmp_path)
    assert result["status"] == "completed"


def test_diverged_run_is_recorded_as_failed_not_as_a_result(tiny_config, tmp_path):
    from src.training.run import DivergedError

    cfg = tiny_config(optim={"lr": 1e30, "warmup_epochs": 0}, strategy={"name": "full"})
    with pytest.raises(DivergedError):
        run(cfg, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "DivergedError" in result["error"]
    assert "test_acc" not in result and result["failed_epoch"] == 0


@pytest.mark.parametrize("strategy, cut", [({"name": "frozen"}, "pre-logits"), ({"name": "layerwise", "unfreeze_depth": 1}, None)])
def test_a_pruned_run_records_how_its_epochs_ran(tiny_config, tmp_path, strategy, cut):
    # what the cache did is part of a pruned trial's cost: the same record as the completed run's
    cfg = tiny_config(strategy=strategy, trainer={"epochs": 3})
    done = run(cfg, tmp_path / "done")
    pruned = run(cfg, tmp_path / "pruned", on_epoch=lambda row: "stop" if row.epoch == 0 else None)
    assert pruned["status"] == "pruned" and done["status"] == "completed"
    assert done["feature_cache"] is True and (cut is None or done["feature_cache_cut"] == cut)
    for key in ("feature_cache", "feature_cache_cut"):
        assert pruned.get(key) == done.get(key), key
    assert pruned["train_flops_forward"] + pruned["train_flops_backward"] == pruned["train_flops"]


def test_run_stopped_by_its_epoch_callback_is_recorded_as_pruned(tiny_config, tmp_path):
    seen = []

    def stop_after_two(record):
        seen.append(record)
        return "stopped by the test" if record.epoch == 1 else None

    cfg = tiny_config(trainer={"epochs": 4})
    returned = run(cfg, tmp_path, on_epoch=stop_after_two)  # an outcome, not an error: nothing raised
    result = json.loads((tmp_path / "result.json").read_text())
    assert returned["status"] == "pruned" and returned["pruned_epoch"] == 1
    assert result["status"] == "pruned" and result["reason"] == "stopped by the test"
    assert result["epochs_trained"] == 2 and result["pruned_epoch"] == 1
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1] and [r.epoch for r in seen] == [0, 1]
    # the cost so far is real and recorded, and the best val accuracy is that of the epochs run
    assert result["train_flops"] == metrics[-1]["train_flops_cum"] > 0
    assert result["val_acc"] == max(m["val_acc"] for m in metrics)
    assert "test_acc" not in result  # a pruned run is never evaluated on test


@pytest.mark.parametrize("min_steps", [0, 7])
def test_feature_cache_trains_the_same_head_for_less(tiny_config, tmp_path, min_steps):
    # min_steps 7: several passes over the training set per epoch (trainer.min_epoch_steps), cached or not
    def frozen(cache: str, name: str) -> tuple[dict, list[dict]]:
        cfg = tiny_config(strategy={"name": "frozen"}, trainer={"epochs": 3, "feature_cache": cache, "min_epoch_steps": min_steps})
        result = run(cfg, tmp_path / name)
        return result, read_jsonl(tmp_path / name / "metrics.jsonl")

    plain, plain_m = frozen("off", "plain")
    cached, cached_m = frozen("on", "cached")
    assert (plain["feature_cache"], cached["feature_cache"]) == (False, True)
    passes = plain["passes_per_epoch"]
    assert cached["passes_per_epoch"] == passes and (passes > 1) == (min_steps > 0)
    # the same head training: same samples in the same order, same dropout draws, same features
    for a, b in zip(plain_m, cached_m):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert abs(b["val_acc"] - a["val_acc"]) <= 1 / plain["val_samples"] + 1e-12
    assert abs(cached["test_acc"] - plain["test_acc"]) <= 1 / plain["test_samples"] + 1e-12
    # cost: one backbone pass (counted) + the head's steps, instead of a backbone pass every epoch.
    # Uncached, per image and epoch: backbone + head forward, and the head's weight gradient (as
    # much as its forward); inference_flops_per_image is backbone + head forward.
    n, epochs = plain["train_samples"], 3
    per_image_epoch = plain["train_flops"] / (epochs * passes * n)
    head_fwd = per_image_epoch - plain["inference_flops_per_image"]
    backbone_fwd = plain["inference_flops_per_image"] - head_fwd
    assert 0 < head_fwd < backbone_fwd
    # (the backbone pass is once per image, however many passes the head makes)
    assert cached["train_flops"] == pytest.approx(backbone_fwd * n + 2 * head_fwd * epochs * passes * n, rel=1e-9)


def test_feature_cache_on_where_it_cannot_apply_is_a_config_error(tiny_config, tmp_path):
    from src.config import ConfigError

    cfg = tiny_config(strategy={"name": "full"}, trainer={"feature_cache": "on"})
    with pytest.raises(ConfigError, match="feature_cache=on, but .* cannot be cached: group .* trains"):
        run(cfg, tmp_path)
    auto = run(tiny_config(strategy={"name": "frozen"}, dataset={"augment": True}), tmp_path / "aug")
    assert auto["feature_cache"] is False and auto["feature_cache_blocker"].startswith("augmentation")


@pytest.mark.slow
def test_compiled_model_trains_to_the_same_result(tiny_config, tmp_path):
    # torch.compile on CPU (inductor, C++): same parameters, so the run's numbers match eager mode
    # up to kernel rounding; the model's state dict keeps its names (no _orig_mod. prefix).
    eager = run(tiny_config(strategy={"name": "full"}, trainer={"save_model": True}), tmp_path / "eager")
    compiled = run(tiny_config(strategy={"name": "full"}, trainer={"compile": True, "save_model": True}), tmp_path / "compiled")
    assert compiled["train_flops"] == eager["train_flops"]
    assert abs(compiled["val_acc"] - eager["val_acc"]) <= 2 / eager["val_samples"]
    state = torch.load(tmp_path / "compiled" / "model.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state)


@pytest.mark.parametrize("switch, amp, last", [("auto", "auto", False), ("on", "auto", True), ("off", "off", False),
                                               ("auto", "off", False)])
def test_on_cuda_auto_is_channels_first_with_bf16(tiny_config, monkeypatch, switch, amp, last):
    # Measured on an H200 (docs/cost-and-speed.md, GPU): channels_last slowed Lite0's training there,
    # bf16 cut its peak memory by 38 % at the same speed. No GPU is needed to resolve the settings.
    from src.training.setup import resolve_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rt = resolve_runtime(tiny_config(trainer={"channels_last": switch, "amp": amp}))
    assert rt.device.type == "cuda" and rt.channels_last is last
    assert rt.amp_dtype == (torch.bfloat16 if amp == "auto" else None)


@pytest.mark.parametrize("switch, last", [("auto", True), ("on", True), ("off", False)])
def test_the_layout_follows_trainer_channels_last_on_cpu_too(tiny_config, tmp_path, switch, last):
    # auto is channels_last on CPU (measured faster with the pinned torch: benchmarks/layout.py), not
    # on CUDA (the test above); off gives channels-first. The model's 4-d weights and every batch it sees must agree.
    from src.training.setup import setup

    s = setup(tiny_config(trainer={"channels_last": switch}), tmp_path)
    fmt = torch.channels_last if last else torch.contiguous_format
    assert s.runtime.channels_last is last
    convs = [p for p in s.model.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1]
    assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
    for batches in (s.train, s.val):
        x, _ = next(iter(batches))
        assert x.is_contiguous(memory_format=fmt) and (last is False or not x.is_contiguous())
