"""The sweep answers the question it was asked, and never loses or double-counts a trial: killed
workers are recovered, the budget is exact with several workers, a study is one experiment, an
sweep folder holds one study, settings are checked before any trial trains, and errors are one line.
Real sweeps in subprocesses, on real sqlite and journal storages."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from src.config import ConfigError
from src.search.results import holds_a_place
from src.search.storage import SweepJournalStorage, SweepRDBStorage

from tests.cli import env
from tests.test_sweep import _cmd, trial_dir

STUDY = "layerwise-default"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _sweep(cwd: Path, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def _study(url: str, name: str = STUDY) -> optuna.Study:
    if url.startswith("journal:"):
        return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
            JournalFileBackend(url.removeprefix("journal:"))))
    return optuna.load_study(study_name=name, storage=url)


def _sqlite(out: Path) -> str:
    return f"sqlite:///{out / 'optuna.db'}"


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The process failed with `code` and says why in one line, the last on stderr (log lines of
    the trials that ran may come before it), with no traceback anywhere."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith(("error", "interrupted"))]
    assert said == lines[-1:], lines[-20:]
    return lines[-1]


# --- A. killed workers ----------------------------------------------------------------------------

def _wait(predicate, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc is None or proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.3)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkilled_trial_is_failed_and_retried_on_an_early_resume_and_the_budget_is_met(tmp_path):
    out = tmp_path / "study"
    # grace_s longer than a resume takes to start: the dead trial still looks alive when it does
    # (before, its trial stayed RUNNING for good once the others had filled the budget)
    cmd = _cmd(out, 2, "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=20", "hydra.sweeper.pruner.name=none", "trainer.epochs=8")
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: (trial_dir(out, 0) / "metrics.jsonl").is_file(), worker)  # mid-training
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = _study(_sqlite(out)).trials[0]
    assert killed.state == TrialState.RUNNING
    proc = _sweep(tmp_path, cmd)  # resumed at once
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(_sqlite(out)).trials
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state in DONE
    assert retry[0].user_attrs["run_dir"] == str(trial_dir(out, retry[0].number))  # its own folder
    assert sum(t.state in DONE for t in trials) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow  # it waits out a real grace period (Optuna's clock): timing-based, so not in the fast tier
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path, kind):
    """The gap Optuna leaves: a trial created but never heartbeating (its worker died between the
    two) was never stale. Real storages, the driver's own classes, Optuna's fail_stale_trials."""
    retried: list[int] = []
    callback = lambda study, trial: retried.append(trial.number)  # noqa: E731
    if kind == "sqlite":
        storage = SweepRDBStorage(f"sqlite:///{tmp_path / 'db.sqlite'}", heartbeat_interval=1, grace_period=2,
                                  heartbeat_stale_trial_callback=callback)
    else:
        storage = SweepJournalStorage(JournalFileBackend(str(tmp_path / "j.log")), 1, 2, callback)
    study = optuna.create_study(storage=storage)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    dead = study.ask()  # never heartbeats
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.RUNNING]  # not yet: within grace
    time.sleep(1.5)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(1.5)
    storage.record_heartbeat(alive._trial_id)
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.trials}
    assert states == {alive.number: TrialState.RUNNING, dead.number: TrialState.FAIL}
    assert retried == [dead.number]


@pytest.mark.slow
def test_a_trial_that_never_heartbeat_does_not_block_a_resumed_sweep(tmp_path):
    out = tmp_path / "study"
    cmd = _cmd(out, 1, "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=2", "hydra.sweeper.pruner.name=none")
    assert _sweep(tmp_path, cmd).returncode == 0
    study = _study(_sqlite(out))
    # A worker that died right after creating its trial: RUNNING, with parameters, no heartbeat.
    ghost = study.ask(fixed_distributions=study.trials[0].distributions)
    proc = _sweep(tmp_path, _cmd(out, 2, "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=2", "hydra.sweeper.pruner.name=none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(_sqlite(out)).trials
    assert trials[ghost.number].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == ghost.number]
    assert len(retry) == 1 and retry[0].params == ghost.params and retry[0].state in DONE
    assert sum(t.state in DONE for t in trials) == 2


# --- B. an exact budget ---------------------------------------------------------------------------

def test_budget_place_goes_to_the_lower_trial_number(tmp_path):
    """Two workers each start a trial with one place left: the later number trains nothing."""
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage)
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()
    assert holds_a_place(study, first.number, total=4)
    assert not holds_a_place(study, second.number, total=4)
    study.tell(second, state=TrialState.FAIL)  # the surplus trial is failed at once, untrained
    study.tell(first, state=TrialState.FAIL)  # e.g. diverged: the place is free again for a later trial
    third = study.ask()
    assert holds_a_place(study, third.number, total=4)


@pytest.mark.slow
def test_worker_waits_for_a_running_trial_instead_of_exceeding_the_budget(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    out = tmp_path / "study"
    extra = (f"hydra.sweeper.storage={url}", "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=30",
             "hydra.sweeper.pruner.name=none")
    assert _sweep(tmp_path, _cmd(out, 1, *extra)).returncode == 0
    study = _study(url)
    # Another worker holds the last place: a live trial, heartbeating.
    other = study.ask(fixed_distributions=study.trials[0].distributions)
    beats = SweepJournalStorage(JournalFileBackend(url.removeprefix("journal:")), 1, 30, None)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            beats.record_heartbeat(other._trial_id)
            stop.wait(0.5)

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        worker = subprocess.Popen(_cmd(out, 2, *extra), cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(15)  # long enough to start a trial, had it not waited
        assert worker.poll() is None
        assert len(_study(url).trials) == 2 and not trial_dir(out, other.number).exists()
    finally:
        stop.set()
        thread.join()
    study.tell(other, [0.5, 1.0e8])
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-3000:]
    trials = _study(url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(p.name for p in out.glob("*_layerwise")) == ["0_layerwise"]  # nothing else trained


@pytest.mark.slow
def test_two_workers_on_a_journal_file_train_exactly_n_trials(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    out = tmp_path / "study"
    cmd = _cmd(out, 3, f"hydra.sweeper.storage={url}", "hydra.sweeper.pruner.name=none")
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    trials = _study(url).trials
    trained = [t for t in trials if not t.user_attrs.get("surplus")]
    assert sum(t.state in DONE for t in trials) == 3
    assert len(trained) == 3 and len(list(out.glob("*_layerwise/result.json"))) == 3


# --- C. one study, one experiment -----------------------------------------------------------------

@pytest.fixture(scope="module")
def one_trial_study(tmp_path_factory):
    """A finished one-trial study (default search space and objectives)."""
    root = tmp_path_factory.mktemp("identity")
    out = root / "study"
    proc = _sweep(root, _cmd(out, 1, "hydra.sweeper.pruner.name=none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out


@pytest.mark.parametrize("change, named", [
    (["dataset.train_per_class=4"], "dataset.train_per_class: 3 -> 4"),
    pytest.param(["trainer.epochs=2"], "trainer.epochs: 1 -> 2", marks=pytest.mark.slow),
    pytest.param(["optim.min_lr_ratio=0.5"], "optim.min_lr_ratio: 0.01 -> 0.5", marks=pytest.mark.slow),  # a key nobody listed: derived
    pytest.param(["model.drop_rate=0.3"], "model.drop_rate: 0.2 -> 0.3", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.objectives=[val_acc]"], 'objectives: ["val_acc", "train_flops"] -> ["val_acc"]', marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.objectives=[val_acc,train_time_s]"], "train_time_s", marks=pytest.mark.slow),
    # another strategy: its search space (layerwise's lr_decay) is not even a setting of full's any more
    pytest.param(["strategy=full"], "unknown key 'strategy.lr_decay'", marks=pytest.mark.slow),
])
def test_resume_that_measures_something_else_is_refused(one_trial_study, change, named):
    root, out = one_trial_study
    before = (trial_dir(out, 0) / "result.json").read_text()
    proc = _sweep(root, _cmd(out, 2, "hydra.sweeper.pruner.name=none", *change))
    line = _one_line_error(proc)
    # a changed setting is named with the way out (another study); a space that no longer fits the
    # strategy is refused earlier, naming its key
    assert named in line and ("hydra.sweeper.study_name" in line or named.startswith("unknown key")), line
    trials = _study(_sqlite(out)).trials
    assert len(trials) == 1 and (trial_dir(out, 0) / "result.json").read_text() == before


def test_a_study_resumed_on_changed_data_is_refused_naming_its_dataset_ids(tmp_path):
    """Settings equal, data not: an image added to the folder between two invocations would put trials
    of two datasets (and two val/test splits) in one front. An older study, recorded without the
    data's identity, still resumes."""
    from PIL import Image

    from src.config import RunConfig
    from src.search.study import open_study, study_identity
    from src.sweep_driver import _data_identity

    root = tmp_path / "photos"
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (60 * c + i, 0, 0)).save(root / cls / f"{i}.png")
    cfg = RunConfig.from_dict({"dataset": {"kind": "imagefolder", "root": str(root)}})
    space = {"optim.lr": {"interval": [1e-4, 1e-3]}}
    before = _data_identity(cfg, space)
    assert before and _data_identity(cfg, space | {"dataset.root": {"choice": [str(root)]}}) is None
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], before), None, url)
    Image.new("RGB", (8, 8)).save(root / "dog" / "new.png")
    after = _data_identity(cfg, space)
    assert after != before
    with pytest.raises(ConfigError) as err:
        open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], after), None, url)
    line = str(err.value)
    assert "\n" not in line and f"{before[:6]} -> {after[:6]}" in line and "hydra.sweeper.study_name" in line
    # the same data resumes; a study recorded before the data's identity was resumes on any data
    (root / "dog" / "new.png").unlink()
    open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], before), None, url)
    open_study(storage, "old", ["maximize"], study_identity(cfg, space, ["val_acc"]), None, url)
    open_study(storage, "old", ["maximize"], study_identity(cfg, space, ["val_acc"], after), None, url)


