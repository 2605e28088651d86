"""`hydra/launcher=ray` (hydra_plugins/ft_ray_launcher): the study and a sweep on a private Ray, and
the study on a running cluster that a test starts (`ray start --head`). These run in the ray extra's
own environment (`make test-ray`: .venv-ray, marker `ray`) and skip where hydra-ray-launcher is not
installed; the rules for ray.init's arguments are tested everywhere."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.ft_ray_launcher.launcher import PRIVATE_OBJECT_STORE, init_args, quoted
from src.config import ConfigError
from tests.cli import REPO, TINY_OVERRIDES, env

needs_ray = pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                               reason="no hydra-ray-launcher here (make test-ray installs it in .venv-ray)")
# Two CPUs for Ray, no dashboard: the tests share a small machine.
PRIVATE = ["hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"]
JOIN = ["hydra/launcher=ray", "hydra.launcher.ray.init.address=auto"]
UPSTREAM = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


def test_no_address_is_a_private_ray_with_upstreams_object_store():
    args = init_args({"address": None, "num_cpus": 2, "num_gpus": None, "object_store_memory": None}, environ={})
    assert args == {"address": "local", "num_cpus": 2, "object_store_memory": PRIVATE_OBJECT_STORE}
    # a size given is kept
    assert init_args({"object_store_memory": 10**9}, environ={})["object_store_memory"] == 10**9


def test_an_address_joins_with_no_resource_arguments():
    init = {"address": "auto", "num_cpus": None, "num_gpus": None, "object_store_memory": None, "namespace": "x"}
    assert init_args(init, environ={}) == {"address": "auto", "namespace": "x"}
    # RAY_ADDRESS is joined when no address is given, as ray.init does
    assert init_args({"address": None}, environ={"RAY_ADDRESS": "10.0.0.1:6379"}) == {"address": "10.0.0.1:6379"}


@pytest.mark.parametrize("key", ["num_cpus", "object_store_memory", "resources"])
def test_a_resource_setting_given_with_an_address_is_refused_naming_it(key):
    with pytest.raises(ConfigError, match=rf"^hydra\.launcher\.ray\.init\.{key}: the Ray cluster at auto has its own"):
        init_args({"address": "auto", key: 2}, environ={})


def test_a_path_is_quoted_as_one_override_value():
    assert quoted("/a/b, c") == "'/a/b, c'"
    assert quoted("/it's") == "'/it\\'s'"


def _train(out: str | Path, *overrides: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """The multirun's CompletedProcess, with the driver's process id as `pid`."""
    args = [sys.executable, "-m", "src.train", "-m", f"hydra.sweep.dir={out}", *overrides]
    with subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    done = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    done.pid = proc.pid  # type: ignore[attr-defined]
    return done


def _completed_in_workers(folder: Path, names: list[str], driver: subprocess.CompletedProcess) -> None:
    """Each run completed, in a Ray worker: a process other than the driver (result.json's pid)."""
    for name in names:
        record = json.loads((folder / name / "result.json").read_text())
        assert record["status"] == "completed", name
        assert record["pid"] != driver.pid, f"{name} ran in the driver"  # type: ignore[attr-defined]


@pytest.mark.ray
@needs_ray
def test_the_study_runs_on_a_private_ray(tmp_path):
    proc = _train(tmp_path / "m", "strategy=frozen,full,layerwise", *TINY_OVERRIDES, *PRIVATE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stderr
    assert "3 runs in" in proc.stdout  # the table
    _completed_in_workers(tmp_path / "m", ["0_frozen", "1_full", "2_layerwise"], proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster on this machine, as `ray start --head` starts one (two CPUs), in a folder of its
    own; stopped after this module's tests."""
    ray = str(Path(sys.executable).with_name("ray"))
    node = tmp_path_factory.mktemp("node")
    if subprocess.run([ray, "status"], capture_output=True, timeout=60).returncode == 0:
        pytest.skip("a Ray cluster already runs on this machine: not ours to stop")
    proc = subprocess.run([ray, "start", "--head", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                          cwd=node, env=env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        yield node
    finally:
        subprocess.run([ray, "stop"], capture_output=True, timeout=180)


@pytest.mark.ray
@needs_ray
def test_the_study_joins_a_running_cluster(tmp_path, cluster):
    # upstream's launcher passes its object store size, and Ray refuses it for a running cluster
    # (the size given by hand: our schema lists the key, so upstream's own default is not added)
    upstream = _train(tmp_path / "u", "strategy=frozen", *TINY_OVERRIDES, *JOIN, f"hydra.launcher._target_={UPSTREAM}",
                      f"hydra.launcher.ray.init.object_store_memory={PRIVATE_OBJECT_STORE}")
    assert upstream.returncode != 0
    assert "When connecting to an existing cluster, object_store_memory must not be provided" in upstream.stderr
    # ours joins; the driver runs in another folder than the cluster, with a relative sweep folder
    driver = tmp_path / "driver"
    driver.mkdir()
    proc = _train("m", "strategy=frozen,full,layerwise", *TINY_OVERRIDES, *JOIN, cwd=driver)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Connecting to existing Ray cluster" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
    assert "3 runs in" in proc.stdout
    _completed_in_workers(driver / "m", ["0_frozen", "1_full", "2_layerwise"], proc)
    assert not list(cluster.rglob("result.json"))  # nothing landed in the cluster's own folder


@pytest.mark.ray
@needs_ray
@pytest.mark.parametrize("where", ["private", "cluster"])
def test_a_sweep_launches_its_trials_on_ray_exactly_to_budget(tmp_path, where, request):
    import optuna

    # the private sweep runs after the cluster test, with the cluster up: a private Ray all the same
    ray = PRIVATE if where == "private" else JOIN
    if where == "cluster":
        request.getfixturevalue("cluster")
    proc = _train(tmp_path / "s", "sweep=default", "hydra.sweeper.n_trials=3", *TINY_OVERRIDES, *ray)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("Started a local Ray instance" if where == "private" else "Connecting to existing Ray cluster") in proc.stderr
    study = optuna.load_study(study_name="layerwise-default", storage=f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    _completed_in_workers(tmp_path / "s", ["0_layerwise", "1_layerwise", "2_layerwise"], proc)
