"""`hydra/launcher=submitit_slurm` (and `submitit_local`) that survive the scheduler.

hydra-submitit-launcher 1.2 collects a multirun's jobs with `[job.results()[0] for job in jobs]`:
the first job that SLURM cancelled, timed out or lost raises `submitit.core.utils.UncompletedJobError`
out of the driver (a traceback, no table, later jobs never awaited), and a job whose state cannot be
read (no accounting: `sacct` fails, the state stays UNKNOWN) is awaited forever.

This launcher is upstream's, with the collection replaced: every job is awaited, a job that ended
without a result is recorded in its own folder (result.json, status "failed", the scheduler's state as
the reason) so the comparison table lists it, one line per such job is printed, and the multirun ends
non-zero from the table (src.train.ComparisonTable). A state that cannot be read for
`unreadable_state_timeout_min` ends the wait for that job the same way.
A job that ends the multirun with its own line (OutOfRoom) hands the line back instead of dying
with it, and the driver ends with it once every job has ended, writing nothing into that folder.

`hydra/launcher=submitit_slurm` and `submitit_local` name these: register() replaces upstream's
ConfigStore entries with subclasses of upstream's schemas, so every upstream setting keeps its name and
default, beside two of ours.
"""


# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from src.record.digest import signed
from src.record.io import RESULT_FILE, OutOfRoom, read_json_object, write_json
from src.search.scheduler_end import PREEMPTED_SETTLE_S, base_state, reason as ended_why, time_limit

log = logging.getLogger(__name__)

try:  # the launchers extra (pip install -e '.[launchers]')
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
except ImportError:  # pragma: no cover - without the extra, the YAML's defaults name what is missing
    BaseSubmititLauncher = object  # type: ignore[misc,assignment]
    SlurmQueueConf = LocalQueueConf = None  # type: ignore[misc,assignment]

# Settings of ours, beside upstream's. Only the driver reads them (not passed to submitit).
OURS = ("unreadable_state_timeout_min", "poll_s")


class _Collecting:
    """Upstream's submission; our collection (see the module docstring)."""

    _EXECUTOR = "abstract"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        limit_s = 60.0 * float(self.params.get("unreadable_state_timeout_min", 10))
        poll_s = float(self.params.get("poll_s", 5))
        params = {k: v for k, v in self.params.items() if k not in OURS}
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = {f.name for f in fields(LocalQueueConf)}  # upstream's names without the executor prefix
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        calls = []
        here = pinned_sweep_dir(sweep_dir)
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            calls.append(([*overrides, here], "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*calls))
        try:
            returns = [collect(job, idx, lambda c=c: self._job_dir(c[0], c[2]), limit_s, poll_s, dict(self.params))
                       for idx, (job, c) in enumerate(zip(jobs, calls), start=initial_job_idx)]
        except KeyboardInterrupt as err:
            raise cancelled(jobs, err, sweep_dir, poll_s) from None
        refused = [ret for ret in returns if isinstance(ret, OutOfRoom)]
        if refused:  # every job awaited first: none is left running behind the line
            more = f" ({len(refused) - 1} more jobs were refused the same way)" if len(refused) > 1 else ""
            raise OutOfRoom(refused[0].line + more, refused[0].code)
        return returns  # type: ignore[return-value]

    def __call__(self, *args: Any) -> Any:
        """The job, in its own process. A line that ends the multirun (OutOfRoom: the folder held by
        another process, another config's finished run there, a full disk) is handed back as the job's
        value: raised, it would end the process with a traceback in its log, and the driver would see
        only the scheduler's FAILED and record a failure in a folder that is not this job's to write."""
        try:
            return super().__call__(*args)
        except OutOfRoom as err:
            return err

    def _job_dir(self, overrides: list[str], idx: int) -> Path:
        """The folder Hydra gave job `idx` (hydra.sweep.subdir resolved as the job itself did)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"
        return Path(str(self.config.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def pinned_sweep_dir(sweep_dir: Path) -> str:
    """The override that gives a job the driver's sweep folder as an absolute path. A job composes its
    config again (with the command line's `hydra.sweep.dir=runs`, or the default's `paths.output_dir=.`)
    and resolves a relative folder against its own working folder, which the scheduler sets
    (`sbatch --chdir`, another node's home): the job's run went there, the driver found no folder, and
    the multirun ended with exit 0, no table and no word of it (and a sweep's trial opened another
    study file). Quoted as Hydra's grammar reads any path."""
    text = str(sweep_dir.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    return f"hydra.sweep.dir='{text}'"


def collect(job: Any, idx: int, job_dir_of: Callable[[], Path], limit_s: float, poll_s: float,
            params: dict[str, Any] | None = None) -> JobReturn | OutOfRoom:
    """The job's own JobReturn (or the OutOfRoom line it handed back) when it produced one; else a
    record of why not (see the module docstring), naming the launcher's setting (`params`) that
    decides a time limit or an out-of-memory end."""
    state = wait(job, limit_s, poll_s, held=lambda why: print(
        f"warning: job {idx} ({job.job_id}) is held by SLURM ({why}): the multirun waits for it until "
        f"`scontrol release {job.job_id}` (or `scancel {job.job_id}`)", file=sys.stderr, flush=True))
    if job.paths.result_pickle.exists():
        try:
            ret = job.results()[0]
        except Exception as err:  # noqa: BLE001 - a job that raised: upstream's behaviour is Hydra's
            if "has not produced any output" not in str(err):
                raise
        else:
            _name_the_limit(ret, params or {})
            return ret
    job_dir = job_dir_of()
    reason = (f"the scheduler's state stayed {state} for {limit_s / 60:g} min (is SLURM accounting, sacct, working?)"
              if state in UNREADABLE else _signalled(job_dir, state) or ended_why(state, params))
    line = f"job {idx} ({job.job_id}) did not finish: {reason}; its log: {job.paths.stderr}"
    print(f"error: {line}", file=sys.stderr, flush=True)
    _record(job_dir, job, state, reason)
    # The job's folder where a job's own return has it: an Optuna sweep finds the trial's result.json
    # (and its checkpoint, for the retry) there. Without it the trial read "failed: no result.json".
    hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job_dir)}}})
    ret = JobReturn(overrides=[], cfg=None, hydra_cfg=hydra_cfg, working_dir=str(job_dir), task_name="")
    ret.status = JobStatus.COMPLETED  # recorded as failed in its result.json: the table ends the multirun
    ret.return_value = float("nan")
    return ret


