"""Resume from the last completed epoch: a stopped run, started again in its folder, ends exactly as
an uninterrupted one; checkpoints that are damaged or another config's are refused in one line; a
finished run is kept, never trained again; model_best.pt holds the weights test was measured on."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from src.config import ConfigError, RunConfig
from src.data.identity import dataset_identity
from src.record.io import read_json_object, read_jsonl
from src.training import checkpoint, engine
from src.training.run import RunDirTaken, run
from tests.cli import env
from tests.disks import small_disk  # noqa: F401 (a fixture)

# What differs between two runs that computed the same numbers: the clock, the process, the folder.
TIMES = {"epoch_train_s", "epoch_val_s", "elapsed_s", "train_s_cum"}
NOT_NUMBERS = {"total_time_s", "train_time_s", "images_per_s", "data_load_s", "drift_s", "peak_mem_mb",
               "peak_mem_start_mb", "run_dir", "pid", "hostname", "cpu_threads"}
GRADUAL = {"strategy": {"name": "layerwise", "unfreeze_every": 1}, "dataset": {"augment": "standard"}}
FROZEN = {"strategy": {"name": "frozen"}}
# the bottom groups never train: their output is cached (a frozen prefix), the rest trains on it
PREFIX = {"strategy": {"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1}}


class Killed(Exception):
    """Stands for SIGKILL in-process: the run ends right there, as a kill would end it."""


def assert_same_run(a: Path, b: Path) -> None:
    """Every metrics.jsonl value and every result.json value but times and the machine's: equal, bit for bit."""
    rows_a, rows_b = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [r["epoch"] for r in rows_b] == [r["epoch"] for r in rows_a]
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in rb.items() if k not in TIMES} == {k: v for k, v in ra.items() if k not in TIMES}
    ra, rb = (read_json_object(d / "result.json") for d in (a, b))  # (their digests differ with their times)
    assert ra["status"] == rb["status"] == "completed"
    assert {k: v for k, v in rb.items() if k not in NOT_NUMBERS} == {k: v for k, v in ra.items() if k not in NOT_NUMBERS}
    assert torch.equal(*(torch.load(d / "model_best.pt", weights_only=True)["classifier.weight"] for d in (a, b)))


def stop_after_checkpoint(monkeypatch, epoch: int) -> None:
    """The run is killed the moment its checkpoint of `epoch` is on disk."""
    save = checkpoint.save

    def save_then_die(run_dir, state, keep):
        path = save(run_dir, state, keep)
        if state["epoch"] == epoch:
            raise Killed(path)
        return path

    monkeypatch.setattr(checkpoint, "save", save_then_die)


