"""A run's text files that a disk rotted into bytes that are not UTF-8 (one flipped high bit is
enough): the same command reads them as unreadable lines or files, says so in one line naming the
file, and keeps what was finished; it never stops on a bare UnicodeDecodeError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.config import ConfigError, RunConfig
from src.record.io import read_json_object, read_jsonl
from src.training import checkpoint
from src.training.run import RunDirTaken, run
from tests.test_resume import Killed, run_killed_in_save


def _rot(path: Path, at: int) -> None:
    """The byte at `at` made 0xff: never valid in UTF-8, as a rotted high bit leaves a text file."""
    data = bytearray(path.read_bytes())
    data[at] = 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def killed_after_epoch_0(tmp_path_factory) -> tuple[RunConfig, Path]:
    """A 2-epoch run killed after it logged epoch 1's row and before that epoch's checkpoint: the
    folder holds checkpoint_epoch000.pt and a metrics.jsonl of epochs 0 and 1."""
    from tests.conftest import TINY, merge

    cfg = RunConfig.from_dict(merge(TINY, {"trainer": {"drift_probe": 0}}))
    folder = tmp_path_factory.mktemp("killed") / "run"

    def die_at_epoch_1(save):
        def saved(run_dir, state, keep):
            if state["epoch"] == 1:
                raise Killed()
            return save(run_dir, state, keep)
        return saved

    run_killed_in_save(cfg, folder, die_at_epoch_1)
    (folder / "result.json").unlink()  # a SIGKILL leaves none (the in-process kill recorded itself)
    assert [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")] == [0, 1]
    return cfg, folder


def _copy(source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    return folder


def test_a_rotted_row_the_resume_drops_anyway_does_not_stop_it(killed_after_epoch_0, tmp_path):
    cfg, folder = killed_after_epoch_0[0], _copy(killed_after_epoch_0[1], tmp_path)
    metrics = folder / "metrics.jsonl"
    _rot(metrics, metrics.read_bytes().index(b"\n") + 30)  # in epoch 1's row, past the checkpoint
    result = run(cfg, folder)
    assert result["status"] == "completed"
    assert [r["epoch"] for r in read_jsonl(metrics)] == [0, 1]  # the rotted row replaced by a real one


def test_a_rotted_row_the_checkpoint_continues_is_refused_in_one_line_naming_the_file(killed_after_epoch_0, tmp_path):
    cfg, folder = killed_after_epoch_0[0], _copy(killed_after_epoch_0[1], tmp_path)
    metrics = folder / "metrics.jsonl"
    _rot(metrics, 30)  # in epoch 0's row, which the checkpoint of epoch 0 continues
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as err:
        run(cfg, folder)
    line = str(err.value)
    assert "\n" not in line and str(metrics) in line and "does not hold epochs 0-0" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # left as it was


def test_a_finished_run_whose_config_yaml_rotted_is_kept_and_said_so(tiny_config, tmp_path):
    cfg = tiny_config(trainer={"epochs": 1, "drift_probe": 0})
    run(cfg, tmp_path)
    _rot(tmp_path / "config.yaml", 40)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    # was: UnicodeDecodeError, and the entrypoint said "run failed ... (recorded in result.json)"
    # beside a result.json that still said completed
    with pytest.raises(RunDirTaken, match=r"holds a completed run whose config.yaml is missing or unreadable"):
        run(cfg, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert read_json_object(tmp_path / "result.json")["status"] == "completed"
    json.dumps(before["result.json"].decode())  # the record is still text


def test_a_damaged_newest_checkpoint_says_moving_it_away_continues_from_the_one_before(tiny_config, tmp_path, monkeypatch):
    """trainer.keep_checkpoints=2 keeps an earlier whole checkpoint: the refusal of a newest one cut
    short said "move it away to train this run from epoch 0", and moving it continued from the other."""
    cfg = tiny_config(trainer={"epochs": 3, "drift_probe": 0, "keep_checkpoints": 2})
    save = checkpoint.save

    def save_then_die(run_dir, state, keep):
        path = save(run_dir, state, keep)
        if state["epoch"] == 1:
            raise Killed()
        return path

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save_then_die)
        with pytest.raises(Killed):
            run(cfg, tmp_path)
    (tmp_path / "result.json").unlink()  # a SIGKILL leaves none
    older, newest = checkpoint.checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path)
    line = str(err.value)
    assert str(newest) in line and f"move it away to continue from {older.name}, the one before it" in line, line
    newest.rename(tmp_path.parent / newest.name)  # as the line says
    assert run(cfg, tmp_path)["status"] == "completed"
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2]