def _signalled(job_dir: Path, state: str) -> str | None:
    """Why a job ended when a signal, not the scheduler, stopped its run: the job exited non-zero
    (FAILED) after its run recorded `interrupted` (`scancel --signal=TERM`, a `kill` on the node).
    It read `the scheduler ended it: FAILED`, which blamed the scheduler and named no signal."""
    if base_state(state) != "FAILED":
        return None
    try:
        data = read_json_object(job_dir / RESULT_FILE)
    except (OSError, ValueError):
        return None
    if data.get("status") != "interrupted":
        return None
    return (f"its run was stopped by a signal sent to the job ({data.get('error')}: `scancel --signal`, or a kill on "
            f"the node), not by the scheduler (state {state}): not retried")


def _name_the_limit(ret: JobReturn | OutOfRoom, params: dict[str, Any]) -> None:
    """A job over its time limit with no requeue left is ended by submitit in the job, and the run
    records that as its error (`UncompletedJobError: Job not requeued because: timed-out too many
    times.`), which named no setting: the one that decides it is added, as for SLURM's TIMEOUT."""
    if isinstance(ret, OutOfRoom) or ret.hydra_cfg is None:
        return
    record = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) / RESULT_FILE
    try:
        data = read_json_object(record)  # (a record's digest checked, and left out: it is signed again below)
    except ValueError:
        return
    error = str(data.get("error") or "")
    if data.get("status") == "failed" and "timed-out too many times" in error and "timeout_min" not in error:
        data["error"] = f"{error} ({time_limit(params)})"
        write_json(record, signed(data))


def cancelled(jobs: Sequence[Any], err: KeyboardInterrupt, sweep_dir: Path, poll_s: float,
              settle_s: float = 60.0) -> KeyboardInterrupt:
    """Ctrl-C or SIGTERM while the driver waits: its jobs would train on without it (the scheduler
    owns them), and the same command run again would find their folders in use. They are cancelled
    (each run records `interrupted` and keeps its checkpoint) and awaited a while, so the same command
    resumes them; the stop goes on up, saying so."""
    from src import exits  # how the process ends is said there; only a stopped driver needs it
    from src.reporting.runs import sweep_dir_override

    running = [job for job in jobs if not _done(job)]
    # A job still queued (held, or waiting for room) has no run to record anything: said apart.
    queued = [job for job in running if base_state(_state(job)) == "PENDING"]
    for job in running:
        job.cancel(check=False)
    deadline = time.monotonic() + settle_s
    try:
        while any(not _done(job) for job in running) and time.monotonic() < deadline:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass  # a second stop: stop waiting, the jobs are cancelled all the same
    what = _cancelled_line([job for job in running if job not in queued], queued)
    # The folder named: a multirun's default folder is dated, so the same command alone would start a
    # new one and train every job again (an Optuna sweep's folder is its study's: naming it is harmless).
    return exits.stopped(err, f"{what}; finished runs are kept in {sweep_dir}; the same command with "
                              f"{sweep_dir_override(sweep_dir)} resumes (python -m src.report {sweep_dir} reports them)")


def _cancelled_line(started: list[Any], queued: list[Any]) -> str:
    """What the cancel did: a started job's run records `interrupted` in its folder; a queued one had
    nothing running to record (the line said it recorded `interrupted`, of a job that never ran)."""
    def jobs(some: list[Any]) -> str:
        return f"{len(some)} job{'s' * (len(some) != 1)} ({', '.join(str(job.job_id) for job in some)})"

    said = [f"cancelled {jobs(started).replace(' job', ' unfinished job', 1)}, which record status 'interrupted' in "
            "their folders"] if started else []
    if queued:
        said.append(f"cancelled {jobs(queued)} still queued, which had not started: nothing recorded for them")
    return "; ".join(said) or "every job had ended"


