"""Ctrl-C or SIGTERM to a multirun whose jobs run in a launcher's worker processes (hydra/launcher=joblib):
the driver's one line names the runs the workers recorded as interrupted and where the finished ones are
(src/multirun_stop.py). It said `no run was in progress`, with two runs just recorded as interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src import exits, multirun_stop
from src.record.io import write_json
from tests.cli import TINY_OVERRIDES, env


def test_a_stop_no_job_described_names_the_runs_recorded_since_the_multirun_began(tmp_path, monkeypatch):
    old, new, done = tmp_path / "0_full", tmp_path / "1_layerwise", tmp_path / "2_frozen"
    old.mkdir()
    write_json(old / "result.json", {"status": "interrupted"})  # an earlier command's: not this stop's
    monkeypatch.setattr(multirun_stop, "_started", None)
    assert exits.describe(multirun_stop.said(KeyboardInterrupt()))[0] == "interrupted by Ctrl-C: no run was in progress"
    time.sleep(0.05)
    multirun_stop.multirun_started(tmp_path)
    os.utime(old / "result.json", (0, 0))
    for folder, status in ((new, "interrupted"), (done, "completed")):
        folder.mkdir()
        write_json(folder / "result.json", {"status": status})
    line, code = exits.describe(multirun_stop.said(exits.Stopped(signal.SIGTERM)))
    assert code == 143
    assert line == (f"interrupted by SIGTERM: status 'interrupted' recorded in {new / 'result.json'}; finished runs are "
                    f"kept in {tmp_path} (python -m src.report {tmp_path})")
    # a worker ended with its driver (a signal to the driver alone) leaves its folder without a record: named
    killed = tmp_path / "3_full"
    killed.mkdir()
    (killed / "config.yaml").write_text("seed: 0\n")
    line = exits.describe(multirun_stop.said(exits.Stopped(signal.SIGTERM)))[0]
    assert (f"; stopped without a record: 3_full (the same command with hydra.sweep.dir={tmp_path} resumes them, "
            "each from its last checkpoint if it has one); finished runs are kept in") in line
    # a job that said what it recorded (the basic launcher runs it in this process) is left as it said
    mine = exits.Stopped(signal.SIGINT, "status 'interrupted' recorded in X")
    assert multirun_stop.said(mine).recorded == "status 'interrupted' recorded in X"


@pytest.mark.slow  # a joblib multirun stopped mid-training, about 40 s on the 2-core host
def test_sigterm_to_a_joblib_multirun_names_what_its_workers_recorded(tmp_path):
    sweep = tmp_path / "multi"
    proc = subprocess.Popen([sys.executable, "-m", "src.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "trainer.num_threads=1", "strategy=full,layerwise", *TINY_OVERRIDES,
                             "dataset.train_per_class=100", "trainer.epochs=20", "trainer.progress=false",
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(sweep.glob("*/checkpoint_epoch*.pt"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # to the process group, as Ctrl-C in a terminal, `timeout` or `docker stop` signal the workers too
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = sorted(p for p in sweep.glob("*/result.json") if json.loads(p.read_text())["status"] == "interrupted")
    # joblib may end a worker before it records (its driver's abort races the worker's own handler): that
    # folder is named as stopped without a record, to be resumed; every job is named, one way or the other
    cut = sorted(d.name for d in sweep.glob("*_*") if (d / "config.yaml").is_file() and not (d / "result.json").exists())
    assert len(stopped) + len(cut) == 2
    line = next(x for x in err.splitlines() if x.startswith("interrupted by"))
    said = f"status 'interrupted' recorded in {', '.join(map(str, stopped))}" if stopped else "no run was recorded as interrupted"
    assert line.startswith(f"interrupted by SIGTERM: {said}; ")
    assert (f"; stopped without a record: {', '.join(cut)} (" in line) == bool(cut)
    assert line.endswith(f"; finished runs are kept in {sweep} (python -m src.report {sweep})")
