"""Which folder a plain multirun's job trains in, when a fixed hydra.sweep.dir was filled by earlier multiruns.

Hydra names a job's folder by its place in the sweep (`${hydra.job.num}_${strategy.name}`), so adding
values to a finished multirun (`strategy=frozen,full seed=0,1`, then `seed=0,1,2`) gives a folder to
another job: `3_full` held full seed 1 and is now job 3's, full seed 0, whose run is in `2_full`.
Refused there, the multirun stopped at that job and no seed could be added; trained in a fresh folder,
a finished seed ran twice. A job's run is looked up by its config instead: the folder Hydra gave it
when that holds this config's run (or nothing of another config), else the sibling that holds it
(kept, or resumed from its checkpoint), else a new folder beside it (`3_full_1`): no run is
trained twice or overwritten, and the same command always finds the same folder again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from src.config import RunConfig
from src.record import lock
from src.record.io import CONFIG_FILE, RESULT_FILE, finished_status
from src.training import checkpoint

log = logging.getLogger(__name__)


def _recorded_config(run_dir: Path, cfg: RunConfig) -> bool | None:
    """Whether the run recorded in `run_dir` is of `cfg`'s config (True) or another's (False); None when
    it holds no run worth keeping: nothing, a failed record with no checkpoint (trained again wherever its
    config's job goes), or a config.yaml that cannot be read (claim_run_dir says so, in that folder)."""
    worth = finished_status(run_dir / RESULT_FILE) is not None or bool(checkpoint.checkpoints(run_dir))
    if not worth:
        return None
    try:
        saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(saved, dict):
        return None
    try:
        return not checkpoint.config_changes(saved, cfg)
    except (AttributeError, TypeError, ValueError):  # of another shape: the folder's own check names it
        return None


def multirun_job_dir(run_dir: Path, cfg: RunConfig) -> Path:
    """The folder a plain multirun job of `cfg` trains in, given the one Hydra named (`run_dir`, in the
    sweep folder): see the module's docstring. Reads only."""
    own = _recorded_config(run_dir, cfg)
    if own:
        return run_dir
    sweep_dir = run_dir.parent
    try:
        siblings = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and d != run_dir and (d / CONFIG_FILE).is_file())
    except OSError:
        siblings = []
    for sibling in siblings:
        # an unfinished run of this config that a process trains now: a job of this multirun with the same
        # numbers (`trainer.progress=true,false` under joblib) trains its own, as before, not refused there
        busy = finished_status(sibling / RESULT_FILE) is None and lock.in_use(sibling)
        if _recorded_config(sibling, cfg) and not busy:
            log.info("%s holds this job's run (under an earlier multirun's numbering): the job goes on there", sibling)
            return sibling
    if own is None:
        return run_dir
    n = 1
    while _recorded_config(candidate := run_dir.with_name(f"{run_dir.name}_{n}"), cfg) is False:
        n += 1
    log.info("%s holds another config's run (an earlier multirun's job %s): kept; this job trains in %s",
             run_dir, run_dir.name, candidate)
    return candidate
