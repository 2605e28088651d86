"""`report(step, value)`: what a task calls each step (epoch) so that the sweeper's pruner can stop it.

    from hydra_plugins.ft_optuna_sweeper import report

    for epoch in range(cfg.epochs):
        loss = train_one_epoch(...)
        report(epoch, loss)              # or report(epoch, (loss, cost)) for two objectives

It raises `Pruned` (an `optuna.TrialPruned`) when the pruner says the trial should stop; the task lets
it propagate and the sweeper records the trial as PRUNED (not failed). Outside a sweep of this plugin
(a single run, another sweeper) it does nothing, so the same task runs anywhere.

How a job finds its trial: its job number is its trial number, and its sweep folder names the study.
In the sweeper's own process (Hydra's basic launcher) the study is the sweeper's, in memory or not.
In a launcher's worker (joblib, submitit, Ray) the study is opened from `hydra.sweeper.storage`, as
`<sweep dir>/optuna_study.yaml` records it: an in-memory study (storage null, 1.3's default) cannot
be reached from there, and reporting from there is refused in one line saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import optuna

from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from hydra_plugins.ft_optuna_sweeper.prune_spec import PruneSpec
from hydra_plugins.ft_optuna_sweeper._pruners import StepJudge, optuna_pruner, plain_values

STUDY_FILE = "optuna_study.yaml"  # in the sweep folder: where the jobs find the study
# Our sweeper's class paths: its own, and 1.3's (hydra_plugins/hydra_optuna_sweeper), which builds it too.
SWEEPER_PACKAGES = ("hydra_plugins.ft_optuna_sweeper.", "hydra_plugins.hydra_optuna_sweeper.")
# Studies this process's sweeper runs, by sweep folder: what a job in this process reports to.
LIVE: dict[str, tuple[optuna.Study, Any, str, PruneSpec]] = {}
_JUDGES: dict[tuple[str, int], StepJudge] = {}


class Pruned(optuna.TrialPruned):
    """The pruner stopped this trial; the message says why."""


def report(step: int, value: float | Sequence[float]) -> None:
    """Record the trial's value(s) at this step; raise Pruned when the pruner says stop."""
    judge = _judge()
    if judge is None:
        return
    reason = judge(int(step), plain_values(value))
    if reason:
        raise Pruned(reason)


def _judge() -> StepJudge | None:
    """This job's judge, made at its first report; None when the job is no trial of this sweeper."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not str(hc.sweeper.get("_target_", "")).startswith(SWEEPER_PACKAGES):
        return None
    # a relative sweep dir is the launch folder's: with hydra.job.chdir=true this job runs in its own folder
    sweep_dir = str((Path(hc.runtime.cwd) / hc.sweep.dir).resolve())
    key = (sweep_dir, int(hc.job.num))
    if key not in _JUDGES:
        _JUDGES.clear()  # one job at a time per process: an earlier job's judge is done
        _JUDGES[key] = _open(sweep_dir, int(hc.job.num))
    return _JUDGES[key]


def _open(sweep_dir: str, number: int) -> StepJudge:
    from omegaconf import OmegaConf

    if sweep_dir in LIVE:
        study, storage, mode, spec = LIVE[sweep_dir]
    else:
        path = Path(sweep_dir) / STUDY_FILE
        if not path.is_file():
            raise SettingError(f"report(): no {path}: this job's sweep did not start it (or its folder moved)")
        saved = OmegaConf.load(path)
        if saved.storage is None:
            raise SettingError("report() in a launcher's worker needs the study in a storage the worker can open: "
                               "set hydra.sweeper.storage (e.g. sqlite:///study.db or journal:/path/study.log); "
                               "hydra.sweeper.storage=null keeps it in the sweeper's process")
        spec, mode = PruneSpec(**OmegaConf.to_container(saved.pruner)), str(saved.mode)
        storage = open_storage(str(saved.storage))
        study = optuna.load_study(study_name=str(saved.study_name), storage=storage, pruner=optuna_pruner(mode, spec))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    return StepJudge(study, optuna.trial.Trial(study, trial_id), mode, spec)


def storage_file(url: str | None) -> Path | None:
    """The file a journal or sqlite storage URL names, as given (relative or not); None for any other."""
    if url is None:
        return None
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    if not url.startswith("sqlite"):
        return None
    import sqlalchemy

    try:
        database = sqlalchemy.engine.make_url(url).database
    except sqlalchemy.exc.ArgumentError:
        return None  # open_storage says what is wrong with it, in one line
    return None if not database or database == ":memory:" or database.startswith("file:") else Path(database)


def absolute_storage(url: str | None) -> str | None:
    """`url` with a relative file (sqlite:///study.db, journal:study.log) made absolute from this folder,
    the sweep's launch folder: a job with hydra.job.chdir=true, or a launcher's worker, runs elsewhere
    and would open (and create) another, empty file of that name."""
    file = storage_file(url)
    if url is None or file is None or file.is_absolute():
        return url
    if url.startswith("journal:"):
        return f"journal:{file.absolute()}"
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).set(database=str(file.absolute())).render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """The storage URL as messages and study.json show it: a URL Optuna's own readers take as it is
    (optuna.load_study, the optuna CLI's --storage, optuna-dashboard), the password left out (libpq
    finds it in PGPASSWORD or ~/.pgpass). The URL cut at its last '@' showed 'host/db': no driver, no
    user, nothing a reader could open."""
    if "@" not in url or url.startswith(("sqlite:", "journal:")):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except ArgumentError:  # not a URL SQLAlchemy reads: still never the password
        return url.split("@")[-1]


def open_storage(url: str | None) -> Any:
    """The study's storage: in memory (None), a journal file (`journal:/path/file.log`) or a database URL.
    One that cannot be opened is a SettingError naming hydra.sweeper.storage, not SQLAlchemy's traceback."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    where = f"hydra.sweeper.storage={shown_url(url)}"  # no password in the line
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise SettingError(f"{where}: folder {path.parent} does not exist")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise SettingError(f"{where}: {_first_line(err)}") from None
    import sqlalchemy

    try:
        database = sqlalchemy.engine.make_url(url).database
        if url.startswith("sqlite") and database and database != ":memory:" and not Path(database).parent.is_dir():
            raise SettingError(f"{where}: folder {Path(database).parent} does not exist")
        return optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError, ValueError) as err:
        if isinstance(err, SettingError):
            raise
        raise SettingError(f"{where}: {_first_line(err)} (expected sqlite:///file.db, journal:/path/file.log "
                           "or a database URL such as postgresql+psycopg://user@host/db)") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise SettingError(f"{where}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def save_yaml(data: dict[str, Any], path: Path) -> None:
    """`data` as YAML at `path`, written whole: a temp file beside it, then renamed over it. Several workers
    of one study may write the same file in one sweep folder at once; a reader sees one whole version."""
    import os

    from omegaconf import OmegaConf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    OmegaConf.save(OmegaConf.create(data), tmp)
    os.replace(tmp, path)


def save_study_file(sweep_dir: Path, study: optuna.Study, storage: Any, mode: str, spec: PruneSpec) -> None:
    """What a job needs to find its study (report's `_open`), written whole before any job starts."""
    import dataclasses

    save_yaml({"study_name": study.study_name, "storage": storage, "mode": mode, "pruner": dataclasses.asdict(spec)},
              sweep_dir / STUDY_FILE)
