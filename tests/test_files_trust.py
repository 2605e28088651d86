"""Run files a user can trust: valid JSON (NaN as null, never a bare NaN), created with the usual
permissions, unreadable files named and skipped instead of sinking the report, and no progress
bars in a log file. Everything here reads real files written by the real code."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import shutil
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
import torch

import src.record.io
from src.reporting.configs import group_configs
from src.reporting.runs import load_runs, mean_curve
from src.record.io import SkippedFile, append_jsonl, find_results, read_json_object, read_jsonl, write_json, write_text
from tests.cli import REPO, TINY_OVERRIDES, env

RUN_FILES = ("result.json", "metrics.jsonl", "param_groups.json", "config.yaml")


def strict_json(text: str):
    """json.loads that refuses NaN and ±Infinity, as jq, JavaScript and most other readers do."""
    def refuse(name: str):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One real tiny run through the CLI, with progress bars at their default (on) and stderr
    going to a file, as in `make grid > log 2>&1`."""
    base = tmp_path_factory.mktemp("trained")
    run_dir, log = base / "run", base / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "src.train", *TINY_OVERRIDES, "trainer.num_threads=1", f"hydra.run.dir={run_dir}"],
            cwd=base, env=env(), stdout=subprocess.DEVNULL, stderr=err, timeout=600,
        )
    assert proc.returncode == 0, log.read_text()[-3000:]
    return run_dir, log


def copy_run(src: Path, dst: Path, **changes) -> Path:
    """A copy of a real run's files, with `changes` made to its result.json."""
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy(src / name, dst / name)
    write_json(dst / "result.json", read_json_object(src / "result.json") | changes)  # (made by hand: no digest)
    return dst


def report(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.report", *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


# --- 1. valid JSON -----------------------------------------------------------------------------

NON_FINITE = {
    "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
    "np64": np.float64("nan"), "np32": np.float32("inf"), "np16": np.float16("-inf"),
    "tensor": torch.tensor(float("nan")), "tensor_bf16": torch.tensor(float("inf"), dtype=torch.bfloat16),
}
FINITE = {"int": 3, "np_int": np.int64(7), "np32": np.float32(1.5), "tensor": torch.tensor(2.5), "flag": True, "none": None}


def test_non_finite_numbers_are_written_as_null(tmp_path):
    record = {
        "flat": NON_FINITE, "finite": FINITE,
        "nested": {"list": [1.0, float("nan"), [np.float32("nan")]], "tuple": (float("inf"), 2)},
        "array": np.array([1.0, np.nan, np.inf]), "vector": torch.tensor([0.5, float("nan")]),
    }
    expected_flat = {k: None for k in NON_FINITE}
    expected_finite = {"int": 3, "np_int": 7, "np32": 1.5, "tensor": 2.5, "flag": True, "none": None}
    write_json(tmp_path / "result.json", record)
    append_jsonl(tmp_path / "metrics.jsonl", record)
    append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1, "val_loss": np.float64("nan")})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    for data in (strict_json((tmp_path / "result.json").read_text()), strict_json(lines[0])):
        assert data["flat"] == expected_flat and data["finite"] == expected_finite
        assert data["nested"] == {"list": [1.0, None, [None]], "tuple": [None, 2]}
        assert data["array"] == [1.0, None, None] and data["vector"] == [0.5, None]
    assert strict_json(lines[1]) == {"epoch": 1, "val_loss": None}
    assert read_jsonl(tmp_path / "metrics.jsonl")[1] == {"epoch": 1, "val_loss": None}


def test_a_non_finite_number_that_slips_through_fails_loudly(tmp_path, monkeypatch):
    """allow_nan=False is the backstop: were the conversion to miss a case, the write fails and
    leaves no file, rather than writing a bare NaN every reader then chokes on."""
    monkeypatch.setattr(src.record.io, "finite_json", lambda value: value)
    with pytest.raises(ValueError):
        write_json(tmp_path / "result.json", {"val_loss": float("nan")})
    with pytest.raises(ValueError):
        append_jsonl(tmp_path / "metrics.jsonl", {"val_loss": float("inf")})
    assert list(tmp_path.iterdir()) == []  # no result.json, no metrics.jsonl, no temporary file


