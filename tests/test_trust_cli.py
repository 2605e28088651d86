"""`python -m src.train` as a user meets it when things go wrong (issue 13): every job's config is
checked before anything runs, no result is lost or silently left out, and every error is one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.config import ConfigError, RunConfig
from tests.cli import REPO, TINY_OVERRIDES, env

TINY = [*TINY_OVERRIDES, "trainer.progress=false", "trainer.num_threads=1"]
# The same tiny run, but with weights from a file (model.pretrained stays true).
TINY_FILE = [o for o in TINY if o != "model.pretrained=false"] + ["model.weights=file"]


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def _status(path: Path) -> str:
    return json.loads((path / "result.json").read_text())["status"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Real files a user might point model.checkpoint_path at."""
    import timm

    folder = tmp_path_factory.mktemp("ckpt")
    model = timm.create_model("test_efficientnet", pretrained=False)
    files = {"good": folder / "good.pt", "random": folder / "random.pt", "pickled": folder / "pickled.pt",
             "nan_bn": folder / "nan_bn.pt"}
    torch.save(model.state_dict(), files["good"])
    files["random"].write_bytes(bytes(range(256)) * 8)
    torch.save(model, files["pickled"])  # a whole pickled model, not a state dict
    state = model.state_dict()
    state["bn1.running_mean"] = torch.full_like(state["bn1.running_mean"], float("nan"))
    torch.save(state, files["nan_bn"])
    return files


def test_every_job_of_a_multirun_is_checked_before_job_0_starts(tmp_path):
    proc = _run(["-m", "trainer.batch_size=16,1,8", *TINY], tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert line.startswith("error: job 1 of 3 (trainer.batch_size=1): trainer.batch_size=1 must be >= 2"), line
    assert not (tmp_path / "multirun").exists()  # nothing ran, no folder was made


def test_sweep_values_from_a_preset_are_checked_too(tmp_path, monkeypatch):
    # experiment=data_size_grid sweeps train_per_class in hydra.sweeper.params; a command-line value
    # for another key combines with it, and a bad one stops the grid before its first job.
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^job 1 of 2 \(dataset.train_per_class=0\): dataset.train_per_class=0 must be > 0"):
        precheck(["-m", "experiment=data_size_grid", "dataset=digits", "strategy=frozen", "seed=0", *TINY,
                  "dataset.train_per_class=5,0"])
    # Composing the preset resolves the default sweep folder while merging over it (OmegaConf does):
    # the folder it claimed is released, as the CLI does after its checks.
    from src.gate import release_unused_dirs

    release_unused_dirs()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_config_error_leaves_no_run_folder(tmp_path):
    proc = _run([*TINY, "strategy.unfreeze_depth=99"], tmp_path)
    assert proc.returncode == 2
    assert "strategy.unfreeze_depth=99 exceeds" in _one_error_line(proc)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override, expected", [
    ("strategy.lr_decay=1e-300", "strategy.lr_decay=1e-300 must be >= 1"),
    ("strategy.lr_decay=0.75", "timm/MAE layer_decay=x is lr_decay=1/x"),
    ("strategy.lr_decay=1e100", "the LRs of its 7 groups cannot be computed"),
    ("optim.warmup_epochs=1e308", "optim.warmup_epochs=1e+308 must be <= trainer.epochs (1)"),
    ("optim.join_warmup_epochs=5", "optim.join_warmup_epochs=5.0 must be <= trainer.epochs (1)"),
    ("seed=-1", "seed=-1 must be in 0..4294967295"),
    ("model.checkpoint_path=/no/such.pt", "model.checkpoint_path='/no/such.pt': no such file"),
])
def test_numeric_extremes_and_missing_files_are_one_line_errors(tmp_path, monkeypatch, override, expected):
    # The same check `python -m src.train` runs before Hydra (the CLI path is tested below).
    from src.gate import precheck

    monkeypatch.chdir(tmp_path)
    args = [*TINY_FILE, override] if override.startswith("model.") else [*TINY, override]
    with pytest.raises(ConfigError) as err:
        precheck(args)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # no folder made


