"""A sweep trial whose job the scheduler ended (src/search/scheduler_end.py): each class of SLURM end
state as the launcher records it and as the sweep tells it, on a real sqlite study. A stand-in job
plays the scheduler (the real SLURM cases are tests/test_slurm.py's, slow)."""

from __future__ import annotations

import json
import time

import optuna
import pytest
from optuna.trial import TrialState

from hydra_plugins.ft_submitit_launcher.launcher import collect, wait
from src.search import launched
from src.search.storage import make_storage
from tests.test_launcher import Job

PARAMS = {"timeout_min": 7, "mem_gb": 2, "max_num_timeout": 3}


def _search(tmp_path) -> launched.Search:
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 60, 120)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    return launched.Search(study=study, storage=storage, params={}, fixed=[], objectives=["val_acc"], total=4,
                           n_jobs=1, max_failed=5, poll_s=0.01, sweep_dir=tmp_path)


def _ended(s: launched.Search, tmp_path, state: str) -> optuna.Trial:
    """A trial asked (a queued retry first), its job ended by the scheduler in `state` (collected as
    the launcher does), told."""
    trial = s.study.ask()
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    job_dir = tmp_path / f"{trial.number}_job"
    ret = collect(Job([state], tmp_path), trial.number, lambda: job_dir, limit_s=0.1, poll_s=0.01, params=PARAMS)
    launched._tell(s, trial, job_dir)
    assert ret.hydra_cfg.hydra.runtime.output_dir == str(job_dir)
    return trial


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL", "BOOT_FAIL"])
def test_a_trial_the_cluster_ended_is_retried_once_and_not_counted_as_failed(tmp_path, state):
    # It was failed, counted against max_failed, and its parameters never tried again.
    s = _search(tmp_path)
    trial = _ended(s, tmp_path, state)
    frozen = s.study.get_trials()
    assert frozen[trial.number].state == TrialState.FAIL and s.failed == []
    waiting = [t for t in frozen if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == trial.number
    assert waiting[0].system_attrs["fixed_params"] == frozen[trial.number].params  # enqueued: the same values
    assert "not the run's" in frozen[trial.number].user_attrs["fail_reason"]
    # the retry ended the same way: failed and counted, not queued a third time
    retry = _ended(s, tmp_path, state)
    assert retry.user_attrs["retry_of"] == trial.number and retry.params == frozen[trial.number].params
    assert s.study.get_trials()[retry.number].state == TrialState.FAIL
    assert s.failed == [f"trial {retry.number}"]
    assert not [t for t in s.study.get_trials() if t.state == TrialState.WAITING]


@pytest.mark.parametrize("state, says", [
    ("CANCELLED by 0", "cancelled with scancel, by user id 0"),
    ("TIMEOUT", "hydra.launcher.timeout_min=7, with at most hydra.launcher.max_num_timeout=3 requeues"),
    ("DEADLINE", "raise timeout_min"),
    ("OUT_OF_MEMORY", "hydra.launcher.mem_gb=2: raise mem_gb"),
])
def test_a_cancelled_timed_out_or_oom_trial_is_failed_with_the_setting_to_change(tmp_path, capsys, state, says):
    s = _search(tmp_path)
    trial = _ended(s, tmp_path, state)
    frozen = s.study.get_trials()
    assert frozen[trial.number].state == TrialState.FAIL and s.failed == [f"trial {trial.number}"]
    assert not [t for t in frozen if t.state == TrialState.WAITING]  # not retried into the same wall
    assert says in frozen[trial.number].user_attrs["fail_reason"]
    record = json.loads((tmp_path / f"{trial.number}_job" / "result.json").read_text())
    assert says in record["error"] and record["scheduler"]["state"] == state
    assert says in capsys.readouterr().err


def test_a_job_its_preemption_cancelled_is_not_awaited_forever(tmp_path):
    # submitit counts PREEMPTED as unfinished (SLURM may requeue it): the driver waited for it forever.
    start = time.monotonic()
    assert wait(Job(["PREEMPTED"] * 10_000, tmp_path), limit_s=600, poll_s=0.01, settle_s=0.2) == "PREEMPTED"
    assert time.monotonic() - start < 5
    # one SLURM requeued goes on being awaited until it ends
    assert wait(Job(["PREEMPTED", "PENDING", "RUNNING", "COMPLETED"], tmp_path), limit_s=600, poll_s=0.01,
                settle_s=5) == "COMPLETED"


@pytest.mark.slow  # a real run stopped and a retry that trains (14 s): the fast tier keeps the fake-state tests
def test_a_preempted_trial_s_retry_continues_its_checkpoint(tmp_path, tiny_config):
    """The whole path on real files: a trial's run stopped by the scheduler's SIGTERM in its second
    epoch (after the first one's checkpoint), its job then recorded PREEMPTED by the launcher (over
    the run's own record), the sweep queues the retry, and the retry moves that checkpoint over and
    continues from it."""
    from src.search.job import _continue_dead_attempt
    from src.training.run import run

    s = _search(tmp_path)
    cfg = tiny_config(trainer={"epochs": 3, "drift_probe": 0})
    first = s.study.ask()
    dead = tmp_path / "0_layerwise"

    def stop(row):
        if row.epoch == 1:
            raise KeyboardInterrupt  # as SIGTERM at preemption: the run records `interrupted`, keeps its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(cfg, dead, on_epoch=stop)
    collect(Job(["PREEMPTED"], tmp_path), 0, lambda: dead, limit_s=0.1, poll_s=0.01, params=PARAMS)
    assert json.loads((dead / "result.json").read_text())["status"] == "failed"
    launched._tell(s, first, dead)
    assert s.failed == []
    retry = s.study.ask()
    assert retry.user_attrs["retry_of"] == 0
    _continue_dead_attempt(s.storage, "s", 0, cfg, tmp_path / "1_layerwise", str(tmp_path), retry)
    trained = []
    result = run(cfg, tmp_path / "1_layerwise", on_epoch=lambda row: trained.append(
        row["epoch"] if isinstance(row, dict) else row.epoch))
    assert result["status"] == "completed" and retry.user_attrs["continues"]["epochs"] == 1
    rows = [json.loads(line) for line in (tmp_path / "1_layerwise" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # epoch 0 from the preempted attempt, once
    assert trained == [0, 1, 2], trained  # each epoch reported to the trial once (epoch 0 replayed)


def test_a_preempted_trial_whose_retry_was_never_queued_runs_again_on_resume(tmp_path, monkeypatch):
    # The driver killed between telling the trial and queueing its retry: the trial was failed, not
    # counted and never tried again.
    from hydra_plugins.ft_optuna_sweeper._search import requeue_interrupted

    s = _search(tmp_path)
    monkeypatch.setattr(s.study, "enqueue_trial", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _ended(s, tmp_path, "NODE_FAIL")
    monkeypatch.undo()
    assert [t.state for t in s.study.get_trials()] == [TrialState.FAIL]
    requeue_interrupted(s.study)  # what the same command does on resume
    requeue_interrupted(s.study)  # and once only
    waiting = [t for t in s.study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == 0


def test_a_job_submitit_ended_at_its_time_limit_names_the_setting(tmp_path):
    # With no requeue left, submitit ends the job itself and the run records its exception: the trial
    # failed with "Job not requeued because: timed-out too many times." and no setting named (seen on
    # SLURM with timeout_min=2, max_num_timeout=0).
    from hydra.core.utils import JobReturn
    from omegaconf import OmegaConf

    from src.record.digest import signed
    from src.record.io import read_json_object, write_json

    run_dir = tmp_path / "0_layerwise"
    run_dir.mkdir()
    said = "UncompletedJobError: Job not requeued because: timed-out too many times."
    # as the run writes it, with its values' digest: the reason added must leave a record readers take
    write_json(run_dir / "result.json", signed({"status": "failed", "error": said, "failed_epoch": 0}))
    ret = JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}}))

    class Returned(Job):
        def results(self):
            return [ret]

    job = Returned(["COMPLETED"], tmp_path)
    job.paths.result_pickle.write_bytes(b"")
    assert collect(job, 0, lambda: run_dir, limit_s=0.1, poll_s=0.01, params=PARAMS) is ret
    error = read_json_object(run_dir / "result.json")["error"]
    assert error.startswith(said) and "hydra.launcher.timeout_min=7" in error and "max_num_timeout=3" in error
    collect(job, 0, lambda: run_dir, limit_s=0.1, poll_s=0.01, params=PARAMS)  # collected again: said once
    assert json.loads((run_dir / "result.json").read_text())["error"] == error


def test_every_training_setting_a_reason_names_is_a_real_one():
    """The out-of-memory line told users to lower `data.batch_size`, a key no config has (it is
    trainer.batch_size): each `trainer.`/`dataset.` setting a reason names must be one."""
    import dataclasses
    import re

    from src.config import RunConfig
    from src.search.scheduler_end import reason

    cfg = RunConfig.from_dict({})
    for state in ("OUT_OF_MEMORY", "TIMEOUT", "DEADLINE", "PREEMPTED", "CANCELLED by 0"):
        for section, key in re.findall(r"\b(trainer|dataset|data|optim)\.(\w+)", reason(state, {"mem_gb": 2})):
            assert hasattr(cfg, section) and key in {f.name for f in dataclasses.fields(getattr(cfg, section))}, \
                (state, f"{section}.{key}")
