"""What a scheduler's end state of a job means: the one place that sorts SLURM's states.

The submitit launcher (hydra_plugins/ft_submitit_launcher) records a job that ended without a result
with the scheduler's state and the reason this module gives; the sweep (src.search.launched) asks it
whether the trial is retried. A demanding user expects:

- preemption, a node that failed or never booted: not the trial's fault. The trial is retried once
  with its parameters, continuing from its last checkpoint (as a dead worker's is), and does not
  count against `hydra.sweeper.max_failed`. A retry that ends the same way is failed and counted.
- a user's `scancel` (CANCELLED): failed and counted, said so; someone chose to stop it.
- a time limit (TIMEOUT, DEADLINE) or out of memory: failed and counted, with the setting to change.
  Retried, it would run into the same wall.
"""

from __future__ import annotations

from typing import Any, Mapping

# SLURM states (sacct) that are the cluster's doing, not the trial's.
NOT_ITS_FAULT = ("PREEMPTED", "NODE_FAIL", "BOOT_FAIL")
# submitit counts PREEMPTED as unfinished (SLURM may requeue the job); one that stays so this long
# was cancelled by its preemption, and is over.
PREEMPTED_SETTLE_S = 60.0


def base_state(state: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`; `NODE_FAIL` as it is."""
    return state.split()[0].upper() if state.strip() else "UNKNOWN"


def reason(state: str, params: Mapping[str, Any] | None = None) -> str:
    """Why the job has no result, for its record and its one line: the scheduler's state and, where
    a setting decides it, which one."""
    said = f"the scheduler ended it: {state}"
    params = params or {}
    kind = base_state(state)
    if kind == "CANCELLED":
        return f"{said} (cancelled with scancel, by user id {state.split()[-1]}: not retried)" \
            if state.split()[-2:-1] == ["by"] else f"{said} (cancelled: not retried)"
    if kind in ("TIMEOUT", "DEADLINE"):
        return f"{said} ({time_limit(params)})"
    if kind == "OUT_OF_MEMORY":
        return (f"{said} (out of memory at hydra.launcher.mem_gb={params.get('mem_gb', '?')}: raise mem_gb or lower "
                "trainer.batch_size; not retried)")
    if kind in NOT_ITS_FAULT:
        return f"{said} (the cluster's doing, not the run's: a sweep retries its trial once from its checkpoint)"
    return said


def time_limit(params: Mapping[str, Any]) -> str:
    """What decides a job's time limit, and what to change. How many requeues it had is not known
    here (a signal sent before the job's step started gets none): at most."""
    return (f"its time limit, hydra.launcher.timeout_min={params.get('timeout_min', '?')}, with at most "
            f"hydra.launcher.max_num_timeout={params.get('max_num_timeout', '?')} requeues: raise timeout_min or "
            "lower trainer.epochs; not retried")


def not_its_fault(scheduler: Any) -> str | None:
    """The state of a job the cluster ended through no fault of its own (a record's `scheduler`
    entry, as the launcher writes it), else None."""
    if not isinstance(scheduler, Mapping):
        return None
    state = str(scheduler.get("state") or "")
    return state if base_state(state) in NOT_ITS_FAULT else None
