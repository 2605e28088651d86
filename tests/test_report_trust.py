"""Reports count what was measured once: runs grouped by their data's identity, not a folder's name; a
run repeated on the same seed listed, never averaged; names that matplotlib would read as formulas
drawn as written; a figure that fails, an --out that cannot be used and an earlier report each get
one line, never a traceback or a lost report."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.config import DataConfig, LoggerConfig
from src.data.identity import dataset_identity
from src.record.io import read_json_object, write_json
from src.record.schema import RunRecord
from src.reporting.comparisons import paired_rows
from src.reporting.configs import group_configs
from src.reporting.runs import load_runs
from src.reporting.verdict import answer
from tests.disks import small_disk  # noqa: F401 (a fixture)
from tests.test_verdict import APART, TIED, write_runs


# --- duplicates ------------------------------------------------------------------------------------


def test_a_retried_run_is_counted_once_and_listed_as_a_duplicate(tmp_path, capsys):
    from src.reporting.cli import main
    from src.reporting.tables import console_summary

    study = write_runs(tmp_path / "study", APART)
    retry = study / "9_full_s0_retry"
    shutil.copytree(study / "0_full_s0", retry)
    record = read_json_object(retry / "result.json")
    write_json(retry / "result.json", record | {"test_acc": 0.5})  # a different number: it must not be averaged in
    runs = load_runs([study])
    full = next(c for c in group_configs(runs) if c.label == "full")
    assert full.seeds == [0, 1, 2] and [r.dir.name for r in full.runs] == ["0_full_s0", "1_full_s1", "2_full_s2"]
    assert full.stats["test_acc"][0] == pytest.approx(sum(APART["full"][s][1] for s in (0, 1, 2)) / 3)
    [dup] = full.duplicates
    assert (dup.run.dir, dup.kept.dir) == (retry, study / "0_full_s0")
    assert [p["seeds"] for p in paired_rows(group_configs(runs))] == [[0, 1, 2]]

    printed = console_summary([(r.dir, r.result) for r in runs])
    row = next(line for line in printed.splitlines() if line.endswith("9_full_s0_retry"))
    assert "duplicate of 0_full_s0" in row and row.split()[-2] == "0"  # the seed column
    assert printed.endswith("1 duplicate run(s) not counted (same configuration and seed as a run already counted; the "
                            "first in folder order is kept): 9_full_s0_retry is a duplicate of 0_full_s0")
    assert main([str(study), "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert next(r for r in summary if r["config"] == "full")["duplicates"] == [{"run": str(retry), "of": str(study / "0_full_s0")}]
    assert next(r for r in summary if r["config"] == "full")["seeds"] == 3
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="duplicates"' in page and "9_full_s0_retry is a duplicate of 0_full_s0" in page
    capsys.readouterr()


def test_runs_from_other_weights_at_one_checkpoint_path_are_two_configurations(tmp_path):
    # weights/backbone.pt re-exported between two runs (or one relative path from two folders): the
    # second run was reported as a duplicate of the first and dropped, though it started from other
    # weights. result.json records what the file held (weights_id), and reports tell them apart by it.
    import timm
    import torch

    from src.config import RunConfig
    from src.training.run import run
    from tests.conftest import TINY, merge

    weights = tmp_path / "backbone.pt"
    dirs = []
    for shift in (0.0, 0.01):
        state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
        torch.manual_seed(0)
        torch.save({k: v + shift * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}, weights)
        model = {"name": "test_efficientnet", "pretrained": True, "weights": "file", "checkpoint_path": str(weights)}
        dirs.append(tmp_path / f"run{len(dirs)}")
        run(RunConfig.from_dict(merge(TINY, {"model": model, "trainer": {"epochs": 1}})), dirs[-1])
    records = [read_json_object(d / "result.json") for d in dirs]
    assert records[0]["weights_id"] != records[1]["weights_id"] and len(records[0]["weights_id"]) == 16
    configs = group_configs(load_runs(dirs))
    assert len(configs) == 2 and not any(c.duplicates for c in configs)
    assert sorted(c.label for c in configs) == sorted(f"layerwise (weights_id={r['weights_id']})" for r in records)


def test_a_run_reached_through_two_of_the_folders_given_is_one_run(tmp_path, capsys):
    from src.reporting.cli import main

    study = write_runs(tmp_path / "study", APART)
    (tmp_path / "link").symlink_to(study / "0_full_s0")
    # the study, one of its runs again, the study by another path, and a link to a run in it
    given = [study, study / "0_full_s0", tmp_path / "study" / ".." / "study", tmp_path / "link"]
    runs = load_runs(given)
    assert sorted(r.dir.name for r in runs) == sorted(p.parent.name for p in study.glob("*/result.json"))
    assert all(not c.duplicates for c in group_configs(runs))
    assert main([*map(str, given), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "duplicate" not in out and len([line for line in out.splitlines() if " completed " in line]) == 6
    assert "6 runs (6 completed) from" in " ".join((tmp_path / "report" / "index.html").read_text().split())


def _config_yaml(run_dir: Path, batch_size: int, **setup) -> None:
    """A config.yaml as a run writes it, with the settings result.json does not record."""
    import yaml

    config = {"trainer": {"batch_size": batch_size, "device": setup.get("device", "auto")},
              "optim": {"weight_decay": 0.01}, "dataset": {"cache_dir": setup.get("cache_dir")},
              "logger": {"group": setup.get("group", "g")}, "seed": read_json_object(run_dir / "result.json")["seed"]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_that_differ_in_a_setting_result_json_does_not_record_are_two_configurations(tmp_path, capsys):
    # `-m trainer.batch_size=8,32 seed=0,1`: result.json records no batch size, so both were one
    # configuration and the batch-32 runs "duplicates" of the batch-8 ones, never counted
    from src.reporting.cli import main

    spec = {"frozen": {0: (0.90, 0.91), 1: (0.92, 0.93)}}
    small, large = write_runs(tmp_path / "study" / "a", spec), write_runs(tmp_path / "study" / "b", spec | {
        "frozen": {0: (0.80, 0.81), 1: (0.83, 0.82)}})
    for run in small.iterdir():
        _config_yaml(run, 8)
    for run in large.iterdir():  # where and how it ran differs too: that splits nothing
        _config_yaml(run, 32, device="cpu", cache_dir="/elsewhere", group="other")
    configs = group_configs(load_runs([tmp_path / "study"]))
    assert [(c.label, c.seeds, len(c.duplicates)) for c in configs] == [
        ("frozen (trainer.batch_size=8)", [0, 1], 0), ("frozen (trainer.batch_size=32)", [0, 1], 0)]
    assert configs[1].stats["test_acc"][0] == pytest.approx((0.81 + 0.82) / 2)
    [text] = answer(configs)
    assert "Best on validation and on test: frozen (trainer.batch_size=8) (validation: 0.910 [0.783, 1.000]" in text
    assert "next frozen (trainer.batch_size=32) 10.5 ± " in text
    assert main([str(tmp_path / "study"), "--no-html"]) == 0
    assert "duplicate" not in capsys.readouterr().out
    # another dataset's frozen, never split: no "trainer.batch_size=None" in its name
    other = write_runs(tmp_path / "study" / "c", spec, dataset="photos")
    for run in other.iterdir():
        _config_yaml(run, 16)
    both = group_configs(load_runs([tmp_path / "study"]))
    assert answer(both)[1].startswith("On photos (all per class): 2 seeds per configuration (mean ± 95% CI, or its ends in "
                                      "brackets where it would run past 0 or 1; gaps paired by seed). Best on validation "
                                      "and on test: frozen (validation: ")
    # --markdown: one paragraph per dataset's answer (a single newline ran them together)
    from src.reporting.tables import console_summary

    first, second = answer(both)
    markdown = console_summary([(r.dir, r.result) for r in load_runs([tmp_path / "study"])], markdown=True)
    assert markdown.startswith(first + "\n\n" + second + "\n\n| strategy |")
    shutil.rmtree(other)
    # a config.yaml from before a setting existed lacks it: no difference on that account
    import yaml

    old = large / "1_frozen_s1" / "config.yaml"
    config = yaml.safe_load(old.read_text())
    del config["optim"]["weight_decay"]
    old.write_text(yaml.safe_dump(config))
    assert [c.label for c in group_configs(load_runs([tmp_path / "study"]))] == [
        "frozen (trainer.batch_size=8)", "frozen (trainer.batch_size=32)"]
    # the same settings again (a copied folder) are still a duplicate, whatever its logger group
    copy = large / "9_copy"
    shutil.copytree(large / "0_frozen_s0", copy)
    _config_yaml(copy, 32, group="a retry")
    again = group_configs(load_runs([tmp_path / "study"]))
    assert [(d.run.dir, d.kept.dir) for c in again for d in c.duplicates] == [(copy, large / "0_frozen_s0")]


# --- what a run measured -----------------------------------------------------------------------------


def _with_id(root: Path, name: str, ident: str | None) -> Path:
    """TIED's runs on a dataset called `name` with identity `ident` (None: a record from before ids)."""
    write_runs(root, TIED, dataset=name)
    for path in root.glob("*/result.json"):
        data = json.loads(path.read_text())
        if ident is not None:
            data["dataset_id"] = ident
        write_json(path, data)
    return root


