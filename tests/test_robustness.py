"""What happens when...: bad configs, bad data, divergence, interruption, concurrency, determinism,
tracking faults. Real processes, real files, real signals."""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from src.config import ConfigError, RunConfig
from src.data.load import load_dataset
from src.record.io import append_jsonl, read_jsonl, write_json
from src.training.run import DivergedError, preflight, run
from src.gate import check_overrides
from tests.cli import TINY_OVERRIDES, env
from tests.conftest import TINY, merge

TINY_CLI = [*TINY_OVERRIDES, "trainer.progress=false"]


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600, **kw)


# --- bad configs -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "override, message",
    [
        ("strategy=bogus", "error: strategy=bogus is not allowed (options: bitfit, frozen, full, l2sp, layerwise, lpft, surgical)"),
        ("trainer.bogus=1", "error: unknown key 'trainer.bogus' (allowed in trainer: amp, batch_size,"),
        ("dataset.image_size=20", "error: dataset.image_size=20 is smaller than test_efficientnet's total stride 32 (allowed: >= 32)"),
    ],
)
def test_cli_rejects_bad_config_in_one_line_and_writes_no_result(tmp_path, override, message):
    proc = _cli(["-m", "src.train", *TINY_CLI, override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("metrics.jsonl"))


def _check(overrides: dict) -> None:
    """The checks the CLI runs before any training, in process: schema and values, then the model."""
    preflight(RunConfig.from_dict(merge(TINY, overrides)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": {"name": "resnet_bogus"}}, "model.name='resnet_bogus' is not a timm model"),
        ({"strategy": {"name": "bogus"}}, "strategy.name='bogus' is not allowed (expected 'bitfit' | 'frozen' | 'full' | 'l2sp' | 'layerwise' | 'lpft' | 'surgical')"),
        ({"dataset": {"kind": "bogus"}}, "dataset.kind='bogus' is not allowed"),
        ({"strategy": {"lr_decay": 0}}, "strategy.lr_decay=0.0 must be >= 1"),
        ({"strategy": {"lr_decay": -2.6}}, "strategy.lr_decay=-2.6 must be >= 1"),
        ({"strategy": {"unfreeze_depth": 7}}, "strategy.unfreeze_depth=7 exceeds this model's 6 backbone groups (allowed: 0..6 or 'all')"),
        ({"optim": {"lr": 0}}, "optim.lr=0.0 must be > 0"),
        ({"optim": {"lr": -1e-3}}, "optim.lr=-0.001 must be > 0"),
        ({"trainer": {"epochs": 0}}, "trainer.epochs=0 must be > 0"),
        ({"trainer": {"batch_size": -4}}, "trainer.batch_size=-4 must be >= 2"),
        ({"trainer": {"batch_size": 1}}, "trainer.batch_size=1 must be >= 2"),
        ({"dataset": {"image_size": 8}}, "dataset.image_size=8 must be >= 16"),
        ({"dataset": {"kind": "imagefolder"}}, "dataset.root is required for dataset.kind='imagefolder'"),
        ({"trainer": {"epochs": "six"}}, "trainer.epochs='six': expected an integer"),
    ],
)
def test_bad_config_is_one_line_naming_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        _check(overrides)
    assert str(err.value) == message or str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_dataset_root_names_the_file(tmp_path):
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "medmnist", "root": str(tmp_path / "none.npz")}}))
    with pytest.raises(ConfigError, match=r"dataset.root='.*none.npz': no such .npz file"):
        load_dataset(cfg.dataset)


def test_unknown_keys_and_group_options_are_caught_before_hydra():
    check_overrides(["strategy=frozen", "optim.lr=1e-3", "hydra.run.dir=x"])
    with pytest.raises(ConfigError, match=r"^dataset=cifar is not allowed \(options: digits, imagefolder, medmnist, pneumoniamnist, torchvision\)$"):
        check_overrides(["dataset=cifar"])
    with pytest.raises(ConfigError, match=r"^unknown key 'optim.optimizer.betas.x'"):
        check_overrides(["optim.optimizer.betas.x=1"])