def test_a_study_resumed_after_its_weights_file_was_replaced_is_refused(tmp_path):
    """model.checkpoint_path names a place: a file re-exported there between two invocations would
    put trials of two backbones in one study (the runs' reports split them by weights_id; Optuna's
    sampler did not). Refused in one line naming both weights_ids; the same file resumes."""
    import timm
    import torch

    from src.config import RunConfig
    from src.search.study import open_study, study_identity
    from src.sweep_driver import _weights_identity

    weights = tmp_path / "backbone.pt"
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    torch.save(state, weights)
    cfg = RunConfig.from_dict({"model": {"name": "test_efficientnet", "pretrained": True, "weights": "file",
                                         "checkpoint_path": str(weights)}})
    space = {"optim.lr": {"interval": [1e-4, 1e-3]}}
    before = _weights_identity(cfg, space)
    assert before and _weights_identity(cfg, space | {"model.name": {"choice": ["a", "b"]}}) is None
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], None, before), None, url)
    torch.save({k: v * 2 if v.is_floating_point() else v for k, v in state.items()}, weights)
    after = _weights_identity(cfg, space)
    assert after and after != before
    with pytest.raises(ConfigError) as err:
        open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], None, after), None, url)
    line = str(err.value)
    assert "\n" not in line and f"{before[:6]} -> {after[:6]}" in line and "model.checkpoint_path" in line
    torch.save(state, weights)
    open_study(storage, "s", ["maximize"], study_identity(cfg, space, ["val_acc"], None, _weights_identity(cfg, space)),
               None, url)


