"""The report's figures, drawn with matplotlib (PNG export needs no browser, unlike plotly's).

Each function takes configurations (`src.reporting.configs`) and returns a Figure; the caller saves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from src.reporting.comparisons import COSTS, METRIC_LABEL, task_groups  # noqa: E402
from src.reporting.configs import Config  # noqa: E402
from src.reporting import robustness, stats  # noqa: E402
from src.reporting.pareto import pareto_front  # noqa: E402
from src.reporting.runs import Run, lr_grid, mean_curve  # noqa: E402
from src.record.io import as_number  # noqa: E402

# One colour per strategy, stable across figures and reports.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
__all__ = ["METRIC_LABEL", "cost_axis", "curves", "drift", "epoch_axis", "legend_below", "log_ticks", "ood", "pareto",
           "plain", "schedules", "strategy_colors", "thinned", "win_map"]


def plain(text: object) -> str:
    """`text` as matplotlib should show it, character for character. Names come from configs, folders
    and OOD sets, and matplotlib reads any text with two `$` in it as mathtext: `a$b$c` was drawn
    with an italic b, and `w$\\notacommand$` made saving the figure fail (ValueError). An escaped
    `\\$` is drawn as `$` and starts no formula; every name that reaches a figure goes through here."""
    return str(text).replace("$", r"\$")


def strategy_colors(configs: Sequence[Config]) -> dict[str, str]:
    names = list(dict.fromkeys(c.strategy for c in configs))
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


# What the bars and bands of these figures are, in their legends: a reader of the figure alone (a PNG
# passed on, the W&B summary's images) had bars and shading and no word of what they held.
BARS = "bars: 95% CI of the mean over seeds (Student t)"
BAND = "band: 95% CI of the mean over seeds (Student t)"


def within(value: float, half: float, lo: float, hi: float = math.inf) -> list[list[float]] | None:
    """The error bar of value ± half (None for no interval: NaN) cut at the measure's range [lo, hi].
    With 2 seeds a t-interval's half-width is 12.7 standard errors: an accuracy's bar ran from -1 to
    2 and stretched the axis to match, a time's below 0. The range holds every value the measure can
    take, so the interval cut there still holds the mean as often as the whole one does."""
    if math.isnan(half):
        return None
    low, high = stats.within(value, half, (lo, hi))  # the ends the tables print (`stats.format_ci`)
    return [[value - low], [high - value]]


def pareto(configs: Sequence[Config], metric: str = "test_acc", costs: Sequence[str] = tuple(COSTS)) -> Figure:
    """Accuracy against each cost, one panel per cost; the Pareto front is the dashed step line and
    the ringed points. Points are configuration means; bars are 95% CIs when there are several seeds.
    Every cost axis is log-scaled (`cost_axis`); a sweep trial's point carries its number (#7); the
    legend sits outside the panels, so it covers no point."""
    colors = strategy_colors(configs)
    # A configuration with a seed that recorded no number (null) for a measure has no mean for it:
    # each panel shows the configurations it can place, and a panel no configuration fits is left out.
    configs = [cfg for cfg in configs if metric in cfg.stats]
    costs = [c for c in costs if any(c in cfg.stats for cfg in configs)]
    if not costs:
        fig, ax = plt.subplots(figsize=(5, 1), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, plain(f"no configuration has both {METRIC_LABEL.get(metric, metric)} and a cost"), ha="center")
        return fig
    fig, axes = plt.subplots(1, len(costs), figsize=(4.6 * len(costs) + 1.4, 3.9), squeeze=False, layout="constrained")
    for ax, cost in zip(axes[0], costs):
        placed = [cfg for cfg in configs if cost in cfg.stats]
        pts = [(cfg.stats[metric][0], cfg.stats[cost][0]) for cfg in placed]
        groups = task_groups(placed)  # one front per task: two datasets' accuracies are no measure of each other
        fronts = [[g[i] for i in pareto_front([pts[j] for j in g])] for g in groups]
        front = {i for f in fronts for i in f}
        for i, cfg in enumerate(placed):
            acc, acc_ci = cfg.stats[metric]
            x, x_ci = cfg.stats[cost]
            ax.errorbar(
                x, acc, yerr=within(acc, acc_ci, 0.0, 1.0), xerr=within(x, x_ci, 0.0),
                fmt="o", color=colors[cfg.strategy], ms=7 if i in front else 5, alpha=0.9, capsize=3,
                markeredgecolor="black" if i in front else colors[cfg.strategy], markeredgewidth=1.4 if i in front else 0.5,
            )
        for f in fronts:
            ax.step([pts[i][1] for i in f], [pts[i][0] for i in f], where="post", ls="--", color="black", lw=1, alpha=0.7,
                    zorder=0)
        for cfg, (acc, x) in zip(placed, pts):
            if cfg.trials:
                ax.annotate(", ".join(f"#{n}" for n in cfg.trials), (x, acc), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, color="#333")
        ax.margins(x=0.08, y=0.1)  # room for the trial numbers beside the outermost points
        cost_axis(ax, cost, [p[1] for p in pts])
        ax.set_ylabel(plain(METRIC_LABEL.get(metric, metric)))
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=plain(s)) for s, c in colors.items()]
    handles.append(plt.Line2D([], [], ls="--", color="black", label="Pareto front"))
    if any(len(cfg.runs) > 1 for cfg in configs):  # one seed each: no bars, none named
        handles.append(plt.Line2D([], [], marker="|", ls="", ms=10, color="black", label=BARS))
    legend_below(fig, handles=handles, labels=[h.get_label() for h in handles], fontsize=8)
    return fig


def legend_below(fig: Figure, ax=None, handles=None, labels=None, fontsize: float = 7) -> None:
    """The legend under the plot, outside every axes, in as many columns as the figure's width holds.
    The figure grows by the legend's height, so that the axes keep their size however many entries
    there are: a legend never squeezes the plot (constrained layout places it). No entries: none."""
    if handles is None:
        handles, labels = (ax or fig.axes[0]).get_legend_handles_labels()
    if not handles:
        return
    labels = list(labels or [])
    lines = [str(label).split("\n") for label in labels]  # a label of several lines is as wide as its longest
    width_in = max(len(line) for ls in lines for line in ls) * fontsize * 0.55 / 72 + 0.45  # marker and gap
    ncols = max(1, min(len(handles), int(fig.get_figwidth() // width_in)))
    rows = math.ceil(len(handles) / ncols)
    fig.set_figheight(fig.get_figheight() + rows * max(map(len, lines)) * fontsize * 1.7 / 72 + 0.2)
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=fontsize, frameon=False)


def cost_axis(ax, cost: str, values: Sequence[float]) -> None:
    """The x axis of a cost, alike in every cost plot: log-scaled (costs of fine-tuning strategies
    span orders of magnitude; a linear axis crowds the cheap ones into a corner), engineering
    notation for counts (2.7 T, not 2.7e12). A zero or negative cost, which a log axis cannot
    place, gets a symmetric log axis instead of being dropped."""
    ax.set_xscale("log" if all(v > 0 for v in values) else "symlog")
    log_ticks(ax.xaxis, values, plain_numbers=cost == "train_time_s")
    ax.set_xlabel(f"{COSTS.get(cost, cost)}, log scale")


def log_ticks(axis, values: Sequence[float], plain_numbers: bool = False) -> None:
    """Readable labelled ticks on a log axis, whatever its span: 1 per decade over two decades or
    more; 1, 2 and 5 per decade over less; and over less than `NARROW_DECADES` (240 to 300 G, where
    1-2-5 would leave no tick at all) a few evenly stepped ones. Counts in engineering notation (2.7 T),
    seconds and settings (`plain_numbers`) as plain numbers; the other minor ticks unlabelled (matplotlib labels them in scientific
    notation when a span is under two decades, and those labels ran into each other)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if positive and len(positive) == len(values):
        decades = math.log10(max(positive) / min(positive))
        if decades < NARROW_DECADES:
            axis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        else:
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}") if plain_numbers else EngFormatter())
    axis.set_minor_formatter(NullFormatter())


