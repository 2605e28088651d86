"""The search's figures (matplotlib, like every figure of the report): parameter importances, the
slice view (each objective against each parameter, one point per completed trial) and the Pareto
front with each point's parameters written beside it. Each takes a `SearchView` (src/reporting/search.py)."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from src.reporting.comparisons import COSTS, METRIC_LABEL
from src.reporting.plots import cost_axis, legend_below, log_ticks, plain
from src.reporting.search import SearchView, params_text, short


def _label(objective: str) -> str:
    return METRIC_LABEL.get(objective, COSTS.get(objective, objective))


def _note(text: str) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, plain(text), ha="center", va="center")
    return fig


def importance(view: SearchView) -> Figure:
    """One horizontal bar chart per objective: each parameter's share of the objective's variance
    (fANOVA) or its |Spearman ρ| with the objective (the fallback), the method in the panel's title."""
    import matplotlib.pyplot as plt

    shown = [o for o in view.objectives if view.importances.get(o)]
    if not shown:
        return _note(f"no parameter importances: {'; '.join(view.methods.values()) or 'no completed trials'}")
    rows = max(len(view.importances[o]) for o in shown)
    fig, axes = plt.subplots(1, len(shown), figsize=(4.8 * len(shown) + 0.8, 1.3 + 0.4 * rows), squeeze=False,
                             layout="constrained")
    for ax, objective in zip(axes[0], shown):
        found = sorted(view.importances[objective].items(), key=lambda kv: kv[1])  # largest on top
        ax.barh(range(len(found)), [v for _, v in found], color="#1f77b4")
        ax.set_yticks(range(len(found)), [plain(short(p)) for p, _ in found], fontsize=8)
        for i, (_, v) in enumerate(found):
            ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
        ax.set_xlim(0, 1.15)
        ranked = view.methods[objective].startswith("|Spearman")
        ax.set_xlabel("|Spearman ρ| with the objective (not shares)" if ranked else "importance (sums to 1)")
        ax.set_title(plain(f"{_label(objective)}\n{view.methods[objective]}"), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return fig


def slices(view: SearchView) -> Figure:
    """Each objective (rows) against each parameter (columns), one point per completed trial coloured
    by its number (later trials darker): the shape of the landscape the sampler saw."""
    import matplotlib.pyplot as plt

    if not view.trials or not view.params:
        return _note("no completed trials to show")
    n_obj, n_par = len(view.objectives), len(view.params)
    fig, axes = plt.subplots(n_obj, n_par, figsize=(3.1 * n_par + 1.2, 2.6 * n_obj + 0.6), squeeze=False,
                             layout="constrained")
    numbers = [t.number for t in view.trials]
    points = None
    for r, objective in enumerate(view.objectives):
        ys = view.values(objective)
        for c, param in enumerate(view.params):
            ax = axes[r][c]
            values = [t.params.get(param) for t in view.trials]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            choices = [] if numeric else sorted({str(v) for v in values})
            xs = [float(v) for v in values] if numeric else [choices.index(str(v)) for v in values]
            points = ax.scatter(xs, ys, c=numbers, cmap="viridis_r", s=18, edgecolors="none")
            if numeric and param in view.log_params and all(x > 0 for x in xs):
                ax.set_xscale("log")
                log_ticks(ax.xaxis, xs, plain_numbers=True)
            if not numeric:
                ax.set_xticks(range(len(choices)), [plain(ch) for ch in choices], rotation=30, ha="right", fontsize=7)
            if objective in COSTS and all(y > 0 for y in ys):
                ax.set_yscale("log")
                log_ticks(ax.yaxis, ys, plain_numbers=objective == "train_time_s")
            ax.set_xlabel(plain(short(param)), fontsize=8)
            if c == 0:
                ax.set_ylabel(plain(_label(objective)), fontsize=8)
            ax.grid(alpha=0.3)
    if points is not None:
        fig.colorbar(points, ax=axes.ravel().tolist(), label="trial number", shrink=0.8)
    return fig


def front(view: SearchView) -> Figure:
    """Every completed trial on the first two objectives (accuracy against cost, the cost on a log
    axis), the Pareto front as a dashed step line through ringed points, each front point labelled
    with its trial number and parameters. One objective: the objective by trial number, the best trial
    labelled."""
    import matplotlib.pyplot as plt

    if not view.trials:
        return _note("no completed trials to show")
    best = view.front()
    acc_key = view.objectives[0]
    acc = view.values(acc_key)
    fig, ax = plt.subplots(figsize=(9.0, 4.6), layout="constrained")
    if len(view.objectives) < 2:
        xs = [float(t.number) for t in view.trials]
        ax.set_xlabel("trial number")
    else:
        xs = view.values(view.objectives[1])
        cost_axis(ax, view.objectives[1], xs)
    ax.scatter(xs, acc, s=18, color="0.6", label="completed trial")
    at = {t.number: i for i, t in enumerate(view.trials)}
    fx, fy = [xs[at[t.number]] for t in best], [acc[at[t.number]] for t in best]
    ax.scatter(fx, fy, s=46, facecolors="#d62728", edgecolors="black", zorder=3,
               label="Pareto front" if len(view.objectives) > 1 else "best trial")
    if len(best) > 1:
        ax.step(fx, fy, where="post", ls="--", color="black", lw=1, alpha=0.7)
    for k, (t, x, y) in enumerate(zip(best, fx, fy)):
        # alternately above and below the point, so that neighbours' labels do not run into each other
        ax.annotate(plain(f"#{t.number}: {params_text(t)}"), (x, y), xytext=(6, 8 if k % 2 == 0 else -14),
                    textcoords="offset points", fontsize=7, color="#222")
    ax.set_ylabel(plain(_label(acc_key)))
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    if not math.isfinite(sum(acc)):
        ax.set_title("some trials have no finite value", fontsize=8)
    return fig
