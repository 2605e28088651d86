"""`hydra/sweeper=optuna` (hydra_plugins/ft_optuna_sweeper, src/search/launched.py, job.py): the syntax of
hydra-optuna-sweeper 1.3 parsed into our search space, the plugin found by Hydra, Optuna's
conventions (metric names, a value per epoch, absolute run_dir) read back through optuna-dashboard,
and, slow, a 3-trial study through src.train, interrupted and resumed."""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from src.sweep_driver import split_space
from hydra_plugins.ft_optuna_sweeper.errors import SettingError
from src.config import ConfigError
from src.gate import compose_train
from src.record.schema import EpochRecord
from src.search.job import SWEEPER_TARGET, storage_url, trial_reporter
from src.search.pruning import EpochReporter, PruneSpec
from src.search.storage import make_storage
from src.search.study import open_study
from tests.test_sweep import postgres_url  # noqa: F401  (a fixture: a throw-away PostgreSQL server)

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.name=test_efficientnet", "model.pretrained=false", "dataset.image_size=32",
        "dataset.train_per_class=4", "trainer.epochs=2", "logger=none"]


def test_hydra_optuna_sweeper_syntax_becomes_our_search_space():
    params, fixed = split_space([
        "strategy.lr_decay=tag(log, interval(1,10))",
        "optim.lr=interval(0.001, 0.01)",
        "strategy.unfreeze_depth=range(0,8)",
        "strategy.unfreeze_every=choice(0, 1)",
        "optim.weight_decay=range(0, 1, 0.25)",
        "trainer.epochs=2",
        "seed=3", "seed=choice(1, 2)",  # the fixed one wins, wherever it is, as in hydra-optuna-sweeper 1.3
    ])
    assert params["strategy.lr_decay"] == {"type": "float", "low": 1.0, "high": 10.0, "log": True}
    assert params["optim.lr"] == {"type": "float", "low": 0.001, "high": 0.01, "log": False}
    # range includes its stop, as hydra-optuna-sweeper 1.3's IntDistribution(start, stop, step) does
    assert params["strategy.unfreeze_depth"] == {"type": "int", "low": 0, "high": 8, "step": 1}
    assert params["strategy.unfreeze_every"] == {"type": "categorical", "choices": [0, 1]}
    assert params["optim.weight_decay"] == {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}
    assert fixed == ["trainer.epochs=2", "seed=3"]
    # `groups`, in a range or interval only, is the model's number of backbone groups
    params, _ = split_space(["strategy.unfreeze_depth=range(0, groups)", "model.name=choice(groups, x)"], groups=6)
    assert params["strategy.unfreeze_depth"]["high"] == 6 and params["model.name"]["choices"] == ["groups", "x"]


