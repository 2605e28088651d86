"""The HTML report: its figures (PNGs beside the page, embedded in it too, so that the HTML file alone
can be mailed or attached), the page itself, and the JSON files beside it (summary, paired, verdict,
wins, ood). A figure that cannot be drawn is a note in its place; the page is written."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from src.record.io import SkippedFile, format_table, run_names, write_json, write_text
from src.reporting import plots
from src.reporting.comparisons import METRIC_LABEL, paired_rows, summary_rows, win_map
from src.reporting.configs import Config, group_configs, ood_metrics
from src.reporting.drawing import save_figures
from src.reporting.ood_section import ood_cells, ood_section, ood_win_map
from src.reporting.per_class import confusion_figure, per_class_section
from src.reporting.runs import Run, load_runs, resume_hint, unfinished_runs
from src.reporting.search import SearchView, find_searches, search_json
from src.reporting.tables import (
    SUMMARY_HEAD, duplicate_notes, duplicates_line, pair_cells, summary_cells, win_cells, wins_worth_showing,
)
from src.reporting.verdict import as_json, long_ties, render, verdicts

log = logging.getLogger(__name__)

FIGURES = ("pareto", "curves", "schedules", "drift", "wins", "ood", "wins_ood", "confusion", "importance", "slice",
           "search_front")  # "wins" only for several tasks, "ood" only with dataset.ood runs, "wins_ood" with both,
# "confusion" with per-class results, the last three for a sweep's folder (its Optuna study)
# Autoescaped: run names, folder names and file paths are text, whatever characters they hold.
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("src.reporting", "templates"), autoescape=True, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined)


def write_figures(configs: Sequence[Config], out: Path, metric: str,
                  cells: Sequence[dict[str, Any]] = (), missing: dict[str, str] | None = None,
                  search: SearchView | None = None) -> dict[str, Path]:
    """Draw and save each figure the report shows; {name: PNG}. A figure that fails to draw or save
    is left out, with its one-line reason in `missing`, and its PNG from an earlier report in `out`
    is removed: the page is written without it and says so, rather than not at all."""
    drawers = {"pareto": lambda: plots.pareto(configs, metric), "curves": lambda: plots.curves(configs),
               "schedules": lambda: plots.schedules(configs), "drift": lambda: plots.drift(configs)}
    if wins_worth_showing(cells):
        drawers["wins"] = lambda: plots.win_map(cells)
    if ood_metrics(configs):
        drawers["ood"] = lambda: plots.ood(configs)
        if wins_worth_showing(ood_cells := ood_win_map(configs)):
            drawers["wins_ood"] = lambda: plots.win_map(ood_cells)
    if per_class_section(configs) is not None:
        drawers["confusion"] = lambda: confusion_figure(configs)
    if search is not None:
        from src.reporting import search_plots

        drawers |= {"importance": lambda: search_plots.importance(search), "slice": lambda: search_plots.slices(search),
                    "search_front": lambda: search_plots.front(search)}
    paths = {}
    for name, outcome in save_figures(drawers, out).items():  # in worker processes where it can
        if isinstance(outcome, Path):
            paths[name] = outcome
        elif missing is None:
            log.warning("figure %s not drawn (%s)", name, outcome)
        else:  # the caller says it, once
            missing[name] = outcome
    return paths


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def render_html(runs: Sequence[Run], rows: list[dict[str, Any]], figures: dict[str, Path], dirs: Sequence[Path],
                metric: str, pairs: Sequence[dict[str, Any]] = (), cells: Sequence[dict[str, Any]] = (),
                skipped: Sequence[SkippedFile] = (), headline: Sequence[str] = (), ood: dict[str, Any] | None = None,
                missing: dict[str, str] | None = None, configs: Sequence[Config] = (),
                search: dict[str, Any] | None = None, ties: Sequence[tuple[str, list[str]]] = (),
                unfinished: Sequence[Path] = ()) -> str:
    """The report page (templates/report.html.j2), its figures embedded as data URIs so that the
    HTML file alone can be passed on. A figure in `missing` (name -> why) is a note in its place;
    `configs`' duplicate runs are noted in the table of all runs; `ties` (`verdict.long_ties`) are
    listed in full under the answer, which only counts them; `unfinished` (run folders without
    result.json: `runs.unfinished_runs`) are named in a note."""
    states = Counter(r.result.status or "?" for r in runs)
    names = run_names([r.dir for r in runs])
    notes = duplicate_notes(configs, names)
    per_run = format_table([(r.dir, r.result) for r in runs], markdown=True, notes=notes).splitlines()
    return _TEMPLATES.get_template("report.html.j2").render(
        missing=dict(missing or {}), duplicates=duplicates_line(notes, names) if notes else None,
        headline=list(headline), ties=list(ties), n_runs=len(runs), states=", ".join(f"{v} {k}" for k, v in sorted(states.items())),
        dirs=", ".join(str(d) for d in dirs), written=datetime.now().isoformat(timespec="seconds"),
        skipped=[str(b) for b in skipped], unfinished=[(str(d), resume_hint(d)) for d in unfinished], several=any(r["seeds"] > 1 for r in rows),
        metric_name=METRIC_LABEL.get(metric, metric),
        images={name: base64.b64encode(path.read_bytes()).decode() for name, path in figures.items()},
        summary_head=SUMMARY_HEAD, summary_rows=summary_cells(rows),
        wins_rows=win_cells(cells) if wins_worth_showing(cells) else None, pair_rows=pair_cells(pairs),
        run_head=[h.strip() for h in per_run[0].strip("|").split("|")],
        run_rows=[[c.strip() for c in line.strip("|").split("|")] for line in per_run[2:]],
        ood=ood_cells(ood) if ood else None, per_class=_per_class_cells(configs), search=_search_cells(search),
    )


def _search_cells(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """The search section's tables as text: importances per objective, the front with its parameters."""
    if found is None:
        return None
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    importance = [[objective, found["methods"][objective], ", ".join(f"{p.split('.')[-1]} {v:.2f}" for p, v in
                                                                     found["importances"][objective].items()) or "–"]
                  for objective in found["objectives"]]
    front = [[f"#{row['trial']}", *(fmt(row[o]) for o in found["objectives"]),
              ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in row["params"].items())] for row in found["front"]]
    return {"study": found["study"], "trials": found["completed_trials"], "objectives": found["objectives"],
            "importance": importance, "front": front}


