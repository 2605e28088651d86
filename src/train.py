"""Hydra entrypoint: `python -m src.train [overrides]`, `python -m src.train -m strategy=frozen,full,layerwise`.

Hydra stops here. The composed config is turned into a typed `RunConfig` (one-line error on a bad
key or value) and handed to the plain `run()`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, RunConfig
from src.models import PretrainedWeightsError
from src.report import publish
from src.results import find_results, format_table
from src.run import interrupt_on_sigterm, run

log = logging.getLogger(__name__)


CONF = Path(__file__).resolve().parents[1] / "conf"


def check_overrides(args: list[str]) -> None:
    """One-line errors for what Hydra would report in a multi-line block: an unknown config-group
    option (`strategy=bogus`) or key (`trainer.bogus=1`). Values are RunConfig's to check."""
    import dataclasses
    import typing

    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    for arg in args:
        if arg.startswith(("-", "+", "~", "hydra")) or "=" not in arg:
            continue  # flags, appends/deletions (checked later by RunConfig), Hydra's own settings
        key, value = arg.split("=", 1)
        parts = key.split(".")
        if len(parts) == 1 and (CONF / key).is_dir():
            options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
            # a multirun lists options with commas; sweep functions (choice(...), glob(...)) are Hydra's
            values = [] if "(" in value else [v.strip() for v in value.split(",")]
            for v in values:
                if v not in options:
                    raise ConfigError(f"{key}={v} is not allowed (options: {', '.join(options)})")
            continue
        if parts[0] not in sections:
            raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(sorted(sections))})")
        tp: Any = hints[parts[0]]
        for depth, name in enumerate(parts[1:], start=1):
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"unknown key '{key}' ({'.'.join(parts[:depth])} has no sub-keys)")
            fields = {f.name for f in dataclasses.fields(tp)}
            if name not in fields:
                raise ConfigError(f"unknown key '{key}' (allowed in {'.'.join(parts[:depth])}: {', '.join(sorted(fields))})")
            tp = typing.get_type_hints(tp)[name]


def to_run_config(cfg: DictConfig, group: str | None = None) -> RunConfig:
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    data.pop("hydra", None)
    if group and isinstance(data.get("logger"), dict) and not data["logger"].get("group"):
        data["logger"]["group"] = group
    return RunConfig.from_dict(data)


def _multirun_group(hc) -> str | None:
    if hc.mode != RunMode.MULTIRUN:
        return None
    return sweep_group(Path(hc.sweep.dir))


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a multirun: the last parts of its folder (multirun/DATE/TIME -> multirun-DATE-TIME)."""
    return "-".join(sweep_dir.parts[-3:])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    interrupt_on_sigterm()
    try:
        run_cfg = to_run_config(cfg, _multirun_group(hc))
        result = run(run_cfg, Path(hc.runtime.output_dir), run_name=Path(hc.runtime.output_dir).name)
    except (ConfigError, PretrainedWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if hc.mode != RunMode.MULTIRUN:
            raise
        # One failed job must not stop the others: run() has recorded status "failed" and the
        # reason in its result.json; the table at the end shows it and the exit code is non-zero.
        log.error("run failed (%s: %s); recorded in %s", type(err).__name__, err, hc.runtime.output_dir)
        return float("nan")
    return float(result["val_acc"])


class ComparisonTable(Callback):
    """Once the multirun ends: the comparison table of every run in the sweep directory, the HTML
    report in `<sweep dir>/report/`, and the study's summary run in W&B."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = find_results([sweep_dir])
        if rows:
            print(f"\n{len(rows)} runs in {sweep_dir}:\n{format_table(rows)}", flush=True)
            try:  # only the logger section: the rest of `config` holds unresolved sweep values
                logger = RunConfig.from_dict({"logger": OmegaConf.to_container(config.logger, resolve=True)}).logger
            except ConfigError:  # the jobs have reported it already
                logger = None
            if logger is not None:
                page = publish([sweep_dir], sweep_dir / "report", logger, sweep_group(sweep_dir))
                if page:
                    print(f"report: {page}", file=sys.stderr, flush=True)
        failed = [d.name for d, r in rows if r.get("status") != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
