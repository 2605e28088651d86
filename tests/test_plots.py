"""The report's figures stay readable: tick labels that never run into each other on any span of a log
cost axis, whole-number epoch ticks, and legends that sit under the plot without shrinking it."""

from __future__ import annotations

from pathlib import Path

import pytest


def _runs(spec: dict[str, float], epochs: int = 0, seeds=(0, 1)):
    """Completed runs named by strategy (any name) with the given train FLOPs, and `epochs` metric lines."""
    from src.record.schema import EpochRecord, RunRecord
    from src.reporting.runs import Run

    return [Run(Path("/study") / f"{name}_{seed}",
                RunRecord(strategy=name, seed=seed, status="completed", dataset="digits", train_samples=50,
                          val_acc=0.9 + 0.001 * i, test_acc=0.9 + 0.001 * i, train_flops=int(flops),
                          train_time_s=flops / 1e11, trainable_params=int(flops / 1e6)),
                [EpochRecord(epoch=e, val_acc=0.5 + 0.01 * e, train_acc=0.6 + 0.01 * e) for e in range(epochs)])
            for i, (name, flops) in enumerate(spec.items()) for seed in seeds]


def _labels(axis) -> list:
    return [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]


def _no_overlap(labels) -> bool:
    boxes = [t.get_window_extent() for t in labels]
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("low, high", [(240e9, 300e9), (245e9, 255e9), (1.52e11, 2.71e12), (3e9, 8e9), (1e6, 1e15),
                                       (240, 300), (0.5, 1.2)])
def test_cost_axis_labels_are_readable_and_never_overlap_at_any_span(low, high):
    import matplotlib.pyplot as plt

    from src.reporting.plots import cost_axis

    for cost in ("train_flops", "train_time_s"):
        fig, ax = plt.subplots(figsize=(4.6, 3.9), layout="constrained")
        values = [low, (low * high) ** 0.5, high]
        ax.plot(values, [0.9, 0.91, 0.92], "o")
        ax.margins(x=0.08)
        cost_axis(ax, cost, values)
        fig.canvas.draw()
        labels = _labels(ax.xaxis)
        lo, hi = ax.get_xlim()
        inside = [t for t in labels if lo <= t.get_position()[0] <= hi]
        assert len(inside) >= 2, (low, high, cost, [t.get_text() for t in labels])  # a span is never left unlabelled
        assert _no_overlap(labels), (low, high, cost, [t.get_text() for t in labels])
        plt.close(fig)


def test_the_pareto_figure_at_240_to_300_gflops_has_readable_labels():
    import matplotlib.pyplot as plt

    from src.reporting import plots
    from src.reporting.configs import group_configs

    fig = plots.pareto(group_configs(_runs({"frozen": 2.4e11, "layerwise": 2.7e11, "full": 3.0e11})))
    fig.canvas.draw()
    flops_ax = fig.axes[0]
    texts = [t.get_text() for t in _labels(flops_ax.xaxis)]
    assert len(texts) >= 2 and all(t.endswith(" G") for t in texts), texts
    for ax in fig.axes:
        assert _no_overlap(_labels(ax.xaxis)) and _no_overlap(_labels(ax.yaxis))
    plt.close(fig)


def test_epoch_ticks_are_whole_numbers():
    import matplotlib.pyplot as plt

    from src.reporting import plots
    from src.reporting.configs import group_configs

    for epochs in (3, 7, 60):
        fig = plots.curves(group_configs(_runs({"frozen": 1e11, "full": 1e12}, epochs=epochs)))
        fig.canvas.draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [v for v in ax.get_xticks() if lo <= v <= hi]
            assert ticks and all(float(v).is_integer() for v in ticks), (epochs, ticks)
            assert _no_overlap(_labels(ax.xaxis))
        plt.close(fig)


def test_legends_sit_below_and_never_squeeze_the_plot():
    import matplotlib.pyplot as plt

    from src.reporting import plots
    from src.reporting.configs import group_configs

    sizes = {}
    for n in (1, 30):
        names = {f"a strategy with a long name number {i}": 1e11 * (i + 1) for i in range(n)}
        for draw in (plots.curves, plots.pareto):
            runs = _runs(names, epochs=4)
            fig = draw(group_configs(runs))
            fig.canvas.draw()
            [legend] = fig.legends
            box = legend.get_window_extent()
            for ax in fig.axes:  # under every panel, covering none
                assert not box.overlaps(ax.get_window_extent()) and box.y1 <= ax.get_window_extent().y0
            sizes[draw.__name__, n] = [ax.get_window_extent().height for ax in fig.axes]
            plt.close(fig)
    for name in ("curves", "pareto"):  # thirty entries leave the panels as tall as one does
        for one, many in zip(sizes[name, 1], sizes[name, 30]):
            assert many == pytest.approx(one, rel=0.05), name


