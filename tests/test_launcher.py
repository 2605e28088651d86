"""The submitit launchers' collection (hydra_plugins/ft_submitit_launcher): a job that ended without a
result is recorded with the scheduler's state, and a state that cannot be read is awaited boundedly.
The real SLURM cases are in tests/test_slurm.py (slow); here a stand-in job plays the scheduler."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hydra_plugins.ft_submitit_launcher.launcher import cancelled, collect, wait
from src.record.digest import signed
from src.record.io import read_json_object, write_json
from src.record.lock import held
from tests.cli import REPO, TINY_OVERRIDES, env


class Job:
    """What the collection reads of a submitit job: its state, done(), its result file."""

    def __init__(self, states: list[str], folder: Path) -> None:
        self.states, self.job_id = list(states), "41_1"
        self.paths = SimpleNamespace(result_pickle=folder / "41_1_result.pkl", stderr=folder / "41_1_log.err")

    @property
    def state(self) -> str:
        return self.states[0]

    def done(self) -> bool:
        if len(self.states) > 1:
            self.states.pop(0)
            return False
        return self.states[0] not in ("UNKNOWN", "RUNNING", "PENDING")


def test_an_unreadable_state_ends_the_wait_after_the_limit(tmp_path):
    start = time.monotonic()
    assert wait(Job(["UNKNOWN"], tmp_path), limit_s=0.3, poll_s=0.05) == "UNKNOWN"
    assert 0.3 <= time.monotonic() - start < 5


def test_a_readable_state_is_awaited_until_the_job_ends(tmp_path):
    assert wait(Job(["PENDING", "RUNNING", "RUNNING", "CANCELLED by 0"], tmp_path), limit_s=0.0, poll_s=0.01) \
        == "CANCELLED by 0"


@pytest.mark.parametrize("state, said", [("CANCELLED by 0", "the scheduler ended it: CANCELLED by 0"),
                                         ("UNKNOWN", "stayed UNKNOWN")])
def test_a_job_without_a_result_is_recorded_with_the_scheduler_s_word(tmp_path, capsys, state, said):
    job_dir = tmp_path / "1_full"
    ret = collect(Job([state], tmp_path), 1, lambda: job_dir, limit_s=0.1, poll_s=0.01)
    assert ret.return_value != ret.return_value  # nan: the table, not Hydra, ends the multirun
    record = json.loads((job_dir / "result.json").read_text())
    assert record["status"] == "failed" and said in record["error"]
    assert record["scheduler"] == {"job_id": "41_1", "state": state}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: job 1 (41_1) did not finish") and said in err[0]
    # where the job's own return says its folder is: an Optuna sweep reads the trial's result.json there
    # (it said "trial 1 failed: no result.json" of a job scancelled on SLURM, whose record says why)
    assert ret.hydra_cfg.hydra.runtime.output_dir == str(job_dir)


def test_what_the_run_recorded_before_it_was_killed_is_kept(tmp_path):
    job_dir = tmp_path / "0_full"
    job_dir.mkdir()
    # as the run writes it: with the digest of its values (src.record.digest), which the edit must renew
    (job_dir / "result.json").write_text(json.dumps(signed({"status": "interrupted", "val_acc": 0.5, "epochs_done": 3})))
    collect(Job(["CANCELLED by 0"], tmp_path), 0, lambda: job_dir, limit_s=0.1, poll_s=0.01)
    record = read_json_object(job_dir / "result.json")  # its digest checked: the readers take it
    assert record["val_acc"] == 0.5 and record["epochs_done"] == 3 and record["status"] == "failed"
    assert "interrupted" in record["error"] and "CANCELLED" in record["error"]


def test_a_completed_record_is_never_touched(tmp_path):
    job_dir = tmp_path / "0_full"
    job_dir.mkdir()
    text = json.dumps({"status": "completed", "val_acc": 0.9})
    (job_dir / "result.json").write_text(text)
    collect(Job(["NODE_FAIL"], tmp_path), 0, lambda: job_dir, limit_s=0.1, poll_s=0.01)
    assert (job_dir / "result.json").read_text() == text


def test_hydra_s_plugin_scan_loads_it_in_a_process_that_never_imported_it():
    # Hydra executes every plugin module before registering it in sys.modules: any Hydra app scans ours.
    proc = subprocess.run([sys.executable, "-c", "from hydra.core.plugins import Plugins; Plugins.instance()"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ft_submitit_launcher" not in proc.stderr, proc.stderr[-2000:]


def _multirun(sweep: Path, *overrides: str) -> list[str]:
    """A submitit_local multirun (the SLURM launcher's twin: each job a process of its own, the same collection)."""
    return [sys.executable, "-m", "src.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
            "hydra.launcher.poll_s=0.5", *TINY_OVERRIDES, f"hydra.sweep.dir={sweep}", *overrides]


@pytest.mark.slow  # end-to-end: two job processes
def test_a_job_refused_by_its_own_line_ends_the_multirun_with_that_line_and_writes_no_record(tmp_path):
    # Seen on SLURM: the driver of a multirun was killed, its jobs trained on, and the same command run
    # again submitted new jobs for the same folders. The new job refused the folder in use (its own
    # one line), its process died with that in its log, and the driver said "did not finish: the
    # scheduler ended it: FAILED" and wrote a `failed` result.json into the folder the old job was
    # still training in. Now the job hands its line back and the driver ends with it, as the basic
    # launcher does, once every job has ended.
    sweep = tmp_path / "m"
    busy = sweep / "0_frozen"
    with held(busy):  # this test process is the one training there
        proc = subprocess.run(_multirun(sweep, "strategy=frozen,full"), cwd=REPO, env=env(), capture_output=True,
                              text=True, timeout=600)
        assert not (busy / "result.json").exists()  # nothing recorded over the live run
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]  # the user's to settle, as README says: not a failure
    assert lines[-1].startswith(f"error: the run folder {busy} is in use"), proc.stderr[-3000:]
    assert "did not finish" not in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((sweep / "1_full" / "result.json").read_text())["status"] == "completed"  # awaited, kept


