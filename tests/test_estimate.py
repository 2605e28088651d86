"""The cost known before the run (src/training/estimate.py): a dry run trains nothing and writes no
result, its FLOPs are exactly what the real run records, the epoch log line has an ETA, and a single
run from the command line ends with its result line."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys

import pytest
import torch

from src.training.run import run

from .conftest import REPO


@pytest.mark.parametrize("strategy", [{"name": "layerwise", "unfreeze_depth": 2, "unfreeze_every": 1},
                                      {"name": "frozen"}])
def test_dry_run_writes_no_result_and_its_flops_are_the_real_runs(tiny_config, tmp_path, capsys, caplog, strategy):
    dry = run(tiny_config(strategy=strategy, trainer={"epochs": 3, "dry_run": True}), tmp_path / "dry")
    printed = capsys.readouterr().out
    assert dry["status"] == "dry_run" and sorted(p.name for p in (tmp_path / "dry").iterdir()) == ["estimate.json"]
    assert re.search(r"estimate: \d+/\d+/\d+ images \(train/val/test\) at 32 px, 3 epochs", printed)
    assert f"{dry['train_flops']:.3e} training FLOPs" in printed and dry["total_s"] > 0
    with caplog.at_level(logging.INFO, logger="src.training.fit"):
        real = run(tiny_config(strategy=strategy, trainer={"epochs": 3}), tmp_path / "real")
    assert real["train_flops"] == dry["train_flops"] > 0  # counted, exact: not an approximation
    # both cache what never trains: the frozen backbone's features, or the bottom groups' output
    # (layer-wise, 2 of the backbone's groups: the prefix below them)
    assert real["feature_cache"] is True and dry["feature_cache"] is True
    cut = real["feature_cache_cut"]
    assert cut == dry["feature_cache_cut"] and (cut == "pre-logits") == (strategy["name"] == "frozen")
    assert "estimate: " in capsys.readouterr().out  # a real run prints its estimate too, before training
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 3 and all(re.search(r"  eta \d+(\.\d+)?s$", line) for line in epochs)
    assert epochs[-1].endswith("eta 0s")


@pytest.mark.slow  # two subprocess runs (13 s); the estimate's own checks above are fast
def test_a_single_run_prints_its_result_line_and_a_dry_multirun_its_total(tmp_path):
    common = ["model=timm", "model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32",
              "dataset.train_per_class=4", "trainer.epochs=1", "trainer.progress=false", "logger=none"]
    single = subprocess.run([sys.executable, "-m", "src.train", *common, f"hydra.run.dir={tmp_path / 'one'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    result = json.loads((tmp_path / "one" / "result.json").read_text())
    last = single.stdout.strip().splitlines()[-1]
    assert last.startswith(f"completed: val_acc {result['val_acc']:.4f}  test_acc {result['test_acc']:.4f}")
    assert f"train_flops {result['train_flops']:.3e}" in last and last.endswith(f"in {tmp_path / 'one'}")
    multi = subprocess.run([sys.executable, "-m", "src.train", "-m", *common, "trainer.dry_run=true",
                            "strategy=frozen,full", f"hydra.sweep.dir={tmp_path / 'many'}"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr
    assert not list((tmp_path / "many").glob("*/result.json"))
    assert "2 dry-run jobs in" in multi.stdout and "estimate, all 2 jobs: " in multi.stdout


@pytest.mark.parametrize("seconds, calls, median", [
    ([1.00, 1.05, 1.02, 9.0, 9.0], 3, 1.02),  # steady: three steps say it, no more are taken
    ([1.00, 14.0, 1.01, 0.99, 1.00], 5, 1.00),  # a step another process slowed: out-voted by five
    ([1.00, 2.00, 3.00, 4.00, 5.00, 6.0], 5, 3.00),  # never steady: five at most
])
def test_calibration_takes_more_steps_only_while_they_disagree(seconds, calls, median):
    from src.training.estimate import steady_median

    taken = iter(seconds)
    used = []
    assert steady_median(lambda: used.append(next(taken)) or used[-1]) == median
    assert len(used) == calls


@pytest.mark.parametrize("strategy", [{"name": "frozen"}, {"name": "layerwise", "unfreeze_depth": 2},
                                      {"name": "full"}])
def test_each_pass_is_timed_at_the_batch_size_it_runs_at(tiny_config, tmp_path, monkeypatch, strategy):
    """The cache's pass over the training images runs in training batches, evaluation in evaluation
    batches: per image they differ, so the estimate times each at its own size, and the epochs' steps
    on what they run (the head on features, the rest on the prefix's output, or the whole model)."""
    from src.training import estimate as est

    forwards, steps = [], []
    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: forwards.append((type(net).__name__, size)) or 0.01)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: steps.append(type(net).__name__) or 0.1)
    cfg = tiny_config(strategy=strategy, dataset={"train_per_class": 20},
                      trainer={"epochs": 2, "batch_size": 8, "eval_batch_size": 100, "dry_run": True})
    dry = run(cfg, tmp_path)
    n_val = dry["val_images"]
    if strategy["name"] == "frozen":  # the backbone at both sizes; the head's steps on features
        assert set(forwards) == {("EfficientNet", min(100, 64, n_val)), ("EfficientNet", 8)} and steps == ["CachedHead"]
        assert dry["train_s"] == pytest.approx(0.01 * dry["train_images"] + 2 * 0.1 * (-(-dry["train_images"] // 8)))
    elif strategy["name"] == "layerwise":  # the whole model and the rest, each at both sizes
        assert sorted(set(forwards)) == sorted({("EfficientNet", 8), ("EfficientNet", min(64, n_val)),
                                                ("SkipPrefix", 8), ("SkipPrefix", min(64, n_val))})
        assert set(steps) == {"SkipPrefix"}
    else:  # nothing cached: evaluation only
        assert forwards == [("EfficientNet", min(64, n_val))] and steps == ["EfficientNet"]


@pytest.mark.parametrize("batch_size", [1024, 100000])
def test_steps_are_timed_at_the_batch_training_will_make_not_a_larger_one(tiny_config, tmp_path, monkeypatch,
                                                                           batch_size):
    """Training cuts its batches from the training images: a trainer.batch_size above their number
    trains on batches of all of them. Timing the configured size instead cost 3x the memory and
    time (1024 on 15 images), or the whole machine's memory (100000: killed by the OOM killer, no
    message, no result), for an estimate that said ~2s of a 0.1s training."""
    from src.training import estimate as est

    sizes, step_batches = [], est._step_batches

    def made(s, size, shape):  # the batches a step timing makes (not an evaluation timing's)
        sizes.append(size)
        one = step_batches(s, size, shape)
        return lambda: [(x[:4], y[:4]) for x, y in one()]

    monkeypatch.setattr(est, "_step_batches", made)
    for strategy in ({"name": "full"}, {"name": "frozen"}):  # the whole model's steps, and the head's on features
        sizes.clear()
        dry = run(tiny_config(strategy=strategy, trainer={"epochs": 1, "batch_size": batch_size, "dry_run": True}),
                  tmp_path / strategy["name"])
        assert sizes and max(sizes) == dry["train_images"] < batch_size
    assert est.train_batch(batch_size, 15) == 15 and est.train_batch(8, 15) == 8
    assert est.train_batch(batch_size, 1) == 2  # BatchNorm's least, as a one-image batch never trains


def test_a_resumed_runs_estimate_is_for_the_epochs_left(tiny_config, tmp_path, monkeypatch, capsys):
    # A run resumed with 2 of 3 epochs left was told the time of all 3 (58 s), its first epoch's steps
    # and validation counted again.
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.01)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1)
    cfg = tiny_config(strategy={"name": "full"}, trainer={"epochs": 3, "batch_size": 8, "feature_cache": "off"})
    s = setup(cfg, tmp_path)
    whole, left = est.estimate(cfg, s), est.estimate(cfg, s, first_epoch=1)
    steps = -(-whole.train_images // 8)
    assert whole.train_s == pytest.approx(3 * 0.1 * steps) and left.train_s == pytest.approx(2 * 0.1 * steps)
    assert whole.eval_s - left.eval_s == pytest.approx(0.01 * whole.val_images)  # one validation pass fewer
    assert left.train_flops == whole.train_flops  # the run's whole count, as result.json records it
    assert ", 2 of 3 epochs left (resumed) of batch 8" in left.line() and ", 3 epochs of batch 8" in whole.line()
    # beside "2 of 3 epochs left", the whole run's FLOPs were read as the 2 epochs' (the time is theirs)
    assert f": {whole.train_flops:.3e} training FLOPs in all 3 epochs (as result.json counts them), ~" in left.line()
    assert f": {whole.train_flops:.3e} training FLOPs, ~" in whole.line()


def test_steps_are_timed_on_the_runs_own_batches_augmentation_included(tiny_config, tmp_path, monkeypatch):
    """A training step's time includes cutting, augmenting and normalising its batch (src.data.batches
    does it inside the timed loop), so the calibration times that too: timed on ready random inputs,
    `dataset.augment=randaugment` at 96 px (1.9 s a batch of 16 here, 4x the step) was left out of
    the estimate. Timing draws from its own generator: the run's shuffles and augmentations stay its own."""
    import time

    from src.data.augment import Preset
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.0)
    cfg = tiny_config(strategy={"name": "full"}, dataset={"augment": "shift"},
                      trainer={"epochs": 1, "batch_size": 8, "feature_cache": "off"})
    s = setup(cfg, tmp_path)
    shift = s.train.preset
    s.train.preset = Preset(lambda x, g, hflip: time.sleep(0.3) or shift.apply(x, g, hflip), shift.params)
    state = s.train.generator.get_state()
    steps = -(-len(s.data.train) // 8)
    assert est.estimate(cfg, s).train_s >= steps * 0.3
    assert torch.equal(s.train.generator.get_state(), state)


def test_a_dry_multiruns_total_counts_its_own_jobs_not_an_earlier_ones(tmp_path, capsys):
    """A dry multirun sums the estimate.json its jobs write in the sweep folder. Run again into the
    same folder (hydra.sweep.dir=...) with fewer jobs, its total also summed the earlier dry run's
    jobs that were no longer asked for: `strategy=frozen` said "all 2 jobs" and added full's cost."""
    import os
    import time

    from omegaconf import OmegaConf

    from src.train import ComparisonTable
    from src.training.estimate import Estimate

    def job(name: str, flops: int) -> None:
        (tmp_path / name).mkdir()
        est = Estimate(40, 10, 10, 32, 1, 16, flops, 1.0, 1.0, False)
        (tmp_path / name / "estimate.json").write_text(json.dumps(est.to_dict()))

    job("1_full", 10**12)  # an earlier dry multirun's job
    os.utime(tmp_path / "1_full" / "estimate.json", (time.time() - 600, time.time() - 600))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "trainer": {"dry_run": True}})
    table = ComparisonTable()
    table.on_multirun_start(config)
    job("0_frozen", 10**9)  # this one's
    table.on_multirun_end(config)
    out = capsys.readouterr().out
    assert "1 dry-run jobs in" in out and "estimate, all 1 jobs: 1.000e+09 training FLOPs" in out
    assert not [line for line in out.splitlines() if line.strip().startswith("1_full")]
    assert "1 estimate.json of an earlier dry run in this folder left out" in out


