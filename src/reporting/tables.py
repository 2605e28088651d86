"""The report's tables as text: cells for the page's template, the console summary that opens with the
answer, duplicate runs noted, and the win map as Markdown. Numbers as mean ± 95% CI over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.record.io import format_table, run_names, si
from src.record.schema import RunRecord
from src.reporting.comparisons import COST_SHORT, METRIC_LABEL
from src.reporting.configs import Config, group_configs
from src.reporting.runs import Run, measure_range
from src.reporting.stats import Range, difference_range, format_ci, within
from src.reporting.verdict import answer

SUMMARY_HEAD = ("configuration", "seeds", "val acc", "test acc", "test bal acc", "train FLOPs", "train s",
                "trainable", "peak MiB", "ImageNet agree", "Pareto front on")


def ci_text(row: dict[str, Any], key: str, fmt: str, bounds: Range | None = None) -> str:
    """`row[key]` as "mean ± half-width" (`row[key_ci95]`, left out when None) in `fmt` ("si": with
    an SI prefix), the interval cut at the measure's range (`bounds`, by default `measure_range(key)`:
    `stats.format_ci`); "-" when the row has no value."""
    if row.get(key) is None:
        return "-"
    half = row.get(f"{key}_ci95")
    return format_ci(row[key], math.nan if half is None else half, bounds=measure_range(key) if bounds is None else bounds,
                     number=si if fmt == "si" else lambda x: f"{x:{fmt}}")


def wins_worth_showing(cells: Sequence[dict[str, Any]]) -> bool:
    """The which-strategy-wins map needs several tasks (datasets or training-set sizes) and a choice in them."""
    return len(cells) > 1 and any(len(c["entries"]) > 1 for c in cells)


def wins_markdown(cells: Sequence[dict[str, Any]]) -> str:
    """The which-strategy-wins map as Markdown tables, one per dataset: mean ± 95% CI over seeds,
    ★ the winner, ≈ tied with it (paired test, Holm-adjusted p ≥ 0.05)."""
    out = []
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        mine = [c for c in cells if c["dataset"] == dataset]
        names = sorted({e["config"] for c in mine for e in c["entries"]})  # variants of a strategy side by side
        metric = METRIC_LABEL.get(mine[0]["metric"], mine[0]["metric"])
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
                if e["mean"] is None:  # no number on some seed (`comparisons.win_map`): tied, as it may be the best
                    cols.append(f"– ({e['missing']}){mark}")
                    continue
                cols.append(format_ci(e["mean"], math.nan if e["ci95"] is None else e["ci95"], 3, measure_range(c["metric"])) + mark)
            out.append(f"| {name} | " + " | ".join(cols) + " |")
        out.append("")
    return "\n".join(out)


def summary_cells(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(
        r["config"], str(r["seeds"]), ci_text(r, "val_acc", ".4f"), ci_text(r, "test_acc", ".4f"),
        ci_text(r, "test_balanced_acc", ".4f"), ci_text(r, "train_flops", "si"), ci_text(r, "train_time_s", ".1f"),
        si(r.get("trainable_params")), ci_text(r, "peak_mem_mb", ".0f"),
        ci_text(r, "imagenet_agreement", ".3f"), ", ".join(COST_SHORT[c] for c, on in r["pareto_by_cost"].items() if on),
    ) for r in rows]


def pair_cells(pairs: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(
        p["a"], p["b"], ", ".join(map(str, p["seeds"])),
        # no CI: the same difference on every seed, whose p is the sign test's (stats.paired)
        format_ci(p["diff"], p["ci95"], bounds=difference_range(measure_range(p["metric"])), number=lambda x: f"{x:+.4f}"),
        f"{p['p']:.3g}" + (" (sign test)" if math.isnan(p["ci95"]) else ""), f"{p['p_holm']:.3g}",
    ) for p in pairs]


def win_cells(cells: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    def behind(e: dict[str, Any], metric: str, most: int) -> str:
        if e["mean"] is None:  # no number on some seed: not compared (`comparisons.win_map`)
            return f"{e['config']} ({e['missing']}: not compared)"
        # ahead of the winner on the seeds they share (unequal seeds): "+", not "−-"
        gap = f"{e['config']} {'−' if e['behind'] >= 0 else '+'}{100 * abs(e['behind']):.1f}"
        if e.get("behind_ci95") is None:
            return gap
        # paired on fewer seeds than the means beside it (unequal seeds): said, as the answer does
        common = f", on their {e['common_seeds']} common seeds" if e.get("common_seeds", most) < most else ""
        if math.isnan(e["behind_ci95"]):  # the same gap on every seed: no CI, the sign test's p
            return f"{gap} on every seed (p={e['p']:.2g}, sign test, Holm {e['p_holm']:.2g}{common})"
        # where ± would run past what a gap of this measure can be, the ends of the CI of its points
        # above the winner, cut there (`stats.within`)
        low, high = within(-e["behind"], e["behind_ci95"], difference_range(measure_range(metric)))
        cut = (low, high) != (-e["behind"] - e["behind_ci95"], -e["behind"] + e["behind_ci95"])
        ci = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if cut else f" ± {100 * e['behind_ci95']:.1f}"
        return f"{gap}{ci} (p={e['p']:.2g}, Holm {e['p_holm']:.2g}{common})"

    return [tuple(str(x) for x in (
        c["dataset"], c["train_per_class"], c["train_samples"], c["winner"],
        ci_text({"m": c["entries"][0]["mean"], "m_ci95": c["entries"][0]["ci95"]}, "m", ".4f", measure_range(c["metric"])),
        ", ".join(c["tied_with_winner"]) or "none",
        "; ".join(behind(e, c["metric"], max(e["seeds"], c["entries"][0]["seeds"])) for e in c["entries"][1:]),
    )) for c in cells]


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
    # one answer per dataset: in Markdown, lines without a blank one between run into one paragraph
    out = ("\n\n" if markdown else "\n").join(lines) + "\n\n" + table if lines else table
    return out + ("\n\n" + duplicates_line(notes, names) if notes else "")


# The note of a run on the seed a sweep trial of its configuration was chosen on (`Config.selected_on`).
SELECTED_ON = "a sweep chose this configuration on this seed: its other seeds count"


def duplicate_notes(configs: Sequence[Config], names: dict[Path, str]) -> dict[Path, str]:
    """Run folder -> why a completed run is not counted: "duplicate of <folder>" for one that repeats a
    configuration and seed another run already has (`configs.Duplicate`); SELECTED_ON for a run on the
    seed a sweep trial of its configuration was chosen on, where it has other seeds (`configs.Config.selected_on`)."""
    notes = {d.run.dir: f"duplicate of {names.get(d.kept.dir, d.kept.dir.name)}" for c in configs for d in c.duplicates}
    return notes | {r.dir: SELECTED_ON for c in configs for r in c.selected_on}


def duplicates_line(notes: dict[Path, str], names: dict[Path, str]) -> str:
    """One line per kind of run `duplicate_notes` left out, naming each."""
    dup = {d: n for d, n in notes.items() if n != SELECTED_ON}
    chosen = [d for d, n in notes.items() if n == SELECTED_ON]
    lines = [f"{len(dup)} duplicate run(s) not counted (same configuration and seed as a run already counted; the "
             f"first in folder order is kept): " + "; ".join(f"{names.get(d, d.name)} is a {n}" for d, n in dup.items())] \
        if dup else []
    if chosen:
        lines.append(f"{len(chosen)} run(s) not counted on the seed a sweep chose their configuration on (counting them "
                     f"would count that luck again; its re-runs and other seeds are the measure): "
                     + ", ".join(names.get(d, d.name) for d in chosen))
    return " ".join(lines)

