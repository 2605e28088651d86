"""W&B conventions, read back from the files an offline run writes: per-epoch metrics on `epoch`,
validation accuracy summarised as its best epoch, tags, the Pareto front as a table and a chart on a
log cost axis, and one sync command that uploads every offline run of a study, re-runs included."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.config import LoggerConfig
from src.record.schema import EpochRecord
from src.reporting.tracking import (
    REQUIREMENTS, SYNC_COMMAND, BEST_IS_MAX, EPOCH_METRICS, installed_packages, make_tracker, run_summary, run_tags,
    sync_command, untracked,
)
from tests import wandb_files
from tests.cli import env

pytest.importorskip("wandb")
OFFLINE = LoggerConfig(kind="wandb", mode="offline", project="test", tags=("nightly",))
VAL = [0.50, 0.80, 0.70]  # the best epoch is not the last


def _run_file(root: Path) -> Path:
    [path] = root.glob("wandb/offline-run-*/run-*.wandb")
    return wandb_files.closed(path)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory) -> Path:
    """A training run's tracking as run() does it: tags from the record, per-epoch lines, the result."""
    root = tmp_path_factory.mktemp("run")
    record = {"strategy": "layerwise", "dataset": "digits", "model": "test_efficientnet"}
    tracker = make_tracker(OFFLINE, root, "r", {"seed": 0}, "layerwise", tags=run_tags(record), per_epoch=True)
    for epoch, acc in enumerate(VAL):
        line = EpochRecord(epoch=epoch, val_acc=acc, train_loss=1.0 / (epoch + 1), lrs={"head": 0.1}).to_json()
        tracker.log({k: v for k, v in line.items() if k != "schema_version"}, step=epoch)
    # trainer.select=last: the result's val_acc is the last epoch's, not the best
    tracker.summary(run_summary(record | {"val_acc": VAL[-1], "test_acc": 0.66}))
    tracker.finish()
    return _run_file(root)


def test_per_epoch_metrics_are_plotted_against_epoch(training_run):
    declared = wandb_files.metrics(training_run)
    assert "epoch" in declared and declared["lr/*"]["step_metric"] == "epoch"
    for name in EPOCH_METRICS:
        assert declared[name]["step_metric"] == "epoch", name
    assert {n for n, d in declared.items() if "max" in d["summary"]} == set(BEST_IS_MAX)
    assert [h["epoch"] for h in wandb_files.history(training_run) if "val_acc" in h] == [0, 1, 2]


def test_best_validation_accuracy_is_summarised_as_max(training_run):
    summary = wandb_files.summary(training_run)
    assert summary["val_acc"] == {"max": max(VAL)}  # not overwritten by the result's (last-epoch) value
    assert summary["selected_val_acc"] == VAL[-1] and summary["test_acc"] == 0.66


def test_every_run_is_tagged_with_strategy_dataset_and_model(training_run):
    assert list(wandb_files.run_info(training_run).tags) == ["nightly", "layerwise", "digits", "test_efficientnet"]
    assert run_tags({"strategy": "full", "dataset": None, "model": "m"}) == ["full", "m"]


