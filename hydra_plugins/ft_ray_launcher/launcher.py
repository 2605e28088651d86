"""`hydra/launcher=ray` on a private Ray or on a running Ray cluster.

hydra-ray-launcher 1.2.2 starts Ray with `ray.init(**hydra.launcher.ray.init)` after adding
`object_store_memory=78643200` (75 MiB, its setting for CI machines) to those arguments. Ray refuses
that argument, like num_cpus, num_gpus, resources and labels, when it joins a running cluster
("When connecting to an existing cluster, object_store_memory must not be provided"): with
`hydra.launcher.ray.init.address=auto` every multirun ended in that traceback. So did one with no
address on a machine where `ray start` runs, since Ray then joins the cluster it finds there.

This launcher is upstream's, with Ray started here first (upstream then finds it running):
- `init.address` null: a private Ray for this multirun, started by it and ended with it, even where a
  cluster runs (address "local"), with upstream's object store size; RAY_ADDRESS, when set, is
  joined instead, as Ray itself does.
- an address (`auto`: the cluster `ray start` runs on this machine; `host:port`): that cluster is
  joined. It has its own resources: upstream's object store size is not passed, and a resource
  setting given anyway is refused in one line naming it (it belongs in `ray start`).
A setting left null is Ray's default. A cluster that does not answer: one line, exit 2.

A Ray worker runs in the folder its node was started in, not the driver's: a relative sweep folder
(multirun/DATE/TIME, the default) put the jobs' results where the driver never looked (no table), and
relative data paths pointed elsewhere. Every job gets the driver's sweep folder as an absolute path
and runs in the driver's working folder (on several machines: a shared filesystem, same paths).

`hydra/launcher=ray` names this one: register() replaces upstream's ConfigStore entry with a
subclass of upstream's schema, so every upstream setting keeps its name and default.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from src.config import ConfigError

log = logging.getLogger(__name__)

try:  # the ray extra, in its own environment (pip install -e '.[ray]'; make test-ray)
    from hydra_plugins.hydra_ray_launcher._config import RayConf as _UpstreamRayConf
    from hydra_plugins.hydra_ray_launcher._config import RayLauncherConf
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _Upstream
except ImportError:  # pragma: no cover - without the extra, upstream's missing `ray` entry says so
    _Upstream = object  # type: ignore[misc,assignment]
    RayLauncherConf = None  # type: ignore[misc,assignment]

# ray.init's settings our `hydra/launcher=ray` lists (upstream lists `address` alone)
INIT_KEYS = ("address", "num_cpus", "num_gpus", "object_store_memory")
# upstream's object store for the Ray it starts (hydra_ray_launcher/_core.py)
PRIVATE_OBJECT_STORE = 78_643_200
# ray.init's arguments that a cluster being joined refuses (ray/_private/worker.py): its own resources
CLUSTER_OWNS = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "_system_config",
                "_enable_object_reconstruction", "_node_name")


def init_args(init: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """ray.init's arguments for `hydra.launcher.ray.init` (the module docstring says which).
    ConfigError names a setting that a cluster being joined would refuse."""
    args = {key: value for key, value in init.items() if value is not None}
    address = args.pop("address", None) or environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        return {"object_store_memory": PRIVATE_OBJECT_STORE, **args, "address": "local"}
    for key in CLUSTER_OWNS:
        if key in args:
            raise ConfigError(f"hydra.launcher.ray.init.{key}: the Ray cluster at {address} has its own (set it in "
                              f"`ray start`); leave it out when joining a cluster, or drop the address for a private Ray")
    return {**args, "address": address}


def start(init: Mapping[str, Any]) -> None:
    """Ray started or joined as `init` says; a bad setting or a cluster that does not answer ends the
    multirun with one line (exit 2), before any job."""
    import ray

    if ray.is_initialized():  # a sweep launches many times: Ray stays up between its batches
        return
    try:
        args = init_args(init)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    log.info(f"Ray: {'a private Ray' if args['address'] == 'local' else 'joining ' + str(args['address'])} ({args})")
    try:
        ray.init(**args)
    except ConnectionError as err:
        print(f"error: hydra.launcher.ray.init.address={args['address']}: no Ray cluster answers there "
              f"(`ray start --head` starts one on this machine): {str(err).splitlines()[0]}", file=sys.stderr, flush=True)
        sys.exit(2)


def in_folder(folder: str, task: Callable[[Any], Any], cfg: Any) -> Any:
    """`task(cfg)` in `folder` (the driver's working folder), where relative paths in the config
    (dataset roots, paths.output_dir) mean what they meant to the user; a Ray worker's own working
    folder is the one its node was started in."""
    back = os.getcwd()
    os.chdir(folder)
    try:
        return task(cfg)
    finally:
        os.chdir(back)


def quoted(path: str) -> str:
    """A path as a quoted Hydra override value (a comma would otherwise make it a sweep)."""
    return "'" + path.replace("'", "\\'") + "'"


if _Upstream is not object:
    class RayLauncher(_Upstream):
        """Upstream's, with Ray started as the module docstring says."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            assert self.config is not None and self.task_function is not None
            start(OmegaConf.to_container(self.ray_cfg.init, resolve=True))
            here = os.getcwd()
            sweep_dir = os.path.abspath(str(self.config.hydra.sweep.dir))
            task = self.task_function
            self.task_function = functools.partial(in_folder, here, task)
            try:
                return super().launch([[*o, f"hydra.sweep.dir={quoted(sweep_dir)}"] for o in job_overrides],
                                      initial_job_idx)
            finally:
                self.task_function = task

    @dataclass
    class RayConf(RayLauncherConf):
        _target_: str = "hydra_plugins.ft_ray_launcher.launcher.RayLauncher"
        # ray.init's usual settings are listed (null: Ray's own default), so that
        # `hydra.launcher.ray.init.num_cpus=2` needs no `+`; any other is added with `+`.
        ray: _UpstreamRayConf = field(default_factory=lambda: _UpstreamRayConf(init=dict.fromkeys(INIT_KEYS)))


def register() -> None:
    """Replace upstream's `ray` entry with ours. Upstream writes its entry when Hydra scans its
    plugins (once per process, Plugins is a singleton), so the scan is made first, here, and ours is
    written after it; a later scan never happens. Without the ray extra nothing changes."""
    if _Upstream is object:
        return
    Plugins.instance()
    ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayConf, provider="ft_ray_launcher")