# Random overrides, valid and not: validation either accepts (and the model-dependent checks
# then accept or reject in one line) or rejects in one line. Never another exception.
VALUES = st.one_of(
    st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True, width=32), st.booleans(), st.none(),
    st.sampled_from(["all", "frozen", "full", "layerwise", "eval", "train", "", "x" * 3, "digits", "fail"]),
    st.lists(st.floats(0, 1, width=32), max_size=3),
)
KEYS = st.sampled_from([
    ("strategy", "name"), ("strategy", "lr_decay"), ("strategy", "unfreeze_depth"), ("strategy", "unfreeze_every"),
    ("strategy", "frozen_bn"), ("strategy", "granularity"), ("optim", "lr"), ("optim", "name"), ("optim", "optimizer"),
    ("optim", "warmup_epochs"), ("optim", "min_lr_ratio"), ("trainer", "epochs"), ("trainer", "batch_size"),
    ("trainer", "select"), ("trainer", "feature_cache"), ("dataset", "image_size"), ("dataset", "val_fraction"),
    ("dataset", "bad_images"), ("dataset", "train_per_class"), ("model", "drop_rate"), ("seed", None),
    ("trainer", "bogus_key"), ("bogus_section", "x"),
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4))
def test_random_overrides_are_accepted_or_rejected_in_one_line(changes):
    overrides: dict = {}
    for (section, key), value in changes:
        if key is None:
            overrides[section] = value
        else:
            overrides.setdefault(section, {})[key] = value
    try:
        _check(overrides)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)


RUNNABLE = st.fixed_dictionaries({}, optional={
    # each strategy with only its own knobs (another's is an unknown key), plus the shared ones
    "strategy": st.one_of(*[st.fixed_dictionaries({"name": st.just(name)}, optional=own | {
        "frozen_bn": st.sampled_from(["all", "eval", "train"]), "granularity": st.sampled_from(["coarse", "fine"])})
        for name, own in [
            ("frozen", {}),
            ("full", {"backbone_lr_scale": st.floats(0.01, 1)}),
            ("layerwise", {"lr_decay": st.floats(1, 10), "unfreeze_depth": st.one_of(st.just("all"), st.integers(0, 6)),
                           "unfreeze_every": st.integers(0, 3)}),
        ]]),
    "optim": st.fixed_dictionaries({}, optional={
        "optimizer": st.sampled_from([{"_target_": "torch.optim.AdamW"}, {"_target_": "torch.optim.SGD"}]),
        "lr": st.floats(1e-5, 0.1), "warmup_epochs": st.floats(0, 2),
        "weight_decay": st.floats(0, 0.1)}),
    "trainer": st.fixed_dictionaries({}, optional={
        "batch_size": st.integers(2, 48), "select": st.sampled_from(["best_val", "last"]),
        "feature_cache": st.sampled_from(["auto", "off"])}),
    "dataset": st.fixed_dictionaries({}, optional={
        "image_size": st.integers(32, 48), "augment": st.booleans(), "hflip": st.booleans(),
        "train_per_class": st.integers(1, 5)}),
    "seed": st.integers(0, 2**31 - 1),
})


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(RUNNABLE)
def test_random_valid_configs_really_run(tmp_path_factory, overrides):
    # Values inside the documented ranges, combined at random: each run completes (or diverges,
    # which is recorded as failed). Writing these ranges turned up a real crash: a last training
    # batch of one sample stopped BatchNorm (see the regression test at the end).
    cfg = RunConfig.from_dict(merge(merge(TINY, overrides), {"trainer": {"epochs": 2}}))
    preflight(cfg)
    try:
        assert run(cfg, tmp_path_factory.mktemp("run"))["status"] == "completed"
    except DivergedError:
        pass


# --- bad data ----------------------------------------------------------------------------------

def _folder(root: Path, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_corrupt_images_are_skipped_and_counted_or_fail_by_option(tmp_path, caplog):
    _folder(tmp_path)
    good = (tmp_path / "train" / "cat" / "0.png").read_bytes()
    (tmp_path / "train" / "cat" / "truncated.png").write_bytes(good[: len(good) // 3])
    (tmp_path / "train" / "dog" / "notes.jpg").write_text("not an image")
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(tmp_path)}}))
    with caplog.at_level("WARNING"):
        bundle = load_dataset(cfg.dataset)
    assert len(bundle.skipped_files) == 2 and "skipped 2 unreadable image files" in caplog.text
    assert len(bundle.train) + len(bundle.test) == 8  # the 8 good training images remain
    strict = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(tmp_path), "bad_images": "fail"}}))
    with pytest.raises(ConfigError, match=r"truncated.png: unreadable image .*dataset.bad_images=skip"):
        load_dataset(strict.dataset)
    result = run(RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(tmp_path), "image_size": 32},
                                                  "trainer": {"epochs": 1}})), tmp_path / "run")
    assert result["status"] == "completed" and result["skipped_files"] == 2