@pytest.mark.slow
def test_resume_with_a_changed_search_space_is_refused(tmp_path):
    out = tmp_path / "study"
    assert _sweep(tmp_path, _cmd(out, 1, "hydra.sweeper.pruner.name=none")).returncode == 0
    # a sweep value on the command line replaces the preset's (the later one wins, as in Hydra)
    proc = _sweep(tmp_path, _cmd(out, 2, "optim.lr=tag(log, interval(1.0e-4, 3.0e-3))"))
    assert "params.optim.lr" in _one_line_error(proc)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_settings_that_change_no_measurement_resume_the_same_study(one_trial_study):
    root, out = one_trial_study
    # the same fixed hydra.sweep.dir, which holds the study's finished trials: a resume, not refused
    proc = _sweep(root, _cmd(out, 1, "hydra.sweeper.pruner.name=none", "trainer.num_threads=1", "trainer.progress=true",
                             "logger.project=elsewhere"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_study(_sqlite(out)).trials) == 1


# --- D. one sweep folder, one study ---------------------------------------------------------------

@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_a_second_study_in_the_same_sweep_dir_is_refused(one_trial_study):
    root, out = one_trial_study
    before = {p: p.read_text() for p in (trial_dir(out, 0) / "result.json", out / "pareto.json", out / "summary.json")}
    proc = _sweep(root, _cmd(out, 1, "hydra.sweeper.study_name=another", "hydra.sweeper.pruner.name=none"))
    line = _one_line_error(proc)
    assert "belongs to study layerwise-default" in line and "hydra.sweep.dir" in line
    assert {p: p.read_text() for p in before} == before
    assert sorted(p.name for p in out.glob("*_layerwise")) == ["0_layerwise"]


def test_a_sweep_folder_of_a_same_named_study_elsewhere_says_which_storage_holds_it(tmp_path):
    """Two studies of one name in two storages: the refusal names both storages, not the name twice."""
    from src.search.study import claim_out_dir, open_study

    out = tmp_path / "sweep"
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    claim_out_dir(out, open_study(optuna.storages.RDBStorage(first), "s", ["maximize"], {"config": {}}, None, first),
                  first)
    with pytest.raises(ConfigError) as err:
        claim_out_dir(out, open_study(optuna.storages.RDBStorage(second), "s", ["maximize"], {"config": {}}, None,
                                      second), second)
    line = str(err.value)
    assert f"another study named s, the one in {first} (this sweep's study is in {second})" in line, line
    assert "hydra.sweeper.storage" in line and "\n" not in line


@pytest.mark.slow
def test_a_new_study_never_writes_over_the_trials_of_a_lost_one(tmp_path):
    out = tmp_path / "study"
    assert _sweep(tmp_path, _cmd(out, 1, "hydra.sweeper.pruner.name=none")).returncode == 0
    result = (trial_dir(out, 0) / "result.json").read_text()
    (out / "optuna.db").unlink()  # the storage is gone, its results are not
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1, "hydra.sweeper.pruner.name=none")))
    assert "hydra.sweep.dir" in line
    assert (trial_dir(out, 0) / "result.json").read_text() == result
    (out / "study.json").unlink()  # and without the folder's record, its finished runs refuse it
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1, "hydra.sweeper.pruner.name=none")))
    assert "0_layerwise" in line and (trial_dir(out, 0) / "result.json").read_text() == result


