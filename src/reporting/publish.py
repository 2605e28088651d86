"""After a multirun or a sweep: the report into the study's folder, and the study's summary run in
W&B (tables of runs and configurations, the Pareto front, curves, the report's figures)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src.config import LoggerConfig
from src.record.io import SkippedFile, read_json_object
from src.record.whole_folder import staged
from src.reporting import robustness
from src.reporting.comparisons import COSTS, METRIC_LABEL, paired_rows, summary_rows, win_map
from src.reporting.configs import Config, group_configs, ood_metrics
from src.reporting.ood_section import ood_win_map
from src.reporting.page import FIGURES, first_line, write_report
from src.reporting.runs import CONFIG_KEYS, Run, load_runs, mean_curve, trial_number
from src.reporting.tables import wins_worth_showing
from src.reporting.tracking import Tracker, make_tracker, run_tags
from src.reporting.wandb_folders import set_aside_earlier_attempts, wandb_runs
from src.reporting.verdict import as_json, render, verdicts

log = logging.getLogger(__name__)


def publish(dirs: Sequence[Path], out: Path, logger: LoggerConfig, group: str, metric: str = "test_acc",
            problems: list[str] | None = None) -> Path | None:
    """After a multirun or a sweep: the HTML report into `out`, and the study's summary to W&B (a run
    of job type "summary" in the study's group, tagged with every strategy, dataset and model in
    it: see `log_summary`). Never raises: the runs themselves are already saved, and a failed
    summary must not turn a finished study into a failure. What went wrong goes into `problems`
    (one line each, for the caller to print: no report, a figure not drawn), or the log without it."""
    def problem(line: str) -> None:
        log.warning("%s", line) if problems is None else problems.append(line)

    try:
        # written whole: two drivers of one sweep that end together, or a report stopped half-way,
        # never leave `out` holding one report's page beside another's figures (src.record.whole_folder)
        with staged(out) as folder:
            found = _publish(dirs, folder, logger, group, metric, problem)
            ours = {out / "wandb" / p.name for p in wandb_runs(folder)}
    except Exception as err:
        problem(f"no report written in {out} ({type(err).__name__}: {first_line(err)})")
        return None
    # the summary runs of earlier reports (carried over with the folder, e.g. the same sweep command
    # run again once it had finished) are superseded by this one: kept, but synced no more
    set_aside_earlier_attempts(out, wandb_runs(out) - ours)
    for name, why in found.items():
        problem(f"report {out / 'index.html'}: figure {name} not drawn ({why})")
    return out / "index.html"


def _publish(dirs: Sequence[Path], out: Path, logger: LoggerConfig, group: str, metric: str,
             problem: Callable[[str], None]) -> dict[str, str]:
    """`publish` into the new folder `out`: the figures not drawn (name -> why). Raises when no
    report can be written, so that an earlier report stays in its place."""
    skipped: list[SkippedFile] = []
    missing: dict[str, str] = {}
    runs = load_runs(dirs, skipped)
    for bad in skipped:
        log.warning("skipped %s", bad)
    write_report(dirs, out, metric, runs, skipped, missing)
    if logger.kind == "none":
        return missing
    try:
        configs = group_configs(runs)
        tags = list(dict.fromkeys(t for r in runs for t in run_tags(r.result)))
        group = logger.group or group  # the jobs' own group when logger.group names one (src.gate)
        tracker = make_tracker(dataclasses.replace(logger, group=group), out, f"{group}-summary",
                               {"dirs": [str(d) for d in dirs], "metric": metric}, "summary", tags=tags)
        try:
            log_summary(tracker, runs, configs, metric, out, skipped)
        finally:  # a summary that failed half-way is still closed, not left open in the W&B service
            tracker.finish()
    except Exception as err:
        problem(f"W&B summary not logged ({type(err).__name__}: {first_line(err)})")
    return missing


# The measures of each run in the W&B `runs` table, after its settings (CONFIG_KEYS and the strategy's knobs).
RUN_MEASURES = ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s", "trainable_params",
                "peak_mem_mb")


def log_summary(tracker: Tracker, runs: Sequence[Run], configs: Sequence[Config], metric: str, out: Path,
                 skipped: Sequence[SkippedFile]) -> None:
    """The study's summary run: the runs and configurations as tables (every recorded setting of a
    run a column, the strategy's knobs included), the Pareto front as a table and a chart on a log
    cost axis, accuracy against FLOPs, the mean validation curves, and the report's figures."""
    rows = summary_rows(configs, metric)
    found = verdicts(configs, metric)
    # first, so that a table or chart that fails later cannot cost it: the page's answer, and its
    # structure (who is tied with whom, on what evidence) for dashboards
    tracker.summary({"n_runs": len(runs), "n_configs": len(configs), "metric": metric,
                     "pareto_configs": [r["config"] for r in rows if r["pareto"]],
                     "pareto_configs_by_cost": {c: [r["config"] for r in rows if r["pareto_by_cost"][c]] for c in COSTS},
                     "answer": " ".join(render(found)),
                     "verdict": as_json(found), "one_seed": all(v.one_seed for v in found),
                     "duplicates": [{"run": str(d.run.dir), "of": str(d.kept.dir)} for c in configs for d in c.duplicates],
                     "skipped_files": [str(b) for b in skipped]})
    ood = ood_metrics(configs)  # OOD accuracy and effective robustness per set: columns too
    # each strategy's own knobs as columns of their own (empty for the other strategies' runs)
    tracker.table("runs", [{"run": r.dir.name, "trial": trial_number(r.dir), "seed": r.result.seed}
                           | {k: r.result.get(k) for k in CONFIG_KEYS} | {"dataset_id": r.result.get("dataset_id")} | _knobs(r)
                           | {k: r.measure(k) for k in (*RUN_MEASURES, *ood)} | {"status": r.result.status} for r in runs])
    tracker.table("configs", [{k: v for k, v in r.items() if k != "run_dirs"} for r in rows])
    if pairs := paired_rows(configs, metric) + [p for m in ood for p in paired_rows(configs, m)]:
        tracker.table("paired", pairs)
    if drift := robustness.drift_correlations(configs, ood):
        tracker.table("drift_ood", drift)  # do the drift measures rank runs as OOD accuracy does?
    cells, ood_cells = win_map(configs, metric), ood_win_map(configs)
    if wins_worth_showing(cells) or wins_worth_showing(ood_cells):  # the map on each OOD set's accuracy too
        tracker.table("win_map", [
            {"dataset": c["dataset"], "train_per_class": c["train_per_class"], "metric": c["metric"]} | dict(e)
            | {"winner": e is c["entries"][0]}
            for c in cells + ood_cells for e in c["entries"]
        ])
    label = METRIC_LABEL.get(metric, metric)
    tracker.pareto("pareto_front", [r for r in rows if r["pareto"]], metric, "train_flops",
                   f"Pareto front: {label} against log10 train FLOPs")
    tracker.scatter("accuracy_vs_flops", rows, "train_flops", metric, f"{label} against log10 train FLOPs", log_x=True)
    with_curves = [c for c in configs if all(r.metrics for r in c.runs)]
    if with_curves:  # W&B's line_series fails on no lines, and a failure stops the rest of the summary
        curves = [mean_curve(c.runs) for c in with_curves]
        tracker.lines("val_acc_curves", [c[0] for c in curves], [c[1] for c in curves],
                      [c.label for c in with_curves], "validation accuracy by epoch (mean over seeds)")
    _log_search(tracker, out)
    tracker.images({name: out / f"{name}.png" for name in FIGURES if (out / f"{name}.png").is_file()})


def _log_search(tracker: Tracker, out: Path) -> None:
    """A sweep's parameter importances and its front with each point's parameters, as W&B tables (the
    report's search.json; its figures go with the others)."""
    path = out / "search.json"
    if not path.is_file():
        return
    found = read_json_object(path)
    tracker.table("param_importances", [{"objective": o, "method": found["methods"][o], "param": p, "importance": v}
                                        for o in found["objectives"] for p, v in found["importances"][o].items()])
    tracker.table("search_front", [{k: v for k, v in row.items() if k != "params"} | row["params"]
                                   for row in found["front"]])


def _knobs(run: Run) -> dict[str, Any]:
    params = run.result.strategy_params
    return dict(params) if isinstance(params, dict) else {"strategy_params": params}