@pytest.mark.parametrize("extra, kill", [
    (GRADUAL, "log"),  # gradual unfreezing + augmentation, killed after epoch 1's row, before its checkpoint
    pytest.param(GRADUAL, 3, marks=pytest.mark.slow),  # after the last checkpoint, which holds an earlier best epoch
    (FROZEN, 1),  # the feature cache, killed right after epoch 1's checkpoint
    (PREFIX, 1),  # a cached frozen prefix: the whole model is checkpointed (the rest of it trains)
])
def test_a_stopped_run_resumes_to_the_same_numbers(tiny_config, tmp_path, monkeypatch, extra, kill):
    cfg = tiny_config(**extra, trainer={"epochs": 4 if kill == 3 else 3, "drift_probe": 16})
    run(cfg, tmp_path / "straight")
    with monkeypatch.context() as m:
        if kill == "log":
            def die(row):
                if row.epoch == 1:
                    raise Killed()
            with pytest.raises(Killed):
                run(cfg, tmp_path / "stopped", on_epoch=die)
            assert len(read_jsonl(tmp_path / "stopped" / "metrics.jsonl")) == 2  # epoch 1 logged, not checkpointed
        else:
            stop_after_checkpoint(m, kill)
            with pytest.raises(Killed):
                run(cfg, tmp_path / "stopped")
    left = checkpoint.checkpoints(tmp_path / "stopped")
    assert [p.name for p in left] == [f"checkpoint_epoch{0 if kill == 'log' else kill:03d}.pt"]  # only the last is kept
    state = torch.load(left[0], weights_only=True)
    if kill == 3:  # the selected epoch (2) is not the last: its weights travel in the checkpoint
        assert state["best"] is not None
    # with the feature cache nothing below the head can change: only the head's weights are kept
    assert state["head_only"] == (extra is FROZEN)
    assert (set(state["model"]) == {"classifier.weight", "classifier.bias"}) == (extra is FROZEN)
    resumed = run(cfg, tmp_path / "stopped")
    assert resumed["status"] == "completed" and resumed["feature_cache"] is (extra is not GRADUAL)
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")
    assert checkpoint.checkpoints(tmp_path / "stopped") == []  # finished: resume needs none


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run folder holding the checkpoint of epoch 0 of a 2-epoch run that was then killed."""
    from tests.conftest import TINY, merge

    cfg = RunConfig.from_dict(merge(TINY, {"trainer": {"drift_probe": 0}}))
    folder = tmp_path_factory.mktemp("stopped") / "run"

    def save_then_die(save):
        def saved(run_dir, state, keep):
            save(run_dir, state, keep)
            raise Killed()
        return saved

    run_killed_in_save(cfg, folder, save_then_die)
    return cfg, folder


def run_killed_in_save(cfg: RunConfig, folder: Path, dying) -> None:
    """`run(cfg, folder)` with checkpoint.save replaced by `dying(save)`, which raises Killed (a SIGKILL
    in-process) where the test wants the run to end; save is restored however it ends."""
    save = checkpoint.save
    checkpoint.save = dying(save)  # (monkeypatch is function-scoped; the module fixtures using this are not)
    try:
        with pytest.raises(Killed):
            run(cfg, folder)
    finally:
        checkpoint.save = save


def _copy(stopped_run, tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(stopped_run[1], folder)
    return folder


def test_a_damaged_checkpoint_is_refused_in_one_line_naming_it(stopped_run, tmp_path):
    cfg, folder = stopped_run[0], _copy(stopped_run, tmp_path)
    (path,) = checkpoint.checkpoints(folder)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short, as a dying disk would leave it
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ConfigError) as err:
        run(cfg, folder)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "damaged or not a checkpoint" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written, nothing trained


def test_a_checkpoint_with_one_flipped_bit_is_refused_not_continued(stopped_run, tmp_path):
    """A bit that rotted in a weight leaves a checkpoint torch.load reads without a word; the run
    continued from it (a wrong run, or a NaN recorded as the run's own divergence). Its CRC-32 says so."""
    from tests.disks import flip_bit

    cfg, folder = stopped_run[0], _copy(stopped_run, tmp_path)
    (path,) = checkpoint.checkpoints(folder)
    flip_bit(path)
    before = _all_files(folder)
    with pytest.raises(ConfigError) as err:
        run(cfg, folder)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "damaged" in line and "CRC-32" in line, line
    assert _all_files(folder) == before  # refused before anything was written


def test_a_killed_write_s_temp_file_does_not_keep_the_disk_full_on_resume(stopped_run, small_disk):
    """A kill mid-save leaves `.checkpoint_epochNNN.pt.HEX.tmp`; it was removed only after the next save,
    so where it took the room that save needed, the same command failed on a full disk every time."""
    from tests.disks import fill

    cfg, stopped = stopped_run
    (ckpt,) = checkpoint.checkpoints(stopped)
    needed_kib = 2 * ckpt.stat().st_size // 1024 + 512  # the next checkpoint, model_best.pt and the records
    free_kib = ckpt.stat().st_size // 1024 // 2  # not room for the next checkpoint, until the leftover goes
    disk = small_disk(sum(p.stat().st_size for p in stopped.iterdir()) // 1024 + free_kib + needed_kib)
    folder = disk / "run"
    shutil.copytree(stopped, folder)
    fill(disk, free_kib, name=f"run/.{ckpt.name}.0123456789ab.tmp")  # as a killed save leaves it
    result = run(cfg, folder)
    assert result["status"] == "completed" and not list(folder.glob(".*.tmp"))


def test_a_checkpoint_of_another_config_or_code_is_refused(stopped_run, tiny_config, tmp_path, monkeypatch):
    cfg, folder = stopped_run[0], _copy(stopped_run, tmp_path)
    (path,) = checkpoint.checkpoints(folder)
    data = dataset_identity(cfg.dataset)
    other = cfg.to_dict() | {"seed": 7}
    with pytest.raises(checkpoint.CheckpointError, match=r"written by another config \(seed: 0 -> 7\)") as err:
        run(RunConfig.from_dict(other), folder)
    assert str(path) in str(err.value)
    # settings that change no number do not make it foreign
    assert checkpoint.latest(folder, RunConfig.from_dict(cfg.to_dict() | {"logger": {"kind": "none", "project": "x"}}), data)
    monkeypatch.setattr(checkpoint, "code_version", lambda: "0123456789abcdef")
    with pytest.raises(checkpoint.CheckpointError, match="written by other code"):
        checkpoint.latest(folder, cfg, data)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    torch.save(state | {"format": checkpoint.FORMAT + 1}, path)
    with pytest.raises(checkpoint.CheckpointError, match=f"has format {checkpoint.FORMAT + 1}"):
        checkpoint.latest(folder, cfg, data)
    torch.save({"weights": torch.zeros(2)}, path)  # someone else's file under the name
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint of this project"):
        checkpoint.latest(folder, cfg, data)


def test_a_checkpoint_holds_only_what_weights_only_loads(stopped_run):
    (path,) = checkpoint.checkpoints(stopped_run[1])
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 0 and state["format"] == checkpoint.FORMAT
    assert {"model", "optimizer", "scheduler", "rng", "meters"} <= state.keys()
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python", "batches"}
    assert not list(stopped_run[1].glob(".*.tmp"))  # written whole: no temporary file left


def test_a_finished_run_is_kept_and_another_config_refused(tiny_config, tmp_path):
    cfg = tiny_config(trainer={"epochs": 1, "drift_probe": 0})
    first = run(cfg, tmp_path)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert run(cfg, tmp_path) == read_json_object(tmp_path / "result.json") == json.loads(json.dumps(first))
    with pytest.raises(RunDirTaken, match=r"already holds a completed run of another config \(seed: 0 -> 3\)"):
        run(tiny_config(trainer={"epochs": 1, "drift_probe": 0}, seed=3), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    # a finished run whose config.yaml is gone or empty cannot be told from another config's: kept,
    # and said so (an empty one listed every setting as changed, None -> ...)
    for damage in (b"", None):
        config = tmp_path / "config.yaml"
        config.unlink()
        if damage is not None:
            config.write_bytes(damage)
        with pytest.raises(RunDirTaken, match=r"holds a completed run whose config.yaml is missing or unreadable, so "
                                              r"it cannot be told whether it is this config's; it is kept"):
            run(cfg, tmp_path)
        config.write_bytes(files["config.yaml"])
    # a finished run's record damaged since (by hand, by a disk): with its model_best.pt beside it, it
    # may be a finished run, and neither this config nor another one trains over it
    (tmp_path / "result.json").write_text('{"status": "compl')
    damaged = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for other in (cfg, tiny_config(trainer={"epochs": 1, "drift_probe": 0}, seed=3)):
        with pytest.raises(RunDirTaken, match=r"holds a result.json that cannot be read \(.*\) beside its model_best.pt: "
                                              r"it may be a finished run's, so it is kept"):
            run(other, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == damaged


@pytest.mark.slow  # 17 s on the 2-core AVX2 host: the fast tier's resume tests cover checkpoints
def test_model_best_is_the_tested_model_and_keep_checkpoints_keeps_the_newest(tiny_config, tmp_path):
    from src.training.setup import setup

    cfg = tiny_config(trainer={"epochs": 3, "drift_probe": 0, "keep_checkpoints": 2})
    result = run(cfg, tmp_path / "run")
    assert [p.name for p in checkpoint.checkpoints(tmp_path / "run")] == ["checkpoint_epoch001.pt", "checkpoint_epoch002.pt"]
    s = setup(cfg, tmp_path / "rebuilt")  # the model the run's config builds, with model_best.pt's weights
    s.model.load_state_dict(torch.load(tmp_path / "run" / "model_best.pt", weights_only=True))
    test = engine.evaluate(s.model, s.test, s.runtime.device, s.runtime.amp_dtype)
    assert (test.acc, test.loss) == (result["test_acc"], result["test_loss"])


def test_keep_checkpoints_must_be_a_count(tiny_config):
    from src.training.preflight import preflight

    with pytest.raises(ConfigError, match=r"trainer.keep_checkpoints=-1 must be >= 0"):
        preflight(tiny_config(trainer={"keep_checkpoints": -1}))


def test_adopt_moves_a_dead_attempt_s_checkpoint_and_epochs(stopped_run, tmp_path):
    dead = _copy(stopped_run, tmp_path)
    retry = tmp_path / "retry"
    cfg, data = stopped_run[0], dataset_identity(stopped_run[0].dataset)
    other = RunConfig.from_dict(cfg.to_dict() | {"seed": 5})
    assert checkpoint.adopt(dead, retry, other, data) is None and checkpoint.checkpoints(dead)  # not this config's: left
    # a retried sweep trial on data that changed since: left too, the retry trains on the new data from epoch 0
    assert checkpoint.adopt(dead, retry, cfg, "0123456789abcdef") is None and checkpoint.checkpoints(dead)
    moved = checkpoint.adopt(dead, retry, cfg, data)
    assert moved == retry / "checkpoint_epoch000.pt" and (retry / "metrics.jsonl").is_file()
    assert checkpoint.checkpoints(dead) == [] and checkpoint.adopt(dead, retry, cfg, data) is None
    assert checkpoint.latest(retry, cfg, data)["epoch"] == 0


# --- the data changed under a run folder ----------------------------------------------------------

def _image_folder(root: Path, per_class: int = 8) -> Path:
    """Two class folders of small PNGs: data that can change under a run, as a user's can."""
    from PIL import Image

    for ci, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((20, 20, 3), 40 + 100 * ci + i, dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _folder_config(tiny_config, root: Path, epochs: int) -> RunConfig:
    return tiny_config(dataset={"kind": "imagefolder", "root": str(root), "image_size": 32, "train_per_class": None,
                                "val_fraction": 0.25, "test_fraction": 0.25},
                       trainer={"epochs": epochs, "drift_probe": 0})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_checkpoint_of_data_that_changed_since_is_refused_and_kept(tiny_config, tmp_path, monkeypatch):
    # val and test are split off the file list again on resume: one added image moves earlier
    # training images into test, so continuing would report test accuracy on trained-on images
    root = _image_folder(tmp_path / "data")
    cfg = _folder_config(tiny_config, root, epochs=2)
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 0)
        with pytest.raises(Killed):
            run(cfg, tmp_path / "run")
    (path,) = checkpoint.checkpoints(tmp_path / "run")
    added = root / "cat" / "new.png"
    shutil.copy(root / "cat" / "0.png", added)
    before = _files(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointError, match=r"trained on other data: .*data changed since \(dataset_id \w{6} -> \w{6}\)") as err:
        run(cfg, tmp_path / "run")
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "hydra.run.dir" in line and "restore the data" in line
    assert _files(tmp_path / "run") == before  # the checkpoint and its epochs kept, nothing written
    added.unlink()  # the data as it was: the run continues
    assert run(cfg, tmp_path / "run")["status"] == "completed"


def test_a_finished_run_on_data_that_changed_since_is_refused_and_kept(tiny_config, tmp_path):
    root = _image_folder(tmp_path / "data")
    cfg = _folder_config(tiny_config, root, epochs=1)
    run(cfg, tmp_path / "run")
    files = _files(tmp_path / "run")
    shutil.copy(root / "dog" / "0.png", root / "dog" / "new.png")
    with pytest.raises(RunDirTaken, match=r"already holds a completed run of this config on other data: "
                                          r".*data changed since \(dataset_id \w{6} -> \w{6}\); it is kept"):
        run(cfg, tmp_path / "run")
    assert _files(tmp_path / "run") == files


def test_a_checkpoint_without_the_data_s_identity_is_refused_by_its_format(stopped_run, tmp_path, caplog):
    # format 1 held no data identity; a checkpoint of older code is refused by its code digest too
    cfg, folder = stopped_run[0], _copy(stopped_run, tmp_path)
    (path,) = checkpoint.checkpoints(folder)
    state = torch.load(path, weights_only=True)
    old = {k: v for k, v in state.items() if k != "data"} | {"format": 1}
    torch.save(old, path)
    with pytest.raises(checkpoint.CheckpointError, match=f"has format 1, this code reads format {checkpoint.FORMAT}"):
        run(cfg, folder)
    # data whose files could not be listed when the checkpoint was written: continued, and said so
    torch.save(state | {"data": None}, path)
    assert checkpoint.latest(folder, cfg, dataset_identity(cfg.dataset))["epoch"] == 0
    assert "could not be checked" in caplog.text


# --- the command line: SIGKILL, then the same command ---------------------------------------------

CLI = ["model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32", "dataset.train_per_class=4",
       "trainer.batch_size=16", "trainer.progress=false", "trainer.drift_probe=16", "logger.kind=none", "trainer.epochs=4"]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=600)


def _past_first_epoch(run_dir: Path) -> bool:
    """A checkpoint of epoch 1 or later is on disk (a run keeps only its newest while it trains)."""
    return any(int(p.stem.removeprefix("checkpoint_epoch")) >= 1 for p in run_dir.glob("checkpoint_epoch*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["strategy=layerwise strategy.unfreeze_every=1 dataset.augment=standard",
                                      # the feature cache makes a frozen epoch ~15 ms here: enough of them that
                                      # the kill lands mid-run, not after it
                                      "strategy=frozen trainer.epochs=100"])
def test_sigkill_then_the_same_command_ends_as_an_uninterrupted_run(tmp_path, strategy):
    args = [*CLI, *strategy.split()]
    assert _train([*args, f"hydra.run.dir={tmp_path}/straight"], tmp_path).returncode == 0
    cmd = [sys.executable, "-m", "src.train", *args, f"hydra.run.dir={tmp_path}/killed"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _past_first_epoch(tmp_path / "killed") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL; nothing if it has ended
    proc.wait()
    # killed mid-run, or this test would pass without a resume to test
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "result.json").exists()
    again = _train([*args, f"hydra.run.dir={tmp_path}/killed"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resum" in again.stdout + again.stderr
    assert_same_run(tmp_path / "straight", tmp_path / "killed")
    kept = _train([*args, f"hydra.run.dir={tmp_path}/killed"], tmp_path)  # finished: reported, not trained
    assert kept.returncode == 0 and "kept, not trained again" in kept.stdout + kept.stderr
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


@pytest.mark.slow
def test_a_multirun_run_again_skips_finished_jobs_and_resumes_the_others(tmp_path):
    args = ["-m", "seed=0,1", *CLI, "trainer.epochs=3", "trainer.keep_checkpoints=3", f"hydra.sweep.dir={tmp_path}/m"]
    assert _train(args, tmp_path).returncode == 0
    job0, job1 = tmp_path / "m" / "0_layerwise", tmp_path / "m" / "1_layerwise"
    kept = (job0 / "result.json").read_bytes()
    shutil.copytree(job1, tmp_path / "straight")
    # job 1 as a kill after its first epoch leaves it: no result, only the checkpoint of epoch 0
    (job1 / "result.json").unlink()
    for path in checkpoint.checkpoints(job1)[1:]:
        path.unlink()
    again = _train(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (job0 / "result.json").read_bytes() == kept  # finished: kept, not trained again
    assert "kept, not trained again" in again.stdout + again.stderr
    assert_same_run(tmp_path / "straight", job1)


# --- a refused folder is left as it was, by the command line too -----------------------------------

def _all_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its relative path: what a refusal must leave byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("left, interrupted", [("zero-byte", False), ("no-metrics", False), ("no-metrics", True)])
def test_a_refused_checkpoint_leaves_a_killed_run_s_folder_as_it_was(stopped_run, tmp_path, left, interrupted):
    # The entrypoint recorded every error it saw as a failed run: a refused checkpoint in a killed
    # run's folder became result.json {"status": "failed"} (or replaced an interrupted record and what
    # it had measured); the refusal is the folder's, not a run's, and nothing may be written.
    folder = _copy(stopped_run, tmp_path)
    (folder / "result.json").unlink()  # a SIGKILL leaves none (the in-process kill recorded itself)
    (path,) = checkpoint.checkpoints(folder)
    if left == "no-metrics":  # a whole checkpoint, but the epochs it continues are gone
        (folder / "metrics.jsonl").unlink()
        named, why = folder / "metrics.jsonl", "does not hold epochs 0-0"
    else:
        path.write_bytes(b"")
        named, why = path, "damaged or not a checkpoint"
    if interrupted:  # a Ctrl-C'ed run's record: what it measured must survive the refusal
        (folder / "result.json").write_text(json.dumps({"status": "interrupted", "failed_epoch": 0,
                                                        "measured_before_stop": {"val_acc": 0.5}}))
    (folder / ".hydra").mkdir()  # the killed command's record: a refused command must not rewrite it
    (folder / ".hydra" / "overrides.yaml").write_text("- the killed command's overrides\n")
    before = _all_files(folder)
    # the stopped run's config (tests/conftest.py TINY, drift_probe 0) on the command line
    args = [*CLI, "trainer.epochs=2", "trainer.drift_probe=0", f"hydra.run.dir={folder}"]
    refused = _train(args, tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and str(named) in lines[0] and why in lines[0], refused.stderr[-2000:]
    after = _all_files(folder)
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == before  # .hydra/ too (Hydra rewrote it)


def test_a_resumed_run_s_total_time_includes_its_earlier_attempts(tiny_config, tmp_path, monkeypatch):
    # Seen on SLURM: a job cancelled after 3 of 15 epochs and resumed recorded train_time_s 38.0 but
    # total_time_s 37.1 (this process's own time only), and printed "train_time 38.0s total 37.1s".
    cfg = tiny_config(trainer={"epochs": 3, "drift_probe": 0})
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 1)

        def slow(row):  # the first attempt takes a while, as a real one would
            time.sleep(3.0)

        with pytest.raises(Killed):
            run(cfg, tmp_path / "stopped", on_epoch=slow)
    resumed = run(cfg, tmp_path / "stopped")
    last = read_jsonl(tmp_path / "stopped" / "metrics.jsonl")[-1]
    assert resumed["total_time_s"] >= last["elapsed_s"] >= 6.0  # both attempts' time, up to the last epoch
    assert resumed["total_time_s"] >= resumed["train_time_s"]


def test_the_entrypoints_record_is_written_only_into_a_folder_the_run_takes(tiny_config, tmp_path):
    """`on_claimed` (where src.train writes Hydra's .hydra/ record) runs for a run that trains in the
    folder, never for a command the folder refuses or whose finished run it keeps: Hydra wrote that
    record before the task looked, so a refused seed=3 left .hydra/config.yaml saying seed 3 beside
    the seed-0 result.json."""
    claimed: list[Path] = []
    cfg = tiny_config(trainer={"epochs": 1, "drift_probe": 0})
    run(cfg, tmp_path / "r", on_claimed=claimed.append)
    assert claimed == [tmp_path / "r"]
    run(cfg, tmp_path / "r", on_claimed=claimed.append)  # finished: kept, nothing written
    with pytest.raises(RunDirTaken):
        run(tiny_config(seed=3, trainer={"epochs": 1, "drift_probe": 0}), tmp_path / "r", on_claimed=claimed.append)
    assert claimed == [tmp_path / "r"]


def test_a_checkpoint_trained_from_a_weights_file_replaced_since_is_refused(tiny_config, tmp_path, monkeypatch):
    # A frozen run's checkpoint holds its head alone; on resume the backbone is built again from
    # model.checkpoint_path. That file replaced meanwhile gave a head trained on one backbone's features
    # under another, finished and recorded as one run. Now refused in one line, the folder kept.
    import timm

    weights = tmp_path / "backbone.pt"
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    torch.save(state, weights)
    model = {"name": "test_efficientnet", "pretrained": True, "weights": "file", "checkpoint_path": str(weights)}
    cfg = tiny_config(model=model, strategy={"name": "frozen"}, trainer={"epochs": 2})
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, 0)
        with pytest.raises(Killed):
            run(cfg, tmp_path / "run")
    (path,) = checkpoint.checkpoints(tmp_path / "run")
    assert torch.load(path, weights_only=True)["head_only"]  # the backbone comes from the file again
    torch.save({k: v * 2 if v.is_floating_point() else v for k, v in state.items()}, weights)
    before = _files(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointError, match=r"trained from other weights: model.checkpoint_path=.* "
                                                         r"changed since \(weights_id \w{6} -> \w{6}\)") as err:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert _files(tmp_path / "run") == before
    torch.save(state, weights)  # the file as it was: the run continues
    assert run(cfg, tmp_path / "run")["status"] == "completed"
    # finished, then the file replaced: the same command does not report that run as this file's
    torch.save({k: v * 2 if v.is_floating_point() else v for k, v in state.items()}, weights)
    files = _files(tmp_path / "run")
    with pytest.raises(RunDirTaken, match=r"already holds a completed run of this config from other weights: "
                                          r"model.checkpoint_path=.* changed since \(weights_id \w{6} -> \w{6}\); it is kept"):
        run(cfg, tmp_path / "run")
    assert _files(tmp_path / "run") == files