def test_error_bars_of_two_seeds_stay_within_what_the_measure_can_take():
    # Two seeds far apart: the 95% t-interval is mean ± 12.7 standard errors. Drawn whole, an accuracy's
    # bar ran from -1 to 2 and the axis with it, and a time's bar went below 0 on a log axis.
    import matplotlib.pyplot as plt

    from src.record.schema import RunRecord
    from src.reporting import plots
    from src.reporting.configs import group_configs
    from src.reporting.runs import Run

    runs = [Run(Path("/study") / f"{name}_{seed}",
                RunRecord(strategy=name, seed=seed, status="completed", dataset="digits", train_samples=50,
                          val_acc=acc, test_acc=acc, train_flops=flops, train_time_s=flops / 1e9, trainable_params=100))
            for name, accs, costs in [("frozen", (0.05, 0.19), (1e9, 9e9)), ("full", (0.5, 0.9), (2e10, 2.2e10))]
            for seed, acc, flops in zip((0, 1), accs, costs)]
    configs = group_configs(runs)
    assert configs[0].stats["test_acc"][1] > 0.5  # the interval itself does run past 0 and 1
    fig = plots.pareto(configs)
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert -0.15 < low and high < 1.15, (low, high)
        for bars in ax.collections:  # the error bars' segments: accuracies in [0, 1], costs above 0 (log axis)
            for seg in bars.get_segments():
                assert all(0.0 <= y <= 1.0 for _, y in seg) and all(x >= 0 for x, _ in seg)
    plt.close(fig)
    assert plots.within(0.5, float("nan"), 0.0, 1.0) is None
    assert plots.within(0.9, 0.05, 0.0, 1.0) == [[pytest.approx(0.05)], [pytest.approx(0.05)]]  # inside: unchanged


def test_every_interval_a_figure_draws_is_named_in_its_legend_and_cut_at_what_accuracy_can_be():
    # The Pareto panels drew error bars and the epoch curves a shaded band with no word in the legend
    # (or on the page) of what they were; and with two seeds the band, a t-interval of 12.7 standard
    # errors, ran below 0 and above 1 where the bars and tables cut it at the accuracy's range.
    import matplotlib.pyplot as plt

    from src.record.schema import EpochRecord, RunRecord
    from src.reporting import plots
    from src.reporting.configs import group_configs
    from src.reporting.runs import Run

    runs = [Run(Path("/study") / f"{name}_{seed}",
                RunRecord(strategy=name, seed=seed, status="completed", dataset="digits", train_samples=50,
                          val_acc=acc, test_acc=acc, train_flops=flops, train_time_s=1.0 + seed, trainable_params=100),
                [EpochRecord(epoch=e, val_acc=acc, train_acc=acc) for e in range(3)])
            for name, accs, flops in [("frozen", (0.05, 0.19), 1e9), ("full", (0.6, 0.98), 2e10)]
            for seed, acc in zip((0, 1), accs)]
    configs = group_configs(runs)
    fig = plots.curves(configs)
    for ax in fig.axes:
        for band in ax.collections:
            ys = [y for path in band.get_paths() for _, y in path.vertices]
            assert ys and min(ys) >= 0.0 and max(ys) <= 1.0, (min(ys), max(ys))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("95% CI" in t and "seeds" in t for t in labels), labels
    plt.close(fig)
    # an epoch no run has a number for is a gap in the band too, not a band from 0 to 1
    gap = [Run(r.dir, r.result, [EpochRecord(epoch=e, val_acc=None if e == 1 else 0.5 + 0.01 * r.result.seed)
                                 for e in range(3)]) for r in runs]
    fig = plots.curves(group_configs(gap))
    for band in fig.axes[0].collections:
        ys = [y for path in band.get_paths() for _, y in path.vertices]
        assert max(ys) < 1.0, max(ys)
    plt.close(fig)
    fig = plots.pareto(configs)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("95% CI" in t and "seeds" in t for t in labels), labels
    plt.close(fig)
    # one seed each: no bars drawn, and none named
    fig = plots.pareto(group_configs([r for r in runs if r.result.seed == 0]))
    assert not any("95% CI" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)


def test_the_win_map_says_what_its_marks_and_numbers_are():
    # The map's PNG travels alone (the W&B summary's images): its ★ and ≈ and the numbers in the cells
    # had no word on the figure of what they were, and ≈ (a tie by the paired test) read as "about equal".
    import matplotlib.pyplot as plt

    from src.reporting import plots

    entry = lambda name, mean, tied=False: {"config": name, "strategy": name, "seeds": 3, "mean": mean,  # noqa: E731
                                            "ci95": 0.01, "tied": tied}
    cells = [{"dataset": "digits", "train_per_class": size, "metric": "test_acc",
              "entries": [entry("full", 0.98), entry("frozen", 0.97, tied=True)]} for size in ("5", "all")]
    fig = plots.win_map(cells)
    words = " ".join(t.get_text() for legend in fig.legends for t in legend.get_texts())
    assert "winner" in words and "mean over seeds" in words and "Holm" in words, words
    plt.close(fig)
