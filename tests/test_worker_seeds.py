"""Each sweep worker's sampler seed derives from the study's seed and the worker's index (issue 25:
reproducible sweeps across workers), never from its process id."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest

from hydra_plugins.ft_optuna_sweeper import settings
from src.sweep_driver import ProjectSweep

from tests.cli import REPO, TINY_OVERRIDES, env

SAMPLER = {"_target_": "optuna.samplers.TPESampler", "seed": 7}


def _seed(index, study, monkeypatch, array_id=None, storage="journal:x"):
    if array_id is None:
        monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(array_id))
    return ProjectSweep._seeded(SimpleNamespace(worker_index=index, storage=storage), dict(SAMPLER), study)["seed"]


def _study_with(workers: list[int]) -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for w in workers:
        trial = study.ask()
        trial.set_user_attr("worker", w)
        study.tell(trial, 0.5)
    return study


def test_a_worker_s_seed_is_the_same_in_every_process_and_differs_between_workers(monkeypatch):
    study = _study_with([])
    seeds = [_seed(i, study, monkeypatch) for i in range(4)]
    assert len(set(seeds)) == 4
    assert seeds == [_seed(i, study, monkeypatch) for i in range(4)]  # no process id, no clock
    assert seeds[0] == 7  # one worker: the study's own seed, as before
    assert _seed(None, study, monkeypatch, array_id=2) == seeds[2]  # an sbatch --array task's index


def test_the_seed_moves_on_with_the_worker_s_own_trials_only(monkeypatch):
    fresh = _seed(1, _study_with([]), monkeypatch)
    others = _seed(1, _study_with([0, 0, 2]), monkeypatch)  # other workers' trials: no change
    own = _seed(1, _study_with([1, 1]), monkeypatch)
    assert fresh == others != own
    assert _seed(0, _study_with([0, 0, 1]), monkeypatch) == 9  # worker 0: seed + its trials


def test_without_an_index_a_shared_storage_mixes_in_the_process_id_and_says_so(monkeypatch, caplog):
    study = _study_with([])
    seeds = {_seed(None, study, monkeypatch), _seed(0, study, monkeypatch)}
    assert len(seeds) == 2 and "hydra.sweeper.worker_index" in caplog.text
    assert _seed(None, study, monkeypatch, storage=None) == 7  # the sweep folder's own sqlite: one worker


@pytest.mark.parametrize("bad", [-1, "x", True])
def test_a_bad_worker_index_is_one_line_naming_the_key(bad):
    with pytest.raises(Exception, match=r"hydra.sweeper.worker_index=.* is not a worker index"):
        settings.worker_index(bad)


@pytest.mark.slow
def test_one_seeded_worker_on_a_journal_reproduces_its_trials_exactly(tmp_path):
    params = []
    for run in ("a", "b"):
        journal = tmp_path / f"{run}.log"
        proc = subprocess.run([sys.executable, "-m", "src.train", "-m", "sweep=default", "hydra.sweeper.n_trials=3",
                               f"hydra.sweeper.storage=journal:{journal}", "hydra.sweeper.sampler.seed=3",
                               "hydra.sweeper.worker_index=0",
                               f"hydra.sweep.dir={tmp_path / run}", *TINY_OVERRIDES],
                              cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        from optuna.storages.journal import JournalFileBackend

        study = optuna.load_study(study_name="layerwise-default",
                                  storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
        params.append([t.params for t in sorted(study.trials, key=lambda t: t.number)])
    assert params[0] == params[1] and len(params[0]) == 3
