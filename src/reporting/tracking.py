"""Experiment tracking: Weights & Biases, or nothing. Tracking never fails a run.

Mode "auto" runs W&B online only when credentials are configured (WANDB_API_KEY or a netrc entry
from `wandb login`), otherwise offline into the run directory; `wandb sync DIR/wandb/offline-run-*`
uploads later. Any W&B error (unreachable server, bad entity, a failing call mid-run) is logged as
a warning, after which the run goes on offline or untracked.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from src.config import LoggerConfig
from src.record.io import dumps, finite_json

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def table(self, key: str, rows: list[dict[str, Any]]) -> None: ...
    def images(self, paths: dict[str, Path]) -> None: ...
    def scatter(self, key: str, rows: list[dict[str, Any]], x: str, y: str, title: str) -> None: ...
    def lines(self, key: str, xs: list[list[float]], ys: list[list[float]], names: list[str], title: str) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class NullTracker:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def table(self, key: str, rows: list[dict[str, Any]]) -> None:
        pass

    def images(self, paths: dict[str, Path]) -> None:
        pass

    def scatter(self, key: str, rows: list[dict[str, Any]], x: str, y: str, title: str) -> None:
        pass

    def lines(self, key: str, xs: list[list[float]], ys: list[list[float]], names: list[str], title: str) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def wandb_credentials_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(cfg: LoggerConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_configured() else "offline"


class WandbTracker:
    """A W&B run that degrades to a warning instead of an exception."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # any W&B failure mid-run: keep training, stop tracking
            log.warning("W&B %s failed (%s: %s); tracking disabled for this run", what, type(err).__name__, err)
            self.finish(exit_code=1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._guard("log", lambda: self.run.log(metrics, step=step))

    def table(self, key: str, rows: list[dict[str, Any]]) -> None:
        """A wandb.Table with one column per key of the rows (lists and dicts as JSON text)."""

        def log_table() -> None:
            import wandb

            columns = list(dict.fromkeys(k for r in rows for k in r))
            # NaN as null, as in the run files: W&B's table JSON is read by strict parsers too
            cell = lambda v: dumps(v) if isinstance(v, (list, dict, tuple)) else finite_json(v)  # noqa: E731
            table = wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])
            # commit=False: joins the next history row instead of taking a step of its own, which
            # would push the epoch steps that run() logs explicitly out of order.
            self.run.log({key: table}, commit=False)

        self._guard(f"table {key}", log_table)

    def images(self, paths: dict[str, Path]) -> None:
        def log_images() -> None:
            import wandb

            self.run.log({k: wandb.Image(str(p)) for k, p in paths.items()}, commit=False)

        self._guard("images", log_images)

    def scatter(self, key: str, rows: list[dict[str, Any]], x: str, y: str, title: str) -> None:
        def log_scatter() -> None:
            import wandb

            table = wandb.Table(columns=["config", x, y], data=[[r["config"], r[x], r[y]] for r in rows])
            self.run.log({key: wandb.plot.scatter(table, x, y, title=title)}, commit=False)

        self._guard(f"scatter {key}", log_scatter)

    def lines(self, key: str, xs: list[list[float]], ys: list[list[float]], names: list[str], title: str) -> None:
        def log_lines() -> None:
            import wandb

            self.run.log({key: wandb.plot.line_series(xs=xs, ys=ys, keys=names, title=title, xname="epoch")},
                         commit=False)

        self._guard(f"lines {key}", log_lines)

    def summary(self, values: dict[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:
                log.warning("W&B finish failed (%s: %s)", type(err).__name__, err)


def make_tracker(
    cfg: LoggerConfig, run_dir: Path, name: str, config: dict[str, Any], job_type: str
) -> Tracker:
    if cfg.kind == "none" or cfg.mode == "disabled":
        return NullTracker()
    try:
        import wandb
    except ImportError:
        log.warning("logger.kind=wandb but wandb is not installed; not tracking")
        return NullTracker()
    mode = resolve_mode(cfg)
    kwargs = dict(
        project=cfg.project,
        entity=cfg.entity,
        group=cfg.group,
        name=name,
        job_type=job_type,
        tags=list(cfg.tags),
        config=config,
        dir=str(run_dir),
        settings=wandb.Settings(console="off", silent=True, init_timeout=60),
    )
    for attempt in ([mode, "offline"] if mode == "online" else [mode]):
        try:
            run = wandb.init(mode=attempt, **kwargs)
            if attempt != mode:
                log.warning("W&B running offline instead; upload later with `wandb sync %s/wandb/offline-run-*`", run_dir)
            return WandbTracker(run)
        except Exception as err:
            log.warning("W&B init (%s) failed: %s: %s", attempt, type(err).__name__, err)
    log.warning("W&B unavailable; this run is not tracked (local files are complete)")
    return NullTracker()
