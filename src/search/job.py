"""A trial's side of `hydra/sweeper=optuna`: the job finds its trial in the study's storage.

Each trial is a Hydra job numbered by its trial number (`hydra.job.num`), and its config's
`hydra.sweeper` names the storage, the study, the objectives and the pruner. Whatever launched it
(the basic launcher in the sweeper's own process, joblib, submitit on other machines), the job
opens the study from that storage, as any worker of a shared study does: nothing passes between
the sweeper and its jobs but the job's config and the storage. The job's `on_epoch` is the trial's
EpochReporter; a run it stops records `status: pruned`, and the sweeper tells Optuna the trial
was PRUNED (src/search/launched.py reads each job's result.json).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.storages import RDBStorage

from src.config import OUR_SWEEPER, FolderRefused, RunConfig
from src.record.io import METRICS_FILE, RETRIED_FILE, read_jsonl, write_json
from src.search.pruning import EpochReporter, PruneSpec, optuna_pruner, resolve
from src.search.results import record_trial_dir, trial_dir
from src.search.storage import heartbeats, make_storage

# The sweeper class a job's `hydra.sweeper._target_` names when it is one of our trials.
SWEEPER_TARGET = OUR_SWEEPER + "optuna_sweeper.OptunaSweeper"
DEFAULT_STUDY = "sweep"  # hydra.sweeper.study_name=null
log = logging.getLogger(__name__)


class TrialEnded(FolderRefused):
    """A job started after its trial ended (a scheduler's job that waited in the queue past the
    sweeper's grace_s, its sweeper killed): training it would end in Optuna's UpdateFinishedTrialError
    at its first write, with a failed result.json over the folder. Refused, the folder left as it was."""


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: the one given, or a sqlite file in the sweep folder."""
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def _continue_dead_attempt(storage: Any, name: str, number: int, run_cfg: RunConfig, out: Path, sweep_dir: str,
                           trial: optuna.Trial) -> None:
    """A retried trial runs in a folder of its own: the dead attempt's last checkpoint, and its
    epochs, move there, so that the retry continues from its last epoch, not from 0. The retry
    records what it took over (`continues`): those epochs and their cost are the retry's now, and
    the study's summary counts them once (src.search.results.summarise)."""
    from src.data.identity import dataset_identity_or_none
    from src.reporting.wandb_folders import set_aside, wandb_runs
    from src.training.checkpoint import adopt, epochs_done  # torch: loaded by the jobs, not by the sweeper's driver

    dead = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number))
    where = trial_dir(dead.user_attrs, sweep_dir)
    if where is not None and where.is_dir():  # its folder says where its work went: nothing to resume there
        write_json(where / RETRIED_FILE, {"trial": number, "retried_as": trial.number, "run_dir": str(out)})
    if where and (moved := adopt(where, out, run_cfg, dataset_identity_or_none(run_cfg.dataset))):
        if run_cfg.logger.kind == "wandb":  # its W&B run replays those epochs: the dead one's would be synced twice
            set_aside(wandb_runs(where))
        epochs = epochs_done(moved)
        # what those epochs cost, cumulated in their last metrics line (moved with the checkpoint)
        last = next((r for r in read_jsonl(out / METRICS_FILE) if r.get("epoch") == epochs - 1), {})
        trial.set_user_attr("continues", {"trial": number, "epochs": epochs, "train_flops": last.get("train_flops_cum"),
                                          "train_time_s": last.get("train_s_cum")})
        log.info("continuing trial %d from its last checkpoint, %s", number, moved)


@contextlib.contextmanager
def trial_reporter(sweeper: dict[str, Any], sweep_dir: str, number: int, run_cfg: RunConfig,
                   out: Path) -> Iterator[EpochReporter | None]:
    """The `on_epoch` of a job launched by our sweeper, while the job runs: its trial's
    EpochReporter (None when the job is not one of our trials). Also records the job's folder,
    absolute, as the trial's run_dir. The storage connection is closed when the job ends."""
    if sweeper.get("_target_") != SWEEPER_TARGET:
        yield None
        return
    objectives = list(sweeper.get("objectives") or ["val_acc"])
    spec = PruneSpec.from_dict(dict(sweeper.get("pruner") or {}))
    mode = resolve(spec, objectives)
    name = sweeper.get("study_name") or DEFAULT_STUDY
    with warnings.catch_warnings():  # Optuna flags heartbeats experimental; they are what resume rests on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = make_storage(storage_url(sweeper.get("storage"), sweep_dir), int(sweeper["heartbeat_s"]),
                               int(sweeper["grace_s"]))
    try:
        study = optuna.load_study(study_name=name, storage=storage,
                                  pruner=optuna_pruner(mode, spec, run_cfg.trainer.epochs))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
        if (state := storage.get_trial(trial_id).state).is_finished():
            raise TrialEnded(f"trial {number} of study {name} had already ended ({state.name}) when its job started "
                             f"(its sweeper took it for dead or stopped it, and runs its parameters again in "
                             f"another trial): not trained in {out}")
        trial = optuna.trial.Trial(study, trial_id)
        record_trial_dir(trial, out, sweep_dir)
        if (retry_of := trial.user_attrs.get("retry_of")) is not None:  # a dead or interrupted trial's parameters again
            _continue_dead_attempt(storage, name, int(retry_of), run_cfg, out, sweep_dir, trial)
        # The job beats for its own trial, beside the sweeper that launched it: a scheduler's job
        # (SLURM) outlives a sweeper that is killed, and with the sweeper's beats alone the same
        # command run again took the live trial for dead, moved its checkpoint away while it
        # trained and retried it, and the job then failed on its finished trial.
        with heartbeats(storage, [trial_id]):
            yield EpochReporter(study, trial, objectives, mode, spec, running_best=run_cfg.trainer.select == "best_val",
                                epochs=run_cfg.trainer.epochs)
    finally:
        if isinstance(storage, RDBStorage):  # a job in the sweeper's own process must not leave connections open
            storage.remove_session()
            storage.engine.dispose()