@pytest.mark.parametrize("train_s, eval_s", [(0.6, 7.6), (12.6, 30.6), (0.04, 0.3)])
def test_the_printed_parts_of_a_time_add_up_to_its_total(train_s, eval_s):
    """'~9s (1s training + 7s evaluation)' rounded each figure on its own, so the line did not add
    up, and a frozen run's training was '0s'; under 10 s a figure has a decimal now."""
    from src.training.estimate import Estimate

    line = Estimate(40, 10, 10, 32, 1, 16, 10**9, train_s, eval_s, False).line()
    total, train, ev = (float(x) for x in re.search(r"~([\d.]+)s \(([\d.]+)s training \+ ([\d.]+)s evaluation", line).groups())
    assert total == pytest.approx(train + ev) and train > 0


def test_the_estimate_counts_the_ood_sets_and_drifts_probe(tiny_config, tmp_path, monkeypatch):
    """After training, each dataset.ood set is evaluated once and drift runs its probe through the
    trained model and the pretrained reference, all on the whole model: the estimate's evaluation
    left both out (a run with a large OOD set was told a fraction of its time)."""
    from src.data.ood import OodSet
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.01)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1)
    plain = tiny_config(strategy={"name": "full"}, trainer={"epochs": 1, "feature_cache": "off", "drift_probe": 0})
    probed = tiny_config(strategy={"name": "full"}, trainer={"epochs": 1, "feature_cache": "off", "drift_probe": 8})
    s = setup(plain, tmp_path / "plain")
    base = est.estimate(plain, s).eval_s
    s.ood.append(OodSet("shifted", s.data.test))
    assert est.estimate(plain, s).eval_s - base == pytest.approx(0.01 * len(s.data.test))
    drifted = setup(probed, tmp_path / "probed")
    assert drifted.reference is not None
    assert est.estimate(probed, drifted).eval_s - base == pytest.approx(0.01 * 2 * 8)