NARROW_DECADES = 0.6  # a log axis spanning less than this (a factor of 4) gets evenly stepped ticks


def epoch_axis(ax) -> None:
    """Epochs are whole numbers: ticks on integers only (and not so many that their labels touch)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins="auto"))


def thinned(labels: Sequence[str], room: int) -> list[int]:
    """The positions of `labels` to label when only `room` fit side by side: every k-th, the last kept."""
    step = max(1, math.ceil(len(labels) / max(1, room)))
    keep = list(range(0, len(labels), step))
    if keep and keep[-1] != len(labels) - 1 and len(labels) - 1 - keep[-1] >= step / 2:
        keep.append(len(labels) - 1)
    return keep


def curves(configs: Sequence[Config], key: str = "val_acc", train_key: str = "train_acc") -> Figure:
    """Validation accuracy per epoch, one line per configuration (mean over seeds, 95% CI band); beside
    it, on the same y axis, the training passes' own accuracy (`train_key`) where the runs recorded it,
    so that a gap that opens between the two (over-fitting) is visible."""
    colors = strategy_colors(configs)
    with_train = any(r.metrics and any(m.get(train_key) is not None for m in r.metrics) for c in configs for r in c.runs)
    keys = (key, train_key) if with_train else (key,)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys) + 1.0, 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    styles = ("-", "--", ":", "-.")
    banded = False
    for ax, shown in zip(axes[0], keys):
        seen: dict[str, int] = {}
        for cfg in configs:
            runs = [r for r in cfg.runs if r.metrics]
            if not runs:
                continue
            epochs, mean, half = mean_curve(runs, shown)
            k = seen.get(cfg.strategy, 0)
            seen[cfg.strategy] = k + 1
            ax.plot(epochs, mean, styles[k % len(styles)], marker=".", color=colors[cfg.strategy],
                    label=plain(f"{cfg.label} (n={len(runs)})"))
            if len(runs) > 1:  # cut at what an accuracy can be, as the bars and tables are (`stats.within`)
                # an epoch with no number (NaN) stays a gap: max(0, nan) is 0, and it drew a band from 0 to 1
                ends = [(m, m) if math.isnan(m) else stats.within(m, h, stats.SHARE) for m, h in zip(mean, half)]
                ax.fill_between(epochs, [lo for lo, _ in ends], [hi for _, hi in ends], color=colors[cfg.strategy],
                                alpha=0.15)
                banded = True
        ax.set_xlabel("epoch")
        epoch_axis(ax)
        ax.set_title(plain(TRAIN_ACC_LABEL if shown == train_key else METRIC_LABEL.get(shown, shown)), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if banded:  # grey: the band of every line alike, not one strategy's
        handles.append(Patch(color="black", alpha=0.15, label=BAND))
        labels.append(BAND)
    legend_below(fig, handles=handles, labels=labels)  # under the plot: inside it would cover the last epochs
    return fig


# The training passes' accuracy is not an evaluation: augmented inputs, train-mode model, weights moving.
TRAIN_ACC_LABEL = "training accuracy (during each epoch's training passes)"


def schedules(configs: Sequence[Config], limit: int = 6) -> Figure:
    """Per configuration: which layer group trains in which epoch, coloured by its LR (blank: frozen)."""
    shown: list[Run] = [cfg.runs[0] for cfg in configs if cfg.runs[0].groups][:limit]
    labels = [cfg.label for cfg in configs if cfg.runs[0].groups][:limit]
    if not shown:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no param_groups.json in these runs", ha="center")
        return fig
    grids = [lr_grid(r) for r in shown]
    positive = [v for _, g in grids for row in g for v in row if v > 0]
    norm = LogNorm(vmin=min(positive), vmax=max(positive)) if positive else None
    rows = max(len(names) for names, _ in grids)
    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 + 2.6 * len(shown), 0.32 * rows + 1.6),
                             squeeze=False, layout="constrained")
    image = None
    for ax, (names, grid), label in zip(axes[0], grids, labels):
        masked = [[v if v > 0 else float("nan") for v in row] for row in grid][::-1]  # head on top
        image = ax.imshow(masked, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_yticks(range(len(names)), [plain(n) for n in names[::-1]], fontsize=7)
        epochs = [str(e + 1) for e in range(len(grid[0]))]
        keep = thinned(epochs, int(2.4 / (0.075 * max(len(e) for e in epochs) + 0.06)))  # 7-pt digits in a 2.4 in panel
        ax.set_xticks(keep, [epochs[i] for i in keep], fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_title(plain(label), fontsize=8)
        ax.set_facecolor("#f2f2f2")
    if image is not None and norm is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="peak LR (blank: frozen)", shrink=0.9)
    return fig


def drift(configs: Sequence[Config]) -> Figure:
    """Per layer group (bottom to top): relative weight change from the pretrained weights and the
    linear CKA of the group's output with the pretrained model's, one line per configuration (mean
    over seeds). From result.json's `weight_change` and `cka` (src/drift.py)."""
    colors = strategy_colors(configs)
    shown = [c for c in configs if all(isinstance(r.result.weight_change, dict) and r.result.weight_change
                                       for r in c.runs)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.9), squeeze=False, layout="constrained")
    if not shown:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][0].text(0.5, 0.5, "no drift measures in these runs (trainer.drift_probe=0)", ha="center")
        return fig
    styles = ("-", "--", ":", "-.")
    seen: dict[str, int] = {}
    names: list[str] = []
    for cfg in shown:
        k = seen.get(cfg.strategy, 0)
        seen[cfg.strategy] = k + 1
        names = list(cfg.runs[0].result.weight_change or {})
        for ax, key in zip(axes[0], ("weight_change", "cka")):
            ys = [_group_mean(cfg.runs, key, g) for g in names]
            ax.plot(range(len(names)), ys, styles[k % len(styles)], marker="o", ms=4, color=colors[cfg.strategy],
                    label=plain(cfg.label))
    left, right = axes[0]
    left.set_yscale("symlog", linthresh=1e-4)  # frozen groups are exactly 0
    left.set_ylabel("‖W − W₀‖ / ‖W₀‖")
    right.set_ylabel("linear CKA with the pretrained model")
    keep = thinned(names, int(ax_width_in(fig, 2) / 0.16))  # rotated 7-pt labels: about 0.16 in apart
    for ax in (left, right):
        ax.set_xticks(keep, [plain(names[i]) for i in keep], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layer group (bottom to top)")
        ax.grid(alpha=0.3)
    legend_below(fig, right)
    return fig


def ax_width_in(fig: Figure, panels: int) -> float:
    """About how wide one of `panels` side-by-side axes is, in inches (for how many labels fit)."""
    return 0.8 * fig.get_figwidth() / panels


def _group_mean(runs: Sequence[Run], key: str, group: str) -> float:
    """Mean over the runs of result[key][group], over the runs with a number there (null is how a
    NaN was written: a group with zero norm); NaN, a gap in the line, where none has one."""
    values = [v for r in runs if isinstance(per_group := r.result.get(key), dict)
              and (v := as_number(per_group.get(group))) is not None]
    return sum(values) / len(values) if values else math.nan


def win_map(cells: Sequence[dict], cap_points: float = 10.0) -> Figure:
    """The "which strategy wins" map from `comparisons.win_map`: one panel per dataset, strategies as
    rows, training images per class as columns. Colour is how far a strategy is behind the cell's
    winner (in accuracy points, capped); the number is its mean accuracy. ★ marks the winner and
    ≈ the strategies whose paired difference to it is not significant over the seeds."""
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    names = sorted({e["config"] for c in cells for e in c["entries"]})  # variants of a strategy side by side
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(1.3 + 1.05 * _max_columns(cells) * max(1, len(datasets)),
                             1.2 + 0.45 * len(names)), squeeze=False, layout="constrained")
    image = None
    for ax, dataset in zip(axes[0], datasets):
        mine = [c for c in cells if c["dataset"] == dataset]
        cols = [c["train_per_class"] for c in mine]
        grid = [[math.nan] * len(cols) for _ in names]
        for j, cell in enumerate(mine):
            best = cell["entries"][0]["mean"]
            for e in cell["entries"]:
                i = names.index(e["config"])
                if e["mean"] is None:  # no number on some seed: tied with the winner, no colour to give it
                    ax.text(j, i, "–≈", ha="center", va="center", fontsize=8)
                    continue
                grid[i][j] = min(cap_points, 100 * (best - e["mean"]))
                mark = "★" if e is cell["entries"][0] else ("≈" if e.get("tied") else "")
                ax.text(j, i, f"{e['mean']:.3f}{mark}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i][j] > 0.55 * cap_points else "black",  # viridis_r: dark when far behind
                        fontweight="bold" if mark == "★" else "normal")
        image = ax.imshow(grid, cmap="viridis_r", vmin=0, vmax=cap_points, aspect="auto")
        ax.set_xticks(range(len(cols)), [plain(c) for c in cols])
        ax.set_yticks(range(len(names)), [plain(n) for n in names])
        ax.set_xlabel("training images per class")
        metric = mine[0]["metric"] if mine else "test_acc"
        ax.set_title(plain(f"{dataset}: {METRIC_LABEL.get(metric, robustness.label(metric))}"), fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label=f"points behind the winner (≤ {cap_points:g})", shrink=0.9)
    # the PNG travels alone (W&B): what the numbers and marks claim, on the figure itself
    keys = ["number: mean over seeds", "★ winner: highest mean", WIN_TIE]
    legend_below(fig, handles=[plt.Line2D([], [], ls="") for _ in keys], labels=keys, fontsize=7)
    return fig