def test_a_real_run_writes_strict_json(trained):
    run_dir, _ = trained
    result = strict_json((run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    strict_json((run_dir / "param_groups.json").read_text())
    records = [strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all("val_acc" in r for r in records)


def test_readers_take_null_and_old_bare_nan_as_missing(trained, tmp_path):
    """Null where a number was expected (and a bare NaN from files written before the fix) is a
    missing value to the report: the rest is tabulated, plotted and pooled; nothing crashes."""
    run_dir, _ = trained
    study = tmp_path / "study"
    groups = list(json.loads((run_dir / "result.json").read_text()).get("weight_change") or {"head": 0.1})
    for seed in (0, 1):
        copy_run(run_dir, study / f"{seed}_full", strategy="full", seed=seed, test_acc=0.5 + 0.1 * seed,
                 weight_change={g: 0.01 * (i + 1) for i, g in enumerate(groups)}, cka={g: 0.9 for g in groups})
        # a seed without test accuracy, a group whose drift could not be measured, a NaN validation loss
        copy_run(run_dir, study / f"{seed}_frozen", strategy="frozen", seed=seed,
                 test_acc=float("nan") if seed else 0.4, val_acc=0.3 + 0.1 * seed,
                 weight_change={g: float("nan") if i == 0 else 0.0 for i, g in enumerate(groups)},
                 cka={g: float("nan") for g in groups})
        first = read_jsonl(study / f"{seed}_frozen" / "metrics.jsonl")[0]
        (study / f"{seed}_frozen" / "metrics.jsonl").unlink()
        append_jsonl(study / f"{seed}_frozen" / "metrics.jsonl", first | {"epoch": 0, "val_loss": float("nan"),
                                                                          "val_acc": None if seed else 0.25})
    old = copy_run(run_dir, study / "0_layerwise", strategy="layerwise", seed=0)
    result = read_json_object(old / "result.json") | {"test_acc": float("nan"), "train_flops": float("inf")}
    (old / "result.json").write_text(json.dumps(result))  # the old writer: bare NaN and Infinity, no digest
    assert "NaN" in (old / "result.json").read_text()

    runs = load_runs([study])
    by_name = {c.label: c for c in group_configs(runs)}
    assert "test_acc" not in by_name["frozen"].stats and "test_acc" not in by_name["layerwise"].stats
    assert by_name["full"].stats["test_acc"][0] == pytest.approx(0.55)
    assert by_name["frozen"].stats["val_acc"][0] == pytest.approx(0.35)
    frozen_runs = [r for r in runs if r.result.strategy == "frozen"]
    assert mean_curve(frozen_runs) == ([1], [0.25], [0.0])  # the epoch's mean over the seed that has one

    out = tmp_path / "report"
    proc = report(str(study), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["config"]: r for r in strict_json((out / "summary.json").read_text())}
    assert set(rows) == {"full", "frozen", "layerwise"}
    assert rows["full"]["test_acc"] == pytest.approx(0.55) and "test_acc" not in rows["frozen"]
    assert rows["layerwise"].get("train_flops") is None
    table = {line.split()[-1]: line for line in proc.stdout.splitlines() if line.split() and line.split()[-1] in
             {"0_full", "1_frozen", "0_layerwise"}}
    assert table["1_frozen"].split()[2] == "-" and table["0_layerwise"].split()[2] == "-"
    assert table["0_full"].split()[2] == "0.5000"
    for name in ("index.html", "pareto.png", "curves.png", "drift.png"):
        assert (out / name).stat().st_size > 0, name
    strict_json((out / "paired.json").read_text())


# --- 2. unreadable run files --------------------------------------------------------------------

def bad_files(run_dir: Path, study: Path) -> dict[str, str]:
    """A study of two good runs and one of each kind of unreadable file; returns the expected
    reason per path (as the report names it)."""
    text = (run_dir / "result.json").read_text()
    copy_run(run_dir, study / "0_full", seed=0)
    good = copy_run(run_dir, study / "1_full", seed=1)
    bad = {
        "2_full/result.json": text[:40],  # a copy or write cut short
        "3_full/result.json": "",
        "4_full/result.json": "<html>Service Unavailable</html>",
        "5_full/result.json": "[0.5, 0.6]",
        "6_full/result.json": "null",
    }
    for rel, content in bad.items():
        copy_run(run_dir, study / Path(rel).parent)
        (study / rel).write_text(content)
    copy_run(run_dir, study / "7_full").joinpath("result.json").write_bytes(b"\xff\xfe{\x00")
    copy_run(run_dir, study / "8_full")
    write_json(study / "8_full" / "result.json", read_json_object(run_dir / "result.json") | {"seed": None})
    # a good run with a truncated schedule and a metrics file with a cut and a garbled line
    (good / "param_groups.json").write_text((run_dir / "param_groups.json").read_text()[:25])
    first = read_jsonl(run_dir / "metrics.jsonl")[0]
    (good / "metrics.jsonl").write_text("\n".join([
        json.dumps(first), json.dumps(first | {"epoch": 1})[:30], "\x00\x00garbage", json.dumps(first | {"epoch": 2}),
        "[1, 2]", json.dumps(first | {"epoch": 3})[:-5],
    ]))

    def why(content: str) -> str:
        try:
            json.loads(content)
        except json.JSONDecodeError as err:
            return f"not valid JSON (line {err.lineno} column {err.colno})"
        raise AssertionError(content)

    reasons = {study / "2_full/result.json": why(text[:40]), study / "3_full/result.json": "empty file",
               study / "4_full/result.json": why(bad["4_full/result.json"]),
               study / "5_full/result.json": "not a JSON object (a list)",
               study / "6_full/result.json": "not a JSON object (a null)",
               study / "7_full/result.json": "not valid JSON (not UTF-8 text)",
               study / "8_full/result.json": "a completed run with no integer seed (seed: null)",
               good / "param_groups.json": why((run_dir / "param_groups.json").read_text()[:25])}
    lines = (good / "metrics.jsonl").read_text().splitlines()
    for n in (2, 3, 5, 6):
        reason = "not a JSON object (a list)" if n == 5 else f"not valid JSON (column {_col(lines[n - 1])})"
        reasons[Path(f"{good / 'metrics.jsonl'} line {n}")] = reason
    return {str(p): r for p, r in reasons.items()}


def _col(line: str) -> int:
    try:
        json.loads(line)
    except json.JSONDecodeError as err:
        return err.colno
    raise AssertionError(line)


def test_report_names_each_unreadable_file_and_reports_the_rest(trained, tmp_path):
    run_dir, _ = trained
    study = tmp_path / "multirun"
    reasons = bad_files(run_dir, study)
    out = tmp_path / "report"
    proc = report(str(study), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert sorted(warnings) == sorted(f"warning: skipped {path}: {why}" for path, why in reasons.items())
    names = {line.split()[-1] for line in proc.stdout.splitlines() if line.strip()}
    assert {"0_full", "1_full"} <= names and not names & {f"{i}_full" for i in range(2, 9)}
    [row] = strict_json((out / "summary.json").read_text())
    assert row["seeds"] == 2
    page = (out / "index.html").read_text()
    assert all(p in page for p in reasons)  # the page says what it left out, too
    # the good lines of the damaged metrics file are the curve: epochs 1 and 3 (0 and 2 recorded)
    skipped: list[SkippedFile] = []
    [run] = load_runs([study / "1_full"], skipped)
    assert [m.epoch for m in run.metrics] == [0, 2] and run.groups == {} and len(skipped) == 5


def test_a_result_whose_values_changed_since_it_was_written_is_named_and_left_out(trained, tmp_path):
    # one flipped bit in a digit (a rotting disk, a bad copy) left well-formed JSON that every reader
    # took as measured: the report ranked on val_acc 0.9011 for a run that measured 0.9111
    import yaml

    from src.config import RunConfig
    from src.record.digest import DIGEST_KEY, signed
    from src.training.run import RunDirTaken, finished_run

    run_dir, _ = trained
    text = (run_dir / "result.json").read_text()
    written = json.loads(text)
    assert DIGEST_KEY in written and DIGEST_KEY not in find_results([run_dir])[0][1].extra
    study = tmp_path / "multirun"
    copy_run(run_dir, study / "0_full", seed=0)
    rotten = copy_run(run_dir, study / "1_full") / "result.json"
    at = text.index('"val_acc": ') + len('"val_acc": ') + 3  # a digit of the value
    flipped = text[:at] + chr(ord(text[at]) ^ 1) + text[at + 1:]  # one bit: '1' <-> '0', '2' <-> '3', ...
    assert flipped != text and json.loads(flipped)["val_acc"] != written["val_acc"]
    rotten.write_text(flipped)
    # re-indented by a tool, or written before digests (none): read as they are
    (copy_run(run_dir, study / "2_full") / "result.json").write_text(json.dumps(signed(written | {"seed": 2}), indent=4))
    old = json.loads(text) | {"seed": 3}
    del old[DIGEST_KEY]
    write_json(copy_run(run_dir, study / "3_full") / "result.json", old)
    proc = report(str(study), "--no-html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: skipped {rotten}: its values do not match the {DIGEST_KEY} written with them "
                        "(damaged or edited since it was written; to accept an edit, delete that key)"]
    assert sorted(d.name for d, _ in find_results([study])) == ["0_full", "2_full", "3_full"]
    # the same command in that folder does not take it for a finished run, nor train over its kept model
    cfg = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    shutil.copy(run_dir / "model_best.pt", study / "1_full" / "model_best.pt")
    with pytest.raises(RunDirTaken, match=f"holds a result.json that cannot be read \\(its values do not match"):
        finished_run(study / "1_full", cfg, written.get("dataset_id"))


def test_report_with_nothing_readable_exits_2_in_one_error_line(trained, tmp_path):
    run_dir, _ = trained
    study = tmp_path / "multirun"
    copy_run(run_dir, study / "0_full").joinpath("result.json").write_text('{"status": "compl')
    proc = report(str(study), "--no-html")
    *warnings, error = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == ""
    assert warnings == [f"warning: skipped {study / '0_full' / 'result.json'}: not valid JSON (line 1 column 12)"]
    assert error == f"error: no readable result.json under {study} (1 unreadable, above)"
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = report(str(empty))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no readable result.json under {empty}"


def test_find_results_hands_back_or_logs_what_it_skipped(trained, tmp_path, caplog):
    """For the end-of-multirun table and the sweep: the good runs, and the bad files to print."""
    run_dir, _ = trained
    copy_run(run_dir, tmp_path / "0_full")
    copy_run(run_dir, tmp_path / "1_full").joinpath("result.json").write_text("")
    skipped: list[SkippedFile] = []
    assert [d.name for d, _ in find_results([tmp_path], skipped)] == ["0_full"]
    assert skipped == [SkippedFile(tmp_path / "1_full" / "result.json", "empty file")]
    with caplog.at_level(logging.WARNING, logger="src.record.io"):
        assert [d.name for d, _ in find_results([tmp_path])] == ["0_full"]
    assert [r.getMessage() for r in caplog.records] == [f"skipped {tmp_path / '1_full' / 'result.json'}: empty file"]


# --- 3. permissions -----------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_get_0666_less_the_umask(tmp_path, umask):
    (tmp_path / "old.json").write_text("{}")
    os.chmod(tmp_path / "old.json", 0o600)  # what the temporary-file writer left before
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "result.json", {"a": 1})
        write_json(tmp_path / "old.json", {"a": 2})
        append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 0})
        write_text(tmp_path / "index.html", "<html></html>")
    finally:
        os.umask(previous)
    for name in ("result.json", "old.json", "metrics.jsonl", "index.html"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "metrics.jsonl", "old.json", "result.json"]


def test_report_files_are_readable_by_the_group(trained, tmp_path):
    run_dir, _ = trained
    copy_run(run_dir, tmp_path / "study" / "0_full")
    proc = report(str(tmp_path / "study"), "--out", str(tmp_path / "report"), umask=0o002)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("summary.json", "paired.json", "index.html"):
        assert stat.S_IMODE((tmp_path / "report" / name).stat().st_mode) == 0o664, name


# --- 4. progress bars ---------------------------------------------------------------------------

def test_no_progress_bars_in_a_log_file(trained):
    """trainer.progress is on by default; with stderr a file, tqdm draws nothing into it."""
    run_dir, log = trained
    assert "progress: true" in (run_dir / "config.yaml").read_text()
    text = log.read_text()
    assert "it/s" not in text and "s/it" not in text and "%|" not in text and "\r" not in text, text[-2000:]


BAR_SCRIPT = """
import sys, torch
from src.training import engine
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0])) for _ in range(30)]
engine.train_one_epoch(model, batches, opt, sched, torch.device("cpu"), progress=sys.argv[1] == "on", desc="epoch 1/1")
"""


def _stderr_on_a_terminal(progress: str) -> str:
    master, slave = pty.openpty()
    # a terminal of 24 x 80, as a real one has: at 0 columns (a bare pty) tqdm draws nothing at all
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-c", BAR_SCRIPT, progress], cwd=REPO, env=env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_progress_bar_draws_on_a_terminal():
    drawn = _stderr_on_a_terminal("on")
    assert "epoch 1/1" in drawn and "%|" in drawn, drawn
    assert "%|" not in _stderr_on_a_terminal("off")


def test_notebook_names_unreadable_files_and_takes_null_as_missing(trained, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run_dir, _ = trained
    study = tmp_path / "study"
    for seed in (0, 1):
        copy_run(run_dir, study / f"{seed}_full", strategy="full", seed=seed, test_acc=float("nan") if seed else 0.5)
    copy_run(run_dir, study / "2_full", seed=2).joinpath("result.json").write_text('{"status": "compl')
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("RESULTS_DIRS", str(study))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"warning: skipped {study / '2_full' / 'result.json'}: not valid JSON (line 1 column 12)" in text
    assert "2 runs, 1 completed configurations" in text
    [line] = [x for x in text.splitlines() if x.startswith("full ") and " seeds " in x]
    assert " seeds 2  test_acc -  train FLOPs " in line, line


def test_pooling_survives_settings_and_measures_of_the_wrong_type(trained, tmp_path):
    """A hand-edited or foreign result.json: a list where a setting was a number, a string where a
    measure was. The run is pooled on what it says and the odd measure counts as missing."""
    run_dir, _ = trained
    for seed in (0, 1):
        copy_run(run_dir, tmp_path / f"{seed}_full", seed=seed, lr=[0.1, 0.2], test_acc="0.9" if seed else 0.8)
    [config] = group_configs(load_runs([tmp_path]))
    assert len(config.runs) == 2 and "test_acc" not in config.stats and "val_acc" in config.stats


# --- 5. a full disk ----------------------------------------------------------------------------
# Real small filesystems (tests/disks.py): writers name the file they could not write, leave no
# half file or temporary behind, and a run records what it can and says what it could not.

from tests.disks import fill, fill_up, grow, small_disk  # noqa: E402,F401  (small_disk: a fixture)


def test_writers_on_a_full_disk_name_the_file_and_leave_the_old_content_whole(small_disk):
    from src.record.io import DiskFull, write_with

    disk = small_disk(64)
    old = {"status": "completed", "val_acc": 0.5}
    write_json(disk / "result.json", old)
    fill_up(disk)
    for write in (lambda p: write_json(p, {"big": "x" * 20000}), lambda p: write_text(p, "y" * 20000),
                  lambda p: write_with(p, lambda f: f.write(b"z" * 20000))):
        with pytest.raises(DiskFull) as err:
            write(disk / "result.json")
        assert err.value.path == disk / "result.json" and err.value.errno == 28
        assert json.loads((disk / "result.json").read_text()) == old  # the old record, whole
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "result.json"]  # no temporary left
    with pytest.raises(DiskFull) as err:
        append_jsonl(disk / "metrics.jsonl", {"epoch": 0, "pad": "x" * 20000})
    assert err.value.path == disk / "metrics.jsonl"


def test_no_room_knows_every_kind_of_full_and_nothing_else(small_disk, tmp_path):
    import errno
    import sqlite3

    import optuna

    from src.record.io import no_room

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
        full = no_room(OSError(code, os.strerror(code), "/x/f"))
        assert full is not None and full.path == Path("/x/f") and full.errno == code
    assert no_room(OSError(errno.EACCES, "Permission denied", "/x/f")) is None
    assert no_room(ValueError("database or disk is full")) is None
    # sqlite's own error on a real full disk, under Optuna's wrapping: named by the database file
    disk = small_disk(64)
    db = disk / "optuna.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x blob)")
    con.commit()
    fill_up(disk)
    with pytest.raises(sqlite3.OperationalError) as raw:
        con.execute("insert into t values (?)", (b"x" * 100000,))
        con.commit()
    con.close()
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from raw.value
    except optuna.exceptions.StorageInternalError as wrapped:
        full = no_room(wrapped, sqlite=db)
    assert full is not None and full.path == db and "database or disk is full" in str(full)