def _state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001 - a state that cannot be read now
        return "UNKNOWN"


def _done(job: Any) -> bool:
    try:
        return bool(job.done())
    except Exception:  # noqa: BLE001 - a state that cannot be read now: not known to have ended
        return False


# states in which a job has not ended (submitit's list); UNKNOWN: sacct could not tell
UNREADABLE = {"UNKNOWN"}


def wait(job: Any, limit_s: float, poll_s: float, settle_s: float = PREEMPTED_SETTLE_S,
         held: Callable[[str], None] | None = None) -> str:
    """Wait until the job ends; a state that cannot be read ends the wait after `limit_s`. PREEMPTED
    is unfinished to submitit (SLURM may requeue the job), so a job whose preemption cancelled it was
    awaited forever: one that stays PREEMPTED for `settle_s` has ended. A pending job that SLURM
    holds (`scontrol hold`, `sbatch --hold`) never starts on its own: `held` is told SLURM's reason,
    once per hold (the driver waited without a word)."""
    unreadable_since: float | None = None
    hold = Hold(job, held)
    while True:
        if job.done():
            return str(job.state)
        state = str(job.state)
        hold.check(state)
        if state in UNREADABLE or base_state(state) == "PREEMPTED":
            unreadable_since = unreadable_since or time.monotonic()
            if time.monotonic() - unreadable_since > (limit_s if state in UNREADABLE else settle_s):
                return state
        else:
            unreadable_since = None
        time.sleep(poll_s)


class Hold:
    """Whether a pending SLURM job is held, asked of `squeue` (sacct's state says only PENDING) at
    most every HELD_RECHECK_S, and said once per hold."""

    def __init__(self, job: Any, say: Callable[[str], None] | None) -> None:
        self.job, self.say = job, say
        self.asked_at: float | None = None
        self.told = False

    def check(self, state: str) -> None:
        if self.say is None or type(self.job).__name__ != "SlurmJob":
            return
        if base_state(state) != "PENDING":
            self.asked_at, self.told = None, False
            return
        if self.asked_at is not None and time.monotonic() - self.asked_at < HELD_RECHECK_S:
            return
        self.asked_at = time.monotonic()
        why = held_reason(str(self.job.job_id))
        if why and not self.told:
            self.say(why)
        self.told = bool(why)


HELD_RECHECK_S = 30.0


def held_reason(job_id: str) -> str | None:
    """SLURM's reason that a pending job waits, when it is a hold (JobHeldUser, JobHeldAdmin)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if out.startswith("JobHeld") else None


def _record(job_dir: Path, job: Any, state: str, reason: str) -> None:
    """A job the scheduler ended: its result.json says so. A record the run wrote itself (an
    interrupted run saying what it had measured) is kept, with the scheduler's word added."""
    record = job_dir / RESULT_FILE
    try:
        if record.is_file():
            data = read_json_object(record)
            if data.get("status") == "completed":
                return
            data["error"] = f"{reason} (the run had recorded: {data.get('error') or data.get('status')})"
            data["status"] = "failed"
        else:
            data = {"status": "failed", "error": reason, "failed_epoch": -1, "run_dir": str(job_dir)}
        data["scheduler"] = {"job_id": str(job.job_id), "state": state}
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json(record, signed(data))  # a run's record, edited: its digest is of what it says now
    except (OSError, ValueError) as err:
        print(f"warning: could not record job {job_dir.name}'s end in {record}: {err}", file=sys.stderr, flush=True)


if BaseSubmititLauncher is not object:
    class SlurmLauncher(_Collecting, BaseSubmititLauncher):
        _EXECUTOR = "slurm"

    class LocalLauncher(_Collecting, BaseSubmititLauncher):
        _EXECUTOR = "local"

    @dataclass
    class SlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.ft_submitit_launcher.launcher.SlurmLauncher"
        # A job over its time limit is requeued (submitit's checkpoint: SIGUSR2 `signal_delay_s` before
        # the limit) and resumes from its last completed epoch; upstream's 0 would not requeue it.
        max_num_timeout: int = 3
        unreadable_state_timeout_min: float = 10.0
        poll_s: float = 5.0

    @dataclass
    class LocalConf(LocalQueueConf):
        _target_: str = "hydra_plugins.ft_submitit_launcher.launcher.LocalLauncher"
        unreadable_state_timeout_min: float = 10.0
        poll_s: float = 1.0


def register() -> None:
    """Replace upstream's `submitit_slurm` and `submitit_local` entries with ours. Upstream writes
    its entries when Hydra scans its plugins (once per process, Plugins is a singleton), so the scan
    is made first, here, and ours are written after it; a later scan never happens."""
    if BaseSubmititLauncher is object:
        return
    Plugins.instance()
    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="submitit_slurm", node=SlurmConf, provider="ft_submitit_launcher")
    cs.store(group="hydra/launcher", name="submitit_local", node=LocalConf, provider="ft_submitit_launcher")