def test_the_pareto_front_is_a_table_and_a_chart_on_a_log_cost_axis(tmp_path):
    rows = [{"config": "frozen", "strategy": "frozen", "seeds": 2, "test_acc": 0.91, "test_acc_ci95": 0.01,
             "train_flops": 1e11},
            {"config": "full", "strategy": "full", "seeds": 2, "test_acc": 0.97, "test_acc_ci95": math.nan,
             "train_flops": 2e12}]
    tracker = make_tracker(OFFLINE, tmp_path, "s", {}, "summary")
    tracker.pareto("pareto_front", rows[::-1], "test_acc", "train_flops", "front")
    tracker.scatter("accuracy_vs_flops", rows, "train_flops", "test_acc", "all", log_x=True)
    tracker.finish()
    _run_file(tmp_path)  # flushed
    front = wandb_files.table(tmp_path, "pareto_front")
    assert [(r["config"], r["train_flops"], r["log10 train_flops"]) for r in front] == \
        [("frozen", 1e11, pytest.approx(11.0)), ("full", 2e12, pytest.approx(math.log10(2e12)))]  # by rising cost
    assert front[1]["test_acc_ci95"] is None  # NaN as null: strict JSON readers load the table
    logged = {k.split("/")[0]: h[k] for h in wandb_files.history(_run_file(tmp_path)) for k in h if k.endswith("/_type")}
    assert logged["pareto_front"] == "table-file" and logged["pareto_front_chart_table"] == "table-file"
    # the chart: W&B's line preset over the front, x = log10 of the cost
    config = wandb_files.config(_run_file(tmp_path))
    charts = {k.removeprefix("_wandb/visualize/"): v["panel_config"] for k, v in config.items()
              if k.startswith("_wandb/visualize/")}
    assert charts["pareto_front_chart"]["panelDefId"] == "wandb/line/v0"
    assert charts["accuracy_vs_flops"]["panelDefId"] == "wandb/scatter/v0"
    for chart in charts.values():
        assert {k: chart["fieldSettings"][k] for k in ("x", "y")} == {"x": "log10 train_flops", "y": "test_acc"}
    scatter = wandb_files.table(tmp_path, "accuracy_vs_flops_table")
    assert [r["log10 train_flops"] for r in scatter] == pytest.approx([11.0, math.log10(2e12)])


def test_two_tasks_fronts_are_two_lines_in_the_front_chart(tmp_path):
    # a front is per dataset and training-set size: one line through both joined points that measure
    # nothing of each other (an easy dataset's frozen run beside a hard one's full)
    rows = [{"config": c, "strategy": c, "seeds": 1, "task": task, "test_acc": acc, "test_acc_ci95": None,
             "train_flops": flops}
            for c, task, acc, flops in (("frozen", "digits, all per class", 0.99, 1e11),
                                        ("full", "xray, all per class", 0.90, 2e12),
                                        ("frozen", "xray, all per class", 0.80, 1e11))]
    tracker = make_tracker(OFFLINE, tmp_path, "s", {}, "summary")
    tracker.pareto("pareto_front", rows, "test_acc", "train_flops", "front")
    tracker.finish()
    front = wandb_files.table(tmp_path, "pareto_front")
    assert [(r["task"], r["config"]) for r in front] == [("digits, all per class", "frozen"),
                                                         ("xray, all per class", "frozen"), ("xray, all per class", "full")]
    config = wandb_files.config(_run_file(tmp_path))
    chart = config["_wandb/visualize/pareto_front_chart"]["panel_config"]
    assert chart["fieldSettings"]["stroke"] == "task"


def test_each_run_saves_the_installed_packages_read_once_per_process(training_run, tmp_path):
    """W&B's own requirements.txt read every package's metadata at each init; ours is read once per
    process and saved with every run all the same (a files record, so `wandb sync` uploads it)."""
    import importlib.metadata

    files = [r.files for r in wandb_files.records(training_run) if r.WhichOneof("record_type") == "files"]
    assert [f.path for record in files for f in record.files].count(REQUIREMENTS) == 1
    lines = (training_run.parent / "files" / REQUIREMENTS).read_text().splitlines()
    for name in ("torch", "wandb", "optuna"):
        assert f"{name}=={importlib.metadata.version(name)}" in lines, name
    assert len(lines) == len(set(lines)) > 20
    reads = installed_packages.cache_info().misses
    second = make_tracker(OFFLINE, tmp_path, "r2", {}, "t")
    second.finish()
    [path] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert (path.parent / "files" / REQUIREMENTS).read_text().splitlines() == lines
    assert installed_packages.cache_info().misses == reads  # not read again


