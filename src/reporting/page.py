"""`python -m src.report DIR [DIR ...]`: the comparison table, and a self-contained HTML report.

Reads only the run files under the folders (a multirun, a sweep, or several of them) and writes
`<out>/index.html` with its PNGs beside it (embedded in the page too, so the HTML file alone can be
mailed or attached): the answer in a few sentences (`verdict.answer`: ties named as ties, with their
evidence), accuracy against each cost with the Pareto front, validation curves, the layer-group LR
schedules, and a table with mean ± 95% CI over seeds. The console table (and `--markdown`) starts
with the same sentences. A figure that cannot be drawn is a note in its place; the page is written.
Without `--out`, the report goes into `DIR/report`, or `DIR/report_1`, ... when an earlier report is
there: a report never replaces another.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import logging
import math
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from src.reporting import plots
from src.reporting.analysis import (
    CONFIG_KEYS, Config, Run, group_configs, load_runs, mean_curve, ood_metrics, paired_rows, summary_rows,
    trial_number, win_map,
)
from src.reporting import robustness
from src.config import LoggerConfig
from src.record.io import SkippedFile, format_table, run_names, si, write_json, write_text
from src.record.schema import RunRecord
from src.reporting.tracking import Tracker, make_tracker, run_tags
from src.reporting.verdict import answer, as_json, render, verdicts

log = logging.getLogger(__name__)

FIGURES = ("pareto", "curves", "schedules", "drift", "wins", "ood", "wins_ood")  # "wins" only for several tasks,
# "ood" only with dataset.ood runs, "wins_ood" with both
SUMMARY_HEAD = ("configuration", "seeds", "val acc", "test acc", "test bal acc", "train FLOPs", "train s",
                "trainable", "peak MB", "ImageNet agree", "Pareto")
# Autoescaped: run names, folder names and file paths are text, whatever characters they hold.
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("src.reporting", "templates"), autoescape=True, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined)


def _ci(row: dict[str, Any], key: str, fmt: str) -> str:
    if row.get(key) is None:
        return "-"
    mean = row[key]
    half = row.get(f"{key}_ci95")
    text = si(mean) if fmt == "si" else f"{mean:{fmt}}"
    if half is not None:
        text += " ± " + (si(half) if fmt == "si" else f"{half:{fmt}}")
    return text


def wins_worth_showing(cells: Sequence[dict[str, Any]]) -> bool:
    """The which-strategy-wins map needs several tasks (datasets or training-set sizes) and a choice in them."""
    return len(cells) > 1 and any(len(c["entries"]) > 1 for c in cells)


def wins_markdown(cells: Sequence[dict[str, Any]]) -> str:
    """The which-strategy-wins map as Markdown tables, one per dataset: mean ± 95% CI over seeds,
    ★ the winner, ≈ tied with it (paired test, p ≥ 0.05)."""
    out = []
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        mine = [c for c in cells if c["dataset"] == dataset]
        names = sorted({e["config"] for c in mine for e in c["entries"]})  # variants of a strategy side by side
        metric = plots.METRIC_LABEL.get(mine[0]["metric"], mine[0]["metric"])
        out.append(f"{dataset}, {metric} (mean ± 95% CI over seeds; ★ winner, ≈ tied with it):\n")
        out.append("| strategy | " + " | ".join("all" if c["train_per_class"] == "all" else f"{c['train_per_class']} / class" for c in mine) + " |")
        out.append("|---" * (len(mine) + 1) + "|")
        for name in names:
            cols = []
            for c in mine:
                e = next((e for e in c["entries"] if e["config"] == name), None)
                if e is None:
                    cols.append("")
                    continue
                mark = " ★" if e is c["entries"][0] else (" ≈" if e.get("tied") else "")
                ci = "" if e["ci95"] is None else f" ± {e['ci95']:.3f}"
                cols.append(f"{e['mean']:.3f}{ci}{mark}")
            out.append(f"| {name} | " + " | ".join(cols) + " |")
        out.append("")
    return "\n".join(out)


def write_figures(configs: Sequence[Config], out: Path, metric: str,
                  cells: Sequence[dict[str, Any]] = (), missing: dict[str, str] | None = None) -> dict[str, Path]:
    """Draw and save each figure the report shows; {name: PNG}. A figure that fails to draw or save
    is left out, with its one-line reason in `missing`, and its PNG from an earlier report in `out`
    is removed: the page is written without it and says so, rather than not at all."""
    import matplotlib.pyplot as plt

    drawers = {"pareto": lambda: plots.pareto(configs, metric), "curves": lambda: plots.curves(configs),
               "schedules": lambda: plots.schedules(configs), "drift": lambda: plots.drift(configs)}
    if wins_worth_showing(cells):
        drawers["wins"] = lambda: plots.win_map(cells)
    if ood_metrics(configs):
        drawers["ood"] = lambda: plots.ood(configs)
        if wins_worth_showing(ood_cells := ood_win_map(configs)):
            drawers["wins_ood"] = lambda: plots.win_map(ood_cells)
    paths = {}
    for name, draw in drawers.items():
        path = out / f"{name}.png"
        fig = None
        try:
            fig = draw()
            fig.savefig(path, dpi=110)
            paths[name] = path
        except Exception as err:  # one figure's failure must not cost the page or the other figures
            why = f"{type(err).__name__}: {_first_line(err)}"
            if missing is None:
                log.warning("figure %s not drawn (%s)", name, why)
            else:  # the caller says it, once
                missing[name] = why
            path.unlink(missing_ok=True)
        finally:
            if fig is not None:
                plt.close(fig)
    return paths


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _summary_cells(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(
        r["config"], str(r["seeds"]), _ci(r, "val_acc", ".4f"), _ci(r, "test_acc", ".4f"),
        _ci(r, "test_balanced_acc", ".4f"), _ci(r, "train_flops", "si"), _ci(r, "train_time_s", ".1f"),
        si(r.get("trainable_params")), _ci(r, "peak_mem_mb", ".0f"),
        _ci(r, "imagenet_agreement", ".3f"), "✓" if r["pareto"] else "",
    ) for r in rows]


def _pair_cells(pairs: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(
        p["a"], p["b"], ", ".join(map(str, p["seeds"])),
        f"{p['diff']:+.4f}" + ("" if math.isnan(p["ci95"]) else f" ± {p['ci95']:.4f}"), f"{p['p']:.3g}",
    ) for p in pairs]


def _win_cells(cells: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    def behind(e: dict[str, Any]) -> str:
        if e.get("behind_ci95") is None:
            return f"{e['config']} −{100 * e['behind']:.1f}"
        return f"{e['config']} −{100 * e['behind']:.1f} ± {100 * e['behind_ci95']:.1f} (p={e['p']:.2g})"

    return [tuple(str(x) for x in (
        c["dataset"], c["train_per_class"], c["train_samples"], c["winner"],
        _ci({"m": c["entries"][0]["mean"], "m_ci95": c["entries"][0]["ci95"]}, "m", ".4f"),
        ", ".join(c["tied_with_winner"]) or "none",
        "; ".join(behind(e) for e in c["entries"][1:]),
    )) for c in cells]


def ood_win_map(configs: Sequence[Config]) -> list[dict[str, Any]]:
    """`win_map` on each OOD set's accuracy, its cells' dataset named `<dataset> → <set>` (one panel each)."""
    cells = []
    for metric in ood_metrics(configs):
        if metric.startswith(robustness.OOD_ACC):
            name = metric[len(robustness.OOD_ACC):]
            cells += [c | {"dataset": f"{c['dataset']} → {name}"} for c in win_map(configs, metric)]
    return cells


def ood_section(configs: Sequence[Config]) -> dict[str, Any]:
    """What the report says out of distribution (ood.json, and the page's section): per configuration
    its test accuracy, each OOD set's accuracy and effective robustness (mean ± CI over seeds); the
    fitted lines; paired differences of every OOD measure; the win map on each set's accuracy; the
    rank correlations of the drift measures with the OOD measures across runs."""
    metrics = ood_metrics(configs)
    rows = [{"config": c.label, "strategy": c.strategy, "seeds": len(c.runs)}
            | {m: c.stats.get(m, (None, None))[0] for m in ("test_acc", *metrics)}
            | {f"{m}_ci95": _half(c.stats.get(m)) for m in ("test_acc", *metrics)} for c in configs]
    return {
        "metrics": metrics, "rows": rows,
        "fits": [dataclasses.asdict(f) for f in robustness.fits(configs)],
        "pairs": [p for m in metrics for p in paired_rows(configs, m)],
        "wins": ood_win_map(configs),
        "drift": robustness.drift_correlations(configs, metrics),
    }


def _half(stat: tuple[float, float] | None) -> float | None:
    return None if stat is None or math.isnan(stat[1]) else stat[1]


def _ood_html(section: dict[str, Any]) -> dict[str, Any] | None:
    """The OOD section's cells as text for the template; None without OOD measures."""
    metrics = section["metrics"]
    if not metrics:
        return None
    return {
        "head": ["configuration", "seeds", "test acc"] + [robustness.label(m) for m in metrics],
        "rows": [[r["config"], str(r["seeds"])] + [_ci(r, m, ".4f") for m in ("test_acc", *metrics)]
                 for r in section["rows"]],
        "fits": [f"{f['dataset']} → {f['ood']}: logit(OOD) = {f['intercept']:.3f} + {f['slope']:.3f} · logit(ID) "
                 f"over {f['points']} configurations" for f in section["fits"]],
        "pairs": [(p["a"], p["b"], robustness.label(p["metric"]), *_pair_cells([p])[0][3:]) for p in section["pairs"]],
        "wins": _win_cells(section["wins"]) if wins_worth_showing(section["wins"]) else None,
        "drift": [(str(d["dataset"]), d["per_class"], d["drift"], robustness.label(d["measure"]),
                   f"{d['rho']:+.2f}", f"{d['p']:.2g}", str(d["runs"])) for d in section.get("drift", [])],
    }


def ood_markdown(section: dict[str, Any]) -> str:
    """The OOD table (`ood_section`) as Markdown: test accuracy, each set's accuracy and effective
    robustness per configuration, mean ± 95% CI over seeds, then the fitted lines."""
    cells = _ood_html(section)
    if cells is None:
        return ""
    out = [("Out of distribution (mean ± 95% CI over seeds; effective robustness: OOD accuracy above the "
            "logit-scale fit across configurations):\n"), "| " + " | ".join(cells["head"]) + " |",
           "|---" * len(cells["head"]) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells["rows"]]
    out += [""] + [f"- {line}" for line in cells["fits"]]
    if cells["drift"]:
        out += ["", "Drift against out-of-distribution measures (Spearman's ρ across runs):", "",
                "| dataset | per class | drift | measure | ρ | p | runs |", "|---" * 7 + "|"]
        out += ["| " + " | ".join(row) + " |" for row in cells["drift"]]
    return "\n".join(out)


def console_summary(rows: Sequence[tuple[Path, RunRecord | dict[str, Any]]], metric: str = "test_acc",
                    markdown: bool = False) -> str:
    """The answer (`verdict.answer`) over the table of runs, and the duplicates left out of it: what
    `python -m src.report` and a multirun's end print. `rows` as `find_results` gives them (a dict
    for a folder with no record)."""
    runs = [Run(d, r) for d, r in rows if isinstance(r, RunRecord) and isinstance(r.strategy, str)
            and isinstance(r.seed, int) and not isinstance(r.seed, bool)]
    configs = group_configs(runs)
    names = run_names([d for d, _ in rows])
    notes = duplicate_notes(configs, names)
    table = format_table(rows, markdown=markdown, notes=notes)
    lines = answer(configs, metric)
    out = "\n".join(lines) + "\n\n" + table if lines else table
    return out + ("\n\n" + duplicates_line(notes, names) if notes else "")


def duplicate_notes(configs: Sequence[Config], names: dict[Path, str]) -> dict[Path, str]:
    """Run folder -> "duplicate of <folder>", for every completed run that repeats a configuration and
    seed another run already has (`analysis.Duplicate`)."""
    return {d.run.dir: f"duplicate of {names.get(d.kept.dir, d.kept.dir.name)}" for c in configs for d in c.duplicates}


def duplicates_line(notes: dict[Path, str], names: dict[Path, str]) -> str:
    return (f"{len(notes)} duplicate run(s) not counted (same configuration and seed as a run already counted; the "
            f"first in folder order is kept): " + "; ".join(f"{names.get(d, d.name)} is a {n}" for d, n in notes.items()))


def render_html(runs: Sequence[Run], rows: list[dict[str, Any]], figures: dict[str, Path], dirs: Sequence[Path],
                metric: str, pairs: Sequence[dict[str, Any]] = (), cells: Sequence[dict[str, Any]] = (),
                skipped: Sequence[SkippedFile] = (), headline: Sequence[str] = (), ood: dict[str, Any] | None = None,
                missing: dict[str, str] | None = None, configs: Sequence[Config] = ()) -> str:
    """The report page (templates/report.html.j2), its figures embedded as data URIs so that the
    HTML file alone can be passed on. A figure in `missing` (name -> why) is a note in its place;
    `configs`' duplicate runs are noted in the table of all runs."""
    states = Counter(r.result.status or "?" for r in runs)
    names = run_names([r.dir for r in runs])
    notes = duplicate_notes(configs, names)
    per_run = format_table([(r.dir, r.result) for r in runs], markdown=True, notes=notes).splitlines()
    return _TEMPLATES.get_template("report.html.j2").render(
        missing=dict(missing or {}), duplicates=duplicates_line(notes, names) if notes else None,
        headline=list(headline), n_runs=len(runs), states=", ".join(f"{v} {k}" for k, v in sorted(states.items())),
        dirs=", ".join(str(d) for d in dirs), written=datetime.now().isoformat(timespec="seconds"),
        skipped=[str(b) for b in skipped], several=any(r["seeds"] > 1 for r in rows),
        metric_name=plots.METRIC_LABEL.get(metric, metric),
        images={name: base64.b64encode(path.read_bytes()).decode() for name, path in figures.items()},
        summary_head=SUMMARY_HEAD, summary_rows=_summary_cells(rows),
        wins_rows=_win_cells(cells) if wins_worth_showing(cells) else None, pair_rows=_pair_cells(pairs),
        run_head=[h.strip() for h in per_run[0].strip("|").split("|")],
        run_rows=[[c.strip() for c in line.strip("|").split("|")] for line in per_run[2:]],
        ood=_ood_html(ood) if ood else None,
    )


def write_report(dirs: Sequence[Path], out: Path, metric: str = "test_acc", runs: Sequence[Run] | None = None,
                 skipped: Sequence[SkippedFile] = (), missing: dict[str, str] | None = None) -> Path:
    """Analyse every run under `dirs`; write index.html, the PNGs, summary.json, paired.json and
    verdict.json (the answer's structure, `verdict.as_json`) into `out`. `runs` and `skipped` as
    `load_runs` gave them to a caller that has shown the skipped files already; without `runs`,
    they are loaded here and skipped files logged as warnings. A figure that cannot be drawn is left
    out of the page with a note, and named in `missing` (name -> why)."""
    if runs is None:
        runs = load_runs(dirs)
    configs = group_configs(runs)
    if not configs:
        raise ValueError(f"no completed run under {', '.join(map(str, dirs))}")
    if not any(metric in c.stats for c in configs):
        raise ValueError(f"--metric {metric}: no completed configuration has a number for it in every seed's result.json")
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(configs, metric)
    cells = win_map(configs, metric)
    missing = {} if missing is None else missing
    figures = write_figures(configs, out, metric, cells, missing)
    write_json(out / "summary.json", rows)
    pairs = paired_rows(configs, metric)
    write_json(out / "paired.json", pairs)
    found = verdicts(configs, metric)
    write_json(out / "verdict.json", as_json(found))
    if wins_worth_showing(cells):
        write_json(out / "wins.json", cells)
    else:  # not from an earlier report into the same folder
        for stale in (out / "wins.png", out / "wins.json"):
            stale.unlink(missing_ok=True)
    ood = ood_section(configs)
    if ood["metrics"]:
        write_json(out / "ood.json", ood)
    else:
        for stale in (out / "ood.png", out / "wins_ood.png", out / "ood.json"):
            stale.unlink(missing_ok=True)
    page = out / "index.html"
    write_text(page, render_html(runs, rows, figures, dirs, metric, pairs, cells, skipped, render(found), ood,
                                 missing, configs))
    return page


def publish(dirs: Sequence[Path], out: Path, logger: LoggerConfig, group: str, metric: str = "test_acc",
            problems: list[str] | None = None) -> Path | None:
    """After a multirun or a sweep: the HTML report into `out`, and the study's summary to W&B (a run
    of job type "summary" in the study's group, tagged with every strategy, dataset and model in
    it: see `_log_summary`). Never raises: the runs themselves are already saved, and a failed
    summary must not turn a finished study into a failure. What went wrong goes into `problems`
    (one line each, for the caller to print: no report, a figure not drawn), or the log without it."""
    def problem(line: str) -> None:
        log.warning("%s", line) if problems is None else problems.append(line)

    skipped: list[SkippedFile] = []
    missing: dict[str, str] = {}
    try:
        runs = load_runs(dirs, skipped)
        for bad in skipped:
            log.warning("skipped %s", bad)
        page = write_report(dirs, out, metric, runs, skipped, missing)
    except Exception as err:
        problem(f"no report written in {out} ({type(err).__name__}: {_first_line(err)})")
        return None
    for name, why in missing.items():
        problem(f"report {page}: figure {name} not drawn ({why})")
    if logger.kind == "none":
        return page
    try:
        configs = group_configs(runs)
        tags = list(dict.fromkeys(t for r in runs for t in run_tags(r.result)))
        tracker = make_tracker(dataclasses.replace(logger, group=group), out, f"{group}-summary",
                               {"dirs": [str(d) for d in dirs], "metric": metric}, "summary", tags=tags)
        try:
            _log_summary(tracker, runs, configs, metric, out, skipped)
        finally:  # a summary that failed half-way is still closed, not left open in the W&B service
            tracker.finish()
    except Exception as err:
        problem(f"W&B summary not logged ({type(err).__name__}: {_first_line(err)})")
    return page


# The measures of each run in the W&B `runs` table, after its settings (CONFIG_KEYS and the strategy's knobs).
RUN_MEASURES = ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s", "trainable_params",
                "peak_mem_mb")