def test_a_fixed_sweep_dir_is_resumable_by_its_own_study_only(tmp_path):
    """src.gate's check before Hydra starts: our Optuna sweeper's fixed hydra.sweep.dir with finished
    runs is refused unless its study owns it (study.json; claim_out_dir then refuses another study).
    A plain multirun's is not: each job keeps its finished run or refuses another config's (run())."""
    from omegaconf import OmegaConf

    from src.gate import check_output_dir

    (tmp_path / "0_layerwise").mkdir()
    (tmp_path / "0_layerwise" / "result.json").write_text('{"status": "completed"}')
    plain = OmegaConf.create({"run": {"dir": "x"}, "sweep": {"dir": str(tmp_path)},
                              "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}})
    ours = OmegaConf.merge(plain, {"sweeper": {"_target_": "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper"}})
    with pytest.raises(ConfigError, match="already holds 1 finished run"):
        check_output_dir(ours, multirun=True)
    check_output_dir(plain, multirun=True)
    with pytest.raises(ConfigError, match=r"\(.*0_layerwise/result.json\) but no study.json, the record of the study "
                                          r"they belong to: if it was lost, restore it"):  # not only "move them away"
        check_output_dir(ours, multirun=True)
    (tmp_path / "study.json").write_text("{}")
    check_output_dir(ours, multirun=True)


# --- E. settings checked before any trial ---------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["hydra.sweeper.objectives=[test_acc]"], "test split"),
    pytest.param(["hydra.sweeper.objectives=[val_acc,test_balanced_acc]"], "test split", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.objectives=[val_acc,flops]"], "'flops' is not an objective (allowed: val_acc", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.objectives=[val_acc,train_flops,train_flops]"], "train_flops is given twice", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.objectives=[train_flops,val_acc]"], "the first must be a validation accuracy", marks=pytest.mark.slow),
    (["trainer.count_flops=false"], "trainer.count_flops=false"),
    (["hydra/sweeper/sampler=tpee"], "hydra/sweeper/sampler=tpee is not allowed (options: cmaes, grid, motpe, nsgaii"),
    pytest.param(["hydra/sweeper/sampler=grid"], "hydra/sweeper/sampler=grid is not supported", marks=pytest.mark.slow),
    pytest.param(["hydra/sweeper/sampler=cmaes"], "hydra/sweeper/sampler=cmaes optimises one objective", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.pruner.name=medain"], "pruner.name='medain' is not allowed", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.n_trails=3"], "n_trails", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.pruner.after=1.5"], "hydra.sweeper.pruner.after", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.grace_s=10"], "hydra.sweeper.grace_s=10 must be longer than hydra.sweeper.heartbeat_s=20",
                 marks=pytest.mark.slow),
    pytest.param(["optim.lr=interal(0.1, 1)"], "optim.lr=interal(0.1, 1)", marks=pytest.mark.slow),
    pytest.param(["optim.lrr=interval(0.1, 1)"], "unknown key 'optim.lrr'", marks=pytest.mark.slow),
    pytest.param(["optim.lr=interval(0.1, 0.01)"], "optim.lr's low=0.1 is above its high=0.01", marks=pytest.mark.slow),
    pytest.param(["optim.lr=tag(log, interval(0.0, 0.1))"], "optim.lr on a log scale needs low > 0", marks=pytest.mark.slow),
    pytest.param(["strategy.lr_decay=interval(-1.0, 2.0)"], "strategy.lr_decay=-1.0 must be", marks=pytest.mark.slow),
    pytest.param(["strategy.unfreeze_depth=range(0, 40)"], "unfreeze_depth", marks=pytest.mark.slow),
    # the sweeper's own settings: before, Hydra built the sampler and a bad key was its traceback
    # (this one and the repeated re-run seed are also checked in process: tests/test_sweep_settings.py)
    pytest.param(["+hydra.sweeper.sampler.bogus=1"], "hydra.sweeper.sampler.bogus is not a setting of TPESampler",
                 marks=pytest.mark.slow),
    pytest.param(["hydra/sweeper/sampler=random", "+hydra.sweeper.sampler.bogus=1"],
                 "hydra.sweeper.sampler.bogus is not a setting of RandomSampler", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.sampler.seed=-1"], "hydra.sweeper.sampler.seed=-1 must be in 0..4294967295",
                 marks=pytest.mark.slow),
    pytest.param(["hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.population_size=1"],
                 "hydra.sweeper.sampler.population_size=1 must be >= 2", marks=pytest.mark.slow),
    pytest.param(["+hydra.sweeper.bogus=1"], "hydra.sweeper.bogus is not a setting of hydra/sweeper=optuna",
                 marks=pytest.mark.slow),
    # re-run seeds, checked before the search (before, a bad one failed after it)
    pytest.param(["hydra.sweeper.rerun_seeds=[1,1]"], "hydra.sweeper.rerun_seeds=[1, 1]: seed 1 is given twice",
                 marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.rerun_seeds=[0,1]"], "seed 0 is the seed the search trained with", marks=pytest.mark.slow),
    pytest.param(["hydra.sweeper.rerun_seeds=[-1]"], "hydra.sweeper.rerun_seeds=[-1]: -1 is not a seed", marks=pytest.mark.slow),
])
def test_bad_settings_are_refused_before_any_trial(tmp_path, args, says):
    out = tmp_path / "study"
    proc = _sweep(tmp_path, _cmd(out, 2, *args), timeout=120)
    line = _one_line_error(proc)
    assert line.startswith("error: ") and says in line, line
    assert not list(out.glob("*_layerwise")) and not (out / "optuna.db").exists()