@pytest.mark.parametrize("kept", [True, False])
def test_a_run_folder_as_the_weights_file_names_its_kept_model(tmp_path, monkeypatch, kept):
    # Seen: model.checkpoint_path=RUN (the folder src.predict takes) said "RUN: no such file" of a folder there.
    from src.gate import precheck

    run = tmp_path / "run"
    run.mkdir()
    if kept:
        (run / "model_best.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        precheck([*TINY_FILE, f"model.checkpoint_path={run}"])
    hint = f": give its weights file, {run / 'model_best.pt'}" if kept else ""
    assert str(err.value) == f"model.checkpoint_path={str(run)!r} is a folder, not a weights file{hint}"


@pytest.mark.parametrize("overrides,line", [
    (["optim.warmup_epochs=1e308"], "error: optim.warmup_epochs=1e+308 must be <= trainer.epochs (1)"),
    # a value outside an enum, and another optimizer's knob: OmegaConf's own checks, as one line
    (["trainer.device=gpu"], "error: trainer.device='gpu' is not allowed (expected 'auto' | 'cpu' | 'cuda')"),
    (["optim=sgd", "optim.optimizer.betas=[0.9,0.9]"],
     "error: unknown key 'optim.optimizer.betas' (allowed in optim.optimizer: _partial_, _target_, momentum, nesterov)"),
])
def test_a_config_error_on_the_command_line_is_one_line(tmp_path, overrides, line):
    proc = _run([*TINY, *overrides], tmp_path)
    assert proc.returncode == 2
    assert _one_error_line(proc) == line


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_a_bad_checkpoint_is_one_line_and_recorded(tmp_path, checkpoints):
    run_dir = tmp_path / "run"
    proc = _run([*TINY_FILE, f"model.checkpoint_path={checkpoints['random']}", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "is not a torch checkpoint" in line and str(checkpoints["random"]) in line
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed" and "is not a torch checkpoint" in record["error"]


def test_a_pickled_model_is_not_a_checkpoint(checkpoints):
    from src.models import PretrainedWeightsError, _load_state_dict_file

    with pytest.raises(PretrainedWeightsError, match=r"holds pickled Python objects \(a whole model\?\), not a state dict"):
        _load_state_dict_file(checkpoints["pickled"])
    assert set(_load_state_dict_file(checkpoints["good"])) >= {"conv_stem.weight", "bn1.running_mean"}


def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch):
    from src.gate import precheck

    (tmp_path / "afile").write_text("not a folder")
    proc = _run([*TINY, f"hydra.run.dir={tmp_path}/afile/run"], tmp_path)
    assert proc.returncode == 2
    assert _one_error_line(proc) == f"error: hydra.run.dir={tmp_path}/afile/run: {tmp_path}/afile is a file, not a folder"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="hydra.sweep.dir=.*is a file, not a folder"):
        precheck(["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path}/afile/multi"])


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_failed_jobs_are_recorded_listed_and_make_the_multirun_fail(tmp_path, checkpoints):
    sweep = tmp_path / "multi"
    paths = ",".join(str(checkpoints[k]) for k in ("random", "good", "pickled", "nan_bn"))
    # nan_bn: BatchNorm statistics with NaN, batch statistics while training (finite train loss),
    # so only validation sees the NaN: that must fail, not complete with a meaningless accuracy.
    proc = _run(["-m", f"model.checkpoint_path={paths}", "strategy=full", "strategy.frozen_bn=train", *TINY_FILE,
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert [_status(sweep / f"{i}_full") for i in range(4)] == ["failed", "completed", "failed", "failed"]
    nan = json.loads((sweep / "3_full" / "result.json").read_text())
    assert nan["error"].startswith("DivergedError: validation loss became nan in epoch 0")
    table = proc.stdout[proc.stdout.index("4 runs in"):]
    assert sum(" failed " in line for line in table.splitlines()) == 3
    assert "error: 3 of 4 runs did not complete: 0_full, 2_full, 3_full" in proc.stderr


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (issue 24: under 8 min)
def test_two_runs_claiming_one_folder_get_their_own(tmp_path):
    # Two runs started in the same second resolve the same `${now:...}` folder; the same fixed
    # template makes that collision certain here.
    template = "hydra.run.dir=${unique_dir:" + str(tmp_path / "out" / "same-second") + "}"
    procs = [subprocess.Popen([sys.executable, "-m", "src.train", *TINY, template, f"seed={seed}"], cwd=tmp_path,
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    folders = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in folders] == ["same-second", "same-second_1"]
    seeds = sorted(json.loads((f / "result.json").read_text())["seed"] for f in folders)
    assert seeds == [0, 1]
    for folder in folders:
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1  # one run's epochs, not both


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten(tmp_path, checkpoints):
    run_dir = tmp_path / "run"
    first = _run([*TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = {name: (run_dir / name).read_bytes() for name in ("result.json", "metrics.jsonl", "config.yaml")}
    # A second run of another config that would fail (and one that would succeed) in the same folder:
    # refused, files intact. The same command again: the finished run is kept, reported, not trained.
    for args in ([*TINY_FILE, f"model.checkpoint_path={checkpoints['random']}"], [*TINY, "seed=3"]):
        again = _run([*args, f"hydra.run.dir={run_dir}"], tmp_path)
        assert again.returncode == 2
        assert "already holds a completed run of another config" in _one_error_line(again)
        assert {name: (run_dir / name).read_bytes() for name in kept} == kept
    same = _run([*TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert same.returncode == 0 and "kept, not trained again" in same.stdout + same.stderr
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept
    # A folder whose run failed may be reused: the new run replaces the failed record.
    failed_dir = tmp_path / "failed"
    bad = _run([*TINY_FILE, f"model.checkpoint_path={checkpoints['random']}", f"hydra.run.dir={failed_dir}"], tmp_path)
    assert bad.returncode == 2 and _status(failed_dir) == "failed"
    retry = _run([*TINY, f"hydra.run.dir={failed_dir}"], tmp_path)
    assert retry.returncode == 0 and _status(failed_dir) == "completed"


def test_run_keeps_a_completed_result_and_refuses_another_config_there(tmp_path, tiny_config):
    from src.training.run import run

    cfg = tiny_config(trainer={"epochs": 1})
    run(cfg, tmp_path)
    before = (tmp_path / "result.json").read_bytes()
    assert run(cfg, tmp_path)["status"] == "completed"  # kept and returned, not trained again
    with pytest.raises(ConfigError, match="already holds a completed run of another config"):
        run(tiny_config(trainer={"epochs": 2}), tmp_path)
    assert (tmp_path / "result.json").read_bytes() == before


@pytest.mark.parametrize("multirun, sig, code, word", [
    (False, signal.SIGINT, 130, "Ctrl-C"),
    pytest.param(True, signal.SIGINT, 130, "Ctrl-C", marks=pytest.mark.slow),
    pytest.param(False, signal.SIGTERM, 143, "SIGTERM", marks=pytest.mark.slow),
])
def test_interrupting_a_run_is_one_line_with_the_record(tmp_path, multirun, sig, code, word):
    args = [*TINY, "trainer.epochs=100", "dataset.train_per_class=30"]
    args = ["-m", "seed=0,1", *args, f"hydra.sweep.dir={tmp_path}/m"] if multirun else [*args, f"hydra.run.dir={tmp_path}/m/0"]
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "m").glob("*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    record = next((tmp_path / "m").glob("*/result.json"))
    assert stderr.strip().splitlines() == [f"interrupted by {word}: status 'interrupted' recorded in {record.resolve()}"
                                           + (f"; finished runs are kept in {tmp_path}/m (python -m src.report "
                                              f"{tmp_path}/m)" if multirun else "")]
    assert json.loads(record.read_text())["status"] == "interrupted"
    assert not (tmp_path / "m" / "1_layerwise").exists()  # a multirun stops at the interrupted job


# Sends the run a SIGTERM from inside OmegaConf while the optimizer is built (a ListConfig getting
# `betas` appended, at its 2nd `_validate_set`, as hydra.utils.instantiate did there until the
# optimizer was built in plain Python): the handler runs there, as a real `kill -TERM` landing at that
# moment would. OmegaConf left a None in the list and a `finally` above failed on it: exit 1, a 5-line
# ConfigKeyError, result.json `failed`.
_SIGTERM_IN_OPTIMIZER_CONFIG = """
import os, runpy, signal, sys
from omegaconf import OmegaConf
import src.training.optim as optim
build, sent = optim.build_optimizer, [0]
def inside(frame, event, arg):
    code = frame.f_code
    if event == "call" and code.co_name == "_validate_set" and code.co_filename.endswith("listconfig.py"):
        sent[0] += 1
        if sent[0] == 2:
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGTERM)
def build_optimizer(cfg, groups):
    sys.setprofile(inside)
    try:
        betas = OmegaConf.create([])
        for beta in cfg.optimizer.betas:
            betas.append(beta)
        return build(cfg, groups)
    finally:
        sys.setprofile(None)
        if sent[0] < 2:
            print("no SIGTERM was sent: no ListConfig was appended to", file=sys.stderr)
optim.build_optimizer = build_optimizer
sys.argv = ["src.train", *sys.argv[1:]]
runpy.run_module("src.train", run_name="__main__", alter_sys=True)
"""


def test_a_sigterm_inside_omegaconf_while_the_optimizer_is_built_is_an_interrupted_run(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_IN_OPTIMIZER_CONFIG, *TINY, f"hydra.run.dir={tmp_path}/r"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    record = tmp_path / "r" / "result.json"
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [f"interrupted by SIGTERM: status 'interrupted' recorded in {record.resolve()}"]
    assert json.loads(record.read_text())["status"] == "interrupted"


def test_shell_completion_is_hydra_s(tmp_path):
    proc = _run(["-sc", "install=bash"], tmp_path, timeout=300)
    assert proc.returncode == 0 and "hydra_bash_completion" in proc.stdout
    assert 'helper="${words[0]} -m ${words[2]}"' in proc.stdout  # taught `python -m src.train`


@pytest.mark.slow
def test_shell_completion_completes_in_bash(tmp_path):
    # The script, sourced in bash as a user would, completes `python -m src.train strategy=` (Hydra's
    # own script knows only `python app.py`): the strategies, not their schemas' names.
    import shutil

    if not shutil.which("bash"):
        pytest.skip("no bash")
    proc = _run(["-sc", "install=bash"], tmp_path, timeout=300)
    (tmp_path / "complete.sh").write_text(proc.stdout)
    line = "python -m src.train strategy="
    script = (f'source {tmp_path / "complete.sh"}; COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_CWORD=3; '
              'hydra_bash_completion; echo "${COMPREPLY[*]}"')
    bin_dir = Path(sys.executable).parent  # `python` in the bash function is this interpreter
    answer = subprocess.run(["bash", "-c", script], cwd=REPO, env=env() | {"PATH": f"{bin_dir}:{env()['PATH']}"},
                            capture_output=True, text=True, timeout=300)
    assert answer.stdout.split() == [f"strategy={s}" for s in ("bitfit", "frozen", "full", "l2sp", "layerwise", "lpft",
                                                               "surgical")], answer.stderr[-2000:]


def test_completion_query_lists_keys_of_the_schema():
    # Hydra answers from the composed, schema-typed config; the line as bash hands it over for
    # `python -m src.train` is first turned into one Hydra can parse.
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra.core.global_hydra import GlobalHydra

    from src.completion import completion_line
    from src.gate import CONF, install

    install()  # the schemas Hydra completes from
    line = completion_line("python -m src.train strategy=lpft strategy.")
    assert line == "src.train strategy=lpft strategy."
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plugin = BashCompletion(GlobalHydra.instance().hydra.config_loader)
        assert plugin._query("config", BashCompletion.strip_python_or_app_name(line)) == [
            "strategy.backbone_lr_scale=", "strategy.frozen_bn=", "strategy.granularity=", "strategy.name=",
            "strategy.probe_epochs="]
        assert "trainer.epochs=" in plugin._query("config", "trainer.")


def test_batchnorm_default_is_the_measured_one_everywhere():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.gate import compose_train, install
    from tests.cli import REPO

    install()  # the schemas the strategy YAMLs build on
    assert RunConfig().strategy.frozen_bn == "all"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for yaml in sorted((REPO / "conf" / "strategy").glob("*.yaml")):
            assert compose("config", overrides=[f"strategy={yaml.stem}"]).strategy.frozen_bn == "all", yaml
        grid = compose("config", overrides=["experiment=data_size_grid", "dataset=digits"])
        assert grid.strategy.frozen_bn == "all"
    # make sweep's preset trains on the default, and does not set it itself
    assert OmegaConf.select(OmegaConf.load(REPO / "sweeps" / "default.yaml"), "strategy.frozen_bn") is None
    assert compose_train(["sweep=default"]).strategy.frozen_bn == "all"
    with pytest.raises(ConfigError, match="must be >= 1"):
        RunConfig.from_dict({"strategy": {"lr_decay": 0.999}})
    assert RunConfig.from_dict({"strategy": {"lr_decay": 1.0}}).strategy.lr_decay == 1.0


def test_precheck_composes_each_job_as_hydra_does(monkeypatch):
    # precheck builds a large multirun's configs from one composition per defaults choice: each
    # must equal Hydra's own composition of that job.
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.gate import CONF, expand_jobs, job_config

    monkeypatch.setenv("MEDMNIST_DIR", "/nowhere")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs, _ = expand_jobs(["experiment=data_size_grid", "optim.optimizer.betas=[0.8,0.9]", "seed=0,1", "dataset.root=null",
                               "hydra.sweep.dir=x"], True)
        assert len(jobs) == 2 * 5 * 4 * 2  # datasets x sizes x strategies x seeds
        cache: dict = {}
        for job in jobs[::7]:
            expected = OmegaConf.to_container(compose("config", overrides=job), resolve=True)
            assert OmegaConf.to_container(job_config(job, "config", cache), resolve=True) == expected, job
        assert len(cache) == 8  # one composition per dataset x strategy


@pytest.mark.parametrize("argv", [["src.report"], ["src.report", "--bogus", "x"], ["src.report", "d", "--metric", "f1"],
                                  ["src.predict", "run"], ["src.predict", "r", "i", "--nope"]])
def test_a_bad_command_line_of_report_or_predict_is_one_line(argv, capsys):
    """argparse printed its usage block (four lines for src.report), then the error: a job log kept
    the usage's end. Now the error, naming what is wrong, and where the usage is, in one line."""
    from src.predict import main as predict_main
    from src.reporting.cli import main as report_main

    main = {"src.report": report_main, "src.predict": predict_main}[argv[0]]
    with pytest.raises(SystemExit) as ended:
        main(argv[1:])
    assert ended.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m {argv[0]}: error: "), lines
    assert lines[0].endswith(f"(usage: python -m {argv[0]} --help)")


@pytest.mark.parametrize("name", ["result.json", "config.yaml"])
def test_a_run_file_as_the_weights_file_names_its_kept_model(tmp_path, monkeypatch, name):
    # src.predict takes a run's result.json for its run; model.checkpoint_path=RUN/result.json (the same
    # habit, to train on from the kept model) said "is not a torch checkpoint" from inside a started run,
    # a failed record left behind. It is refused before any folder, naming the weights file beside it.
    from src.gate import precheck

    run = tmp_path / "run"
    run.mkdir()
    (run / "model_best.pt").write_bytes(b"")
    (run / name).write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        precheck([*TINY_FILE, f"model.checkpoint_path={run / name}"])
    assert str(err.value) == (f"model.checkpoint_path={str(run / name)!r} is the run's {name}, not a weights file: "
                              f"give its weights file, {run / 'model_best.pt'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no folder made
