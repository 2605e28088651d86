"""W&B's own rules for what a run gives it (wandb 0.2x-0.3x): the project, the tags, and the mode
W&B reads from WANDB_MODE. Each failed inside `wandb.init`, after the run folder was made, and the
run went on untracked with only a warning (a multi-line one for the mode): here they are one line
naming the key, before any folder (LoggerConfig.check)."""

from __future__ import annotations

import os
from collections.abc import Sequence

# Characters W&B refuses in a project name (wandb.sdk's project check).
PROJECT_FORBIDDEN = "/\\#?%:"
# The modes wandb.Settings takes (its `mode` field). W&B reads WANDB_MODE into its settings whatever
# mode a run asks for, so a value outside these fails logger.mode=offline too.
MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")


def problem(project: str | None, tags: Sequence[str]) -> str | None:
    """What W&B would refuse of a tracked run's logger settings (`project`: logger.project, None
    where unset), as one line; None when W&B takes them all."""
    if (mode := os.environ.get("WANDB_MODE")) is not None and mode not in MODES:
        return f"WANDB_MODE={mode!r} is not a W&B mode: W&B takes {', '.join(MODES[:-1])} or {MODES[-1]}"
    # the project W&B will get: WANDB_PROJECT where logger.project is unset (src.reporting.tracking)
    key, project = ("logger.project", project) if project is not None else \
        ("WANDB_PROJECT", os.environ.get("WANDB_PROJECT") or None)
    if project is not None:
        bad = sorted(set(project) & set(PROJECT_FORBIDDEN))
        if not project.strip() or len(project) > 128 or bad:
            why = f"contains {' '.join(bad)}" if bad else ("is empty" if not project.strip() else "is over 128 characters")
            return f"{key}={project!r} {why}: W&B takes 1-128 characters without {' '.join(PROJECT_FORBIDDEN)}"
    for i, tag in enumerate(tags):
        if not 1 <= len(tag) <= 64:
            return f"logger.tags[{i}]={tag!r} has {len(tag)} characters: W&B takes 1-64"
    return None
