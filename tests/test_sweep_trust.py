"""The sweep answers the question it was asked, and never loses or double-counts a trial: killed
workers are recovered, the budget is exact with several workers, a study is one experiment, an
out_dir holds one study, settings are checked before any trial trains, and errors are one line.
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
from src.search.sweep import SweepJournalStorage, SweepRDBStorage, claim_trial_dir, holds_a_place

from tests.cli import TINY_OVERRIDES as TINY
from tests.cli import env

STUDY = "layerwise-default"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _cmd(out: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "src.sweep", f"sweep.n_trials={n}", f"sweep.out_dir={out}", *TINY, *extra]


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
    cmd = _cmd(out, 2, "sweep.heartbeat_s=1", "sweep.grace_s=20", "sweep.pruner.name=none", "trainer.epochs=8")
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: (out / "trial_0000" / "metrics.jsonl").is_file(), worker)  # mid-training
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
    assert retry[0].user_attrs["run_dir"].endswith(f"trial_{retry[0].number:04d}")  # its own folder
    assert sum(t.state in DONE for t in trials) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("kind", [pytest.param("sqlite", marks=pytest.mark.slow), "journal"])
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
    cmd = _cmd(out, 1, "sweep.heartbeat_s=1", "sweep.grace_s=2", "sweep.pruner.name=none")
    assert _sweep(tmp_path, cmd).returncode == 0
    study = _study(_sqlite(out))
    # A worker that died right after creating its trial: RUNNING, with parameters, no heartbeat.
    ghost = study.ask(fixed_distributions=study.trials[0].distributions)
    proc = _sweep(tmp_path, _cmd(out, 2, "sweep.heartbeat_s=1", "sweep.grace_s=2", "sweep.pruner.name=none"))
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
    extra = (f"sweep.storage={url}", "sweep.heartbeat_s=1", "sweep.grace_s=30", "sweep.pruner.name=none")
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
        assert len(_study(url).trials) == 2 and not (out / f"trial_{other.number:04d}").exists()
    finally:
        stop.set()
        thread.join()
    study.tell(other, [0.5, 1.0e8])
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-3000:]
    trials = _study(url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(p.name for p in out.glob("trial_*")) == ["trial_0000"]  # nothing else trained


@pytest.mark.slow
def test_two_workers_on_a_journal_file_train_exactly_n_trials(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    out = tmp_path / "study"
    cmd = _cmd(out, 3, f"sweep.storage={url}", "sweep.pruner.name=none")
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    trials = _study(url).trials
    trained = [t for t in trials if not t.user_attrs.get("surplus")]
    assert sum(t.state in DONE for t in trials) == 3
    assert len(trained) == 3 and len(list(out.glob("trial_*/result.json"))) == 3


# --- C. one study, one experiment -----------------------------------------------------------------

@pytest.fixture(scope="module")
def one_trial_study(tmp_path_factory):
    """A finished one-trial study (default search space and objectives)."""
    root = tmp_path_factory.mktemp("identity")
    out = root / "study"
    proc = _sweep(root, _cmd(out, 1, "sweep.pruner.name=none"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out


@pytest.mark.parametrize("change, named", [
    (["dataset.train_per_class=4"], "dataset.train_per_class: 3 -> 4"),
    pytest.param(["trainer.epochs=2"], "trainer.epochs: 1 -> 2", marks=pytest.mark.slow),
    pytest.param(["optim.min_lr_ratio=0.5"], "optim.min_lr_ratio: 0.01 -> 0.5", marks=pytest.mark.slow),  # a key nobody listed: derived
    pytest.param(["model.drop_rate=0.3"], "model.drop_rate: 0.2 -> 0.3", marks=pytest.mark.slow),
    pytest.param(["sweep.objectives=[val_acc]"], 'objectives: ["val_acc", "train_flops"] -> ["val_acc"]', marks=pytest.mark.slow),
    pytest.param(["sweep.objectives=[val_acc,train_time_s]"], "train_time_s", marks=pytest.mark.slow),
    # another strategy: its search space (layerwise's lr_decay) is not even a setting of full's any more
    pytest.param(["strategy=full"], "unknown key 'strategy.lr_decay'", marks=pytest.mark.slow),
])
def test_resume_that_measures_something_else_is_refused(one_trial_study, change, named):
    root, out = one_trial_study
    before = (out / "trial_0000" / "result.json").read_text()
    proc = _sweep(root, _cmd(out, 2, "sweep.pruner.name=none", *change))
    line = _one_line_error(proc)
    # a changed setting is named with the way out (another study); a space that no longer fits the
    # strategy is refused earlier, naming its key
    assert named in line and ("sweep.study_name" in line or named.startswith("unknown key")), line
    trials = _study(_sqlite(out)).trials
    assert len(trials) == 1 and (out / "trial_0000" / "result.json").read_text() == before


@pytest.mark.slow
def test_resume_with_a_changed_search_space_is_refused(tmp_path):
    study = (Path(__file__).resolve().parents[1] / "sweeps" / "default.yaml").read_text()
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(study)
    second.write_text(study.replace("low: 3.0e-4, high: 3.0e-3", "low: 1.0e-4, high: 3.0e-3"))
    out = tmp_path / "study"
    with_file = lambda f, n: [sys.executable, "-m", "src.sweep", "--sweep", str(f), *_cmd(out, n)[3:]]  # noqa: E731
    assert _sweep(tmp_path, with_file(first, 1) + ["sweep.pruner.name=none"]).returncode == 0
    proc = _sweep(tmp_path, with_file(second, 2))
    assert "params.optim.lr" in _one_line_error(proc)


def test_settings_that_change_no_measurement_resume_the_same_study(one_trial_study):
    root, out = one_trial_study
    proc = _sweep(root, _cmd(out, 1, "sweep.pruner.name=none", "trainer.num_threads=1", "trainer.progress=true",
                             "logger.project=elsewhere"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_study(_sqlite(out)).trials) == 1


# --- D. one out_dir, one study --------------------------------------------------------------------

def test_a_second_study_in_the_same_out_dir_is_refused(one_trial_study):
    root, out = one_trial_study
    before = {p: p.read_text() for p in (out / "trial_0000" / "result.json", out / "pareto.json", out / "summary.json")}
    proc = _sweep(root, _cmd(out, 1, "sweep.study_name=another", "sweep.pruner.name=none"))
    line = _one_line_error(proc)
    assert "belongs to study layerwise-default" in line and "sweep.out_dir" in line
    assert {p: p.read_text() for p in before} == before
    assert sorted(p.name for p in out.glob("trial_*")) == ["trial_0000"]


@pytest.mark.slow
def test_a_new_study_never_writes_over_the_trials_of_a_lost_one(tmp_path):
    out = tmp_path / "study"
    assert _sweep(tmp_path, _cmd(out, 1, "sweep.pruner.name=none")).returncode == 0
    result = (out / "trial_0000" / "result.json").read_text()
    (out / "optuna.db").unlink()  # the storage is gone, its results are not
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1, "sweep.pruner.name=none")))
    assert "sweep.out_dir" in line
    assert (out / "trial_0000" / "result.json").read_text() == result
    (out / "study.json").unlink()  # and without the out_dir's record, the trial folder's own
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1, "sweep.pruner.name=none")))
    assert "trial_0000" in line and (out / "trial_0000" / "result.json").read_text() == result


def test_a_trial_folder_of_another_study_or_trial_is_refused(tmp_path):
    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))),
                                study_name="s")
    study.set_user_attr("uid", "abc")
    claim_trial_dir(tmp_path / "trial_0000", study, 0)
    claim_trial_dir(tmp_path / "trial_0000", study, 0)  # its own folder (a trial writes it again)
    (tmp_path / "trial_0000" / "result.json").write_text("{}")
    with pytest.raises(ConfigError, match="trial_0000 holds another run's files"):
        claim_trial_dir(tmp_path / "trial_0000", study, 1)
    study.set_user_attr("uid", "another study")
    with pytest.raises(ConfigError, match="refusing to write trial 0"):
        claim_trial_dir(tmp_path / "trial_0000", study, 0)


# --- E. settings checked before any trial ---------------------------------------------------------

SPACE = "params:\n  optim.lr: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}\n"


@pytest.mark.parametrize("args, space, says", [
    (["sweep.objectives=[test_acc]"], None, "test split"),
    pytest.param(["sweep.objectives=[val_acc,test_balanced_acc]"], None, "test split", marks=pytest.mark.slow),
    pytest.param(["sweep.objectives=[val_acc,flops]"], None, "'flops' is not an objective (allowed: val_acc", marks=pytest.mark.slow),
    pytest.param(["sweep.objectives=[val_acc,train_flops,train_flops]"], None, "train_flops is given twice", marks=pytest.mark.slow),
    pytest.param(["sweep.objectives=[train_flops,val_acc]"], None, "the first must be a validation accuracy", marks=pytest.mark.slow),
    (["trainer.count_flops=false"], None, "trainer.count_flops=false"),
    (["sweep.sampler=tpee"], None, "sweep.sampler='tpee' is not allowed (tpe | nsga2)"),
    pytest.param(["sweep.pruner.name=medain"], None, "pruner.name='medain' is not allowed", marks=pytest.mark.slow),
    pytest.param(["sweep.n_trails=3"], None, "sweep.n_trails is not a sweep setting", marks=pytest.mark.slow),
    pytest.param(["sweep.pruner.after=1.5"], None, "sweep pruner.after=1.5 must be an integer", marks=pytest.mark.slow),
    pytest.param(["sweep.grace_s=10"], None, "sweep.grace_s=10 must be longer than sweep.heartbeat_s=20", marks=pytest.mark.slow),
    pytest.param([], "params:\n  optim.lr: {type: flaot, low: 0.1, high: 1}\n", "params.optim.lr.type='flaot' is not allowed", marks=pytest.mark.slow),
    pytest.param([], "params:\n  optim.lrr: {type: float, low: 0.1, high: 1}\n", "unknown key 'optim.lrr'", marks=pytest.mark.slow),
    pytest.param([], "params:\n  optim.lr: {type: float, low: 0.1, high: 0.01}\n", "low=0.1 is above high=0.01", marks=pytest.mark.slow),
    pytest.param([], "params:\n  optim.lr: {type: float, low: 0.0, high: 0.1, log: true}\n", "log=true needs low > 0", marks=pytest.mark.slow),
    pytest.param([], "params:\n  optim.lr: {type: float, low: 0.1, high: 1, stepp: 0.1}\n", "params.optim.lr.stepp is not a key", marks=pytest.mark.slow),
    pytest.param([], "params:\n  strategy.lr_decay: {type: float, low: -1.0, high: 2.0}\n", "strategy.lr_decay=-1.0 must be", marks=pytest.mark.slow),
    pytest.param([], "params:\n  strategy.unfreeze_depth: {type: int, low: 0, high: 40}\n", "unfreeze_depth", marks=pytest.mark.slow),
    pytest.param(["optim.lr=0.01"], SPACE, "optim.lr is searched and also set by an override", marks=pytest.mark.slow),
])
def test_bad_settings_are_refused_before_any_trial(tmp_path, args, space, says):
    extra: list[str] = []
    if space:
        study = (Path(__file__).resolve().parents[1] / "sweeps" / "default.yaml").read_text()
        study_file = tmp_path / "space.yaml"
        study_file.write_text(study.split("params:")[0] + space)
        extra = ["--sweep", str(study_file)]
    out = tmp_path / "study"
    proc = _sweep(tmp_path, [sys.executable, "-m", "src.sweep", *extra, f"sweep.out_dir={out}", *TINY, *args], timeout=120)
    line = _one_line_error(proc)
    assert line.startswith("error: ") and says in line, line
    assert not list(out.glob("trial_*")) and not (out / "optuna.db").exists()


def test_pruner_numbers_are_not_truncated():
    from src.search.pruning import PruneSpec

    for bad in ({"after": 1.5}, {"startup": True}, {"min_delta": "x"}):
        with pytest.raises(ConfigError, match=f"pruner.{next(iter(bad))}="):
            PruneSpec.from_dict(bad)
    assert PruneSpec.from_dict({"after": 3, "min_delta": 0}).after == 3


# --- F. errors a person can read ------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_interrupt_is_one_line_with_how_to_resume(tmp_path, sig, code):
    out = tmp_path / "study"
    cmd = _cmd(out, 2, "sweep.pruner.name=none", "trainer.epochs=30")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (out / "trial_0000" / "metrics.jsonl").is_file(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    line = _one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, "", err), code)
    assert line.startswith(f"interrupted ({signal.Signals(sig).name}): 0 of 2 trials of study layerwise-default")
    assert "trial 0 was stopped and runs again on resume" in line and str(out / "optuna.db") in line
    assert "run the same command to resume" in line
    trial = _study(_sqlite(out)).trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"]


def test_a_signal_inside_a_storage_call_is_delivered_once_it_is_done():
    """A KeyboardInterrupt raised halfway through a storage write would leave the session unusable
    (the trial could then not be recorded as interrupted): the signal comes again 50 ms later."""
    import src.search.sweep as sweep

    scope: dict = {"sys": sys}
    exec(compile("frame = sys._getframe()", f"{Path('/x/sqlalchemy/orm/session.py')}", "exec"), scope)
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        sweep._interrupt(signal.SIGUSR1, scope["frame"])  # inside the storage: no exception now...
        time.sleep(0.5)
        assert received == [signal.SIGUSR1]  # ...the signal again, later
        with pytest.raises(KeyboardInterrupt, match="signal SIGUSR1"):
            sweep._interrupt(signal.SIGUSR1, sys._getframe())  # outside it: stop here
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sweep._STOPPED_BY.clear()


def test_config_error_inside_a_trial_is_one_line(tmp_path):
    """The data is only loaded by the trial: a missing folder is found there."""
    proc = _sweep(tmp_path, _cmd(tmp_path / "study", 1, "dataset.kind=imagefolder", f"dataset.root={tmp_path / 'nope'}"))
    line = _one_line_error(proc)
    assert line.startswith("error: ") and "nope" in line


@pytest.mark.parametrize("args, says", [
    (["sweep.storage=nosuchdb://host/db"], "sweep.storage=nosuchdb://host/db"),
    pytest.param(["sweep.storage=journal:/no/such/folder/study.log"], "folder /no/such/folder does not exist", marks=pytest.mark.slow),
    pytest.param(["sweep.out_dir=/etc/passwd/study"], "sweep.out_dir=/etc/passwd/study", marks=pytest.mark.slow),
])
def test_bad_storage_or_out_dir_is_one_line(tmp_path, args, says):
    line = _one_line_error(_sweep(tmp_path, [sys.executable, "-m", "src.sweep", f"sweep.out_dir={tmp_path / 'o'}",
                                             *TINY, *args], timeout=120))
    assert says in line, line


@pytest.mark.slow
def test_study_with_other_directions_is_one_line(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    optuna.create_study(study_name=STUDY, storage=_sqlite(out), directions=["minimize", "minimize"])
    line = _one_line_error(_sweep(tmp_path, _cmd(out, 1), timeout=120))
    assert f"study {STUDY}" in line and "sweep.study_name" in line