def test_the_eta_prices_each_epoch_left_by_its_phase(tiny_config, tmp_path, monkeypatch):
    """An epoch that trains more groups costs more (lpft's probe against its fine-tuning, gradual
    unfreezing): the ETA said the epochs left would each take what the epochs so far took on average,
    so after a probe epoch of 10 s it said 20 s for two 40 s epochs. It scales the estimate's time of
    each epoch left by how the epochs so far ran against theirs."""
    from src.training import estimate as est
    from src.training.setup import setup

    assert est.eta([10.0], 2, (5.0, 40.0)) == "80s"  # ran at 2x the estimate: two 20 s epochs take 80 s
    assert est.eta([10.0], 2) == "20s"  # no estimate: the mean epoch so far
    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.0)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1 * sum(
        p.requires_grad for p in model.parameters()))
    cfg = tiny_config(strategy={"name": "lpft", "probe_epochs": 1}, trainer={"epochs": 3, "feature_cache": "off"})
    plan = est.estimate(cfg, setup(cfg, tmp_path)).epoch_s
    assert len(plan) == 3 and plan[0] < plan[1] == plan[2]


def test_a_compiled_runs_estimate_says_what_it_did_not_time(tiny_config, tmp_path, monkeypatch):
    """trainer.compile=true trains a torch.compile'd model, but the calibration times the eager one:
    the compilation (tens of seconds) and whatever speed it brings are in no figure, and the line
    said nothing of it."""
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.01)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1)
    for compiled in (False, True):
        cfg = tiny_config(strategy={"name": "full"}, trainer={"epochs": 1, "feature_cache": "off", "compile": compiled})
        line = est.estimate(cfg, setup(cfg, tmp_path / str(compiled))).line()
        assert ("torch.compile" in line) is compiled, line