def test_pruner_numbers_are_not_truncated():
    from hydra_plugins.ft_optuna_sweeper.errors import SettingError
    from src.search.pruning import PruneSpec

    for bad in ({"after": 1.5}, {"startup": True}, {"min_delta": "x"}):
        with pytest.raises(SettingError, match=f"pruner.{next(iter(bad))}="):
            PruneSpec.from_dict(bad)
    assert PruneSpec.from_dict({"after": 3, "min_delta": 0}).after == 3


# --- F. errors a person can read ------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_interrupt_is_one_line_with_how_to_resume(tmp_path, sig, code):
    out = tmp_path / "study"
    cmd = _cmd(out, 2, "hydra.sweeper.pruner.name=none", "trainer.epochs=30")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (trial_dir(out, 0) / "metrics.jsonl").is_file(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    line = _one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, "", err), code)
    by = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert line.startswith(f"interrupted by {by}: 0 of 2 trials of study layerwise-default"), line
    assert "trial 0 was stopped and runs again on resume" in line and str(out / "optuna.db") in line
    assert "run the same command to resume" in line
    trial = _study(_sqlite(out)).trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"]


def _storage_frame():
    scope: dict = {"sys": sys}
    exec(compile("frame = sys._getframe()", f"{Path('/x/sqlalchemy/orm/session.py')}", "exec"), scope)
    return scope["frame"]


