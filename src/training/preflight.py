"""The model-dependent checks of a config, run before any data is loaded or weight trained.

The config gate (`src.gate`) imports this module for every `python -m src.train`, a `--help` or a
config error included: torch and timm, and the modules that need them, are imported inside the
functions, so that importing the gate loads neither.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from src.config import ConfigError, RunConfig
from src.machine import usable_cpus
from src.strategies import plan_schedule

if TYPE_CHECKING:
    from src.strategies import LayerGroup


def check_threads(num_threads: int | None) -> None:
    """`trainer.num_threads` at most the CPUs this process may use, checked where the run trains (a
    cluster job's node, not the driver's): 1000 threads on 2 cores took turns on them, a 1-epoch
    smoke run went from 0.3 s to minutes, the machine's load average to 900, and its measured times
    were the oversubscription's, not the strategy's. ConfigError (one line)."""
    cpus = usable_cpus()
    if num_threads is not None and num_threads > cpus:
        raise ConfigError(f"trainer.num_threads={num_threads} is more than the {cpus} CPU{'s' * (cpus != 1)} this process may use: "
                          f"threads past them take turns on the same cores, slowing every step and the times "
                          f"measured; set at most {cpus}, or null (torch's default)")


@functools.lru_cache(maxsize=32)
def architecture_groups(name: str, size: int, granularity: str) -> tuple[LayerGroup, ...]:
    """The layer groups of architecture `name`, after checking that `size` px images fit it.
    Builds the model without weights and runs one forward on the meta device (no arithmetic); the
    groups hold names and shapes only, so the cache keeps no model."""
    import timm
    import torch

    from src.models import check_model_name
    from src.strategies import layer_groups

    check_model_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=2)
    stride = max((f.get("reduction", 1) for f in getattr(model, "feature_info", []) or []), default=1)
    if size < stride:
        raise ConfigError(f"dataset.image_size={size} is smaller than {name}'s total stride {stride} "
                          f"(allowed: >= {stride})")
    try:
        with torch.no_grad():
            model.to("meta").eval()(torch.zeros((1, 3, size, size), device="meta"))
    except Exception as err:  # e.g. a ViT built for one input size
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"dataset.image_size={size} does not fit {name}: {first}") from None
    return tuple(layer_groups(model, granularity))


def preflight(cfg: RunConfig) -> int:
    """Model-dependent checks, before any data is loaded or weight trained: the model exists, the
    image size fits it, trainer.keep_checkpoints is a count, the strategy's schedule and the LR schedule can be computed, a weights
    file exists, and the data's files are there (`Reader.check`). Fast, and once per architecture and size. Returns the number of backbone groups.
    Raises ConfigError with one line."""
    import torch

    from src.data.ood import check_ood
    from src.data.registry import check_keys_read, reader_for
    from src.models import folder_as_weights, weights_source
    from src.training.optim import build_scheduler

    if cfg.trainer.keep_checkpoints < 0:
        raise ConfigError(f"trainer.keep_checkpoints={cfg.trainer.keep_checkpoints!r} must be >= 0 (0 = none once the run ends)")
    groups = architecture_groups(cfg.model.name, cfg.dataset.image_size, cfg.strategy.granularity)
    schedule = plan_schedule(cfg.strategy, groups, cfg.optim.lr, cfg.trainer.epochs)  # unfreeze_depth in range
    try:  # the LR of every group at every step is arithmetic on config values: check it can be done
        probe = torch.optim.SGD([{"params": [torch.zeros(1)], "layer_group": i} for i in range(len(groups))], lr=1.0)
        factors = build_scheduler(probe, cfg.optim, schedule, 1).lr_lambdas
        [f(step) for f in factors for step in range(cfg.trainer.epochs)]
    except ArithmeticError as err:
        raise ConfigError(f"optim/strategy settings give no usable LR schedule ({type(err).__name__}: {err})") from None
    if cfg.trainer.device == "cuda":
        from src.training.setup import require_cuda

        require_cuda("trainer.device='cuda'")
    source = weights_source(cfg.model) if cfg.model.pretrained else None
    wrong = folder_as_weights(cfg.model.checkpoint_path or "") if source == "file" else None
    if source == "file" and (wrong or not Path(cfg.model.checkpoint_path or "").is_file()):
        raise ConfigError(wrong or f"model.checkpoint_path={cfg.model.checkpoint_path!r}: no such file")
    # The data's files are there (a missing dataset.root costs no run folder), then the OOD sets' names, paths
    # and (where known without loading) classes: a mismatch costs no run.
    check_keys_read(cfg.dataset)
    reader_for(cfg.dataset.kind)(cfg.dataset).check()
    if cfg.dataset.ood:
        check_ood(cfg.dataset)
    return len(groups) - 1
