"""The report's out-of-distribution section: per configuration each OOD set's accuracy and effective
robustness, the fitted lines, paired differences, the win map on each set, and the drift measures'
rank correlations with them; as numbers (ood.json), as the page's cells, and as Markdown."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from src.reporting import robustness
from src.reporting.comparisons import paired_rows, win_map
from src.reporting.configs import Config, ood_metrics
from src.reporting.tables import ci_text, pair_cells, win_cells, wins_worth_showing

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


def ood_cells(section: dict[str, Any]) -> dict[str, Any] | None:
    """The OOD section's cells as text for the template; None without OOD measures."""
    metrics = section["metrics"]
    if not metrics:
        return None
    return {
        "head": ["configuration", "seeds", "test acc"] + [robustness.label(m) for m in metrics],
        "rows": [[r["config"], str(r["seeds"])] + [ci_text(r, m, ".4f") for m in ("test_acc", *metrics)]
                 for r in section["rows"]],
        "fits": [f"{f['dataset']} → {f['ood']}: logit(OOD) = {f['intercept']:.3f} + {f['slope']:.3f} · logit(ID) "
                 f"over {f['points']} configurations" for f in section["fits"]],
        "pairs": [(p["a"], p["b"], robustness.label(p["metric"]), *pair_cells([p])[0][3:]) for p in section["pairs"]],
        "wins": win_cells(section["wins"]) if wins_worth_showing(section["wins"]) else None,
        "drift": [(str(d["dataset"]), d["per_class"], d["drift"], robustness.label(d["measure"]),
                   f"{d['rho']:+.2f}", f"{d['p']:.2g}", f"{d['p_holm']:.2g}", f"{d['runs']} ({d['configs']})")
                  for d in section.get("drift", [])],
    }


def ood_markdown(section: dict[str, Any]) -> str:
    """The OOD table (`ood_section`) as Markdown: test accuracy, each set's accuracy and effective
    robustness per configuration, mean ± 95% CI over seeds, then the fitted lines."""
    cells = ood_cells(section)
    if cells is None:
        return ""
    out = [("Out of distribution (mean ± 95% CI over seeds; effective robustness: OOD accuracy above the "
            "logit-scale fit across configurations):\n"), "| " + " | ".join(cells["head"]) + " |",
           "|---" * len(cells["head"]) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells["rows"]]
    out += [""] + [f"- {line}" for line in cells["fits"]]
    if cells["drift"]:
        out += ["", "Drift against out-of-distribution measures (Spearman's ρ across runs):", "",
                "| dataset | per class | drift | measure | ρ | p | p (Holm) | runs (configurations) |", "|---" * 8 + "|"]
        out += ["| " + " | ".join(row) + " |" for row in cells["drift"]]
    return "\n".join(out)