def test_one_command_syncs_every_offline_run_of_a_sweep_reruns_included(training_run, tmp_path):
    """A sweep writes runs at three depths (src.search.rerun, the sweeper): its trials, the Pareto set's re-runs
    on other seeds, and the report's summary run. The documented command finds them all."""
    run_folder = training_run.parent
    where = ["trial_0000", "trial_0003", "rerun/trial_0003/seed_1", "rerun/trial_0003/seed_2", "report", "0_frozen"]
    for sub in where:
        shutil.copytree(run_folder, tmp_path / "study" / sub / "wandb" / run_folder.name)
    dry = sync_command(tmp_path / "study").replace("wandb sync", f"{Path(sys.executable).parent / 'wandb'} sync --dry-run")
    assert SYNC_COMMAND.format(root="X") == "find X -type d -name 'offline-run-*' -exec wandb sync {} +"
    proc = subprocess.run(dry, shell=True, env=env() | {"WANDB_MODE": "offline"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = proc.stdout + proc.stderr
    assert f"Would sync {len(where)} run(s)" in listed
    for sub in where:
        assert str(tmp_path / "study" / sub / "wandb" / run_folder.name) in listed, sub


def _every_call(tracker) -> None:
    rows = [{"config": "full", "strategy": "full", "seeds": 1, "test_acc": 0.9, "train_flops": 1e9}]
    tracker.log({"val_acc": 0.5}, step=0)
    tracker.table("runs", rows)
    tracker.scatter("s", rows, "train_flops", "test_acc", "t", log_x=True)
    tracker.lines("l", [[1, 2]], [[0.5, 0.6]], ["full"], "t")
    tracker.pareto("p", rows, "test_acc", "train_flops", "t")
    tracker.summary({"test_acc": 0.9})
    tracker.finish()


@pytest.mark.parametrize("logger, wandb_mode", [(LoggerConfig(kind="none"), None),
                                                (LoggerConfig(kind="wandb", mode="disabled"), None),
                                                (LoggerConfig(kind="wandb"), "disabled")])  # W&B's own switch
def test_tracking_off_is_wandbs_disabled_run_and_writes_nothing(tmp_path, monkeypatch, caplog, logger, wandb_mode):
    # WANDB_MODE=disabled under logger.mode=auto went to wandb.init with a run folder: a warning
    # ("W&B requirements failed ...; tracking disabled for this run") and W&B's files in /tmp/wandb.
    if wandb_mode:
        monkeypatch.setenv("WANDB_MODE", wandb_mode)
    monkeypatch.chdir(tmp_path)  # W&B's default folder is the working directory: nothing may land there either
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level("WARNING"):
        tracker = make_tracker(logger, run_dir, "x", {"seed": 0}, "t", per_epoch=True)
        assert tracker.run is not None and tracker.run.disabled
        _every_call(tracker)
    assert caplog.records == []  # every call was taken, none failed over to "tracking disabled"
    assert list(tmp_path.rglob("*")) == [run_dir]


def test_wandb_that_cannot_start_leaves_the_run_untracked_not_failed(tmp_path, monkeypatch, caplog):
    import wandb

    real_init = wandb.init

    def refused(*args, mode=None, **kwargs):
        if mode != "disabled":
            raise wandb.errors.CommError("401: invalid API key")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", refused)
    with caplog.at_level("WARNING"):
        tracker = make_tracker(LoggerConfig(kind="wandb", mode="online"), tmp_path, "x", {}, "t")
    assert tracker.run.disabled and "W&B unavailable; this run is not tracked" in caplog.text
    _every_call(tracker)

    def broken(*args, **kwargs):
        raise RuntimeError("W&B is broken")

    monkeypatch.setattr(wandb, "init", broken)  # not even the disabled run starts: still no exception
    with caplog.at_level("WARNING"):
        tracker = untracked()
    assert tracker.run is None and "disabled run failed to start (RuntimeError: W&B is broken)" in caplog.text
    _every_call(tracker)
    assert not (tmp_path / "wandb").exists()




def test_a_run_started_again_leaves_one_offline_run_to_sync_its_earlier_attempt_set_aside(training_run, tmp_path,
                                                                                          tiny_config):
    """A killed attempt's offline run stayed beside the run that resumed it (which logs its epochs
    again with the rest): the sync command uploaded both, two W&B runs of one config and seed in the
    study's group, one cut short."""
    from src.reporting.wandb_folders import SUPERSEDED, set_aside_earlier_attempts, wandb_runs
    from src.training.run import run

    run_dir = tmp_path / "run"
    earlier = run_dir / "wandb" / training_run.parent.name
    shutil.copytree(training_run.parent, earlier)  # the attempt that was killed
    # an attempt that is not tracked sets nothing aside: the earlier run is all W&B will have
    assert set_aside_earlier_attempts(run_dir, wandb_runs(run_dir)) == [] and earlier.is_dir()
    run(tiny_config(trainer={"epochs": 1, "drift_probe": 0}, logger={"kind": "wandb", "mode": "offline", "project": "test"}),
        run_dir)
    dry = sync_command(run_dir).replace("wandb sync", f"{Path(sys.executable).parent / 'wandb'} sync --dry-run")
    proc = subprocess.run(dry, shell=True, env=env() | {"WANDB_MODE": "offline"}, capture_output=True, text=True,
                          timeout=120)
    listed = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Would sync 1 run(s)" in listed, listed[-2000:]
    assert str(earlier) not in listed
    assert (earlier.with_name(SUPERSEDED + earlier.name) / training_run.name).is_file()  # kept, not deleted


def _run_info(root: Path):
    return wandb_files.run_info(_run_file(root))


def test_wandbs_own_environment_variables_count_where_the_config_says_nothing(tmp_path, monkeypatch):
    # A project default in the config hid WANDB_PROJECT, and the tags every run passes hid WANDB_TAGS:
    # runs went to finetune-strategies, untagged, whatever the user had exported.
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_TAGS", "exp7, nightly")
    tracker = make_tracker(LoggerConfig(kind="wandb", mode="offline"), tmp_path / "a", "a", {}, "t", tags=["full"])
    tracker.finish()
    info = _run_info(tmp_path / "a")
    assert info.project == "from-env" and list(info.tags) == ["exp7", "nightly", "full"]
    # a value given in the config still wins over the environment, as in W&B
    tracker = make_tracker(LoggerConfig(kind="wandb", mode="offline", project="given"), tmp_path / "b", "b", {}, "t")
    tracker.finish()
    assert _run_info(tmp_path / "b").project == "given"
    monkeypatch.delenv("WANDB_PROJECT")
    tracker = make_tracker(LoggerConfig(kind="wandb", mode="offline"), tmp_path / "c", "c", {}, "t")
    tracker.finish()
    assert _run_info(tmp_path / "c").project == "finetune-strategies"


def test_a_studys_summary_run_joins_its_runs_group(tmp_path, monkeypatch):
    # logger.group put a multirun's jobs in that group, but its summary run went to multirun-DATE-TIME;
    # WANDB_RUN_GROUP was overridden by the folder's name for both.
    from src.reporting.publish import publish
    from src.train import multirun_group
    from tests.test_verdict import write_runs

    study = write_runs(tmp_path / "multirun" / "2026-01-01" / "10-00-00", {"full": {0: (0.5, 0.5)}, "frozen": {0: (0.4, 0.4)}})
    hydra = OmegaConf.create({"sweep": {"dir": str(study)}, "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}})
    assert multirun_group(hydra) == "multirun-2026-01-01-10-00-00"
    assert publish([study], study / "report", LoggerConfig(kind="wandb", mode="offline", group="mine"), multirun_group(hydra))
    info = _run_info(study / "report")
    assert info.run_group == "mine" and info.display_name == "mine-summary"
    monkeypatch.setenv("WANDB_RUN_GROUP", "from-env")
    assert multirun_group(hydra) == "from-env"


@pytest.mark.parametrize("output_dir", ["/scratch/me", "."])
def test_a_sweeps_runs_are_grouped_by_its_study_wherever_its_folder_is(output_dir):
    # The group was the sweep folder's last three parts: "me-sweeps-out-layerwise-default" under
    # paths.output_dir=/scratch/me, "sweeps-out-layerwise-default" under ".", while the Pareto set's
    # re-runs went to "layerwise-default-rerun".
    from src.search.job import SWEEPER_TARGET
    from src.train import multirun_group

    hydra = OmegaConf.create({"sweep": {"dir": f"{output_dir}/sweeps-out/layerwise-default"},
                              "sweeper": {"_target_": SWEEPER_TARGET, "study_name": "layerwise-default"}})
    assert multirun_group(hydra) == "layerwise-default"
    hydra.sweeper.study_name = None
    assert multirun_group(hydra) == "sweep"  # the study's name when none is given (src/search/job.py)


def test_a_wandb_server_that_cannot_be_reached_is_waited_for_once_per_process(tmp_path, monkeypatch, caplog):
    """With credentials but no network (a laptop on a train, a cluster node without egress), every run
    waited W&B's whole init timeout (60 s, then offline): a multirun or a sweep in one process paid
    it per job, 20 minutes of a 20-trial sweep. The first run's failure now sends the later runs of
    the process straight to offline, each saying why."""
    import src.reporting.tracking as tracking

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused, retried until the timeout
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "INIT_TIMEOUT_S", 3)
    cfg = LoggerConfig(kind="wandb", mode="auto", project="test")
    with caplog.at_level("WARNING"):
        for job in ("0_full", "1_full"):
            tracker = make_tracker(cfg, tmp_path / job, job, {}, "full")
            assert tracker.run is not None and tracker.run.settings.mode == "offline"
            tracker.finish()
    tried = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B init (online) failed")]
    assert len(tried) == 1, caplog.text  # the second job did not wait again
    assert "W&B online failed earlier in this process" in caplog.text
    for job in ("0_full", "1_full"):  # both offline, each with its own run to sync
        assert len(list((tmp_path / job).glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_a_failed_runs_wandb_summary_says_so_as_its_result_json_does(tmp_path, tiny_config):
    """A run that failed (here a loss that diverged) wrote `status: failed` and the error to
    result.json, but its W&B summary had neither: in the runs table of the dashboard a failed run had
    no status beside the completed runs' `completed`, and the error was only in the local file."""
    import json

    from src.training.run import DivergedError, run

    cfg = tiny_config(optim={"lr": 1e30, "warmup_epochs": 0}, strategy={"name": "full"},
                      logger={"kind": "wandb", "mode": "offline", "project": "test"})
    with pytest.raises(DivergedError):
        run(cfg, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    summary = wandb_files.summary(_run_file(tmp_path))
    assert result["status"] == "failed"
    for key in ("status", "error", "failed_epoch"):
        assert summary[key] == result[key], key


def test_a_runs_notes_are_set_from_the_command_line_or_wandbs_own_variable(tmp_path, monkeypatch):
    """W&B's notes (the run's description in the dashboard) could not be given: `logger.notes=...` was
    an unknown key, only WANDB_NOTES reached W&B. Given, it wins over WANDB_NOTES, as logger.project
    wins over WANDB_PROJECT."""
    from src.gate import check_overrides, to_run_config

    monkeypatch.setenv("WANDB_NOTES", "from the environment")
    cfg = to_run_config(check_overrides(["logger=wandb", "logger.mode=offline", "logger.project=test",
                                         "logger.notes='lr sweep after the BN fix'"])).logger
    make_tracker(cfg, tmp_path / "given", "r", {}, "t").finish()
    assert _run_info(tmp_path / "given").notes == "lr sweep after the BN fix"
    make_tracker(OFFLINE, tmp_path / "env", "r", {}, "t").finish()
    assert _run_info(tmp_path / "env").notes == "from the environment"


def test_wandb_run_id_in_the_environment_does_not_give_every_run_one_id(tmp_path, monkeypatch, caplog):
    """W&B reads WANDB_RUN_ID for every wandb.init: a multirun's jobs and its summary run all took that
    one id, and `wandb sync` of their offline runs wrote them into one W&B run, each over the other.
    Each run has an id of its own; the variable is said not to be used."""
    monkeypatch.setenv("WANDB_RUN_ID", "shared01")
    with caplog.at_level("WARNING"):
        for job in ("0_frozen", "1_full"):
            make_tracker(OFFLINE, tmp_path / job, job, {}, "t").finish()
    ids = [_run_info(tmp_path / job).run_id for job in ("0_frozen", "1_full")]
    assert len(set(ids)) == 2 and "shared01" not in ids
    assert "WANDB_RUN_ID is not used" in caplog.text