@pytest.mark.slow  # end-to-end: a job process stopped through its driver
def test_a_stopped_driver_cancels_its_jobs_and_says_so(tmp_path):
    # Seen on SLURM: Ctrl-C on the driver printed "interrupted by Ctrl-C: no run was in progress" while
    # its job trained on in the scheduler; the same command run again then found the folder in use.
    sweep = tmp_path / "m"
    driver = subprocess.Popen(_multirun(sweep, "strategy=full", "trainer.epochs=10000"), cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (sweep / "0_full" / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)  # the driver only, as `kill -INT` or a scheduler would
        _, stderr = driver.communicate(timeout=150)
    finally:
        driver.kill()
    assert driver.returncode == 130, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted by Ctrl-C: cancelled 1 unfinished job (") and str(sweep) in last, last
    with held(sweep / "0_full"):  # no process trains there any more: the same command can resume it
        record = json.loads((sweep / "0_full" / "result.json").read_text())
    assert record["status"] == "interrupted", record.get("error")
    assert (sweep / "0_full" / "metrics.jsonl").read_text().strip()  # the epochs it trained, to resume from


def test_a_stopped_driver_names_the_folder_its_same_command_resumes(tmp_path):
    # Seen on SLURM: SIGTERM on a multirun's driver said "the same command resumes"; its folder was the
    # default dated one, so the same command started a new folder and trained every job again.
    job = Job(["RUNNING", "CANCELLED by 0"], tmp_path)
    job.cancel = lambda check: None
    sweep = tmp_path / "multirun" / "2026-12-05" / "12-00-00"
    stop = cancelled([job], KeyboardInterrupt(), sweep, poll_s=0.01)
    assert "cancelled 1 unfinished job (41_1)" in stop.recorded
    assert f"the same command with hydra.sweep.dir={sweep.resolve()} resumes" in stop.recorded, stop.recorded


def test_a_run_a_signal_stopped_is_said_so_not_blamed_on_the_scheduler(tmp_path, capsys):
    # Seen on SLURM: `scancel --signal=TERM JOB` on a running job; the run recorded `interrupted`
    # (Stopped: signal SIGTERM) and its job exited 1, which sacct calls FAILED: the line and the record
    # said "the scheduler ended it: FAILED", naming neither the signal nor who sent it.
    job_dir = tmp_path / "0_full"
    job_dir.mkdir()
    write_json(job_dir / "result.json", signed({"status": "interrupted", "error": "Stopped: signal SIGTERM",
                                                  "epochs_trained": 2}))
    collect(Job(["FAILED"], tmp_path), 0, lambda: job_dir, limit_s=0.1, poll_s=0.01)
    record = read_json_object(job_dir / "result.json")
    assert record["status"] == "failed" and record["epochs_trained"] == 2
    assert "stopped by a signal" in record["error"] and "SIGTERM" in record["error"], record["error"]
    assert "the scheduler ended it" not in record["error"]
    line = capsys.readouterr().err.strip()
    assert "SIGTERM" in line and "the scheduler ended it" not in line, line
    # a job that failed by itself stays the scheduler's FAILED
    other = tmp_path / "1_full"
    collect(Job(["FAILED"], tmp_path), 1, lambda: other, limit_s=0.1, poll_s=0.01)
    assert "the scheduler ended it: FAILED" in read_json_object(other / "result.json")["error"]


def test_a_stopped_driver_does_not_say_a_queued_job_recorded_anything(tmp_path):
    # Seen on SLURM: Ctrl-C on a multirun whose job was held (never started) said "cancelled 1
    # unfinished job (36), which record status 'interrupted' in their folders": there was no folder.
    queued, started = Job(["PENDING", "PENDING", "CANCELLED by 0"], tmp_path), Job(["RUNNING", "CANCELLED by 0"], tmp_path)
    queued.job_id = "36"
    for job in (queued, started):
        job.cancel = lambda check: None
    stop = cancelled([queued, started], KeyboardInterrupt(), tmp_path, poll_s=0.01)
    assert "cancelled 1 unfinished job (41_1), which record status 'interrupted'" in stop.recorded
    assert "cancelled 1 job (36) still queued, which had not started: nothing recorded" in stop.recorded, stop.recorded
    alone = Job(["PENDING", "PENDING", "CANCELLED by 0"], tmp_path)
    alone.cancel = lambda check: None
    assert "interrupted" not in cancelled([alone], KeyboardInterrupt(), tmp_path, poll_s=0.01).recorded