def _log_summary(tracker: Tracker, runs: Sequence[Run], configs: Sequence[Config], metric: str, out: Path,
                 skipped: Sequence[SkippedFile]) -> None:
    """The study's summary run: the runs and configurations as tables (every recorded setting of a
    run a column, the strategy's knobs included), the Pareto front as a table and a chart on a log
    cost axis, accuracy against FLOPs, the mean validation curves, and the report's figures."""
    rows = summary_rows(configs, metric)
    found = verdicts(configs, metric)
    # first, so that a table or chart that fails later cannot cost it: the page's answer, and its
    # structure (who is tied with whom, on what evidence) for dashboards
    tracker.summary({"n_runs": len(runs), "n_configs": len(configs), "metric": metric,
                     "pareto_configs": [r["config"] for r in rows if r["pareto"]], "answer": " ".join(render(found)),
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
    label = plots.METRIC_LABEL.get(metric, metric)
    tracker.pareto("pareto_front", [r for r in rows if r["pareto"]], metric, "train_flops",
                   f"Pareto front: {label} against log10 train FLOPs")
    tracker.scatter("accuracy_vs_flops", rows, "train_flops", metric, f"{label} against log10 train FLOPs", log_x=True)
    with_curves = [c for c in configs if all(r.metrics for r in c.runs)]
    if with_curves:  # W&B's line_series fails on no lines, and a failure stops the rest of the summary
        curves = [mean_curve(c.runs) for c in with_curves]
        tracker.lines("val_acc_curves", [c[0] for c in curves], [c[1] for c in curves],
                      [c.label for c in with_curves], "validation accuracy by epoch (mean over seeds)")
    tracker.images({name: out / f"{name}.png" for name in FIGURES if (out / f"{name}.png").is_file()})


def _knobs(run: Run) -> dict[str, Any]:
    params = run.result.strategy_params
    return dict(params) if isinstance(params, dict) else {"strategy_params": params}


class FolderError(Exception):
    """The report cannot go where it was asked to: str() is the one line to print."""


def report_folder(out: Path | None, first: Path) -> tuple[Path, bool]:
    """The folder the command-line report goes into, and whether this call created it. `--out` must
    be a new or empty folder: one that holds files (an earlier report) is refused, not overwritten.
    Without `--out`: `<first DIR>/report`, or `report_1`, `report_2`, ... when an earlier report is
    there, so that a report of other folders (`src.report A B`) never replaces A's own. mkdir is
    atomic, so two reports started at once get two folders. FolderError when it cannot be written."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise FolderError(f"--out {out} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()):
            raise FolderError(f"--out {out} already holds files (an earlier report?); nothing was overwritten: "
                              "give a new or empty folder")
        created = not out.exists()
        _writable(out, "--out")
        return out, created
    for n in range(1000):
        folder = first / ("report" if n == 0 else f"report_{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise FolderError(f"cannot create the report folder {folder} ({err.strerror or err}); "
                              "give one with --out FOLDER") from None
        _writable(folder, "the report folder")
        return folder, True
    raise FolderError(f"{first} already holds report ... report_999; give a folder with --out FOLDER")


def _writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise FolderError(f"cannot write {what} {folder} ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run, multirun or sweep folders")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--out", type=Path, help="report folder, new or empty (default: DIR/report of the first DIR, "
                                                 "or DIR/report_1, ... when that holds an earlier report)")
    parser.add_argument("--metric", default="test_acc", choices=("test_acc", "val_acc", "test_balanced_acc"),
                        help="the accuracy plotted against cost (default: test_acc)")
    parser.add_argument("--no-html", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    skipped: list[SkippedFile] = []
    runs = load_runs(args.dirs, skipped)
    for bad in skipped:  # each on its own line, before the table, so a truncated file is not missed
        print(f"warning: skipped {bad}", file=sys.stderr)
    if not runs:
        unreadable = f" ({len(skipped)} unreadable, above)" if skipped else ""
        print(f"error: no readable result.json under {', '.join(map(str, args.dirs))}{unreadable}", file=sys.stderr)
        return 2
    print(console_summary([(r.dir, r.result) for r in runs], args.metric, markdown=args.markdown))
    if args.markdown and wins_worth_showing(cells := win_map(group_configs(runs), args.metric)):
        print("\n" + wins_markdown(cells))
    if args.markdown and (ood := ood_markdown(ood_section(group_configs(runs)))):
        print("\n" + ood)
    if args.no_html:
        return 0
    try:
        out, created = report_folder(args.out, args.dirs[0])
    except FolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    figures_missing: dict[str, str] = {}
    try:
        page = write_report(args.dirs, out, args.metric, runs, skipped, figures_missing)
    except (ValueError, OSError) as err:
        if created:
            _remove_if_empty(out)
        why = str(err) if isinstance(err, ValueError) else f"report not written in {out} ({err.strerror or err})"
        print(f"error: {why}", file=sys.stderr)
        return 1
    for name, why in figures_missing.items():
        print(f"warning: figure {name} not drawn ({why}); the page says so in its place", file=sys.stderr)
    print(f"report: {page}", file=sys.stderr)
    return 0


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty one: never anything a report had written before
    except OSError:
        pass
