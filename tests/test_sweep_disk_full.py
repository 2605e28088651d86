"""A sweep on a full disk: the run folders' disk or the study storage's fills at different moments.
It stops with one line naming the file and the setting that put it there (`hydra.sweep.dir`,
`paths.output_dir`, `hydra.sweeper.storage`), exit 1, no traceback; and nothing is lost or trained
twice: a trial whose result.json was complete when the study could not be told is recorded COMPLETE
from it on resume, a trial the full disk cut short runs again. Real small filesystems (tmpfs), real
storages, real sweeps in subprocesses (and the search loop in process, with a launch that trains
nothing, where the moment must be exact)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from src.record.io import DiskFull, no_room
from src.search import launched
from src.search.storage import HEARTBEAT_ATTR, make_storage
from src.search.study import open_study

from tests.cli import env
from tests.disks import fill, fill_up, grow, small_disk  # noqa: F401  (small_disk: a fixture)
from tests.test_sweep import _cmd, trial_dir

STUDY = "layerwise-default"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def _url(kind: str, disk: Path) -> str:
    return f"journal:{disk / 'study.log'}" if kind == "journal" else f"sqlite:///{disk / 'optuna.db'}"


def _load(url: str, name: str = STUDY) -> optuna.Study:
    """The study as a user's own Optuna reads it (no code of ours in between)."""
    if url.startswith("journal:"):
        storage = optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        return optuna.load_study(study_name=name, storage=storage)
    return optuna.load_study(study_name=name, storage=url)


def _age_heartbeats(url: str, study: optuna.Study) -> None:
    """Every running trial's last heartbeat an hour old: its worker is long dead (instead of waiting
    out grace_s)."""
    if url.startswith("journal:"):
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            study._storage.set_trial_system_attr(t._trial_id, HEARTBEAT_ATTR, time.time() - 3600)
        return
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("update trial_heartbeats set heartbeat = datetime(heartbeat, '-1 hour')")
    con.commit()
    con.close()


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_whose_result_json_was_complete_is_recorded_complete_when_the_study_could_not_be_told(
        small_disk, tmp_path, kind):
    """The moment that matters, exactly: the job wrote a complete result.json, then the storage's disk
    filled before the study was told. The sweep stops on DiskFull naming the storage; the trial is
    still RUNNING. With room again, the next search (a resume, or another worker) records it
    COMPLETE from its result.json, and trains nothing more."""
    disk = small_disk(1024)
    url = _url(kind, disk)
    # Heartbeats a minute apart: none may land between padding the journal to its block end and
    # filling the disk (a line there starts a new block the tell could still fit in: seen under load).
    # The resume below ages the heartbeats by hand instead of waiting out grace_s.
    study = open_study(make_storage(url, 60, 120), "s", ["maximize"], {"objectives": ["val_acc"]}, None, url,
                       metric_names=["val_acc"])
    launches: list[int] = []

    def launch(overrides: list[list[str]], first: int) -> list[Path]:
        launches.append(first)
        out = tmp_path / f"{first}_job"
        out.mkdir()
        # what the job records at its start (src.search.job.trial_reporter), then its result
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, first)
        optuna.trial.Trial(study, trial_id).set_user_attr("run_dir", str(out.resolve()))
        (out / "result.json").write_text(json.dumps({"schema_version": 2, "status": "completed", "val_acc": 0.75}))
        if kind == "journal":
            # The batch's heartbeat thread writes its first beat as it starts, on its own thread; a
            # beat that lands after the padding below opens a new block and leaves the tell room in
            # it (the likely cause of one failure under load). Wait for it: the next is a minute away.
            deadline = time.monotonic() + 30
            while HEARTBEAT_ATTR not in study._storage.get_trial(trial_id).system_attrs:
                assert time.monotonic() < deadline, "the batch's first heartbeat never came"
                time.sleep(0.01)
            _to_block_end(study, disk / "study.log")
        fill_up(disk)  # the storage's disk fills between the record and the tell
        if kind == "journal":  # nothing wrote between the padding and the filling: no room is left in a block
            assert (disk / "study.log").stat().st_size % 4096 == 0, "a write landed between padding and filling"
        return [out]

    def search(total: int) -> launched.Search:
        storage = make_storage(url, 60, 120)
        s = launched.Search(study=optuna.load_study(study_name="s", storage=storage), storage=storage,
                            params={"optim.lr": {"type": "float", "low": 0.001, "high": 0.01}}, fixed=[],
                            objectives=["val_acc"], total=total, n_jobs=1, max_failed=1, poll_s=0.1)
        return s

    with pytest.raises(Exception) as err:
        launched.search(search(1), launch, groups=1)
    full = no_room(err.value, sqlite=disk / "optuna.db")
    assert isinstance(full, DiskFull) and full.path == Path(url.split(":", 1)[1].removeprefix("///"))
    (trial,) = _load(url, "s").trials
    assert trial.state == TrialState.RUNNING and trial.user_attrs["run_dir"] == str((tmp_path / "0_job").resolve())
    grow(disk, 4096)
    resumed = search(1)
    _age_heartbeats(url, resumed.study)
    assert launched.search(resumed, launch, groups=1) is None
    (trial,) = _load(url, "s").trials
    assert trial.state == TrialState.COMPLETE and trial.values == [0.75]
    assert launches == [0]  # not trained again


