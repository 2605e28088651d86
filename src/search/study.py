"""One study, one experiment, one folder.

A study records, when it is created, what its trials measure (its identity: the resolved training
config less the searched keys and the settings that change no measurement, the objectives, the
search space and the data's identity); a resume with anything else is refused, naming what differs.
The data is checked by its identity, not its settings: an image added to the folder between two
invocations would otherwise put trials of two datasets (and two val/test splits) in one front. The sweep folder
belongs to one study (`study.json`): a second study there is refused, and what the refused command
made for it (its empty study, a storage file it created) is taken away again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from src.config import ConfigError, RunConfig
from src.config.since import OTHERWISE, as_now
from src.data.identity import short_id
from src.gate import STUDY_FILE
from src.record.io import RESULT_FILE, write_json
from src.record.owner import read_owner

# Training settings that change nothing a trial measures: a study resumed with other values is the
# same experiment. Everything else in the config is part of the study's identity.
NOT_MEASURED = ("logger.", "trainer.progress", "trainer.save_model", "trainer.num_threads", "trainer.resume",
                "trainer.keep_checkpoints")
# ... unless a time is measured: threads change the training time.
TIMED = {"train_time_s": ("trainer.num_threads",)}
OWNER_FILE = STUDY_FILE  # which study a sweep folder belongs to


def study_identity(base: RunConfig, params: dict[str, Any], objectives: list[str],
                   data: str | None = None, weights: str | None = None) -> dict[str, Any]:
    """What a trial of this study measures: every training setting except the searched ones and
    those that change no measurement, plus the objectives, the search space, `data`, the
    dataset's identity (src.data.identity; None where it is not one dataset or cannot be read), and
    `weights`, model.checkpoint_path's (src.models.weights_identity; None where there is no such file).
    JSON-shaped, so it compares equal after a round trip through any storage."""
    timed = {k for o in objectives for k in TIMED.get(o, ())}
    config = {k: v for k, v in _flatten(base.to_dict()).items()
              if k not in params and (k in timed or not _not_measured(k))}
    out = {"config": config, "objectives": objectives, "params": params} | ({"data": data} if data else {}) \
        | ({"weights": weights} if weights else {})
    return json.loads(json.dumps(out, sort_keys=True))


def _not_measured(key: str) -> bool:
    return any(key.startswith(n) if n.endswith(".") else key == n for n in NOT_MEASURED)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that differs (config keys flat; objectives; params.KEY)."""
    # a study an older version made, without settings added since: read with what its trials ran with
    flat_old = as_now(_flatten(old.get("config", {})), _flatten(new.get("config", {}))) | {"objectives": old.get("objectives")} | {
        f"params.{k}": v for k, v in (old.get("params") or {}).items()}
    flat_new = _flatten(new.get("config", {})) | {"objectives": new.get("objectives")} | {
        f"params.{k}": v for k, v in (new.get("params") or {}).items()}
    missing = object()
    return [f"{k}: {json.dumps(flat_old.get(k, missing)) if k in flat_old else f'(unset: {OTHERWISE[k]})' if k in OTHERWISE else '(unset)'} -> "
            f"{json.dumps(flat_new[k]) if k in flat_new else '(unset)'}"
            for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k, missing) != flat_new.get(k, missing)]


