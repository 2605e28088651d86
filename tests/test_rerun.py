"""The Pareto set's re-runs (src/search/rerun.py) read back a finished seed only when it is a run of the
config the re-run composes now: one of another config (other `rerun_overrides`, ...) is refused in one
line and kept, never reported as this re-run. In process, with a stand-in for training."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from src.config import ConfigError
from src.record.io import CONFIG_FILE, RESULT_FILE, write_json
from src.search import rerun as rerun_module
from src.search.rerun import rerun_pareto
from src.training import checkpoint
from src.training.run import RunDirTaken

BASE = ["logger=none", "trainer.epochs=2", "dataset.image_size=32", "dataset.train_per_class=5"]


def _study() -> optuna.Study:
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={"optim.lr": 1e-3}, values=[0.5],
                                              distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}))
    return study


@pytest.fixture
def trained(monkeypatch):
    """Training stood in for: the run folder gets the config and a completed record whose test_acc
    is the config's epochs (so a read-back says which config it came from)."""
    calls: list[Path] = []

    def fake_run(cfg, run_dir: Path, run_name=None, on_epoch=None):
        calls.append(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        record = {"status": "completed", "val_acc": 0.5, "test_acc": float(cfg.trainer.epochs), "seed": cfg.seed}
        write_json(run_dir / RESULT_FILE, record)
        return record

    monkeypatch.setattr(rerun_module, "run", fake_run)
    return calls


def _rerun(tmp_path: Path, overrides: list[str], seeds=(7, 8)) -> list[dict]:
    return rerun_pareto(_study(), [{"trial": 0}], BASE + overrides, list(seeds), tmp_path / "rerun", "study")


def test_a_finished_rerun_of_the_same_config_is_read_back_not_trained_again(tmp_path, trained):
    first = _rerun(tmp_path, [])
    assert len(trained) == 2 and first[0]["test_acc_values"] == [2.0, 2.0]
    again = _rerun(tmp_path, ["logger=none"])  # a setting that changes no number: the same runs
    assert len(trained) == 2 and again == first


def test_a_finished_rerun_of_another_config_is_refused_naming_the_folder_and_the_change_and_kept(tmp_path, trained):
    _rerun(tmp_path, [])
    seed_7 = tmp_path / "rerun" / "trial_0000" / "seed_7"
    before = {p.name: p.read_bytes() for p in seed_7.iterdir()}
    with pytest.raises(RunDirTaken) as refused:
        _rerun(tmp_path, ["trainer.epochs=3"])
    message = str(refused.value)
    assert "\n" not in message and str(seed_7) in message and "trainer.epochs: 2 -> 3" in message
    assert "rerun_overrides" in message and f"move {tmp_path / 'rerun'} away" in message
    assert len(trained) == 2  # nothing trained
    assert {p.name: p.read_bytes() for p in seed_7.iterdir()} == before  # the earlier re-run kept as it was
    assert yaml.safe_load((seed_7 / CONFIG_FILE).read_text())["trainer"]["epochs"] == 2


def test_every_seed_is_checked_before_any_trains(tmp_path, trained):
    """A new seed beside one of another config: refused before the new seed trains."""
    _rerun(tmp_path, [], seeds=(8,))
    with pytest.raises(RunDirTaken, match="seed_8"):
        _rerun(tmp_path, ["trainer.epochs=3"], seeds=(7, 8))
    assert not (tmp_path / "rerun" / "trial_0000" / "seed_7").exists() and len(trained) == 1


def test_an_interrupted_rerun_of_another_config_is_not_resumed_from_its_checkpoint(tmp_path, trained):
    _rerun(tmp_path, [], seeds=(7,))
    seed_7 = tmp_path / "rerun" / "trial_0000" / "seed_7"
    old = yaml.safe_load((seed_7 / CONFIG_FILE).read_text())
    write_json(seed_7 / RESULT_FILE, {"status": "interrupted", "seed": 7})
    torch.save({"format": checkpoint.FORMAT, "config": json.dumps(checkpoint.numeric_config(old)),
                "code": checkpoint.code_version(), "epoch": 0}, seed_7 / "checkpoint_epoch000.pt")
    with pytest.raises(ConfigError, match=r"checkpoint_epoch000\.pt was written by another config \(trainer\.epochs: 2 -> 3\)"):
        _rerun(tmp_path, ["trainer.epochs=3"], seeds=(7,))
    assert len(trained) == 1 and (seed_7 / "checkpoint_epoch000.pt").is_file()


def test_a_rerun_another_worker_is_training_is_waited_for_and_read_back_not_refused(tmp_path, monkeypatch):
    """Two workers of one study (the same command in each) re-run the same Pareto set when the search
    ends: the second was refused the folder the first was training (FolderInUse, exit 2)."""
    import threading

    from src.record import lock

    trained: list[Path] = []
    holding, release = threading.Event(), threading.Event()

    def locked_run(cfg, run_dir: Path, run_name=None, on_epoch=None):  # as run(): the folder locked, a finished run read back
        with lock.held(run_dir):
            if (run_dir / RESULT_FILE).is_file():
                return json.loads((run_dir / RESULT_FILE).read_text())
            trained.append(run_dir)
            release.set()  # the other worker finishes while this one trains: deterministic
            (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            record = {"status": "completed", "val_acc": 0.5, "test_acc": 0.25, "seed": cfg.seed}
            write_json(run_dir / RESULT_FILE, record)
            return record

    monkeypatch.setattr(rerun_module, "run", locked_run)
    monkeypatch.setattr(rerun_module, "WAIT_S", 0.05, raising=False)
    seed_7 = tmp_path / "rerun" / "trial_0000" / "seed_7"
    its_config = yaml.safe_dump(_composed(7).to_dict(), sort_keys=False)  # composed here: Hydra is one per process

    def other_worker():  # trains seed 7 (test_acc 0.75) while this worker's re-runs start
        with lock.held(seed_7):
            holding.set()
            release.wait(10)
            (seed_7 / CONFIG_FILE).write_text(its_config)
            write_json(seed_7 / RESULT_FILE, {"status": "completed", "val_acc": 0.5, "test_acc": 0.75, "seed": 7})

    other = threading.Thread(target=other_worker)
    other.start()
    assert holding.wait(10)
    try:
        [row] = _rerun(tmp_path, [])
    finally:
        release.set()
        other.join()
    assert trained == [tmp_path / "rerun" / "trial_0000" / "seed_8"]  # seed 7 was the other worker's
    assert row["test_acc_values"] == [0.75, 0.25]


def _composed(seed: int):
    from src.gate import compose_train, to_run_config

    return to_run_config(compose_train(BASE + ["optim.lr=0.001", f"seed={seed}"]), group="study-rerun")


def test_a_seed_with_no_number_is_said_in_the_rerun_table_and_every_seed_null_prints(tmp_path, monkeypatch):
    """A re-run whose test_acc was null (a NaN measured, written as null) was dropped from the mean
    unsaid, and when every seed's was null the table's printing failed (KeyError 'test_acc') after the
    re-runs had trained."""
    from src.search.rerun import format_rerun

    def null_test(cfg, run_dir: Path, run_name=None, on_epoch=None):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        record = {"status": "completed", "val_acc": 0.5, "seed": cfg.seed,
                  "test_acc": None if cfg.seed == 8 or "trainer.epochs=3" in run_name else 0.75}
        write_json(run_dir / RESULT_FILE, record)
        return record

    monkeypatch.setattr(rerun_module, "run", lambda cfg, run_dir, run_name=None, on_epoch=None:
                        null_test(cfg, run_dir, f"{run_name} trainer.epochs={cfg.trainer.epochs}"))
    [row] = _rerun(tmp_path / "a", [])
    assert row["test_acc_values"] == [0.75] and row["test_acc_missing_seeds"] == [8]
    assert "test acc 0.7500 (none on seed 8)" in format_rerun([row])
    [row] = _rerun(tmp_path / "b", ["trainer.epochs=3"])  # every seed null
    assert "test_acc" not in row and row["test_acc_missing_seeds"] == [7, 8]
    assert "test acc - (none on seeds 7, 8)  val acc 0.5000 ± 0.0000" in format_rerun([row])