def _to_block_end(study: optuna.Study, journal: Path) -> None:
    """The journal grown, by a real Optuna write, to the end of its last 4 KiB block: tmpfs gives a
    file whole blocks, so without this the next line could still fit in the last one's spare bytes."""
    before = journal.stat().st_size
    study.set_user_attr("pad", "")
    line = journal.stat().st_size - before
    study.set_user_attr("pad", "x" * (-(before + 2 * line) % 4096))
    assert journal.stat().st_size % 4096 == 0


def _sweep(cwd: Path, cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)


def _only_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """Exit `code`, no traceback (a logging error's included); the error is the last stderr line and
    the only one that says error."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert [ln for ln in lines if ln.startswith("error")] == lines[-1:], lines[-10:]
    return lines[-1]


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
@pytest.mark.parametrize("kind", ["journal", pytest.param("sqlite", marks=pytest.mark.slow)])
def test_a_storage_on_a_full_disk_is_one_line_naming_it(small_disk, tmp_path, kind):
    disk = small_disk(256)
    fill_up(disk)
    url = _url(kind, disk)
    out = tmp_path / "study"
    line = _only_line(_sweep(tmp_path, _cmd(out, 2, f"hydra.sweeper.storage={url}")))
    file = url.split(":", 1)[1].removeprefix("///")
    assert line.startswith(f"error: {file}: ") and f"(its place is set by hydra.sweeper.storage={url})" in line, line
    assert ("No space left on device" if kind == "journal" else "database or disk is full") in line
    assert line.endswith("nothing was recorded (no trial had started)"), line
    assert not list(out.glob("*_layerwise"))


@pytest.mark.slow
def test_a_sweep_that_fills_its_disk_stops_in_one_line_and_resumes_without_losing_a_trial(small_disk, tmp_path):
    """Each trial saves its model_best.pt (about 440 KiB; no epoch checkpoints here): trial 1's does not fit. One line, exit 1; with
    room again, the same command trains trial 1's parameters again and nothing else twice."""
    disk = small_disk(900)
    out = disk / "study"
    cmd = _cmd(out, 3, "trainer.resume=false", "hydra.sweeper.pruner.name=none")
    line = _only_line(_sweep(tmp_path, cmd))
    assert line.startswith(f"error: {trial_dir(out, 1)}/model_best.pt: No space left on device (its place is set by "
                           f"hydra.sweep.dir={out}); the run is recorded as failed in {trial_dir(out, 1)}/result.json; "
                           f"1 of 3 trials of study {STUDY} are recorded in"), line
    assert "trial 1 was stopped and runs again on resume" in line
    first = (trial_dir(out, 0) / "result.json").read_bytes()
    grow(disk, 4096)
    proc = _sweep(tmp_path, cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _load(f"sqlite:///{out / 'optuna.db'}").trials
    assert sum(t.state in DONE for t in trials) == 3
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["interrupted"]
    (again,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert again.params == trials[1].params and again.state == TrialState.COMPLETE
    assert (trial_dir(out, 0) / "result.json").read_bytes() == first  # trial 0 not trained again


@pytest.mark.slow
@pytest.mark.parametrize("free_kib", [4, 8])
def test_a_study_storage_that_fills_at_any_moment_loses_nothing(small_disk, tmp_path, free_kib):
    """The journal's disk has a few KiB left: it fills at a different moment of the sweep for each
    amount (a trial's report, a heartbeat, a tell, the next ask). Each time: one line naming the
    journal and hydra.sweeper.storage, exit 1; with room again the same command completes exactly
    the budget, every trial whose result.json completed is COMPLETE, and none is trained twice."""
    disk = small_disk(1024)
    fill(disk, leave_kib=free_kib)
    url = f"journal:{disk / 'study.log'}"
    out = tmp_path / "study"
    cmd = _cmd(out, 3, f"hydra.sweeper.storage={url}", "hydra.sweeper.pruner.name=none", "hydra.sweeper.heartbeat_s=1",
               "hydra.sweeper.grace_s=2", "trainer.epochs=2")
    proc = _sweep(tmp_path, cmd)
    if proc.returncode != 0:  # the journal filled somewhere
        line = _only_line(proc)
        assert line.startswith(f"error: {disk / 'study.log'}: No space left on device (its place is set by "
                               f"hydra.sweeper.storage={url})"), line
        # the journal is whole lines, every one of which Optuna reads
        assert (disk / "study.log").read_bytes().endswith(b"\n")
        grow(disk, 4096)
        proc = _sweep(tmp_path, cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _load(url).trials
    assert sum(t.state in DONE for t in trials) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    completed = [p.parent for p in out.glob("*_layerwise/result.json")
                 if json.loads(p.read_text())["status"] == "completed"]
    assert len(completed) == 3  # no trial trained twice to the end
    by_dir = {t.user_attrs.get("run_dir"): t for t in trials}
    assert all(by_dir[str(d)].state == TrialState.COMPLETE for d in completed)


@pytest.mark.slow
def test_a_worker_that_died_after_its_record_and_before_the_tell_keeps_its_result(tmp_path):
    """A trial RUNNING in the study whose job's result.json is complete (its worker died, or could
    not write the storage, in between): a resumed sweep records it COMPLETE from the file and trains
    nothing for it."""
    out = tmp_path / "study"
    cmd = _cmd(out, 1, "hydra.sweeper.pruner.name=none", "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=2")
    assert _sweep(tmp_path, cmd).returncode == 0
    url = f"sqlite:///{out / 'optuna.db'}"
    study = _load(url)
    first = study.trials[0]
    study.enqueue_trial(first.params)
    ghost = study.ask(fixed_distributions=first.distributions)  # as the sweep asks: its parameters set
    shutil.copytree(trial_dir(out, 0), trial_dir(out, ghost.number))
    record = json.loads((trial_dir(out, ghost.number) / "result.json").read_text())
    ghost.set_user_attr("run_dir", str(trial_dir(out, ghost.number)))
    proc = _sweep(tmp_path, _cmd(out, 2, "hydra.sweeper.pruner.name=none", "hydra.sweeper.heartbeat_s=1",
                                 "hydra.sweeper.grace_s=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trial {ghost.number}: its worker stopped before telling the study; recorded COMPLETE" in proc.stdout
    trials = _load(url).trials
    assert len(trials) == 2 and [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[ghost.number].values == [record["val_acc"], record["train_flops"]]
