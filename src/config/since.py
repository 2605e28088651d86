"""Settings added after run folders and studies were first written, and how an older file reads.

A config.yaml, a checkpoint or a study identity written by an older version of this tool lacks the
keys added since. Compared key by key with a config of today, each read as missing -> default:
the same command, run again on an unchanged older folder, was refused as "another config"
(`trainer.dry_run: None -> False`) and an older study could not be resumed at all. A key here is
one whose value given here is what every run before it did, so a file without it is read with that
value: it is filled in before any comparison (src.training.checkpoint, src.search.study). A key
added later that is not listed here still reads as a change, and is refused: the safe side.
"""

from __future__ import annotations

from typing import Any

ADDED: dict[str, Any] = {
    # a run that estimates and stops: an older version always trained
    "trainer.dry_run": False,
    # the frozen prefix's cached outputs, capped: before the cap they were cached at any size. The
    # cache changes no accuracy (bit for bit, docs/cost-and-speed.md); an older run's time and memory
    # are the ones it measured, under no cap, which the default cap leaves in place up to 4 GB.
    "trainer.feature_cache_max_mb": 4096.0,
    # out-of-distribution test sets (ecc514f): before them a run evaluated none, as () does today
    "dataset.ood": [],
    "dataset.ood_per_class": None,
}

# Settings added since whose value today does not reproduce what runs before them did: a file
# without them stays another config (the safe side), and the refusal says why, and since when.
OTHERWISE: dict[str, str] = {
    "dataset.jpeg_draft": "added at acf16a4; runs before it decoded each JPEG at full size, other pixels than "
                          "today's default draft decoding; a file without it is read as no value",
    "dataset.cache": "added at acf16a4; runs before it decoded into memory every run, other load time and "
                     "memory than today's default; a file without it is read as no value",
    "dataset.cache_dir": "added at acf16a4 with dataset.cache",
    "dataset.num_workers": "added at acf16a4 with dataset.cache",
}

# What runs before a setting did, where a reader must redo it on an older folder's files: src.predict
# decodes a new image as that run decoded its own. A JPEG at full size is what dataset.jpeg_draft=false
# decodes today (the same pixels on RGB and grey JPEGs; draft decoding differs by up to 9 grey levels).
BEFORE: dict[str, Any] = {"dataset.jpeg_draft": False}

# Before optim.optimizer (0e74751), optim.name chose torch.optim.AdamW(betas) or torch.optim.SGD(momentum,
# nesterov=True) with each param group's own lr and weight_decay, as optim.optimizer builds them today;
# AdamW never read optim.momentum, nor SGD optim.betas.
_OPTIMIZERS = {"adamw": ("torch.optim.AdamW", ("betas",)), "sgd": ("torch.optim.SGD", ("momentum",))}


def as_now(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` (a flat config, `trainer.epochs` keys) with each setting of ADDED it lacks and `new` has
    filled in with the value every run before that setting had: what the older file meant."""
    return {k: v for k, v in ADDED.items() if k not in old and k in new} | _optimizer_as_now(old)


def _optimizer_as_now(old: dict[str, Any]) -> dict[str, Any]:
    """`old` with an optim.name layout (before 0e74751) written as the optim.optimizer one it ran as."""
    if old.get("optim.name") not in _OPTIMIZERS or any(k.startswith("optim.optimizer.") for k in old):
        return old
    target, knobs = _OPTIMIZERS[old["optim.name"]]
    now = {k: v for k, v in old.items() if k not in ("optim.name", "optim.momentum", "optim.betas")}
    now |= {"optim.optimizer._target_": target, "optim.optimizer._partial_": True}
    now |= {f"optim.optimizer.{k}": old[f"optim.{k}"] for k in knobs if f"optim.{k}" in old}
    return now | ({"optim.optimizer.nesterov": True} if old["optim.name"] == "sgd" else {})


def missing(key: str) -> str:
    """How a comparison shows a setting an older file lacks: why it is not read as today's."""
    return f"(no {key} in that config: {OTHERWISE.get(key, 'an older version?')})"