def test_a_job_without_num_threads_gets_the_process_default_not_the_last_jobs(tiny_config):
    """torch.set_num_threads lasts for the process: in a multirun (`trainer.num_threads=1,null`, or a
    sweep over it) a job that left it unset ran, was estimated and recorded cpu_threads at the
    thread count the job before it had set."""
    from src.training.setup import resolve_runtime

    default = torch.get_num_threads()
    try:
        resolve_runtime(tiny_config(trainer={"num_threads": 1}))
        assert torch.get_num_threads() == 1
        resolve_runtime(tiny_config(trainer={"num_threads": None}))
        assert torch.get_num_threads() == default
    finally:
        torch.set_num_threads(default)


def test_a_cache_that_cannot_apply_is_refused_before_the_estimate(tiny_config, tmp_path, capsys):
    """trainer.feature_cache=on where nothing can be cached (full fine-tuning): the dry run printed an
    estimate of a run that cannot start, and a real run calibrated for its estimate (1.7 min here)
    before the error."""
    from src.config import ConfigError

    cfg = tiny_config(strategy={"name": "full"}, trainer={"epochs": 1, "feature_cache": "on", "dry_run": True})
    with pytest.raises(ConfigError, match="trainer.feature_cache=on, but this run's features cannot be cached"):
        run(cfg, tmp_path / "dry")
    assert "estimate:" not in capsys.readouterr().out and not (tmp_path / "dry" / "estimate.json").exists()


