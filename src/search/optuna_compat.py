"""Every use of Optuna's private API in this project, in one place, pinned to Optuna 5.0.0.

Optuna has no public API for these, and the heartbeat machinery a resumable, shared study rests on
needs them:

- a storage is "heartbeat-enabled" only if it inherits `optuna.storages._heartbeat.BaseHeartbeat`,
  and `optuna.storages.fail_stale_trials` (public) asks it for its stale trials through the private
  `_get_stale_trial_ids`: `Heartbeats` is that base, with the stale trials under a public name;
- Optuna's own rule for stale RDB trials (`RDBStorage._get_stale_trial_ids`) and which RDB trials ever
  sent a heartbeat (the `trial_heartbeats` table, `optuna.storages._rdb.models`): Optuna treats a
  trial that never sent one as never stale;
- a FrozenTrial's storage id (`FrozenTrial._trial_id`), which a storage's own methods take.

Everything else the search uses is public (`fail_stale_trials`, `RetryHeartbeatStaleTrialCallback`,
`JournalStorage`, `JournalFileBackend`, a storage's methods). tests/test_optuna_compat.py fails
loudly when Optuna moves any of this: check it again before changing the pin in pyproject.toml.
"""

from __future__ import annotations

import abc

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

PINNED = "5.0.0"  # the Optuna version this module was written and tested against (pyproject.toml pins it)

try:
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages._rdb import models as _rdb_models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError as err:  # a newer Optuna moved its private API: say where to look, not just what broke
    raise ImportError(f"src/search/optuna_compat.py is pinned to optuna {PINNED}, and optuna {optuna.__version__} "
                      f"moved its private API ({err}): adapt that module (tests/test_optuna_compat.py)") from err


class Heartbeats(BaseHeartbeat):
    """A storage with heartbeats, as Optuna's stale-trial machinery recognises one: it names its
    stale trials in `stale_trial_ids` (plus Optuna's `record_heartbeat`, `get_heartbeat_interval`,
    `get_heartbeat_stale_trial_callback`, which are public names)."""

    @abc.abstractmethod
    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The storage ids of the study's running trials whose worker is taken for dead."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:  # what fail_stale_trials calls
        return self.stale_trial_ids(study_id)


def rdb_stale_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """Optuna's own stale trials of an RDB storage: running, with a heartbeat older than the grace period."""
    return RDBStorage._get_stale_trial_ids(storage, study_id)


def rdb_beating_trial_ids(storage: RDBStorage, study_id: int) -> set[int]:
    """The storage ids of the study's trials that ever recorded a heartbeat (the heartbeat table has no public reader)."""
    with _create_scoped_session(storage.scoped_session) as session:
        return {row[0] for row in session.query(_rdb_models.TrialHeartbeatModel.trial_id)
                .join(_rdb_models.TrialModel).filter(_rdb_models.TrialModel.study_id == study_id)}


def trial_id(trial: FrozenTrial) -> int:
    """A frozen trial's id in its storage (what the storage's methods take; the trial number is not it)."""
    return trial._trial_id
