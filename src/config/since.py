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
}


def as_now(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` (a flat config, `trainer.epochs` keys) with each setting of ADDED it lacks and `new` has
    filled in with the value every run before that setting had: what the older file meant."""
    return {k: v for k, v in ADDED.items() if k not in old and k in new} | old