def test_two_datasets_with_one_name_are_never_pooled_or_compared(tmp_path):
    a = _with_id(tmp_path / "a", "photos", "aaaaaa0000000000")
    b = _with_id(tmp_path / "b", "photos", "bbbbbb0000000000")
    configs = group_configs(load_runs([a, b]))
    assert len(configs) == 6 and all(len(c.runs) == 3 and not c.duplicates for c in configs)
    assert {c.dataset for c in configs} == {"photos [aaaaaa]", "photos [bbbbbb]"}
    assert "full (dataset=photos [aaaaaa])" in {c.label for c in configs}
    # pairs only inside a dataset: 3 per dataset, none across
    pairs = paired_rows(configs)
    assert len(pairs) == 6 and all(p["a"].split("[")[1] == p["b"].split("[")[1] for p in pairs)
    first, second = answer(configs)
    assert first.startswith("On photos [aaaaaa] (all per class): 3 seeds") and second.startswith("On photos [bbbbbb]")


def test_records_without_an_identity_fall_back_to_the_name(tmp_path):
    old = _with_id(tmp_path / "old", "photos", None)
    new = write_runs(tmp_path / "new", {"full": {3: (0.99, 0.98)}}, dataset="photos")
    for path in new.glob("*/result.json"):
        write_json(path, json.loads(path.read_text()) | {"dataset_id": "cccccc0000000000"})
    # one identity goes by that name: the old records join it
    full = next(c for c in group_configs(load_runs([old, new])) if c.strategy == "full")
    assert full.seeds == [0, 1, 2, 3] and full.dataset == "photos"
    # two identities by that name: the old records cannot say which, and stay apart
    other = _with_id(tmp_path / "other", "photos", "dddddd0000000000")
    configs = group_configs(load_runs([old, new, other]))
    assert {c.dataset for c in configs} == {"photos [no id]", "photos [cccccc]", "photos [dddddd]"}
    # one identity under two display names is one dataset
    renamed = _with_id(tmp_path / "renamed", "holiday", "dddddd0000000000")
    both = group_configs(load_runs([other, renamed]))
    assert len(both) == 3 and all(c.seeds == [0, 1, 2] and len(c.duplicates) == 3 for c in both)


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_dataset_identity_follows_the_data_not_its_name(tmp_path):
    files = {"train/cat/1.png": b"a" * 10, "train/dog/2.png": b"b" * 20, "test/cat/3.png": b"c" * 5}
    one = DataConfig(kind="imagefolder", root=str(_folder(tmp_path / "x" / "photos", files)))
    twin = DataConfig(kind="imagefolder", root=str(_folder(tmp_path / "y" / "photos", files)))
    ident = dataset_identity(one)
    assert len(ident) == 16 and ident == dataset_identity(one)
    assert dataset_identity(twin) != ident  # another folder of the same name (and here, the same files)
    assert dataset_identity(DataConfig(kind="imagefolder", root=one.root, name="renamed", image_size=64)) == ident
    assert dataset_identity(DataConfig(kind="imagefolder", root=one.root, split_seed=1)) != ident
    os.utime(tmp_path / "x" / "photos" / "train/cat/1.png", (1, 1))  # touched: the same data
    assert dataset_identity(one) == ident
    (tmp_path / "x" / "photos" / "train/cat/1.png").write_bytes(b"a" * 11)  # another image
    changed = dataset_identity(one)
    assert changed != ident
    (tmp_path / "x" / "photos" / "train/cat/4.png").write_bytes(b"")
    assert dataset_identity(one) != changed
    # a link back up the tree is followed once, not forever; a linked class folder's files count
    (tmp_path / "x" / "photos" / "train" / "loop").symlink_to(tmp_path / "x" / "photos")
    assert len(dataset_identity(one)) == 16
    linked = _folder(tmp_path / "z", {"train/cat/1.png": b"q" * 3})
    before = dataset_identity(DataConfig(kind="imagefolder", root=str(linked)))
    (linked / "train" / "dog").symlink_to(tmp_path / "y" / "photos" / "train" / "dog")
    assert dataset_identity(DataConfig(kind="imagefolder", root=str(linked))) != before
    # a .npz file by its bytes, wherever it lies
    npz = tmp_path / "a.npz"
    np.savez(npz, train_images=np.zeros((2, 4, 4), np.uint8))
    shutil.copy(npz, tmp_path / "copy.npz")
    by_bytes = dataset_identity(DataConfig(kind="medmnist", root=str(npz)))
    assert dataset_identity(DataConfig(kind="medmnist", root=str(tmp_path / "copy.npz"))) == by_bytes
    np.savez(tmp_path / "copy.npz", train_images=np.ones((2, 4, 4), np.uint8))
    assert dataset_identity(DataConfig(kind="medmnist", root=str(tmp_path / "copy.npz"))) != by_bytes
    # a fixed source by its name and split
    assert dataset_identity(DataConfig()) == dataset_identity(DataConfig(image_size=32, train_per_class=4))
    assert dataset_identity(DataConfig()) != dataset_identity(DataConfig(test_fraction=0.3))