def test_empty_and_mismatched_class_folders_are_errors(tmp_path):
    _folder(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    cfg = RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "imagefolder", "root": str(tmp_path)}}))
    with pytest.raises(ConfigError, match=r"train/bird: class folder has no images"):
        load_dataset(cfg.dataset)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / "bird" / "0.png")
    with pytest.raises(ConfigError, match=r"val: class folders \['cat', 'dog'\] differ from train's \['bird', 'cat', 'dog'\]"):
        load_dataset(cfg.dataset)


def test_npz_with_missing_arrays_or_labels_out_of_range(tmp_path):
    x = np.zeros((6, 28, 28), dtype=np.uint8)
    y = np.array([[0], [1], [0], [1], [0], [1]])
    np.savez(tmp_path / "partial.npz", train_images=x, train_labels=y, val_images=x, val_labels=y)
    cfg = lambda name: RunConfig.from_dict(merge(TINY, {"dataset": {"kind": "medmnist", "root": str(tmp_path / name)}}))  # noqa: E731
    with pytest.raises(ConfigError, match=r"partial.npz': missing array 'test_images'"):
        load_dataset(cfg("partial.npz").dataset)
    np.savez(tmp_path / "bad.npz", train_images=x, train_labels=y, val_images=x, val_labels=y, test_images=x,
             test_labels=np.array([[0], [1], [0], [1], [0], [-1]]))
    with pytest.raises(ConfigError, match=r"negative labels"):
        load_dataset(cfg("bad.npz").dataset)


# --- divergence in a sweep ---------------------------------------------------------------------

