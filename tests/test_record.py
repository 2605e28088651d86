"""The typed, versioned result record (src/record/schema.py): round trips, the version 1 upgrade,
unknown keys kept, and what a stopped run's record leaves out. A real version 1 run folder is kept
in tests/fixtures/v1_layerwise (result.json, metrics.jsonl, param_groups.json of a completed
layerwise run on digits, written before schema versions existed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.record.io import dumps, read_jsonl, write_json
from src.record.schema import SCHEMA_VERSION, V1_STRATEGY_KNOBS, EpochRecord, RunRecord

V1_RUN = Path(__file__).parent / "fixtures" / "v1_layerwise"


def v1_result() -> dict:
    return json.loads((V1_RUN / "result.json").read_text())


def test_a_version_1_result_is_upgraded_with_its_own_knobs_nested():
    old = v1_result()
    assert "schema_version" not in old and old["lr_decay"] == 2.6 and old["backbone_lr_scale"] is None
    rec = RunRecord.from_json(old)
    assert rec.schema_version == SCHEMA_VERSION == 2
    assert rec.strategy_params == {"lr_decay": 2.6, "unfreeze_depth": "all", "unfreeze_every": 0}
    assert rec.strategy == "layerwise" and rec.seed == 0 and rec.test_acc == old["test_acc"]
    assert rec.weight_change == old["weight_change"] and rec.extra == {}
    out = rec.to_json()
    assert out["schema_version"] == 2 and not set(V1_STRATEGY_KNOBS) & set(out)
    # Everything else the old file held is written back, value for value.
    assert {k: v for k, v in old.items() if k not in V1_STRATEGY_KNOBS} == {
        k: v for k, v in out.items() if k not in ("schema_version", "strategy_params")}


def test_a_version_2_record_round_trips_exactly_with_unknown_keys_kept():
    v2 = RunRecord.from_json(v1_result()).to_json() | {"from_the_future": {"a": 1}, "note": "hand-edited"}
    rec = RunRecord.from_json(json.loads(dumps(v2)))
    assert rec.extra == {"from_the_future": {"a": 1}, "note": "hand-edited"}
    assert rec.get("note") == "hand-edited"
    assert rec.to_json() == v2 and list(rec.to_json()) == list(v2)
    newer = v2 | {"schema_version": 3}
    assert RunRecord.from_json(newer).to_json() == newer  # a newer file is not relabelled as ours


@pytest.mark.parametrize("version", ["2", 0, True, None])
def test_a_schema_version_that_is_no_version_is_refused(version):
    with pytest.raises(ValueError, match="schema_version"):
        RunRecord.from_json({"strategy": "full", "schema_version": version})


def test_a_stopped_run_writes_no_field_that_reads_as_a_result():
    config = {"strategy": "full", "seed": 1, "strategy_params": {"backbone_lr_scale": 0.1}}
    pruned = RunRecord(**config, status="pruned", pruned_epoch=1, reason="halving", epochs_trained=2, val_acc=0.5,
                       train_flops=None, total_time_s=3.0).to_json()
    assert pruned["val_acc"] == 0.5 and pruned["reason"] == "halving"
    assert "test_acc" not in pruned and "train_flops" not in pruned and "train_samples" not in pruned
    assert pruned["train_per_class"] is None  # the config is always written whole
    failed = RunRecord(**config, status="failed", error="DivergedError: nan", failed_epoch=0,
                       measured_before_stop={}, torch_version="2").to_json()
    assert "test_acc" not in failed and "val_acc" not in failed and failed["measured_before_stop"] == {}
    assert failed["hostname"] is None  # a section that was measured is written whole


def test_a_completed_run_writes_every_measure_null_where_none():
    rec = RunRecord(strategy="frozen", status="completed", test_acc=0.9, drift_probe_images=8)
    out = rec.to_json()
    assert out["train_flops"] is None and out["feature_cache_blocker"] is None and out["test_acc"] == 0.9
    assert out["imagenet_agreement"] is None  # measured: no ImageNet head; not the same as no drift
    assert "cka" in out and "error" not in out and "pruned_epoch" not in out
    assert "drift_s" not in RunRecord(strategy="frozen", status="completed").to_json()
    assert RunRecord.from_json(out) == rec


def test_non_finite_numbers_are_null_on_disk(tmp_path):
    rec = RunRecord(strategy="full", status="completed", val_acc=float("nan"), cka={"a": float("inf")})
    write_json(tmp_path / "result.json", rec.to_json())
    back = RunRecord.from_json(json.loads((tmp_path / "result.json").read_text()))
    assert back.val_acc is None and back.cka == {"a": None}


def test_epoch_records_keep_flat_lr_keys_and_round_trip():
    [first, *_] = read_jsonl(V1_RUN / "metrics.jsonl")
    rec = EpochRecord.from_json(first)
    assert rec.epoch == 0 and rec.val_acc == first["val_acc"] and rec.train_flops_cum == first["train_flops_cum"]
    assert rec.lrs["head"] == first["lr/head"] and rec.get("lr/head") == first["lr/head"]
    assert len(rec.lrs) == sum(k.startswith("lr/") for k in first) and rec.extra == {}
    out = rec.to_json()
    assert out == {"schema_version": 2} | first and list(out)[1:] == list(first)
    odd = out | {"grad_norm": 1.5}
    assert EpochRecord.from_json(odd).to_json() == odd and EpochRecord.from_json(odd).get("grad_norm") == 1.5


def test_fixture_folder_is_a_version_1_run(tmp_path):
    shutil.copytree(V1_RUN, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.jsonl", "param_groups.json", "result.json"]
    assert all("schema_version" not in line for line in read_jsonl(tmp_path / "run" / "metrics.jsonl"))


def test_a_bit_flipped_in_the_digest_s_own_name_is_damage_not_an_older_file(tmp_path):
    # a file without the digest reads as written before digests, unchecked; a flipped bit in the
    # key's name made a damaged file read so, its values never checked (here val_acc changed too)
    from src.record.digest import DIGEST_KEY, signed
    from src.record.io import read_json_object

    text = json.dumps(signed({"val_acc": 0.9111, "seed": 0}))
    at = text.index(DIGEST_KEY)
    refused = 0
    for i in range(len(DIGEST_KEY)):
        for bit in range(7):
            name = DIGEST_KEY[:i] + chr(ord(DIGEST_KEY[i]) ^ (1 << bit)) + DIGEST_KEY[i + 1:]
            if name[i] in '"\\' or not name[i].isprintable():
                continue  # no longer JSON's string: refused as unreadable JSON already
            path = tmp_path / "result.json"
            path.write_text(text[:at].replace("0.9111", "0.9011") + name + text[at + len(DIGEST_KEY):])
            with pytest.raises(ValueError, match=f"is '{DIGEST_KEY}' damaged since it was written"):
                read_json_object(path)
            refused += 1
    assert refused > 80
    # a file that never had one (older, or made by hand) still reads as it is
    (tmp_path / "old.json").write_text(json.dumps({"val_acc": 0.9011, "content_sha": "x"}))
    assert read_json_object(tmp_path / "old.json") == {"val_acc": 0.9011, "content_sha": "x"}