# --- names that matplotlib would read as formulas; a figure that fails ------------------------------


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    import matplotlib.pyplot as plt

    from src.reporting import plots
    from src.reporting.page import write_report

    formula = r"w$\notacommand$"
    fig = plt.figure()
    fig.text(0.5, 0.5, formula)
    with pytest.raises(ValueError):  # what a raw name does to a figure: saving it fails
        fig.savefig(io.BytesIO())
    plt.close(fig)

    study = tmp_path / "study"
    for i, (dataset, strategy, acc) in enumerate([("d$1$", formula, 0.9), ("d$1$", "a$b$c", 0.8),
                                                  ("e$x", formula, 0.7), ("e$x", "a$b$c", 0.75)]):
        for seed in (0, 1):
            write_json(study / f"{i}_{seed}" / "result.json", RunRecord(
                strategy=strategy, seed=seed, status="completed", dataset=dataset, train_samples=10 * (i // 2 + 1),
                val_acc=acc, test_acc=acc + 0.01 * seed, train_flops=10 ** (9 + i), train_time_s=1.0 + i,
                trainable_params=100).to_json())
    missing: dict[str, str] = {}
    page = write_report([study], tmp_path / "report", missing=missing)
    assert missing == {} and {"pareto", "curves", "schedules", "drift", "wins"} <= {p.stem for p in (tmp_path / "report").glob("*.png")}
    assert 'id="fig-wins"' in page.read_text()
    configs = group_configs(load_runs([study]))
    fig = plots.pareto(configs)
    shown = [t.get_text() for t in fig.legends[0].get_texts()]
    # each label is escaped, and matplotlib draws it as the name, with no formula in it
    assert [t._preprocess_math(t.get_text()) for t in fig.legends[0].get_texts()][:2] == [(formula, False), ("a$b$c", False)]
    assert shown[:2] == [plots.plain(formula), plots.plain("a$b$c")]
    plt.close(fig)


def _study(tmp_path: Path) -> Path:
    return write_runs(tmp_path / "study", APART)


def test_a_figure_that_fails_leaves_the_page_with_a_note(tmp_path, monkeypatch):
    from src.reporting import plots
    from src.reporting.page import write_report
    from src.reporting.publish import publish

    def broken(*_a, **_k):
        raise RuntimeError("cannot draw this\nsecond line")

    monkeypatch.setattr(plots, "curves", broken)
    out = tmp_path / "report"
    out.mkdir()
    (out / "curves.png").write_bytes(b"an earlier report's figure")
    missing: dict[str, str] = {}
    page = write_report([_study(tmp_path)], out, missing=missing)
    assert missing == {"curves": "RuntimeError: cannot draw this"} and not (out / "curves.png").exists()
    html = page.read_text()
    assert 'id="missing-curves"' in html and 'id="fig-curves"' not in html and 'id="fig-pareto"' in html
    assert "1 figure(s) could not be drawn" in html
    problems: list[str] = []
    assert publish([tmp_path / "study"], tmp_path / "again", LoggerConfig(kind="none"), "g", problems=problems)
    assert problems == [f"report {tmp_path / 'again' / 'index.html'}: figure curves not drawn (RuntimeError: cannot draw this)"]


def test_a_result_json_given_stands_for_its_run_and_another_file_is_one_line(tmp_path, capsys):
    from src.reporting.cli import main

    study = write_runs(tmp_path / "study", APART)
    run = study / "0_full_s0"
    # it said "error: no readable result.json under .../0_full_s0/result.json", exit 2
    assert main([str(run / "result.json"), str(study / "3_layerwise_s0" / "result.json")]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("One seed per configuration") and (run / "report" / "index.html").is_file()
    (run / "notes.txt").write_text("not a run")
    assert main([str(run / "notes.txt")]) == 2
    assert capsys.readouterr().err == (f"error: {run / 'notes.txt'}: not a folder (give run, multirun or sweep folders, "
                                       "or a result.json)\n")


def test_a_multirun_whose_report_failed_says_so_in_one_line(tmp_path, capsys):
    from omegaconf import OmegaConf

    from src.train import ComparisonTable

    study = _study(tmp_path)
    (study / "report").write_text("a file where the report folder goes")
    ComparisonTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(study)}},
                                                        "logger": {"kind": "none"}}))
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.strip()]
    assert line.startswith(f"warning: no report written in {study / 'report'} (FileExistsError: ")
    assert "Traceback" not in err