@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_diverging_trials_fail_with_their_reason_and_the_sweep_stops_after_max_failed(tmp_path):
    out = tmp_path / "out"
    proc = _cli(["-m", "src.train", "-m", "hydra/sweeper=optuna", "optim.lr=tag(log, interval(1.0e+29, 1.0e+30))",
                 "hydra.sweeper.study_name=diverge", "hydra.sweeper.n_trials=3", "hydra.sweeper.objectives=[val_acc]",
                 "hydra.sweeper.max_failed=2", "hydra.sweeper.pruner.name=none", "hydra.sweeper.sampler.seed=0",
                 f"hydra.sweep.dir={out}", "strategy=full", "optim.warmup_epochs=0", *TINY_OVERRIDES], tmp_path)
    assert proc.returncode == 1
    assert "error: stopped after 2 failed trials (trial 0, trial 1; hydra.sweeper.max_failed=2)" in proc.stderr
    trials = optuna.load_study(study_name="diverge", storage=f"sqlite:///{out / 'optuna.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2  # the sweep went on after the first
    for t in trials:
        result = json.loads((out / f"{t.number}_full" / "result.json").read_text())
        assert result["status"] == "failed" and result["error"].startswith("DivergedError: training loss became nan")


# --- interruption ------------------------------------------------------------------------------

def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never appeared (exit {proc.poll()})")


@pytest.mark.slow  # end-to-end subprocess runs
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGHUP])
def test_a_hangup_or_slurms_warning_signal_mid_run_is_recorded_as_a_stop(tmp_path, signum):
    """SLURM's `--signal=USR1@90` (or `scancel --signal=USR1`) and a closed terminal's SIGHUP killed the
    run outright: no result.json, what it had measured lost, the driver told only 'FAILED'."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *TINY_CLI, "trainer.epochs=200", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "metrics.jsonl", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(f"interrupted by {signal.Signals(signum).name}: status 'interrupted'")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["measured_before_stop"]["epochs_trained"] >= 1


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_sigterm_mid_run_records_an_interrupted_run_with_what_was_measured(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *TINY_CLI, "trainer.epochs=200", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["error"] == "Stopped: signal SIGTERM"
    measured = result["measured_before_stop"]
    assert measured["epochs_trained"] >= 1 and measured["train_flops"] > 0
    assert measured["epochs_trained"] <= len(read_jsonl(run_dir / "metrics.jsonl"))
    assert "test_acc" not in result and "val_acc" not in result  # nothing that reads as a finished result


@pytest.mark.slow
def test_sigterm_mid_sweep_then_resume_reruns_the_interrupted_trial(tmp_path):
    out = tmp_path / "study"
    # No pruning: which tiny trial halving would stop is beside the point here, and a pruned trial
    # would make the count below depend on the curves.
    cmd = [sys.executable, "-m", "src.train", "-m", "sweep=default", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={out}",
           "hydra.sweeper.pruner.name=none", *TINY_OVERRIDES, "trainer.epochs=12"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out / "0_layerwise" / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert json.loads((out / "0_layerwise" / "result.json").read_text())["status"] == "interrupted"
    resumed = _cli(cmd[1:], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    study = optuna.load_study(study_name="layerwise-default", storage=f"sqlite:///{out / 'optuna.db'}")
    first, *rest = study.trials
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["interrupted"]
    done = [t for t in rest if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    retry = [t for t in done if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].params == first.params  # the interrupted trial ran again


# --- a full disk ------------------------------------------------------------------------------
# Real small filesystems (tests/disks.py). One line on stderr naming the file and the setting that
# put it there, exit 2 before anything runs or 1 once it has, never a traceback (a log file on the
# full disk included), and the failure recorded where there is room for the record.

from tests.disks import fill, fill_up, small_disk  # noqa: E402,F401  (small_disk: a fixture)


def _only_line(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_a_disk_too_full_to_start_is_refused_before_anything_runs(small_disk, tmp_path):
    disk = small_disk(256)
    fill(disk, leave_kib=16)
    line = _only_line(_cli(["-m", "src.train", *TINY_CLI, f"paths.output_dir={disk}"], tmp_path), 2)
    assert line.startswith(f"error: paths.output_dir={disk}: {disk} has 16 KiB free, not enough to start"), line
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_a_disk_that_fills_during_a_run_is_one_line_naming_the_file_and_the_setting(small_disk, tmp_path):
    disk = small_disk(1024)
    fill(disk, leave_kib=200)  # room for a run's files, not for its model_best.pt (about 440 KiB)
    line = _only_line(_cli(["-m", "src.train", *TINY_CLI, "trainer.resume=false", f"paths.output_dir={disk}"], tmp_path), 1)
    (run_dir,) = disk.glob("outputs/*/*")
    assert line == (f"error: {run_dir}/model_best.pt: No space left on device (its place is set by paths.output_dir={disk}); "
                    f"the run is recorded as failed in {run_dir}/result.json"), line
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("DiskFull: ")
    assert not (run_dir / "model_best.pt").exists()


def test_a_log_file_on_a_full_disk_stops_quietly_and_other_logging_errors_still_show(small_disk, capsys):
    """Python's logging prints a traceback for each record a handler cannot write: on a full disk,
    one per log line. The job's log file (Hydra's FileHandler) stops instead; the run's own error line
    says what could not be written."""
    import logging

    from src.train import quiet_full_log_files

    disk = small_disk(64)
    handler = logging.FileHandler(disk / "train.log")
    logger = logging.getLogger("t23c-log-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logging.getLogger().addHandler(handler)
        quiet_full_log_files()  # as each job does, once Hydra has set up its log file
        logging.getLogger().removeHandler(handler)
        fill_up(disk)
        for i in range(200):  # far more than the log file's last block holds
            logger.warning("epoch %d: %s", i, "x" * 100)
        assert handler.level > logging.CRITICAL
        assert "Logging error" not in capsys.readouterr().err
        handler.setLevel(logging.NOTSET)
        (disk / "filler").unlink()
        logger.warning("%d is not a string: %s", "x")  # a bug, not a full disk: still shown
        assert "Logging error" in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.slow
def test_a_multirun_stops_at_the_first_job_that_fills_the_disk(small_disk, tmp_path):
    disk = small_disk(2048)
    fill(disk, leave_kib=700)  # one job's model_best.pt fits, not two (no checkpoints: resume=false)
    out = disk / "multi"
    line = _only_line(_cli(["-m", "src.train", "-m", "seed=0,1,2", *TINY_CLI, "trainer.resume=false",
                            f"hydra.sweep.dir={out}"], tmp_path), 1)
    job = out / "1_layerwise"  # hydra.sweep.subdir: JOB_STRATEGY
    assert line == (f"error: {job}/model_best.pt: No space left on device (its place is set by hydra.sweep.dir={out}); "
                    f"the run is recorded as failed in {job}/result.json"), line
    assert json.loads((out / "0_layerwise" / "result.json").read_text())["status"] == "completed"
    assert not (out / "2_layerwise").exists()  # the multirun stopped: every later job would fail the same way


# --- concurrency -------------------------------------------------------------------------------

def _writer(path: str, shared: str, worker: int, n: int) -> None:
    blob = "x" * 20_000  # longer than any pipe or stdio buffer: one record, many pages
    for i in range(n):
        append_jsonl(Path(path), {"worker": worker, "i": i, "blob": blob, "check": f"{worker}-{i}-{len(blob)}"})
        write_json(Path(shared), {"worker": worker, "i": i, "blob": blob})


@pytest.mark.slow
def test_concurrent_writers_never_corrupt_results_files(tmp_path):
    path, shared = tmp_path / "metrics.jsonl", tmp_path / "result.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), str(shared), w, 100)) for w in range(4)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):  # a reader during the writes always sees a whole file
        if shared.exists():
            assert json.loads(shared.read_text())["blob"] == "x" * 20_000
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    records = read_jsonl(path)
    assert len(records) == 400 and seen > 0
    assert all(r["check"] == f"{r['worker']}-{r['i']}-{len(r['blob'])}" for r in records)
    for w in range(4):
        assert [r["i"] for r in records if r["worker"] == w] == list(range(100))
    assert not list(tmp_path.glob(".result.json.*.tmp"))  # no temporary files left behind


# --- determinism -------------------------------------------------------------------------------

TIMING = {"epoch_train_s", "epoch_val_s", "elapsed_s", "train_s_cum"}


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
def test_same_seed_same_metrics_different_seed_different_metrics(tiny_config, tmp_path):
    curves = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run(tiny_config(strategy={"name": "full"}, seed=seed), tmp_path / name)
        curves[name] = [{k: v for k, v in m.items() if k not in TIMING} for m in read_jsonl(tmp_path / name / "metrics.jsonl")]
    assert curves["a"] == curves["b"]  # every loss, accuracy and LR, bit for bit
    assert [m["train_loss"] for m in curves["a"]] != [m["train_loss"] for m in curves["c"]]


# --- tracking faults ---------------------------------------------------------------------------

def test_wandb_failing_mid_run_never_fails_the_run(tiny_config, tmp_path, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    def broken(self, *args, **kwargs):
        raise ConnectionError("W&B went away")

    monkeypatch.setattr(Run, "log", broken)
    with caplog.at_level("WARNING"):
        result = run(tiny_config(logger={"kind": "wandb", "mode": "offline"}), tmp_path)
    assert result["status"] == "completed"
    assert "tracking disabled for this run" in caplog.text
    assert json.loads((tmp_path / "result.json").read_text())["test_acc"] == result["test_acc"]


def test_wandb_online_failure_falls_back_to_offline(tiny_config, tmp_path, monkeypatch, caplog):
    import wandb

    real_init = wandb.init

    def online_refused(*args, mode=None, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("401: invalid API key (entity 'nobody')")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", online_refused)
    with caplog.at_level("WARNING"):
        result = run(tiny_config(logger={"kind": "wandb", "mode": "online"}), tmp_path)
    assert result["status"] == "completed"
    assert "W&B init (online) failed: CommError" in caplog.text and "W&B running offline instead" in caplog.text
    assert len(list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


@pytest.mark.slow  # 12 s of training for one edge case
def test_a_last_training_batch_of_one_sample_does_not_stop_the_run(tiny_config, tmp_path):
    # 40 training images in batches of 3: the 14th batch would hold one sample, and BatchNorm cannot
    # train on one sample at a 1x1 feature map (test_efficientnet at 32 px).
    result = run(tiny_config(strategy={"name": "full"}, trainer={"batch_size": 3, "epochs": 1}), tmp_path)
    assert result["train_samples"] == 40 and result["status"] == "completed"


# The test's body runs in a fresh interpreter: a logging handler another test of the same pytest
# process left behind wrote records of its own and printed 'Logging error' here (seen under xdist
# only), which says nothing of what one process of ours does.
_LIBRARY_LOG_ON_A_FULL_DISK = """
import sys
from pathlib import Path
from src.config import LoggerConfig
from src.reporting.tracking import make_tracker
from src.train import quiet_full_log_files
quiet_full_log_files()
tracker = make_tracker(LoggerConfig(kind="wandb", mode="offline"), Path(sys.argv[1]), "full-disk", {"a": 1}, "train")
tracker.finish()
"""


def test_a_log_file_a_library_opens_later_stops_quietly_too(small_disk, tmp_path):
    """wandb.init opens wandb/debug.log in the run folder after the job has quieted its log files: on a
    full disk each of its records printed a 'Logging error' traceback (60 lines for one smoke run)."""
    run_dir = small_disk(1024) / "run"
    run_dir.mkdir()
    fill_up(run_dir.parent)
    proc = subprocess.run([sys.executable, "-c", _LIBRARY_LOG_ON_A_FULL_DISK, str(run_dir)], cwd=tmp_path,
                          env=env() | {"WANDB_DIR": str(tmp_path)},  # W&B's own cache and settings off the full disk
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr
    assert proc.returncode == 0, err[-2000:]
    assert (run_dir / "wandb" / "debug.log").exists(), err  # W&B did open its log file there
    assert "Logging error" not in err, err[-2000:]