def _finalizer_frame():
    frames = []

    class Finalised:
        def __del__(self):
            frames.append(sys._getframe())

    Finalised()  # collected at once
    return frames[0]


def _weakref_callback_frame():
    """The frame of a WeakKeyDictionary's callback, run as the garbage collector runs it."""
    import weakref

    class Key:
        pass

    frames, table, key = [], weakref.WeakKeyDictionary(), Key()
    table[key] = 1

    def watch(frame, event, _arg):
        if event == "call" and frame.f_code.co_filename.endswith("weakref.py") and frame.f_code.co_name == "remove":
            frames.append(frame)

    sys.setprofile(watch)
    try:
        del key
    finally:
        sys.setprofile(None)
    return frames[0]


def _torch_save_frame():
    """The frame of a write that torch.save makes, from C++, into the file it saves to."""
    import io

    import torch

    frames = []

    class Watched(io.BytesIO):
        def write(self, data):
            frames.append(sys._getframe())
            return super().write(data)

    torch.save({"w": torch.zeros(3)}, Watched())
    return frames[0]


@pytest.mark.parametrize("where", [_storage_frame, _finalizer_frame, _weakref_callback_frame, _torch_save_frame])
def test_a_signal_inside_a_storage_call_or_a_finalizer_is_delivered_once_it_is_done(where):
    """A KeyboardInterrupt raised halfway through a storage write would leave the session unusable
    (the trial could then not be recorded as interrupted), and one raised in a finalizer or a weakref
    callback (the garbage collector's, at any moment) is dropped by Python: the stop would be lost
    and the sweep run on. One raised in a write torch.save makes from C++ becomes a RuntimeError there
    (a checkpoint's save: the run was recorded as failed, not interrupted). The signal comes again
    50 ms later."""
    from src import exits

    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        exits.on_signal(signal.SIGUSR1, where())  # inside: no exception now...
        deadline = time.monotonic() + 30
        while not received:  # ...the signal again, later (a timer thread sends it)
            assert time.monotonic() < deadline, "the signal was not delivered again within 30 s"
            time.sleep(0.01)
        assert received == [signal.SIGUSR1]
        with pytest.raises(exits.Stopped, match="signal SIGUSR1") as stopped:
            exits.on_signal(signal.SIGUSR1, sys._getframe())  # outside it: stop here
        assert stopped.value.signal == signal.SIGUSR1 and stopped.value.code == 128 + signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_signal_inside_an_epoch_s_record_is_delivered_once_it_is_written():
    """An epoch's metrics line and what an interrupted run reports it measured are written in one
    `whole_record()` block: a SIGTERM between them recorded a run with a metrics line and nothing
    measured (seen in tests/test_robustness.py's SIGTERM test). Inside it the stop waits."""
    from src import exits
    from src.record.io import whole_record

    received: list[int] = []

    def handler(signum, frame):  # on_signal's decision, recording the stop instead of raising it
        if not exits._not_now(signum, frame):
            received.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with whole_record():
            exits.on_signal(signal.SIGUSR1, sys._getframe())  # inside: no exception now
            time.sleep(0.3)
            assert received == []  # ...and, sent again every 50 ms, still held while the block runs
        deadline = time.monotonic() + 30
        while not received:  # once it is done, the signal comes again
            assert time.monotonic() < deadline, "the signal was not delivered again within 30 s"
            time.sleep(0.01)
        with pytest.raises(exits.Stopped):
            exits.on_signal(signal.SIGUSR1, sys._getframe())
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("where", [_finalizer_frame, _weakref_callback_frame])
def test_a_launchers_signal_handler_is_kept_and_run_where_its_exception_travels(where):
    """submitit's SIGUSR2 handler raises out of whatever runs (to requeue, or to end a run that timed
    out too often). Raised in a finalizer or a weakref callback, Python drops it and the run goes on
    to the scheduler's SIGTERM, neither requeued nor recorded as timed out. The run's handlers keep
    it, and run it once the main thread is out of there; a signal left at its default now stops the
    task as SIGTERM does (tests/test_exits.py), in the task's process only."""
    from src import exits

    calls: list[int] = []

    def launcher(signum, frame):
        calls.append(signum)
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,
                                               signal.SIGUSR2)}
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, launcher)
    try:
        exits.install()
        exits.install()  # a job installs again: wrapped once
        wrapped = signal.getsignal(signal.SIGUSR2)
        assert isinstance(wrapped, exits.Deferred) and wrapped.handler is launcher
        stop = signal.getsignal(signal.SIGUSR1)
        assert isinstance(stop, exits.Deferred) and stop.handler is exits.on_signal
        wrapped(signal.SIGUSR2, where())  # inside: not now...
        assert calls == []
        with pytest.raises(RuntimeError, match="timed-out too many times"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # ...but again, 50 ms later, out here
                time.sleep(0.01)
        assert calls == [signal.SIGUSR2]
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_config_error_inside_a_trial_is_one_line(tmp_path):
    """The data is only loaded by the trial: a missing folder is found there."""
    proc = _sweep(tmp_path, _cmd(tmp_path / "study", 1, "dataset.kind=imagefolder", f"dataset.root={tmp_path / 'nope'}"))
    line = _one_line_error(proc)
    assert line.startswith("error: ") and "nope" in line


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
@pytest.mark.parametrize("args, says", [
    (["hydra.sweeper.storage=nosuchdb://host/db"], "hydra.sweeper.storage=nosuchdb://host/db"),
    pytest.param(["hydra.sweeper.storage=journal:/no/such/folder/study.log"], "folder /no/such/folder does not exist",
                 marks=pytest.mark.slow),
    pytest.param(["hydra.sweep.dir=/etc/passwd/study"], "hydra.sweep.dir=/etc/passwd/study", marks=pytest.mark.slow),
])
def test_bad_storage_or_sweep_dir_is_one_line(tmp_path, args, says):
    line = _one_line_error(_sweep(tmp_path, _cmd(tmp_path / "o", 1, *args), timeout=120))
    assert says in line, line


@pytest.mark.slow
def test_study_with_other_directions_is_one_line(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    optuna.create_study(study_name=STUDY, storage=_sqlite(out), directions=["minimize", "minimize"])
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1), timeout=120))
    assert f"study {STUDY}" in line and "hydra.sweeper.study_name" in line


