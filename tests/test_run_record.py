"""A run's record is assembled in one place (src/training/record.py) from typed parts: the config,
the data's facts, the meters and the final evaluation. Checked here without training anything, and
a misspelled field is shown to fail before the first epoch, not after the last."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from src.record import schema
from src.record.schema import DriftMeasures, Measured, RunRecord
from src.training import record
from src.training.engine import EpochStats, EvalStats
from src.training.meters import FinalEval, Meters, Progress
from src.training.run import run


def _setup() -> SimpleNamespace:
    """What the record reads of a Setup, with numbers that tell its sources apart."""
    data = SimpleNamespace(name="digits", train=[0] * 40, val=[0] * 11, test=[0] * 12, skipped_files=["a.png"],
                           num_classes=10, load_s=0.5, cache="miss",
                           classes=[f"c{i}" for i in range(10)])
    return SimpleNamespace(data=data, passes=2, train=[0] * 5, groups=[0] * 7, runtime=SimpleNamespace(device="cpu"),
                           dataset_id="digits-3f2a", schedule=SimpleNamespace(trainable_params=1285, epochs=3),
                           model=torch.nn.Linear(4, 3))


def _meters() -> Meters:
    meters = Meters.start(count_flops=True, num_classes=10, select="best_val", progress=Progress())
    meters.clock.add(2.0, samples=120)
    meters.flops.forward, meters.flops.backward = 700, 300
    meters.best.acc, meters.best.epoch, meters.max_trainable = 0.75, 1, 4000
    return meters


def _final() -> FinalEval:
    confusion = [[4 if i == j else 0 for j in range(10)] for i in range(10)]
    confusion[0][1] = 1  # one image of class 0 taken for class 1
    return FinalEval(val=EvalStats(0.4, 0.8, 0.79, 11, 0.1, confusion), test=EvalStats(0.5, 0.7, 0.69, 12, 0.1),
                     ood={"shifted": record.ood_measures(EvalStats(0.9, 0.6, 0.55, 8, 0.1), skipped_files=1)},
                     inference_flops_per_image=42)


def _mem() -> SimpleNamespace:
    return SimpleNamespace(peak_mb=900.0, start_mb=800.0, method="linux_vmhwm_reset")


def test_a_completed_record_is_built_from_the_typed_parts(tiny_config, tmp_path):
    cfg = tiny_config(strategy={"name": "layerwise", "lr_decay": 2.0})
    rec = record.with_data(record.config_record(cfg, tmp_path), _setup())
    meters = _meters()
    meters.feature_cache_blocker = "group head trains"
    fit = record.fit_measures(_setup(), meters, _final(), _mem())
    drift = DriftMeasures(drift_probe_images=8, weight_change={"g": 0.1}, cka={"g": 0.9}, cka_features=0.95,
                          imagenet_agreement=None, drift_s=0.2)
    out = record.completed(rec, fit, drift, started=0.0).to_json()
    assert out["strategy"] == "layerwise" and out["strategy_params"]["lr_decay"] == 2.0 and out["seed"] == cfg.seed
    assert (out["dataset"], out["train_samples"], out["val_samples"], out["test_samples"]) == ("digits", 40, 11, 12)
    assert (out["passes_per_epoch"], out["steps_per_epoch"], out["skipped_files"], out["num_groups"]) == (2, 5, 1, 7)
    assert (out["dataset_id"], out["data_cache"], out["device"]) == ("digits-3f2a", "miss", "cpu")
    assert (out["val_acc"], out["test_acc"], out["test_loss"], out["best_epoch"]) == (0.8, 0.7, 0.5, 1)
    assert (out["train_flops"], out["train_flops_forward"], out["train_flops_backward"]) == (1000, 700, 300)
    assert out["images_per_s"] == 60.0 and out["inference_flops_per_image"] == 42 and out["total_params"] == 15
    assert out["trainable_params"] == 1285 and out["max_trainable_params_per_epoch"] == 4000
    assert out["feature_cache"] is False and out["feature_cache_blocker"] == "group head trains"
    assert out["ood"] == {"shifted": {"acc": 0.6, "balanced_acc": 0.55, "n": 8, "skipped_files": 1}}
    assert out["cka"] == {"g": 0.9} and out["status"] == "completed" and out["total_time_s"] > 0
    per_class = out["per_class"]
    assert per_class["classes"][:2] == ["c0", "c1"] and per_class["test"]["confusion"] == []
    assert per_class["val"]["recall"][:2] == [0.8, 1.0] and per_class["val"]["precision"][:2] == [1.0, 0.8]
    # every field of every section the run measures is in the file; the cache's cut only where one
    # was cached (an older file, and a run that cached nothing, have no such key)
    assert "feature_cache_cut" not in out
    for section in schema.SECTIONS:
        assert {f.name for f in dataclasses.fields(section)} - {"feature_cache_cut"} <= set(out), section.__name__
    assert RunRecord.from_json(json.loads(json.dumps(out))).to_json() == out


def test_pruned_and_stopped_records_carry_what_was_measured_and_no_result(tiny_config, tmp_path):
    rec = record.with_data(record.config_record(tiny_config(), tmp_path), _setup())
    meters = _meters()
    meters.progress.epoch, meters.progress.stopped = 1, "median rule"
    meters.progress.measured = record.measured(meters, epochs_trained=2)
    assert meters.progress.measured == Measured(2, 1, 0.75, 1000, 2.0, 4000, 700, 300, False, "off", None)
    meters.feature_cache_blocker, meters.feature_cache_cut = None, "blocks.3"  # a cached prefix
    meters.progress.measured = record.measured(meters, epochs_trained=2)
    pruned = record.pruned(rec, meters.progress, started=0.0).to_json()
    assert (pruned["status"], pruned["pruned_epoch"], pruned["reason"]) == ("pruned", 1, "median rule")
    assert pruned["epochs_trained"] == 2 and pruned["train_flops"] == 1000 and "test_acc" not in pruned
    assert (pruned["train_flops_forward"], pruned["train_flops_backward"]) == (700, 300)
    assert (pruned["feature_cache"], pruned["feature_cache_cut"]) == (True, "blocks.3")
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError as err:
        failed = record.stopped(rec, err, meters.progress).to_json()
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: disk on fire" and failed["failed_epoch"] == 1
    assert failed["measured_before_stop"] == dataclasses.asdict(meters.progress.measured)
    assert "val_acc" not in failed and "epochs_trained" not in failed and "disk on fire" in failed["traceback"]
    interrupted = record.stopped(rec, KeyboardInterrupt("signal SIGTERM"), Progress()).to_json()
    assert interrupted["status"] == "interrupted" and interrupted["measured_before_stop"] == {}


def test_every_epoch_row_feeds_metrics_and_the_tracker_alike(tmp_path):
    logged = []
    tracker = SimpleNamespace(log=lambda values, step: logged.append((step, values)))
    meters = _meters()
    row = record.epoch_row(0, {"head": 1e-3}, 1285, EpochStats(1.5, 120, 2.0), EvalStats(1.2, 0.5, 0.45, 11, 0.1),
                           meters)
    record.log_epoch(row, tmp_path, tracker)
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["train_flops_cum"] == 1000 and line["train_s_cum"] == 2.0 and line["lr/head"] == 1e-3
    assert logged == [(0, {k: v for k, v in line.items() if k != "schema_version"})]


def test_a_section_naming_a_field_the_record_lacks_fails_when_the_schema_loads(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Misspelled:
        test_acc: float
        tset_loss: float

    monkeypatch.setattr(schema, "SECTIONS", (*schema.SECTIONS, Misspelled))
    with pytest.raises(TypeError, match=r"Misspelled names fields that RunRecord does not have: \['tset_loss'\]"):
        schema._check_field_names()
    with pytest.raises(TypeError, match="tset_loss"):
        RunRecord().replace(Misspelled(0.5, 0.1))


def test_a_misspelled_data_field_fails_before_the_first_epoch(tiny_config, tmp_path, monkeypatch):
    real = record.with_data

    def misspelled(rec, s):
        return real(rec, s).replace(train_sample=len(s.data.train))

    monkeypatch.setattr(record, "with_data", misspelled)
    with pytest.raises(TypeError, match="train_sample"):
        run(tiny_config(), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()  # no epoch trained
    failed = json.loads((tmp_path / "result.json").read_text())
    assert failed["status"] == "failed" and failed["failed_epoch"] == -1 and "train_sample" in failed["error"]
