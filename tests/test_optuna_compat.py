"""src/search/optuna_compat.py against the installed Optuna: every private name it reaches is there
and does what the search relies on. These fail loudly when Optuna moves its private API; check the
adapter again before changing the pin (pyproject.toml's optuna==, the adapter's PINNED)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import optuna
from optuna.trial import TrialState

from src.search import optuna_compat
from src.search.optuna_compat import PINNED, rdb_beating_trial_ids, rdb_stale_trial_ids, trial_id
from src.search.storage import HEARTBEAT_ATTR, SweepJournalStorage, SweepRDBStorage, make_storage

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_installed_optuna_is_the_one_the_adapter_is_pinned_to():
    assert optuna.__version__ == PINNED, (f"optuna {optuna.__version__} is installed; src/search/optuna_compat.py "
                                          f"is pinned to {PINNED}: check it against the new version, then move PINNED")
    assert re.search(rf'"optuna=={re.escape(PINNED)}"', PYPROJECT.read_text()), "pyproject.toml pins another optuna"


def test_optunas_heartbeat_interface_is_the_one_the_adapter_implements():
    assert optuna_compat.BaseHeartbeat.__abstractmethods__ == {
        "record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    assert not SweepRDBStorage.__abstractmethods__ and not SweepJournalStorage.__abstractmethods__


def test_fail_stale_trials_reaches_a_journal_storages_stale_trials_through_the_adapter(tmp_path):
    """Optuna's public fail_stale_trials asks the private hook; the adapter routes it to stale_trial_ids."""
    storage = make_storage(f"journal:{tmp_path / 'study.log'}", 1, 2)
    study = optuna.create_study(study_name="s", storage=storage)
    dead, alive = study.ask(), study.ask()
    storage.set_trial_system_attr(trial_id(study.trials[0]), HEARTBEAT_ATTR, 0.0)  # its last beat: long ago
    storage.record_heartbeat(trial_id(study.trials[1]))
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING], (dead.number, alive.number)
    assert states[2] == TrialState.WAITING and study.trials[2].user_attrs == {"retry_of": 0}  # the retry callback ran


def test_rdb_heartbeats_are_read_where_optuna_keeps_them(tmp_path):
    db = tmp_path / "study.db"
    storage = make_storage(f"sqlite:///{db}", 1, 2)
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask(), study.ask()
    study_id = storage.get_study_id_from_name("s")
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in (0, 1)]
    assert [trial_id(t) for t in study.trials] == ids
    assert rdb_beating_trial_ids(storage, study_id) == set()
    storage.record_heartbeat(ids[0])
    assert rdb_beating_trial_ids(storage, study_id) == {ids[0]}
    assert rdb_stale_trial_ids(storage, study_id) == []  # a fresh beat
    with sqlite3.connect(db) as con:  # that beat an hour old: Optuna's own rule now calls it stale
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")
    assert rdb_stale_trial_ids(storage, study_id) == [ids[0]]
    storage.engine.dispose()