# --- where the command-line report goes --------------------------------------------------------------


def test_report_out_refuses_a_file_a_folder_with_files_and_an_unwritable_place(tmp_path, capsys):
    from src.reporting.cli import main

    study = _study(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    full = tmp_path / "full"
    (full / "index.html").parent.mkdir()
    (full / "index.html").write_text("an earlier report")
    cases = {
        str(a_file): f"error: --out {a_file} is a file, not a folder",
        str(full): f"error: --out {full} already holds files (an earlier report?); nothing was overwritten: give a new "
                   "or empty folder",
        str(a_file / "sub"): f"error: cannot write --out {a_file / 'sub'} (Not a directory)",
    }
    for out, line in cases.items():
        capsys.readouterr()
        assert main([str(study), "--out", out]) == 2, out
        assert capsys.readouterr().err.strip() == line
    assert a_file.read_text() == "keep me" and (full / "index.html").read_text() == "an earlier report"
    assert sorted(p.name for p in full.iterdir()) == ["index.html"]


def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch):
    # Path("") is Path("."): `src.report "$UNSET"` reported the runs below the current folder and wrote
    # report/ there (a test fixture's run, from the repository root).
    from src.reporting.cli import main

    study = _study(tmp_path / "study")
    monkeypatch.chdir(tmp_path)  # the study is below the current folder: "" would have found it
    for argv, line in (([""], "error: a folder is an empty path (an unset variable?)"),
                       ([str(study), ""], "error: a folder is an empty path (an unset variable?)"),
                       ([str(study), "--out", ""], "error: --out is an empty path (an unset variable?)")):
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "report").exists() and not (study / "report").exists()


def test_a_second_report_goes_into_a_new_folder_and_names_runs_by_their_study(tmp_path, capsys):
    from src.reporting.cli import main

    a = write_runs(tmp_path / "A", APART)
    b = write_runs(tmp_path / "B", {"full": {3: (0.99, 0.99)}})
    assert main([str(a)]) == 0
    first = (a / "report" / "index.html").read_bytes()
    capsys.readouterr()
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr()
    assert out.err.strip().splitlines()[-1] == f"report: {a / 'report_1' / 'index.html'}"
    assert (a / "report" / "index.html").read_bytes() == first  # A's own report is still A's
    assert "B/0_full_s3" in (a / "report_1" / "index.html").read_text()
    # the console's run column tells two studies' folders apart
    assert {line.split()[-1] for line in out.out.splitlines() if line.split() and "_s" in line.split()[-1]} == \
        {f"A/{p.parent.name}" for p in a.glob("*/result.json")} | {"B/0_full_s3"}
    assert main([str(a)]) == 0 and (a / "report_2" / "index.html").is_file()