def test_one_epoch_is_said_in_the_singular():
    from src.training.estimate import Estimate

    one = Estimate(50, 20, 20, 32, 1, 16, 10**9, 1.0, 0.5, False)
    assert ", 1 epoch of batch 16" in one.line() and ", 2 epochs of batch" in dataclasses.replace(one, epochs=2).line()


@pytest.mark.parametrize("per_class, batch_size, min_steps", [(4, 32, 0), (4, 24, 0), (4, 16, 7), (5, 49, 0)])
def test_a_last_short_batch_is_priced_by_its_images_not_as_a_full_step(tiny_config, tmp_path, monkeypatch,
                                                                      per_class, batch_size, min_steps):
    """An epoch of 40 images in batches of 32 trains one step of 32 and one of 8; the estimate priced
    both as steps of 32, 64 images for 40 (1.6x: PACS, 42 images, batch 32, said 2.2 s an epoch for
    1.4 s). Each pass's images are priced at the timed step's cost per image (a last batch of one
    is dropped, as training drops it), and the epochs' ETA plan with them."""
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.0)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1 * size)  # 0.1 s an image
    cfg = tiny_config(strategy={"name": "full"}, dataset={"train_per_class": per_class},
                      trainer={"epochs": 2, "batch_size": batch_size, "min_epoch_steps": min_steps,
                               "feature_cache": "off"})
    s = setup(cfg, tmp_path)
    n = len(s.data.train)
    trained = s.passes * (n - (1 if n % batch_size == 1 else 0))  # images each epoch trains on
    got = est.estimate(cfg, s)
    assert got.train_s == pytest.approx(2 * 0.1 * trained)
    assert got.epoch_s == pytest.approx((0.1 * trained, 0.1 * trained))