def open_study(storage: BaseStorage, name: str, directions: list[str], identity: dict[str, Any], pruner: Any,
               where: str, metric_names: list[str] | None = None) -> optuna.Study:
    """Create the study and record what it measures (and its objectives' names, which
    optuna-dashboard shows), or load it and refuse if it measures something else (other
    settings, objectives or search space)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, pruner=pruner)
        if metric_names:
            with warnings.catch_warnings():  # experimental in Optuna 5, and what optuna-dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metric_names))
        study.set_user_attr("identity", identity)
        study.set_user_attr("uid", uuid.uuid4().hex)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    new_study = f"start a new study with another hydra.sweeper.study_name (and hydra.sweep.dir), e.g. hydra.sweeper.study_name={name}-2"
    have = [d.name.lower() for d in study.directions]
    if have != directions and "identity" not in study.user_attrs:  # else the identity names the objectives
        raise ConfigError(f"study {name} in {where} optimises {have}, not {directions}: {new_study}")
    # A worker that created the study a moment ago may not have recorded its identity yet.
    for _ in range(50):
        attrs = study.user_attrs
        if "identity" in attrs and "uid" in attrs:
            break
        if study.get_trials(deepcopy=False):
            raise ConfigError(f"study {name} in {where} has trials but no record of what they measure (made by an "
                              f"older version): {new_study}")
        time.sleep(0.2)
    else:  # an empty study with no record: adopt it
        study.set_user_attr("identity", identity)
        study.set_user_attr("uid", uuid.uuid4().hex)
        attrs = study.user_attrs
    # A study recorded before its data was, or data that cannot be listed now, is not compared.
    was, now = attrs["identity"].get("data"), identity.get("data")
    if was and now and was != now:
        raise ConfigError(f"study {name} in {where} was run on other data: dataset_id {short_id(was)} -> "
                          f"{short_id(now)} (files of the dataset added, removed or resized since); its trials would "
                          f"not answer this question on the data as it is now: restore the data, or {new_study}")
    # the same for the weights file (a path names a place: the file there is replaced, re-exported)
    was, now = attrs["identity"].get("weights"), identity.get("weights")
    if was and now and was != now:
        raise ConfigError(f"study {name} in {where} was run from other weights: the file at model.checkpoint_path was "
                          f"replaced since (weights_id {short_id(was)} -> {short_id(now)}); its trials would not answer "
                          f"this question for these weights: restore the file, or {new_study}")
    diff = identity_diff(attrs["identity"], identity)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise ConfigError(f"study {name} in {where} measures something else ({shown}): its trials would not "
                          f"answer this question; {new_study}")
    if have != directions:
        raise ConfigError(f"study {name} in {where} optimises {have}, not {directions}: {new_study}")
    return study


def study_exists(storage: BaseStorage, name: str) -> bool:
    return name in optuna.get_all_study_names(storage)


def claim_or_forget(out_dir: Path, study: optuna.Study, where: str, storage: BaseStorage, made_now: bool,
                    made_file: Path | None) -> None:
    """claim_out_dir; refused, what this command made for the sweep is taken away again: the study,
    when `made_now` and still without trials, and the storage file it created (`made_file`) when that
    holds no other study. A refusal wrote nothing else: it left a new, empty optuna.db in a folder
    whose own had been deleted, which the next command took for the folder's storage."""
    try:
        claim_out_dir(out_dir, study, where, made_now)
    except ConfigError:
        with contextlib.suppress(Exception):  # the refusal is what the user must read, not a cleanup's error
            if made_now and not study.get_trials(deepcopy=False):
                optuna.delete_study(study_name=study.study_name, storage=storage)
            if made_file is not None and not optuna.get_all_study_names(storage):
                if (engine := getattr(storage, "engine", None)) is not None:
                    engine.dispose()  # sqlite's connections closed before its file goes
                made_file.unlink(missing_ok=True)
        raise


def claim_out_dir(out_dir: Path, study: optuna.Study, where: str, made_now: bool = False) -> None:
    """`out_dir` belongs to one study: the first sweep to use it writes `study.json`; another
    study's sweep is refused (its trial folders, pareto.json and summary.json would overwrite ours).
    `made_now`: this command created `study` (said in the refusal: the caller takes it away again)."""
    mine = {"study": study.study_name, "uid": study.user_attrs["uid"], "storage": where}
    owner = out_dir / OWNER_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not owner.exists():
            leftovers = sorted(p.name for p in out_dir.iterdir()  # a study's files, or a job folder's record
                               if p.name.startswith(("trial_", "rerun", "pareto", "summary")) or (p / RESULT_FILE).is_file())
            if leftovers:
                shown = ", ".join(leftovers[:4]) + (", ..." if len(leftovers) > 4 else "")
                raise ConfigError(f"hydra.sweep.dir={out_dir} holds results of a study it has no record of ({shown}): "
                                  "use another hydra.sweep.dir")
            tmp = out_dir / f".{OWNER_FILE}.{os.getpid()}"
            write_json(tmp, mine)
            try:
                os.link(tmp, owner)  # atomic, and fails if another worker claimed the folder first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        theirs = read_owner(owner)
    except OSError as err:
        raise ConfigError(f"hydra.sweep.dir={out_dir}: cannot write there ({err.strerror or err})") from None
    except ValueError as err:  # rot or a hand edit: whose folder it is cannot be told, so nothing is written
        raise ConfigError(f"hydra.sweep.dir={out_dir}: its {OWNER_FILE}, which names the study the folder belongs to, "
                          f"cannot be read ({err}): if the folder is this study's, write {json.dumps(mine)} into it; "
                          "else use another hydra.sweep.dir") from None
    if theirs.get("uid") != mine["uid"] and theirs.get("storage") == where and theirs.get("study") == study.study_name:
        # The folder's own storage holds a study of that name made since: "the one in X (this sweep's is in
        # X)" and "use the storage it was made with" named the very storage that had lost it.
        made = ("" if study.trials else " (empty, made by this command: removed again)" if made_now else
                " (empty, made by an earlier command: remove it when you restore)")
        raise ConfigError(f"hydra.sweep.dir={out_dir} belongs to study {study.study_name} {theirs.get('uid')} ({OWNER_FILE}), "
                          f"which {where} no longer holds: that storage was deleted or replaced since, and holds a study "
                          f"of that name made again ({mine['uid']}){made}; restore the storage from a copy to resume, "
                          "or use another hydra.sweep.dir")
    if theirs.get("uid") != mine["uid"]:
        # Two studies of one name differ by their storage
        other = (f"another study named {study.study_name}, the one in {theirs.get('storage')} (this sweep's study is in "
                 f"{where})" if theirs.get("study") == study.study_name else
                 f"study {theirs.get('study')} ({theirs.get('storage')}), not to this study {study.study_name}")
        raise ConfigError(f"hydra.sweep.dir={out_dir} belongs to {other}: use another hydra.sweep.dir, or the "
                          "hydra.sweeper.storage and study_name it was made with")