def test_the_full_disk_line_names_the_closest_setting():
    from src.record.io import DiskFull, no_room_line

    places = [(Path("/out"), "paths.output_dir=/out"), (Path("/shared/study.log"), "hydra.sweeper.storage=journal:/shared/study.log")]
    assert no_room_line(DiskFull("/out/run/metrics.jsonl", 28, "No space left on device"), places) == \
        "/out/run/metrics.jsonl: No space left on device (its place is set by paths.output_dir=/out)"
    assert no_room_line(DiskFull("/shared/study.log", 28, "No space left on device"), places).endswith(
        "(its place is set by hydra.sweeper.storage=journal:/shared/study.log)")
    assert no_room_line(DiskFull("/elsewhere/x", 28, "No space left on device"), places) == "/elsewhere/x: No space left on device"


def test_a_run_that_fills_the_disk_says_so_and_keeps_only_whole_files(small_disk, tiny_config):
    """The disk fills after epoch 0 (the callback fills it, as another program might): epoch 1's
    metrics line still fits in the file's last block, the selected weights (model_best.pt) do not,
    nor does the failure record; the error names result.json; what is there is whole (no half
    record or weights, no temporary, whole metrics lines). No epoch checkpoints (trainer.resume=false):
    the first would not fit either (test_a_checkpoint_that_does_not_fit_...)."""
    from src.record.io import DiskFull
    from src.training.run import run

    disk = small_disk(1024)
    run_dir = disk / "run"

    def disk_fills(record):
        fill_up(disk)

    with pytest.raises(DiskFull) as err:
        run(tiny_config(trainer={"resume": False}), run_dir, on_epoch=disk_fills)
    assert err.value.path == run_dir / "result.json"
    assert err.value.__cause__.path == run_dir / "model_best.pt"  # what did not fit first
    assert not (run_dir / "result.json").exists() and not (run_dir / "model_best.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1]


def test_a_checkpoint_that_does_not_fit_is_not_kept_and_the_failure_is_recorded(small_disk, tiny_config):
    from src.record.io import DiskFull
    from src.training.run import run

    disk = small_disk(1024)
    fill(disk, leave_kib=200)  # room for the run's files, not for its first epoch checkpoint (about 1.3 MiB)
    with pytest.raises(DiskFull) as err:
        run(tiny_config(trainer={"save_model": True}), disk / "run")
    assert err.value.path == disk / "run" / "checkpoint_epoch000.pt"
    record = json.loads((disk / "run" / "result.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("DiskFull: ")
    assert not list((disk / "run").glob("*.pt")) and not list((disk / "run").glob(".*.tmp"))
    grow(disk, 8192)  # room again: the same folder takes the run (a failed run's folder may be reused)
    assert run(tiny_config(trainer={"save_model": True}), disk / "run")["status"] == "completed"
    assert torch.load(disk / "run" / "model.pt", weights_only=True)
    assert torch.load(disk / "run" / "model_best.pt", weights_only=True)


def test_a_line_the_disk_fills_in_the_middle_of_is_cut_off(small_disk):
    """A metrics.jsonl append that only partly fits (the rest of the file's last page): os.write
    wrote part of the line and DiskFull was raised, but the torn half line stayed in the file, the
    next line glued to it. The file keeps its whole lines only."""
    from src.record.io import DiskFull

    disk = small_disk(64)
    path = disk / "metrics.jsonl"
    append_jsonl(path, {"epoch": 0, "val_acc": 0.5})
    before = path.read_bytes()
    fill_up(disk)  # the file's own page still has room for part of a line
    with pytest.raises(DiskFull, match=r"wrote \d+ of \d+ bytes"):
        append_jsonl(path, {"epoch": 1, "pad": "x" * 20000})
    assert path.read_bytes() == before
    (disk / "filler").unlink()
    append_jsonl(path, {"epoch": 1, "val_acc": 0.6})  # room again: the next line starts on its own
    assert read_jsonl(path) == [{"epoch": 0, "val_acc": 0.5}, {"epoch": 1, "val_acc": 0.6}]