@pytest.mark.parametrize("args", [["-m", "strategy=frozen,full", "hydra.sweep.dir={d}"], ["hydra.run.dir={d}"]])
def test_a_study_s_folder_is_refused_to_a_plain_multirun_and_a_run(tmp_path, args):
    """`-m strategy=frozen hydra.sweep.dir=sweeps-out/STUDY` trained into the study's folder, and its end
    replaced the study's report with one where the frozen run stood in the answer beside the trials."""
    from src.gate import precheck

    (tmp_path / "study.json").write_text('{"study": "layerwise-default"}')
    with pytest.raises(ConfigError) as refused:
        precheck([*(a.format(d=tmp_path) for a in args), "experiment=smoke"])
    key = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    assert str(refused.value) == (f"{key}={tmp_path} is an Optuna study's folder (its study.json): this "
                                  f"{'multirun' if '-m' in args else 'run'}'s results would be mixed into the study's "
                                  "report; choose another folder")
    assert [p.name for p in tmp_path.iterdir()] == ["study.json"]


def test_the_sweep_folder_checked_is_the_study_s_own_under_paths_output_dir(tmp_path):
    """sweeps/default.yaml puts the study in ${paths.output_dir}/sweeps-out/STUDY: the gate looked for finished
    runs in paths.output_dir itself, so `make sweep` was refused where any subfolder of the current folder held a
    finished run (`hydra.run.dir=mine` earlier), while the study's own folder holding finished runs without its
    study.json passed."""
    from omegaconf import OmegaConf

    from src.gate import check_output_dir

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "hydra": {
        "run": {"dir": "x"}, "sweep": {"dir": "${paths.output_dir}/sweeps-out/${hydra.sweeper.study_name}"},
        "sweeper": {"_target_": "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper", "study_name": "s"}}})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "result.json").write_text('{"status": "completed"}')
    check_output_dir(cfg.hydra, multirun=True, output_dir=str(tmp_path))  # another run beside the study: not its folder
    (tmp_path / "sweeps-out" / "s" / "0_layerwise").mkdir(parents=True)
    (tmp_path / "sweeps-out" / "s" / "0_layerwise" / "result.json").write_text('{"status": "completed"}')
    with pytest.raises(ConfigError, match=r"sweeps-out/s already holds 1 finished run"):
        check_output_dir(cfg.hydra, multirun=True, output_dir=str(tmp_path))
    (tmp_path / "sweeps-out" / "s" / "study.json").write_text("{}")
    check_output_dir(cfg.hydra, multirun=True, output_dir=str(tmp_path))
    cfg.hydra.sweep.dir = "${paths.output_dir}/${hydra.job.override_dirname}"  # only Hydra's job resolves it: unchecked
    check_output_dir(cfg.hydra, multirun=True, output_dir=str(tmp_path))