def _per_class_cells(configs: Sequence[Config]) -> dict[str, Any] | None:
    """The per-class section's tables as text cells: recall per class (one row per configuration,
    when they share their classes) and each configuration's most confused pairs."""
    found = per_class_section(configs)
    if found is None:
        return None
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    recall = None
    if found["classes"] is not None:
        recall = {"head": ["configuration", *found["classes"]],
                  "rows": [[e["config"], *map(pct, e["recall"])] for e in found["entries"]]}
    pairs = [[e["config"], f"{p['true']} → {p['predicted']}", str(p["count"]), pct(p["share"])]
             for e in found["entries"] for p in e["pairs"]]
    return {"split": found["split"], "recall": recall, "pairs": pairs}


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
    searches = find_searches(dirs)
    search = searches[0] if searches else None  # one study's figures: a report is usually one sweep's folder
    figures = write_figures(configs, out, metric, cells, missing, search)
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
    explained = search_json(search) if search is not None else None
    _write_optional(out, {"ood": ood if ood["metrics"] else None, "search": explained,
                          "per_class": per_class_section(configs)})
    page = out / "index.html"
    write_text(page, render_html(runs, rows, figures, dirs, metric, pairs, cells, skipped, render(found), ood,
                                 missing, configs, explained, long_ties(found), unfinished_runs(dirs)))
    return page


# The files of each optional section: written with it, removed without it (not left from an earlier report).
_OPTIONAL_FILES = {"ood": ("ood.png", "wins_ood.png"), "search": ("importance.png", "slice.png", "search_front.png"),
                   "per_class": ("confusion.png",)}


def _write_optional(out: Path, sections: dict[str, Any]) -> None:
    """`<name>.json` of each section that has something; its files removed where it has nothing."""
    for name, data in sections.items():
        if data is not None:
            write_json(out / f"{name}.json", data)
        else:
            for stale in (*_OPTIONAL_FILES[name], f"{name}.json"):
                (out / stale).unlink(missing_ok=True)
