"""The Pareto set re-run on more seeds (`hydra.sweeper.rerun_seeds`) and reported on test, as mean and 95% CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from src.gate import compose_train, to_run_config
from src.record.schema import RunRecord
from src.reporting.stats import format_ci, mean_ci
from src.training.run import run


def _as_record(result: RunRecord | dict[str, Any]) -> RunRecord:
    return result if isinstance(result, RunRecord) else RunRecord.from_json(result)


def rerun_pareto(
    study: optuna.Study, rows: list[dict[str, Any]], overrides: list[str], seeds: list[int], out: Path, group: str
) -> list[dict[str, Any]]:
    """Each Pareto-optimal configuration again on `seeds`, reported on test. Resumable: a seed whose
    run already completed is kept by `run` (claim_run_dir), not trained again; it is refused there
    when the data changed since, as any finished run is."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    table = []
    for row in rows:
        trial = by_number[row["trial"]]
        results = []
        for seed in seeds:
            run_dir = out / f"trial_{trial.number:04d}" / f"seed_{seed}"
            cfg = compose_train(overrides + [f"{k}={v}" for k, v in trial.params.items()] + [f"seed={seed}"])
            results.append(_as_record(run(to_run_config(cfg, group=f"{group}-rerun"), run_dir,
                                          run_name=f"{group}-{trial.number}-s{seed}")))
        entry: dict[str, Any] = {"trial": trial.number, **trial.params, "seeds": seeds}
        for key in ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s"):
            values = [float(r.get(key)) for r in results if r.get(key) is not None]
            if values:
                entry[key], entry[f"{key}_ci95"] = mean_ci(values)
                entry[f"{key}_values"] = values
        table.append(entry)
    return table


def format_rerun(table: list[dict[str, Any]]) -> str:
    lines = []
    for e in table:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in e.items() if "." in k)
        lines.append(
            f"trial {e['trial']:>3}  test acc {format_ci(e['test_acc'], e['test_acc_ci95'])}  "
            f"val acc {format_ci(e['val_acc'], e['val_acc_ci95'])}  train FLOPs {e.get('train_flops', float('nan')):.4g}  ({params})"
        )
    return "\n".join(lines)