def test_a_report_that_cannot_be_written_whole_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from src.reporting import cli, page

    def full_disk(path, _data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(page, "write_json", full_disk)
    study = _study(tmp_path)
    assert cli.main([str(study), "--out", str(tmp_path / "report")]) == 1
    assert capsys.readouterr().err.strip() == f"error: report not written in {tmp_path / 'report'} (No space left on device)"
    assert not (tmp_path / "report" / "index.html").exists()


def test_a_report_the_disk_cut_short_leaves_nothing_and_the_same_command_writes_it_later(tmp_path, capsys, small_disk):
    """A full disk mid-report left its summary.json and figures without index.html: it read as a report,
    and the same command, once room was freed, was refused (`--out ... already holds files`)."""
    from src.reporting import cli
    from tests.disks import grow

    study, disk = _study(tmp_path), small_disk(96)  # room for some figures, not the whole report
    out = disk / "report"
    assert cli.main([str(study), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: report not written in {out} (No space left on device)"
    assert not out.exists()  # made by this call: removed with what it held
    out.mkdir()  # an empty folder given: kept, and left empty
    assert cli.main([str(study), "--out", str(out)]) == 1 and list(out.iterdir()) == []
    grow(disk, 4096)
    capsys.readouterr()
    assert cli.main([str(study), "--out", str(out)]) == 0 and (out / "index.html").is_file()


# --- a killed job -----------------------------------------------------------------------------------


def test_a_killed_job_is_told_the_setting_that_resumes_it_in_its_own_folder(tmp_path, capsys):
    # "the same command resumes it" was false for a multirun or a run: the same command makes a new dated
    # folder (multirun/DATE/TIME) and trains every job again, leaving the killed one as it was. The
    # warning and the page now name the setting that points the command back at the folder, in a form
    # Hydra's own override parser reads back to that folder (quoted where the path needs it).
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.config import OUR_SWEEPER
    from src.reporting.cli import main

    def killed(folder: Path, mode: str, sweeper: str) -> Path:
        (folder / ".hydra").mkdir(parents=True)  # as Hydra writes it at a job's start
        (folder / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  sweeper:\n    _target_: {sweeper}\n  mode: {mode}\n  job:\n    num: 1\n")
        (folder / "config.yaml").write_text("strategy:\n  name: full\n")
        return folder

    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    study = write_runs(tmp_path / "multirun" / "2026-12-05" / "04-53-43", APART)
    job = killed(study / "2_full", "MULTIRUN", basic)
    run = killed(tmp_path / "outputs" / "café run", "RUN", basic)
    trial = killed(tmp_path / "sweeps-out" / "study" / "1_layerwise", "MULTIRUN", OUR_SWEEPER)
    nested = tmp_path / "multirun" / "nested"  # hydra.sweep.subdir=${strategy.name}/${seed}: Hydra's multirun.yaml marks it
    (nested / "full").mkdir(parents=True)
    (nested / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    deep = killed(nested / "full" / "0", "MULTIRUN", basic)
    assert main([str(study), str(run), str(trial.parent), str(nested), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    hints = {line.removeprefix("warning: ").partition(": no result.json")[0]: line.rpartition("; ")[2]
             for line in err.splitlines() if "no result.json" in line}
    assert len(hints) == 4, err
    assert hints[str(trial)] == "the same command resumes it"  # a study's folder is its name's
    parser = OverridesParser.create()
    for folder, key, where in ((job, "hydra.sweep.dir", study), (run, "hydra.run.dir", run),
                               (deep, "hydra.sweep.dir", nested)):
        setting = hints[str(folder)].removeprefix("the same command with ").removesuffix(" resumes it")
        if setting.startswith("'"):  # the shell's quotes around Hydra's
            setting = setting[1:-1]
        [override] = parser.parse_overrides([setting])
        assert (override.key_or_group, Path(override.value())) == (key, where.resolve()), hints[str(folder)]
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"hydra.sweep.dir={study.resolve()} resumes it" in page and "the same command resumes it" in page


def test_a_killed_job_without_result_json_is_named_not_silently_left_out(tmp_path, capsys):
    # A SIGKILLed job leaves its folder (Hydra's .hydra/, config.yaml, a few metrics lines) but no
    # result.json: the report left it out without a word, and its answer named the rest's best.
    from src.reporting.cli import main

    study = write_runs(tmp_path / "study", APART)  # two strategies completed
    killed = study / "9_frozen_s0"  # killed mid-run: run() had written its config and an epoch
    killed.mkdir()
    (killed / "config.yaml").write_text("strategy:\n  name: frozen\n")
    (killed / "metrics.jsonl").write_text("")
    early = study / "8_lpft_s0"  # killed before run() wrote anything: only Hydra's own folder
    (early / ".hydra").mkdir(parents=True)
    (early / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (study / "report_old").mkdir()  # a folder without a run's files is no run
    assert main([str(study), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    why = "no result.json: the run was killed or is still running; the same command resumes it"
    assert [line for line in err.splitlines() if "no result.json" in line] == \
        [f"warning: {early}: {why}", f"warning: {killed}: {why}"], err
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="unfinished"' in page and str(killed) in page and str(early) in page
    # the end of the multirun: the same folders, in its table and on its page
    from omegaconf import OmegaConf

    from src import exits
    from src.train import ComparisonTable

    with pytest.raises(exits.Failed, match=rf"2 of 8 runs did not complete: 8_lpft_s0, 9_frozen_s0; the same "
                       rf"command with hydra.sweep.dir={study.resolve()} runs them again"):
        ComparisonTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(study)}},
                                                            "logger": {"kind": "none"}}))
    listed = [line.split() for line in capsys.readouterr().out.splitlines() if line.rstrip().endswith(("_lpft_s0", "_frozen_s0"))]
    assert [(row[-1], "failed" in row) for row in listed] == [("8_lpft_s0", True), ("9_frozen_s0", True)]
    assert str(killed) in (study / "report" / "index.html").read_text()


def test_commands_printed_with_a_folder_run_as_printed_when_it_has_a_space(tmp_path):
    # "my runs" (a laptop's folder, a mounted drive): the printed `truncate -s N .../study.log`, the
    # `find ... -exec wandb sync` and the interrupted multirun's `python -m src.report DIR` split the
    # path at the space, so each, pasted into a shell, acted on the wrong paths or none.
    import re
    import shlex
    import subprocess

    from src.reporting.tracking import sync_command
    from src.search.storage_damage import journal_damage
    from src.train import recorded

    root = tmp_path / "my runs"
    journal = root / "study.log"  # a journal whose last append was cut short (a killed worker)
    journal.parent.mkdir()
    journal.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    command = re.search(r"`(truncate [^`]*)`", str(journal_damage(journal))).group(1)
    subprocess.run(["bash", "-c", command], check=True, cwd=tmp_path)
    assert journal.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n' and journal_damage(journal) is None

    offline = root / "0_full" / "wandb" / "offline-run-20261205_050000-abc"
    offline.mkdir(parents=True)
    find = sync_command(root).replace("-exec wandb sync {} +", "-print")  # the same search, without uploading
    found = subprocess.run(["bash", "-c", find], capture_output=True, text=True, cwd=tmp_path)
    assert found.stdout.split("\n")[0] == str(offline), found.stderr

    report = re.search(r"\((python -m src\.report .*)\)$", recorded(root / "result.json", root)).group(1)
    assert shlex.split(report) == ["python", "-m", "src.report", str(root)]


def test_a_trials_own_run_is_not_pooled_with_its_re_runs(tmp_path):
    # The sweep chose the trial on its own run (seed 0): pooled with the re-runs on seeds 1-3 it put the
    # selection's luck back into the mean the re-runs were made to measure without it.
    from src.record.schema import RunRecord
    from src.reporting.configs import group_configs
    from src.reporting.runs import Run
    from src.reporting.tables import console_summary

    def run(where: str, seed: int, acc: float) -> Run:
        return Run(tmp_path / "sweep" / where, RunRecord(strategy="layerwise", seed=seed, status="completed",
                                                          dataset="digits", train_samples=50, val_acc=acc, test_acc=acc,
                                                          train_flops=1e9, train_time_s=1.0, trainable_params=10))

    runs = [run("3_layerwise", 0, 0.99), *(run(f"rerun/trial_0003/seed_{s}", s, a) for s, a in ((1, 0.80), (2, 0.82), (3, 0.84)))]
    (config,) = group_configs(runs)
    assert config.seeds == [1, 2, 3] and [r.dir.name for r in config.selected_on] == ["3_layerwise"]
    assert config.stats["test_acc"][0] == pytest.approx(0.82) and config.trials == [3]
    printed = console_summary([(r.dir, r.result) for r in runs])
    assert "1 run(s) not counted on the seed a sweep chose their configuration on" in printed
    assert "3_layerwise" in printed.splitlines()[-1]
    # a trial without re-runs is its own run, counted as before
    (alone,) = group_configs(runs[:1])
    assert alone.seeds == [0] and alone.selected_on == []


def test_a_multiruns_seeds_beside_a_sweeps_re_runs_are_counted_and_the_chosen_seed_is_not(tmp_path, capsys):
    # A multirun over seeds 0-2 of the configuration a sweep chose (trial 3, on seed 0) and re-ran on
    # seeds 1-3: the multirun's seed-0 job was kept first in folder order, the trial's own run its
    # "duplicate", the re-runs on seeds 1, 2 duplicates of the multirun's, and then every run that was
    # not a re-run, the multirun's three, was dropped as "selected on": the answer read "One seed per
    # configuration" on the re-runs' one new seed, 3 of its 4 seeds thrown away and seed 0's luck kept out
    # only by accident.
    from src.reporting.cli import main
    from src.reporting.verdict import verdicts

    sweeper = "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper"

    def write(folder: Path, seed: int, acc: float, job: int | None = None) -> None:
        record = RunRecord(strategy="layerwise", seed=seed, status="completed", dataset="digits", train_samples=1077,
                           val_acc=acc, test_acc=acc, val_samples=360, test_samples=360, train_flops=int(1e9),
                           train_time_s=1.0, trainable_params=10, strategy_params={"lr_decay": 2.6})
        write_json(folder / "result.json", record.to_json())
        if job is not None:  # the search's own job: Hydra's record names the sweeper and the trial
            (folder / ".hydra").mkdir()
            (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  sweeper:\n    _target_: {sweeper}\n  job:\n    num: {job}\n")

    grid, sweep = tmp_path / "multirun", tmp_path / "sweeps-out" / "study"
    for seed, acc in ((0, 324), (1, 327), (2, 331)):
        write(grid / f"{seed}_layerwise", seed, acc / 360)
    write(sweep / "3_layerwise", 0, 324 / 360, job=3)  # chosen on seed 0 (the same run as the multirun's)
    for seed, acc in ((1, 327), (2, 331), (3, 318)):
        write(sweep / "rerun" / "trial_0003" / f"seed_{seed}", seed, acc / 360)
    (config,) = group_configs(load_runs([grid, sweep]))
    assert config.seeds == [1, 2, 3]  # every seed the sweep did not choose it on, once
    assert sorted(str(r.dir.relative_to(tmp_path)) for r in config.selected_on) == [
        "multirun/0_layerwise", "sweeps-out/study/3_layerwise"]
    assert sorted(d.run.dir.name for d in config.duplicates) == ["seed_1", "seed_2"]
    assert config.stats["test_acc"][0] == pytest.approx((327 + 331 + 318) / 3 / 360)
    [v] = verdicts(group_configs(load_runs([grid, sweep])))
    assert v.seeds == (3, 3)
    assert main([str(grid), str(sweep), "--no-html"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 seeds per configuration") and "One seed" not in out
    assert "2 run(s) not counted on the seed a sweep chose their configuration on" in out
    # a multirun alone, its seed 0 included: no sweep chose anything there
    (alone,) = group_configs(load_runs([grid]))
    assert alone.seeds == [0, 1, 2] and alone.selected_on == []


def test_a_result_json_with_a_number_its_measure_cannot_take_is_named_and_left_out(tmp_path, capsys):
    # a test accuracy of 7.5 and a validation accuracy of -0.4 (a hand edit, a rotten file) were pooled
    # as they were: the answer read "frozen 4.210 [0.000, 1.000]", a best mean outside its own interval
    from src.reporting.cli import main
    root = write_runs(tmp_path / "study", APART)
    for folder, key, value in (("3_layerwise_s0", "test_acc", 7.5), ("4_layerwise_s1", "val_acc", -0.4),
                               ("5_layerwise_s2", "train_time_s", -3.0)):
        data = read_json_object(root / folder / "result.json")
        write_json(root / folder / "result.json", data | {key: value})
    assert main([str(root), "--no-html"]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {root / '3_layerwise_s0' / 'result.json'}: a completed run with test_acc 7.5, which it " \
           "cannot be (not in [0, 1])" in captured.err
    assert "val_acc -0.4, which it cannot be" in captured.err and "train_time_s -3, which it cannot be (not in [0, inf])" in captured.err
    assert "7.5" not in captured.out and "layerwise" not in captured.out.split("\n\n")[0]  # in no number of the answer
    # a share computed a hair past 1 (rounding) is no rot
    data = read_json_object(root / "0_full_s0" / "result.json")
    write_json(root / "0_full_s0" / "result.json", data | {"cka_features": 1 + 2e-16})
    assert [r.dir.name for r in load_runs([root])] == ["0_full_s0", "1_full_s1", "2_full_s2"]


def test_a_folder_a_process_is_training_in_now_is_said_to_be_not_given_a_resume_command(tmp_path, capsys):
    """While a killed run was resumed, `src.report` named its folder 'killed or still running; the same
    command ... resumes it' (starting it would be refused: the folder is in use), and the answer counted
    its earlier attempt as 'interrupted' with no word that it was training again. The folder's lock is
    asked of the kernel's table (/proc/locks) by another process here, never taken by the report."""
    import subprocess
    import sys

    from src.reporting.cli import main
    from tests.cli import REPO, env

    study = write_runs(tmp_path / "study", APART)
    killed = study / "9_frozen_s0"
    killed.mkdir()
    (killed / "config.yaml").write_text("strategy:\n  name: frozen\n")
    again = study / "7_full_s3"  # an interrupted attempt, being resumed now
    write_json(again / "result.json", {"status": "interrupted", "strategy": "full", "seed": 3, "dataset": "digits",
                                      "train_samples": 1077})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from src.record.lock import held\n"
        "with held(Path(sys.argv[1])), held(Path(sys.argv[2])):\n    print('held', flush=True); time.sleep(120)"),
        str(killed), str(again)], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([str(study), "--out", str(tmp_path / "report"), "--no-html"]) == 0
    finally:
        holder.kill()
        holder.wait()
    err, out = capsys.readouterr()[::-1]
    assert f"warning: {killed}: no result.json: the run was killed or is still running; a process is training in it " \
           "now (its folder is locked): report again once it ends" in err.splitlines(), err
    assert "full on seed 3 (interrupted; training again now: seed 3)" in out
    # once it has ended (killed here), the folder is a killed run's again, with the command that resumes it
    assert main([str(study), "--out", str(tmp_path / "report2"), "--no-html"]) == 0
    err, out = capsys.readouterr()[::-1]
    assert f"warning: {killed}: no result.json: the run was killed or is still running; the same command resumes it" \
        in err.splitlines() and "full on seed 3 (interrupted)" in out


def test_a_multirun_that_finds_no_run_in_its_folder_says_so(tmp_path, capsys):
    """Tester N: jobs that wrote their runs outside the sweep folder (a launcher that starts them
    elsewhere) left a multirun that printed nothing and exited 0. Now one line, exit 1."""
    from omegaconf import OmegaConf

    from src import exits
    from src.train import ComparisonTable

    (tmp_path / "sweep").mkdir()
    with pytest.raises(exits.Failed, match=rf"no run under {tmp_path / 'sweep'}: the jobs wrote no folder there"):
        ComparisonTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}},
                                                            "logger": {"kind": "none"}}))


def test_a_result_json_with_a_measure_that_is_not_a_number_is_named(tmp_path, capsys):
    """Tester O: val_acc "0.9" (a string) or peak_mem_mb "x" was shown as "-" and the run pooled on its
    other numbers, with no warning; README says a bad file is named. It still counts as missing (the
    run's other numbers kept: tests/test_files_trust.py), and is named. A null (a NaN measured) is not this."""
    from src.reporting.cli import main
    root = write_runs(tmp_path / "study", APART)
    for folder, key, value in (("3_layerwise_s0", "val_acc", "0.9"), ("4_layerwise_s1", "peak_mem_mb", "x"),
                               ("5_layerwise_s2", "test_acc", True)):
        data = read_json_object(root / folder / "result.json")
        write_json(root / folder / "result.json", data | {key: value})
    assert main([str(root), "--no-html"]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {root / '3_layerwise_s0' / 'result.json'}: val_acc \"0.9\" is not a number: counted as " \
           "missing, the run's other numbers kept" in err
    assert 'peak_mem_mb "x" is not a number' in err and "test_acc true is not a number" in err


def test_a_duplicate_that_measured_other_accuracies_is_said_in_the_answer(tmp_path):
    # the same configuration and seed run again in another folder (an older code version, a GPU run)
    # with other numbers: the first in folder order was counted and the answer read as if the seeds
    # repeated, so `src.report OLD NEW` and `src.report NEW OLD` named different winners unsaid
    old = write_runs(tmp_path / "old", APART)
    new = write_runs(tmp_path / "new", {"full": {s: (0.90, 0.90) for s in (0, 1, 2)}})
    for first, second in ((old, new), (new, old)):
        [text] = answer(group_configs(load_runs([first, second])))
        assert ("Run again on the same seed with other accuracies, and counted once (the first run in folder order): "
                "full on seeds 0, 1, 2, up to 9.2 points apart.") in text
    # a retry that repeats its numbers (a CPU run does, bit for bit) is a plain duplicate: nothing said
    write_runs(tmp_path / "copy", {"full": APART["full"]})
    [text] = answer(group_configs(load_runs([old, tmp_path / "copy"])))
    assert "Run again" not in text


def test_strategies_run_at_other_settings_say_so_in_their_labels(tmp_path):
    # a folder mixing an older study (96 px, 6 epochs) with a newer one (32 px, 1 epoch): each strategy had
    # one configuration, so its label was the strategy alone, and the answer ranked "layerwise, full and
    # frozen" as if only the strategy differed
    study = write_runs(tmp_path / "old", {"layerwise": APART["layerwise"]}, epochs=6, image_size=96)
    write_runs(tmp_path / "new", {"full": APART["full"]}, epochs=1, image_size=32)
    configs = group_configs(load_runs([study, tmp_path / "new"]))
    assert sorted(c.label for c in configs) == ["full (epochs=1, image_size=32)", "layerwise (epochs=6, image_size=96)"]
    [text] = answer(configs)
    assert "Best on validation and on test: full (epochs=1, image_size=32)" in text
    # the same settings across strategies (a study as it is run): the strategy alone, as before
    assert sorted(c.label for c in group_configs(load_runs([write_runs(tmp_path / "one", APART)]))) == ["full", "layerwise"]


def test_strategies_run_at_other_config_yaml_settings_say_so_in_their_labels(tmp_path):
    # the same, for a setting only config.yaml records (trainer.batch_size): one value inside each
    # configuration, so nothing split them, and the labels were the bare strategies
    study = write_runs(tmp_path, APART)
    for run in study.iterdir():
        batch = 32 if "layerwise" in run.name else 16
        (run / "config.yaml").write_text(f"trainer:\n  batch_size: {batch}\n  epochs: 1\nseed: 0\n")
    configs = group_configs(load_runs([study]))
    assert sorted(c.label for c in configs) == ["full (trainer.batch_size=16)", "layerwise (trainer.batch_size=32)"]
    assert [len(c.runs) for c in configs] == [3, 3] and not any(c.duplicates for c in configs)


def test_a_bad_out_is_refused_before_any_run_is_read_or_printed(tmp_path, capsys):
    """`src.report DIR --out FILE` printed the whole answer and table on stdout, then refused --out
    with exit 2: README's "one line" came last, after a report that was never written. Now --out is
    checked first; a good --out made for a report with no readable run is taken away again."""
    from src.reporting.cli import main

    study = _study(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    capsys.readouterr()
    assert main([str(study), "--out", str(a_file)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"error: --out {a_file} is a file, not a folder"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "new")]) == 2
    assert "no readable result.json" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main([str(study), "--out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "index.html").is_file()