def test_hydra_finds_the_plugin_with_its_defaults():
    cfg = compose_train(["hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.objectives=[val_acc,train_flops]"],
                        return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == SWEEPER_TARGET
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    # null n_jobs, study_name and storage: src.train's driver's own (1, "sweep", sqlite in the sweep folder)
    assert (sweeper.n_trials, sweeper.n_jobs, sweeper.study_name, sweeper.storage) == (3, None, None, None)
    assert list(sweeper.objectives) == ["val_acc", "train_flops"] and sweeper.pruner.name == "auto"
    nsga = compose_train(["hydra/sweeper=optuna", "hydra/sweeper/sampler=nsgaii"], return_hydra_config=True)
    assert nsga.hydra.sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler"
    # 1.3's motpe: Optuna 5's TPE, which is multi-objective
    motpe = compose_train(["hydra/sweeper=optuna", "hydra/sweeper/sampler=motpe"], return_hydra_config=True)
    assert motpe.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"


def test_make_sweep_preset_composes_with_its_training_settings_and_the_command_line_wins():
    """`make sweep` = `python -m src.train -m sweep=default`: sweeps/default.yaml, registered as the
    config group `sweep`, selects our sweeper and sets what every trial trains."""
    cfg = compose_train(["sweep=default", "hydra.sweeper.n_trials=3", "dataset.image_size=32"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == SWEEPER_TARGET and sweeper.sampler.seed == 0
    assert (sweeper.study_name, sweeper.n_trials, list(sweeper.objectives)) == ("layerwise-default", 3, ["val_acc", "train_flops"])
    assert sweeper.params["strategy.unfreeze_depth"] == "range(0, groups)" and list(sweeper.rerun_seeds) == []
    assert cfg.strategy.name == "layerwise" and (cfg.trainer.epochs, cfg.trainer.progress) == (4, False)
    # the drift probe is opt-in for sweeps (docs/sweeps-measured.md, "Cheap trials")
    assert cfg.trainer.drift_probe == 0
    assert compose_train(["sweep=default", "trainer.drift_probe=256"]).trainer.drift_probe == 256
    assert cfg.dataset.image_size == 32  # the command line over the preset
    assert cfg.hydra.sweep.dir == "./sweeps-out/layerwise-default"  # paths.output_dir=.
    assert compose_train(["sweep=default", "strategy=full"]).strategy.name == "full"
    with pytest.raises(Exception, match="sweep/nosuch"):
        compose_train(["sweep=nosuch"])


def test_a_job_of_another_sweeper_gets_no_reporter(tmp_path):
    with trial_reporter({"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}, str(tmp_path), 0,
                        None, tmp_path) as reporter:  # type: ignore[arg-type]
        assert reporter is None
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert storage_url("journal:/x.log", tmp_path) == "journal:/x.log"


def _finished_study(tmp_path: Path) -> str:
    """A single-objective study written the way a sweep writes it: metric names, a value reported
    each epoch by EpochReporter, run_dir absolute."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(optuna.storages.RDBStorage(url), "dash", ["maximize"], {"config": {}}, None, url,
                       metric_names=["val_acc"])
    for number, accs in enumerate([[0.2, 0.5], [0.3, 0.6]]):
        trial = study.ask()
        reporter = EpochReporter(study, trial, ["val_acc"], "none", PruneSpec(name="none"), running_best=True, epochs=2)
        for epoch, acc in enumerate(accs):
            assert reporter(EpochRecord.from_json({"schema_version": 2, "epoch": epoch, "val_acc": acc})) is None
        trial.set_user_attr("run_dir", str((tmp_path / f"trial_{number}").resolve()))
        study.tell(trial, accs[-1])
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 8-14 s: optuna-dashboard's start
def test_optuna_dashboard_serves_a_finished_study(tmp_path):
    url = _finished_study(tmp_path)
    port = _free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen([str(dashboard), url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 30 s"
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["dash"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=5) as r:
            detail = json.load(r)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert detail["objective_names"] == ["val_acc"]  # study.set_metric_names
    trials = sorted(detail["trials"], key=lambda t: t["number"])
    assert [t["values"] for t in trials] == [[0.5], [0.6]]
    assert [[v["value"] for v in t["intermediate_values"]] for t in trials] == [[0.2, 0.5], [0.3, 0.6]]
    run_dirs = [a["value"] for t in trials for a in t["user_attrs"] if a["key"] == "run_dir"]
    assert run_dirs == [str((tmp_path / "trial_0").resolve()), str((tmp_path / "trial_1").resolve())]
    assert all(os.path.isabs(d) for d in run_dirs)


def _sweep(out: Path, storage: str, n_trials: int, depth: str = "range(0,3)") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", "hydra/sweeper=optuna", "strategy.lr_decay=tag(log, interval(1,10))",
         f"strategy.unfreeze_depth={depth}", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={storage}",
         "hydra.sweeper.study_name=tiny", "hydra.sweeper.sampler.seed=0", f"hydra.sweep.dir={out}", *TINY],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_three_trial_study_through_the_plugin_interrupted_and_resumed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _sweep(tmp_path / "sweep", storage, 3)
    # Ctrl-C once the first trial has finished and the second has started (its run wrote its config):
    # the whole of the second trial is the window, so a busy machine cannot let it finish first
    deadline = time.monotonic() + 300
    while not list((tmp_path / "sweep").glob("1_*/config.yaml")):
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    # A Ctrl-C that lands while trial 1 is being recorded (a storage call, a checkpoint's save) waits
    # until that is done, and then stops the next trial: 1 or 2 trials are done, never one cut in half.
    said = re.search(r"interrupted by Ctrl-C: ([12]) of 3 trials of study tiny", out)
    assert said and "run the same command to resume" in out, out
    done_before = int(said.group(1))
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    assert states[:done_before + 1] == [optuna.trial.TrialState.COMPLETE] * done_before + [optuna.trial.TrialState.FAIL], out
    assert study.trials[done_before].user_attrs["interrupted"] is True
    again = _sweep(tmp_path / "sweep", storage, 3)  # resumed in the same fixed hydra.sweep.dir
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    study = optuna.load_study(study_name="tiny", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    # the interrupted trial's parameters ran again, first
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == done_before)
    assert retry.params == study.trials[done_before].params and retry.state == optuna.trial.TrialState.COMPLETE
    assert study.metric_names == ["val_acc"]
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.is_absolute() and (run_dir / "result.json").is_file()
        record = json.loads((run_dir / "result.json").read_text())
        assert t.values == [record["val_acc"]]
        assert sorted(t.intermediate_values) == [0, 1]


def _fake_search(tmp_path: Path, outcomes: dict[int, dict], total: int, n_jobs: int = 2):
    """src.search.launched.search with a launch that trains nothing: each job writes the
    result.json `outcomes` gives for its trial number (completed by default)."""
    from src.search import launched

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = make_storage(url, 20, 60)
    study = open_study(storage, "fake", ["maximize", "minimize"], {"config": {}}, None, url,
                       metric_names=["val_acc", "train_flops"])
    launches: list[tuple[list[list[str]], int]] = []

    def launch(overrides: list[list[str]], first: int) -> list[Path]:
        launches.append((overrides, first))
        dirs = []
        for number in range(first, first + len(overrides)):
            out = tmp_path / f"{number}_job"
            out.mkdir()
            record = outcomes.get(number, {"status": "completed", "val_acc": 0.5 + number / 100, "train_flops": 1e9})
            (out / "result.json").write_text(json.dumps({"schema_version": 2, **record}))
            dirs.append(out)
        return dirs

    s = launched.Search(study=study, storage=storage, params={"strategy.lr_decay": {"type": "float", "low": 1.0, "high": 10.0, "log": True}},
                        fixed=["trainer.epochs=2"], objectives=["val_acc", "train_flops"], total=total, n_jobs=n_jobs,
                        max_failed=2, poll_s=0.1)
    return s, launch, launches


def test_search_tells_each_trial_from_its_result_json_and_keeps_the_budget_exact(tmp_path):
    from src.search import launched

    outcomes = {1: {"status": "pruned", "reason": "halving after epoch 2"}, 2: {"status": "failed", "error": "diverged"}}
    s, launch, launches = _fake_search(tmp_path, outcomes, total=4)
    assert launched.search(s, launch, groups=6) is None
    by_state = {t.number: t.state.name for t in s.study.trials}
    # the failed trial does not count: 4 trials completed or pruned, so 5 were run
    assert by_state == {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}
    assert s.study.trials[0].values == [0.5, 1e9] and s.study.trials[2].user_attrs["fail_reason"] == "diverged"
    assert all(Path(t.user_attrs["run_dir"]).is_absolute() for t in s.study.trials)
    # n_jobs trials per launch, job numbers are trial numbers, and every job gets the fixed overrides
    assert [first for _, first in launches] == [0, 2, 4] and [len(o) for o, _ in launches] == [2, 2, 1]
    assert all(o[0] == "trainer.epochs=2" and o[1].startswith("strategy.lr_decay=") for batch, _ in launches for o in batch)


def test_search_stops_after_max_failed_and_marks_interrupted_trials(tmp_path):
    from src.search import launched

    s, launch, _ = _fake_search(tmp_path, {n: {"status": "failed", "error": "nan"} for n in range(10)}, total=3)
    assert "stopped after 2 failed trials (trial 0, trial 1" in (launched.search(s, launch, groups=6) or "")

    def interrupted(overrides: list[list[str]], first: int) -> list[Path]:
        raise KeyboardInterrupt

    (tmp_path / "b").mkdir()
    s2, _, _ = _fake_search(tmp_path / "b", {}, total=3)
    with pytest.raises(KeyboardInterrupt):
        launched.search(s2, interrupted, groups=6)
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in s2.study.trials] == [("FAIL", True), ("FAIL", True)]


def test_sweeper_settings_are_checked_before_any_job(tmp_path):
    from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
    from src.sweep_driver import ProjectSweep, outside_hydra

    def sweeper(**kw):
        settings = dict(sampler=None, direction=None, objectives=["val_acc"], storage=None, study_name="x", n_trials=1,
                        n_jobs=1, max_failed=0, heartbeat_s=20, grace_s=60, pruner=None, params=None) | kw
        s = OptunaSweeper(**settings)
        s.sweep_dir = tmp_path
        return ProjectSweep(s)

    def _opened(sweep, arguments):  # the space checked, then the study opened, as ProjectSweep.sweep does
        return sweep._open(sweep._space(arguments))

    with outside_hydra(), pytest.raises(ConfigError, match="needs a search space"):
        _opened(sweeper(), TINY)
    with outside_hydra(), pytest.raises(ConfigError, match=r"direction=\['minimize'\] does not fit"):
        _opened(sweeper(direction="minimize"), TINY + ["strategy.lr_decay=interval(1,10)"])
    with outside_hydra(), pytest.raises(ConfigError, match=r"^hydra\.sweeper\._target_=hydra_plugins\.hydra_optuna_sweeper"):
        one = sweeper()  # 1.3's class path builds our sweeper, but src.train's jobs know theirs by our name
        one.config = OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper."
                                                                           "OptunaSweeper"}}})
        _opened(one, TINY + ["strategy.lr_decay=interval(1,10)"])
    for key, value in (("search_space", {"x": {"type": "int", "low": 0, "high": 1}}), ("custom_search_space", "a.b"),
                       ("max_failure_rate", 0.5)):
        with outside_hydra(), pytest.raises(ConfigError, match=rf"^hydra\.sweeper\.{key}.* is not used by src.train's sweep"):
            _opened(sweeper(**{key: value}), TINY + ["strategy.lr_decay=interval(1,10)"])
    grid = {"_target_": "optuna.samplers.GridSampler", "_partial_": True}
    with outside_hydra(), pytest.raises(ConfigError, match="hydra/sweeper/sampler=grid is not supported by src.train's sweep"):
        _opened(sweeper(sampler=grid), TINY + ["strategy.lr_decay=interval(1,10)"])
    assert not (tmp_path / "optuna.db").exists()  # nothing written before the settings pass


def test_a_key_both_swept_and_fixed_is_warned_about_once(tmp_path, caplog):
    """The sweep splits its overrides twice (the second time with the model's group count): the
    warning that the fixed value wins is given once, not twice."""
    from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
    from src.sweep_driver import ProjectSweep, outside_hydra

    s = OptunaSweeper(sampler=None, direction=None, objectives=["val_acc"], storage=None, study_name="x", n_trials=1,
                      n_jobs=1, max_failed=0, heartbeat_s=20, grace_s=60, pruner=None, params=None)
    s.sweep_dir = tmp_path
    with outside_hydra(), caplog.at_level("WARNING"):
        space = ProjectSweep(s)._space(TINY + ["strategy.lr_decay=interval(1,10)", "optim.lr=choice(0.001,0.002)",
                                               "optim.lr=0.003"])
    said = [r.getMessage() for r in caplog.records if "both swept and fixed" in r.getMessage()]
    assert said == ["optim.lr is both swept and fixed: the fixed optim.lr=0.003 wins (as in hydra-optuna-sweeper 1.3)"]
    assert "optim.lr" not in space.params and "optim.lr=0.003" in space.fixed


def test_a_range_from_a_group_up_to_groups_is_read_with_the_model_s_count(tmp_path):
    """range(2, groups): before the model is known, `groups` must not make the range run backwards
    (Hydra refused range(2, 1) as 'Error parsing override', naming nothing)."""
    from hydra_plugins.ft_optuna_sweeper.optuna_sweeper import OptunaSweeper
    from src.sweep_driver import ProjectSweep, outside_hydra

    s = OptunaSweeper(sampler=None, direction=None, objectives=["val_acc"], storage=None, study_name="x", n_trials=1,
                      n_jobs=1, max_failed=0, heartbeat_s=20, grace_s=60, pruner=None, params=None)
    s.sweep_dir = tmp_path
    with outside_hydra():
        space = ProjectSweep(s)._space(TINY + ["strategy.unfreeze_depth=range(2,groups)"])
        assert space.groups > 2
        assert space.params["strategy.unfreeze_depth"] == {"type": "int", "low": 2, "high": space.groups, "step": 1}
        with pytest.raises(SettingError, match=rf"range\(0,{space.groups},0\).*step=0 must be > 0"):
            ProjectSweep(s)._space(TINY + ["strategy.unfreeze_depth=range(0,groups,0)"])


def test_a_job_opens_its_trial_from_the_storage_and_is_pruned(tmp_path):
    """Whatever launched it (the basic launcher in the sweeper's process, a joblib worker), a job
    finds its trial from its config's `hydra.sweeper` and its number, through the storage."""
    from src.gate import to_run_config

    run_cfg = to_run_config(compose_train(TINY))  # trainer.epochs=2
    url = storage_url(None, tmp_path)
    sweeper = {"_target_": SWEEPER_TARGET, "storage": None, "study_name": "jobs", "objectives": ["val_acc"],
               "heartbeat_s": 20, "grace_s": 60, "pruner": {"name": "dominated", "after": 1, "startup": 1}}
    for name in ("jobs", None):  # null: the default name
        sweeper["study_name"] = name
        study = open_study(make_storage(url, 20, 60), name or "sweep", ["maximize"], {"config": {}}, None, url)
        best = study.ask()
        best.set_user_attr("curve", [[0.9, 0.0], [0.95, 0.0]])
        study.tell(best, 0.95)
        trial = study.ask()
        with trial_reporter(sweeper, str(tmp_path), trial.number, run_cfg, tmp_path / f"{trial.number}_job") as reporter:
            assert reporter is not None and reporter.study is not study and reporter.trial.number == trial.number
            reason = reporter(EpochRecord.from_json({"schema_version": 2, "epoch": 0, "val_acc": 0.5}))
        assert reason and reason.startswith("dominated after epoch 1 by trial 0")
        frozen = study.trials[trial.number]
        assert frozen.intermediate_values == {0: 0.5}
        assert frozen.user_attrs["run_dir"] == str((tmp_path / f"{trial.number}_job").resolve())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_two_plugin_workers_share_one_study_and_its_exact_budget(tmp_path, backend, request):
    storage = f"journal:{tmp_path / 'study.log'}" if backend == "journal" else request.getfixturevalue("postgres_url")
    # head-only trials (unfreeze_depth=0: the frozen backbone's features cached) keep it short
    workers = [_sweep(tmp_path / f"w{i}", storage, 3, depth="0") for i in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    study = optuna.load_study(study_name="tiny", storage=make_storage(storage, 20, 60))
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3  # not 6: one budget for both workers
    assert all(Path(t.user_attrs["run_dir"]).is_dir() for t in done)


@pytest.mark.slow
def test_a_lightning_hydra_template_hparams_search_config_sweeps_src_train(tmp_path):
    """sweeps/template_style.yaml: the template's hparams_search shape (direction, n_jobs, storage, a
    sampler by `_target_` with seed and n_startup_trials, params) on src.train, scored by its driver on
    result.json (sqlite in the sweep folder, as for any src.train sweep)."""
    cmd = [sys.executable, "-m", "src.train", "-m", "sweep=template_style", "hydra.sweeper.n_trials=2",
           "hydra.sweeper.sampler.n_startup_trials=1", "strategy.unfreeze_depth=0", f"hydra.sweep.dir={tmp_path}", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="template-style", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(1.0 <= t.params["strategy.lr_decay"] <= 4.0 and "strategy.unfreeze_depth" not in t.params
               for t in study.trials)  # unfreeze_depth fixed on the command line: the fixed value wins


def _preset_elsewhere(root: Path) -> Path:
    """A sweep preset kept outside the project (`DIR/sweep/mine.yaml`), as sweeps/README.md says."""
    (root / "sweep").mkdir(parents=True)
    (root / "sweep" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n  - override /strategy: layerwise\n"
        "hydra:\n  sweeper:\n    study_name: mine\n    n_trials: 1\n    params:\n"
        "      strategy.lr_decay: interval(1.5, 3.0)\n")
    return root


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_a_preset_on_the_searchpath_is_composed_by_the_sweep_checks(tmp_path):
    """Hydra hands the sweeper the job overrides without `hydra.searchpath`: the checks must still find
    `sweep=mine` there (they refused it as 'not allowed'). A dry run estimates the corners of the
    space after they pass, composed on the same searchpath, and opens no study."""
    presets = _preset_elsewhere(tmp_path / "presets")
    cmd = [sys.executable, "-m", "src.train", "-m", f"hydra.searchpath=[file://{presets}]", "sweep=mine",
           "trainer.dry_run=true", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep dry run: " in proc.stdout and "no searched setting moves the cost" in proc.stdout, proc.stdout
    assert not (tmp_path / "sweep" / "optuna.db").exists()


@pytest.mark.slow
def test_a_preset_on_the_searchpath_runs_its_study(tmp_path):
    presets = _preset_elsewhere(tmp_path / "presets")
    cmd = [sys.executable, "-m", "src.train", "-m", f"hydra.searchpath=[file://{presets}]", "sweep=mine",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert 1.5 <= study.trials[0].params["strategy.lr_decay"] <= 3.0


# journal: slow (7 s each); the fast tier keeps sqlite
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])
def test_a_job_that_outlives_its_sweeper_keeps_its_trial_alive(tmp_path, backend):
    """A SLURM job trains on when the sweeper that launched it is killed; the same command run again
    must wait for it, not take it for dead. Seen: its trial was failed and retried while the job
    trained, the retry moved its checkpoint away, and the job died on UpdateFinishedTrialError."""
    from src.gate import to_run_config

    run_cfg = to_run_config(compose_train(TINY))
    storage = f"journal:{tmp_path / 'study.log'}" if backend == "journal" else None
    url = storage_url(storage, tmp_path)
    sweeper = {"_target_": SWEEPER_TARGET, "storage": storage, "study_name": "orphan", "objectives": ["val_acc"],
               "heartbeat_s": 1, "grace_s": 2, "pruner": {"name": "none"}}
    study = open_study(make_storage(url, 1, 2), "orphan", ["maximize"], {"config": {}}, None, url)
    trial = study.ask()  # the sweeper asked it, launched its job, and was killed: no beat of its own
    with trial_reporter(sweeper, str(tmp_path), trial.number, run_cfg, tmp_path / f"{trial.number}_job"):
        time.sleep(3.5)  # past grace_s while the job trains
        again = optuna.load_study(study_name="orphan", storage=make_storage(url, 1, 2))
        optuna.storages.fail_stale_trials(again)  # what the sweeper started again does first
        assert again.trials[trial.number].state == optuna.trial.TrialState.RUNNING
    time.sleep(3)  # the job ended without a sweeper to tell its end: its trial is stale now
    optuna.storages.fail_stale_trials(again)
    assert again.trials[trial.number].state == optuna.trial.TrialState.FAIL


def test_a_job_whose_trial_already_ended_is_refused_before_it_writes(tmp_path):
    """A SLURM job still queued when its sweeper was killed starts after the sweeper started again
    took its trial for dead (failed, parameters retried elsewhere). Seen: it failed on Optuna's
    UpdateFinishedTrialError and wrote a failed result.json; now one line, the folder untouched."""
    from src.gate import to_run_config
    from src.search.job import TrialEnded

    run_cfg = to_run_config(compose_train(TINY))
    url = storage_url(None, tmp_path)
    sweeper = {"_target_": SWEEPER_TARGET, "storage": None, "study_name": "late", "objectives": ["val_acc"],
               "heartbeat_s": 20, "grace_s": 60, "pruner": {"name": "none"}}
    study = open_study(make_storage(url, 20, 60), "late", ["maximize"], {"config": {}}, None, url)
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    out = tmp_path / "0_job"
    with pytest.raises(TrialEnded, match=r"trial 0 of study late had already ended \(FAIL\).*not trained in"):
        with trial_reporter(sweeper, str(tmp_path), trial.number, run_cfg, out):
            pytest.fail("the job trained")
    assert not out.exists() and "run_dir" not in study.trials[0].user_attrs
