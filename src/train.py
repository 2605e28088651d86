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
from src.run import run

log = logging.getLogger(__name__)


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
                    print(f"report: {page}", flush=True)
        failed = [d.name for d, r in rows if r.get("status") != "completed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs did not complete: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