def test_a_dry_run_prices_what_the_same_command_would_do_in_its_folder(tiny_config, tmp_path, monkeypatch, capsys):
    """A dry run priced the whole run whatever its folder held: a finished run of this config (the
    real command keeps it and trains nothing), another config's finished run (the real command is
    refused), a killed run's checkpoint (the real command trains only the epochs left); and it wrote
    its estimate.json into the other config's folder. It now reads the folder as the run does."""
    from src.training import estimate as est
    from src.training.run import RunDirTaken

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.01)
    monkeypatch.setattr(est, "_time_steps", lambda cfg, s, model, net, shape, size: 0.1)
    settings = {"epochs": 2, "keep_checkpoints": 2, "feature_cache": "off", "drift_probe": 0}
    cfg = tiny_config(strategy={"name": "full"}, trainer=settings)
    dry = tiny_config(strategy={"name": "full"}, trainer=settings | {"dry_run": True})
    folder = tmp_path / "run"
    done = run(cfg, folder)
    capsys.readouterr()
    kept = run(dry, folder)
    out = capsys.readouterr().out
    assert kept["status"] == "dry_run" and kept["kept"] == "completed" and "train_s" not in kept
    assert "nothing to train" in out and "estimate: " not in out.replace("estimate: nothing", "")
    assert json.loads((folder / "estimate.json").read_text()) == {"kept": "completed"}  # for a dry multirun's total
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(RunDirTaken, match="another config"):
        run(tiny_config(strategy={"name": "full"}, trainer=settings | {"dry_run": True, "epochs": 3}), folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the refused folder
    (folder / "result.json").unlink()  # killed after epoch 1: its checkpoint continues
    (folder / "checkpoint_epoch001.pt").unlink()
    left = run(dry, folder)
    assert left["first_epoch"] == 1 and "1 of 2 epochs left (resumed)" in capsys.readouterr().out
    whole = run(dry, tmp_path / "fresh")
    assert left["train_s"] == pytest.approx(whole["train_s"] / 2) and left["train_flops"] == done["train_flops"]


@pytest.mark.slow  # one subprocess multirun of two tiny dry jobs (about 10 s)
def test_a_dry_multirun_says_which_jobs_cannot_start_and_writes_no_result(tmp_path):
    """`-m strategy=frozen,full trainer.feature_cache=on trainer.dry_run=true`: full cannot start
    (nothing to cache). The dry job wrote a result.json {"status": "failed"} (a dry run writes no
    result: `src.report` then listed a failed run that never ran), and the multirun ended with exit 0
    and 'estimate, all 1 jobs: ...', as if the command were one job that runs. Now the job's
    estimate.json says why it cannot start, the total names it and counts the jobs asked, and the
    command fails as the real multirun would."""
    common = ["model=timm", "model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32",
              "dataset.train_per_class=4", "trainer.epochs=1", "trainer.progress=false", "logger=none"]
    multi = subprocess.run([sys.executable, "-m", "src.train", "-m", *common, "trainer.dry_run=true",
                            "trainer.feature_cache=on", "strategy=frozen,full", f"hydra.sweep.dir={tmp_path}"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert not list(tmp_path.glob("*/result.json"))
    assert "1_full  cannot start: ConfigError: trainer.feature_cache=on" in multi.stdout, multi.stdout
    assert "estimate, 1 of 2 jobs (1 cannot start): " in multi.stdout, multi.stdout
    assert multi.returncode == 1 and multi.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 2 dry-run jobs cannot start: 1_full"), multi.stderr[-2000:]


def test_a_single_run_that_finds_a_pruned_run_of_its_config_ends_with_its_line(tmp_path):
    """A single run in a sweep trial's folder (`hydra.run.dir=` it, the trial's settings) keeps the
    pruned run it finds there and prints its line: the record has no test_acc (a pruned run was never
    tested), and the line ended the command in 'KeyError: test_acc' (or, with a null, 'TypeError:
    unsupported format string passed to NoneType.__format__') instead."""
    from src.train import result_line

    pruned = {"status": "pruned", "val_acc": 0.5, "train_flops": 1.5e9, "train_time_s": 2.0, "total_time_s": 3.0,
              "pruned_epoch": 1, "reason": "pruned by MedianPruner at epoch 1"}
    line = result_line(pruned, tmp_path)
    assert line.startswith("pruned after epoch 2 (pruned by MedianPruner at epoch 1): val_acc 0.5000  test_acc -  ")
    assert "train_flops 1.500e+09" in line and line.endswith(f"in {tmp_path}")
    assert "test_acc -  " in result_line(pruned | {"test_acc": None}, tmp_path)
    done = result_line({"status": "completed", "val_acc": 0.5, "test_acc": 0.25, "train_flops": None}, tmp_path)
    assert done.startswith("completed: val_acc 0.5000  test_acc 0.2500  train_flops not counted")


def test_a_dry_multiruns_total_counts_the_jobs_it_keeps_and_those_that_cannot_start(tmp_path, capsys):
    """A dry multirun again on a sweep folder where a job's run finished: that job trains nothing (kept)
    and the total said 'all 1 jobs' of a command of 2."""
    from omegaconf import OmegaConf

    from src.train import ComparisonTable
    from src.training.estimate import Estimate

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "trainer": {"dry_run": True}})
    table = ComparisonTable()
    table.on_multirun_start(config)
    for name, record in (("0_frozen", {"kept": "completed"}), ("2_lpft", {"error": "ConfigError: no"}),
                         ("1_full", Estimate(40, 10, 10, 32, 1, 16, 10**9, 1.0, 1.0, False).to_dict())):
        (tmp_path / name).mkdir()
        (tmp_path / name / "estimate.json").write_text(json.dumps(record))
    with pytest.raises(BaseException, match="1 of 3 dry-run jobs cannot start: 2_lpft"):
        table.on_multirun_end(config)
    out = capsys.readouterr().out
    assert "0_frozen  kept: holds a completed run of this config, nothing to train" in out
    assert "estimate, 1 of 3 jobs (1 cannot start, 1 kept: nothing to train): 1.000e+09 training FLOPs" in out


def test_a_dry_multiruns_total_of_one_job_says_that_jobs_time():
    """Each job's line adds its parts as shown (2.26 s + 5.96 s: 2.3s + 6.0s = ~8.3s);
    the total summed the unrounded times: '~8.3s' on the job's line, '~8.2s' on the total of it alone."""
    from src.training.estimate import Estimate, total_line

    one = Estimate(50, 360, 360, 32, 1, 16, 10**9, 2.26, 5.96, False)
    shown = re.search(r"~([\d.]+s)", one.line()).group(1)
    assert shown == "8.3s" and total_line([one]).endswith(f"~{shown}")


def test_l2sp_steps_are_timed_with_their_penalty(tiny_config, tmp_path, monkeypatch):
    """L2-SP adds its penalty to every step's loss (and its backward): 23-47 ms a step for Lite0 on 2
    cores, a tenth of a step at 64 px and a quarter at 32 px. The calibration timed the step without
    it, and a sweep process that had timed full fine-tuning's step reused that time for L2-SP's."""
    from src.training import engine
    from src.training import estimate as est
    from src.training.setup import setup

    monkeypatch.setattr(est, "_time_forward", lambda net, s, size, shape: 0.0)
    seen, train_one_epoch = [], engine.train_one_epoch

    def spy(*args, penalty=None, **kw):
        seen.append(penalty)
        return train_one_epoch(*args, penalty=penalty, **kw)

    monkeypatch.setattr(est.engine, "train_one_epoch", spy)
    for name in ("full", "l2sp"):  # one process: the second must not reuse the first's timing
        seen.clear()
        cfg = tiny_config(strategy={"name": name}, trainer={"epochs": 1, "feature_cache": "off", "drift_probe": 0})
        est.estimate(cfg, setup(cfg, tmp_path / name))
        assert seen and all((p is not None) is (name == "l2sp") for p in seen), (name, seen)


def test_the_estimate_says_when_a_last_batch_of_one_is_left_out_each_pass():
    """12 training images in batches of 11 train 11 a pass (a batch of one would stop BatchNorm): the
    FLOPs counted 11, but the line said '12 images ... of batch 11' and nothing else, so the image left
    out each pass was said nowhere."""
    from src.training.estimate import Estimate

    line = Estimate(12, 4, 4, 32, 1, 11, 10**9, 1.0, 1.0, False).line()
    assert "11 of the 12 training images a pass" in line and "batch of one" in line
    for n, batch in ((12, 16), (12, 12), (13, 5), (1, 16)):  # nothing left out: nothing said
        assert "batch of one" not in Estimate(n, 4, 4, 32, 1, batch, 10**9, 1.0, 1.0, False).line()
