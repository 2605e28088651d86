"""Per-class results in the report: each configuration's confusion matrix (summed over its seeds),
its per-class recall and the class pairs it confuses most, from result.json's `per_class` block
(src/training/record.py). Runs written before that block existed have none and are left out here;
the rest of the report does not need it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from src.reporting.configs import Config

__all__ = ["confused_pairs", "confusion_figure", "per_class_section", "pooled_confusion"]


def pooled_confusion(config: Config, split: str = "test") -> tuple[list[str], list[list[int]]] | None:
    """The configuration's `split` confusion matrix summed over its seeds, with the class names; None
    when a seed has none or the seeds disagree on the classes (nothing to add up)."""
    classes: list[str] | None = None
    total: list[list[int]] | None = None
    for run in config.runs:
        block = run.result.per_class if isinstance(run.result.per_class, dict) else {}
        names, matrix = block.get("classes"), _confusion(block, split)
        if matrix is None or (classes is not None and names != classes):
            return None
        classes = names
        total = matrix if total is None else [[a + b for a, b in zip(r, s)] for r, s in zip(total, matrix)]
    return (classes, total) if classes is not None and total is not None else None


def _confusion(block: dict[str, Any], split: str) -> list[list[int]] | None:
    """The block's `split` confusion matrix if it is one: a count per pair of its class names (a
    list of strings). A file edited or rotted into another shape (`"test": 5`, a cell "x", a row
    short) is left out as a run without the block is, rather than end the whole report in a
    traceback."""
    names = block.get("classes")
    part = block.get(split)
    matrix = part.get("confusion") if isinstance(part, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    rows_ok = isinstance(matrix, list) and len(matrix) == len(names) and all(
        isinstance(row, list) and len(row) == len(names) for row in matrix)
    counts_ok = rows_ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for row in matrix for n in row)
    return matrix if counts_ok else None


def confused_pairs(classes: Sequence[str], matrix: Sequence[Sequence[int]], top: int = 5) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images, most first: a true class called another. `share`
    is the fraction of the true class's images that went there."""
    cells = [(n, i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": n, "share": n / sum(matrix[i])}
            for n, i, j in cells[:top]]


def recalls(matrix: Sequence[Sequence[int]]) -> list[float | None]:
    """Each class's recall (its accuracy) from a confusion matrix; None for a class with no images."""
    return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]


def per_class_section(configs: Sequence[Config], split: str = "test", top: int = 5) -> dict[str, Any] | None:
    """What the page's per-class section shows, or None when no configuration has per-class results:
    per configuration, its recall per class and its most confused pairs on `split`."""
    entries = []
    for cfg in configs:
        pooled = pooled_confusion(cfg, split)
        if pooled is None:
            continue
        classes, matrix = pooled
        entries.append({"config": cfg.label, "classes": classes, "recall": recalls(matrix),
                        "pairs": confused_pairs(classes, matrix, top), "images": sum(map(sum, matrix))})
    if not entries:
        return None
    same = all(e["classes"] == entries[0]["classes"] for e in entries)
    return {"split": split, "entries": entries, "classes": entries[0]["classes"] if same else None}


def confusion_figure(configs: Sequence[Config], split: str = "test", limit: int = 6) -> Figure:
    """One panel per configuration (at most `limit`): its `split` confusion matrix over its seeds,
    each row divided by the true class's images (so the diagonal is each class's recall), counts
    written in the cells when there are few enough classes to read them; a blank cell is 0 (most
    cells of a good model: written, their 0s hid its mistakes and took almost a third of the figure's
    drawing time, 3.3 -> 2.3 s for six panels of ten classes)."""
    import matplotlib.pyplot as plt

    from src.reporting.plots import plain

    shown = [(cfg, p) for cfg in configs if (p := pooled_confusion(cfg, split)) is not None][:limit]
    if not shown:
        fig, ax = plt.subplots(figsize=(5, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no per-class results in these runs", ha="center")
        return fig
    n = max(len(classes) for _, (classes, _) in shown)
    side = min(6.0, 1.6 + 0.35 * n)
    fig, axes = plt.subplots(1, len(shown), figsize=(side * len(shown) + 1.2, side + 0.6), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (cfg, (classes, matrix)) in zip(axes[0], shown):
        rates = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in matrix]
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        if len(classes) <= 12:
            for i, row in enumerate(matrix):
                for j, count in ((j, c) for j, c in enumerate(row) if c):
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                            color="white" if rates[i][j] > 0.6 else "black")
        ticks = range(len(classes)) if len(classes) <= 30 else range(0, len(classes), max(1, len(classes) // 15))
        upright = max(len(classes[k]) for k in ticks) <= 3  # short names side by side, longer ones turned
        ax.set_xticks(list(ticks), [plain(classes[k]) for k in ticks], rotation=0 if upright else 90, fontsize=7)
        ax.set_yticks(list(ticks), [plain(classes[k]) for k in ticks], fontsize=7)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(plain(cfg.label), fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label=f"share of the true class's {split} images (blank: 0)", shrink=0.8)
    return fig