WIN_TIE = "≈ not told apart from the winner: paired\nt-test, Holm over the cell's pairs\n(one seed: Wilson intervals)"


def _max_columns(cells: Sequence[dict]) -> int:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["dataset"]] = counts.get(c["dataset"], 0) + 1
    return max(counts.values(), default=1)


def ood(configs: Sequence[Config]) -> Figure:
    """In-distribution test accuracy against each OOD set's accuracy, one panel per dataset and OOD
    set: configuration means (bars: 95% CIs over seeds) and the line fitted across them on logit axes
    (`robustness.fits`, with 3 or more configurations), on which it is straight. A point's height above
    the line is its effective robustness, written beside it when the panel has few enough points to
    read; the dotted diagonal is OOD = ID accuracy."""
    colors = strategy_colors(configs)
    lines = {(f.dataset, f.ood): f for f in robustness.fits(configs)}
    names = robustness.ood_sets([r.result for c in configs for r in c.runs])  # as the stats name them
    panels = list(dict.fromkeys((c.dataset, name) for c in configs for name in names
                                if any(robustness.ood_entry(r.result, name) is not None for r in c.runs)))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(1.6 + 4.6 * max(1, len(panels)), 4.2), squeeze=False,
                             layout="constrained")
    if not panels:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no out-of-distribution sets in these runs (dataset.ood)", ha="center")
    for ax, (dataset, name) in zip(axes[0], panels):
        key, er, fit = robustness.OOD_ACC + name, robustness.EFF_ROB + name, lines.get((dataset, name))
        placed = [c for c in configs if c.dataset == dataset and "test_acc" in c.stats and key in c.stats]
        xs = [c.stats["test_acc"][0] for c in placed]
        ys = [c.stats[key][0] for c in placed]
        for c, x, y in zip(placed, xs, ys):
            xe, ye = c.stats["test_acc"][1], c.stats[key][1]
            ax.errorbar(x, y, xerr=within(x, xe, 0.0, 1.0), yerr=within(y, ye, 0.0, 1.0), fmt="o", ms=5,
                        color=colors[c.strategy], alpha=0.85, capsize=2, label=plain(c.strategy))
            if len(placed) <= 12 and er in c.stats:
                ax.annotate(f"{100 * c.stats[er][0]:+.1f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        lo = max(robustness.CLIP, min(xs + ys, default=0.5) * 0.9)
        hi = min(1 - robustness.CLIP, 1 - (1 - max(xs + ys, default=0.5)) * 0.9)
        grid = [lo + (hi - lo) * i / 50 for i in range(51)]
        if fit is not None:
            ax.plot(grid, [fit.predict(x) for x in grid], "-", color="0.3", lw=1.2,
                    label=f"logit fit (slope {fit.slope:.2f}, {fit.points} configs)")
        else:
            ax.set_title("no fit: fewer than 3 configurations", fontsize=8)
        ax.plot(grid, grid, ":", color="0.6", lw=1, label="OOD = ID")
        ax.set_xscale("logit")
        ax.set_yscale("logit")
        for axis in (ax.xaxis, ax.yaxis):  # plain decimals, not the logit scale's 1/2 and 1-10^-k
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_xlabel(plain(f"{dataset}: in-distribution test accuracy"))
        ax.set_ylabel(plain(f"{name} accuracy (OOD)"))
        ax.grid(alpha=0.3)
    unique = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    legend_below(fig, handles=list(unique.values()), labels=list(unique))  # off the points, whatever they are
    return fig
