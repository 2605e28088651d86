"""A report's figures drawn by forked workers (src/reporting/drawing.py): the same PNGs as drawn here,
a failure kept to its figure, and a worker that hangs costs a timeout, not the report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from src.reporting import drawing  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked workers are Linux's")


def _figure(seed: int, pids: Path):
    def draw():
        with (pids / f"{seed}.pid").open("w") as f:
            f.write(str(os.getpid()))
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [seed, seed * seed, 1])
        ax.set_title(f"figure {seed}")
        return fig
    return draw


def _drawers(tmp_path: Path, n: int = 4) -> dict:
    pids = tmp_path / "pids"
    pids.mkdir(exist_ok=True)
    return {f"f{i}": _figure(i, pids) for i in range(n)}


def test_workers_draw_the_same_pngs_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing, "usable_cpus", lambda: 2)
    parallel, serial = tmp_path / "parallel", tmp_path / "serial"
    parallel.mkdir(), serial.mkdir()
    got = drawing.save_figures(_drawers(tmp_path), parallel)
    assert list(got) == ["f0", "f1", "f2", "f3"] and all(got[n] == parallel / f"{n}.png" for n in got)
    workers = {int(p.read_text()) for p in (tmp_path / "pids").iterdir()}
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    monkeypatch.setattr(drawing, "usable_cpus", lambda: 1)
    drawing.save_figures(_drawers(tmp_path), serial)
    assert {int(p.read_text()) for p in (tmp_path / "pids").iterdir()} == {os.getpid()}
    for name in got:
        assert (parallel / f"{name}.png").read_bytes() == (serial / f"{name}.png").read_bytes(), name


def test_a_failing_figure_is_its_reason_and_leaves_no_png(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing, "usable_cpus", lambda: 2)
    drawers = _drawers(tmp_path, 3)

    def broken():
        raise ValueError("no data to draw\nsecond line")

    drawers["f1"] = broken
    (tmp_path / "f1.png").write_bytes(b"an earlier report's figure")
    got = drawing.save_figures(drawers, tmp_path)
    assert got == {"f0": tmp_path / "f0.png", "f1": "ValueError: no data to draw", "f2": tmp_path / "f2.png"}
    assert not (tmp_path / "f1.png").exists() and (tmp_path / "f2.png").stat().st_size > 1000


def test_a_hung_worker_is_given_up_and_its_figures_drawn_here(tmp_path, monkeypatch):
    monkeypatch.setattr(drawing, "usable_cpus", lambda: 2)
    monkeypatch.setattr(drawing, "TIMEOUT_S", 3.0)
    parent = os.getpid()
    drawers = _drawers(tmp_path, 3)
    quick = drawers["f1"]

    def hangs_in_a_worker():
        if os.getpid() != parent:
            time.sleep(600)
        return quick()

    drawers["f1"] = hangs_in_a_worker
    import multiprocessing

    before = set(multiprocessing.active_children())  # another test's (joblib's) may be running
    start = time.monotonic()
    got = drawing.save_figures(drawers, tmp_path)
    assert time.monotonic() - start < 60
    assert all(got[n] == tmp_path / f"{n}.png" for n in ("f0", "f1", "f2"))
    assert int((tmp_path / "pids" / "1.pid").read_text()) == parent  # f1 drawn here in the end
    assert set(multiprocessing.active_children()) <= before  # the hung worker was ended, not left behind
