"""The W&B runs in a run folder (`<run>/wandb/`), and the setting aside of an earlier attempt's
offline run when a later attempt in that folder makes its own: one run folder, one W&B run to sync
(README, Tracking)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


# An earlier attempt's offline run in a run folder, set aside when a later attempt there is tracked:
# not `offline-run-*`, so SYNC_COMMAND and `wandb sync --sync-all` pass it by.
SUPERSEDED = "superseded-"


def wandb_runs(run_dir: Path) -> set[Path]:
    """The W&B run folders (offline and online) in `run_dir/wandb` now."""
    return {*(run_dir / "wandb").glob("offline-run-*"), *(run_dir / "wandb").glob("run-*")}


def set_aside_earlier_attempts(run_dir: Path, earlier: set[Path]) -> list[Path]:
    """`earlier` offline runs (`wandb_runs` before this attempt's tracker started) renamed
    `superseded-offline-run-*` when this attempt made a W&B run of its own in `run_dir`. A run folder
    holds one run: a killed run's attempt logged its first epochs, the attempt that resumes it logs
    them again with the rest, and synced both were two W&B runs of one config and seed in the study's
    group, one of them cut short. Kept, not deleted; an online attempt is W&B's already."""
    if not wandb_runs(run_dir) - earlier:
        return []  # this attempt is untracked: an earlier attempt's run is all W&B will have
    return set_aside(earlier)


def set_aside(runs: set[Path]) -> list[Path]:
    """The offline ones of `runs` renamed `superseded-offline-run-*`: kept, not synced (`SUPERSEDED`)."""
    moved = []
    for folder in sorted(p for p in runs if p.name.startswith("offline-run-")):
        try:
            folder.rename(folder.with_name(SUPERSEDED + folder.name))
            moved.append(folder)
        except OSError as err:
            log.warning("could not set aside the earlier attempt's W&B run %s (%s)", folder, err.strerror or err)
    if moved:
        log.info("W&B: %d earlier run(s) in %s renamed %s (kept, not synced): this one replaces them",
                 len(moved), moved[0].parent, ", ".join(SUPERSEDED + p.name for p in moved))
    return moved
