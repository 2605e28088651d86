"""The result record, typed and versioned: one `EpochRecord` per metrics.jsonl line, one `RunRecord`
per result.json.

Version 2 (`SCHEMA_VERSION`) writes `schema_version` into every record and nests a strategy's own
knobs in `strategy_params`. Version 1 is every file written before that: no `schema_version`, and
the knobs of every strategy flat at the top level, null for other strategies' (`V1_STRATEGY_KNOBS`);
`RunRecord.from_json` upgrades it, so old result folders load, pool and report as before.

What a run measures arrives in typed sections (`Measured`, `FitMeasures`, `DriftMeasures`,
`Environment`) merged by `RunRecord.replace`; the field lists that decide what a record writes
derive from them, and every name is checked against RunRecord's fields when this module loads.

Reading never loses anything: keys a record does not know (a newer version, a hand-edited file) are
kept in `extra` and written back. Reading does not coerce either: a value of the wrong type (a
string where a number belongs) is kept as it is, and readers that need a number ask
`src.record.io.as_number`, which takes it, and null, as missing. Non-finite numbers are written as
null by `src.record.io.write_json` / `append_jsonl`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 2
# How a run ended, as result.json says it; a record with another status is not a run's (src.record.io
# leaves it out and names it: `status: 5` read as no run at all, unsaid)
STATUSES = ("completed", "pruned", "failed", "interrupted")
# The strategy settings that version 1 wrote flat, each strategy's own and null for the others'.
V1_STRATEGY_KNOBS = (
    "lr_decay", "unfreeze_depth", "unfreeze_every", "backbone_lr_scale", "probe_epochs", "surgical_group",
    "l2sp_alpha", "l2sp_beta",
)
LR_PREFIX = "lr/"  # per-group learning rates in metrics.jsonl: `lr/<group name>`


def _version(data: dict[str, Any]) -> int:
    """The file's schema version: 1 when absent (files written before versions existed)."""
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"schema_version {version!r} is not a version number")
    return version


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "schema_version"))


@dataclass
class EpochRecord:
    """One epoch of one run: a line of metrics.jsonl, and what run() hands its `on_epoch` callback."""

    epoch: int | None = None
    train_loss: float | None = None
    # The training passes' own accuracy (src/training/engine.py: no extra pass). Not written when None,
    # so that a line written before it existed reads back and is written back unchanged.
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    val_balanced_acc: float | None = None
    trainable_params: int | None = None
    epoch_train_s: float | None = None
    epoch_val_s: float | None = None
    elapsed_s: float | None = None
    train_s_cum: float | None = None
    train_flops_cum: int | None = None  # None when FLOPs are not counted
    lrs: dict[str, float] = field(default_factory=dict)  # layer group -> LR this epoch (flat `lr/<group>` on disk)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON line: schema_version, the fields in order, then `lr/<group>` keys, then `extra`."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        out |= {name: getattr(self, name) for name in _names(EpochRecord)
                if name != "lrs" and not (name == "train_acc" and self.train_acc is None)}
        out |= {f"{LR_PREFIX}{group}": lr for group, lr in self.lrs.items()}
        return out | self.extra

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochRecord:
        """A record from a metrics.jsonl line of any version (version 1 has the same fields)."""
        version = max(_version(data), SCHEMA_VERSION)
        known = set(_names(cls)) - {"lrs"}
        lrs = {k.removeprefix(LR_PREFIX): v for k, v in data.items() if k.startswith(LR_PREFIX)}
        extra = {k: v for k, v in data.items() if k not in known and k != "schema_version" and not k.startswith(LR_PREFIX)}
        return cls(**{k: data[k] for k in known if k in data}, lrs=lrs, extra=extra, schema_version=version)

    def get(self, key: str, default: Any = None) -> Any:
        """A value by its name in the file (`val_acc`, `lr/head`, an extra key): for readers that
        take the measure's name as an argument."""
        if key.startswith(LR_PREFIX):
            return self.lrs.get(key.removeprefix(LR_PREFIX), default)
        return _get(self, key, default)


def _get(record: Any, key: str, default: Any) -> Any:
    if key in record.extra:
        return record.extra[key]
    value = getattr(record, key, None) if key in _names(type(record)) else None
    return default if value is None else value


# The sections of a RunRecord that a run measures, typed: the training code fills these, never a
# dict of key strings. Their field names are RunRecord's (checked when this module loads).


@dataclass(frozen=True)
class Measured:
    """What a run measured up to its last finished epoch: a pruned run's result, and a failed or
    interrupted one's `measured_before_stop`."""

    epochs_trained: int
    best_epoch: int
    val_acc: float
    train_flops: int | None  # None when FLOPs are not counted
    train_time_s: float
    max_trainable_params_per_epoch: int
    # how the epochs ran, as a completed run records it: a pruned trial's cost read without them
    # could not be told apart from the same configuration trained uncached
    train_flops_forward: int | None = None
    train_flops_backward: int | None = None
    feature_cache: bool | None = None
    feature_cache_blocker: str | None = None
    feature_cache_cut: str | None = None


@dataclass(frozen=True)
class FitMeasures:
    """What a completed run measured: on the selected model (accuracies, losses), over the whole
    training (cost), and about the model (sizes)."""

    epochs_trained: int
    best_epoch: int
    val_acc: float
    val_balanced_acc: float
    test_acc: float
    test_balanced_acc: float
    test_loss: float
    trainable_params: int
    max_trainable_params_per_epoch: int
    total_params: int
    train_flops: int | None  # the four FLOP counts: None when FLOPs are not counted
    train_flops_forward: int | None
    train_flops_backward: int | None
    inference_flops_per_image: int | None
    train_time_s: float
    images_per_s: float | None
    peak_mem_mb: float | None
    peak_mem_start_mb: float | None
    peak_mem_method: str | None
    feature_cache: bool
    feature_cache_blocker: str | None
    feature_cache_cut: str | None
    ood: dict[str, dict[str, Any]]
    per_class: dict[str, Any]  # `RunRecord.per_class`: class names, and val's and test's confusion and recall


@dataclass(frozen=True)
class DriftMeasures:
    """How far training moved the model from its pretrained start (src/measurement/drift.py)."""

    drift_probe_images: int
    weight_change: dict[str, float | None]
    cka: dict[str, float | None]
    cka_features: float | None
    imagenet_agreement: float | None
    drift_s: float | None = None  # the time drift took, filled in by whoever timed it


@dataclass(frozen=True)
class Environment:
    """Where a run ran."""

    torch_version: str
    timm_version: str
    python_version: str
    cpu_threads: int
    hostname: str
    pid: int


SECTIONS = (Measured, FitMeasures, DriftMeasures, Environment)


@dataclass
class RunRecord:
    """One run's result.json: what it was (config), what it trained on (data), what it measured
    (fit, drift), how it ended (status and, for a stopped run, why) and where it ran (environment).

    Every field but the config is optional: a failed run has no test accuracy, a pruned one only
    what it measured up to its last epoch (`PRUNED_FIELDS`), and a run without drift no drift."""

    # --- the configuration (known before anything runs; always written) ---
    strategy: str | None = None
    model: str | None = None
    pretrained_weights: str | None = None
    # What model.checkpoint_path held (src/models.py weights_identity): written when known, so that
    # older records round-trip without it; reports tell runs from other weights apart by it.
    weights_id: str | None = None
    # SHA-256 of the config.yaml the run wrote (src.record.integrity.config_edited): written when known.
    # The report and a rerun read settings from config.yaml, which no digest guards; this one does.
    config_sha256: str | None = None
    dataset: str | None = None  # the config's name until the data is loaded, then the data's own name
    seed: int | None = None
    epochs: int | None = None
    image_size: int | None = None
    train_per_class: int | None = None  # None: every training image
    # dataset.augment's preset and what it did. Every run writes them; left out of CONFIG_FIELDS so that
    # a record written before presets, which has neither, is written back as it was (not with nulls).
    augment: str | None = None
    augment_params: dict[str, Any] | None = None
    min_epoch_steps: int | None = None
    lr: float | None = None
    strategy_params: dict[str, Any] = field(default_factory=dict)  # the run's own strategy's knobs only
    frozen_bn: str | None = None
    optimizer: str | None = None
    join_warmup_epochs: float | None = None
    run_dir: str | None = None
    # --- the data and the layer groups (once the data is loaded) ---
    train_samples: int | None = None
    passes_per_epoch: int | None = None
    steps_per_epoch: int | None = None
    skipped_files: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None
    num_classes: int | None = None
    num_groups: int | None = None
    device: str | None = None
    # Not in DATA_FIELDS: written when known, so that older records round-trip without them.
    data_load_s: float | None = None  # wall time of loading the data (decode or cache read, split, resize)
    data_cache: str | None = None  # decoded-data cache: hit | miss | refresh | off
    dataset_id: str | None = None  # what the data is (src/data/identity.py): reports pool runs by it, not by name
    # --- what training measured (a completed run; a pruned one has PRUNED_FIELDS of it) ---
    epochs_trained: int | None = None
    best_epoch: int | None = None
    val_acc: float | None = None
    val_balanced_acc: float | None = None
    test_acc: float | None = None
    test_balanced_acc: float | None = None
    test_loss: float | None = None
    trainable_params: int | None = None
    max_trainable_params_per_epoch: int | None = None
    total_params: int | None = None
    train_flops: int | None = None  # None when FLOPs are not counted
    train_flops_forward: int | None = None
    train_flops_backward: int | None = None
    inference_flops_per_image: int | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    peak_mem_mb: float | None = None
    peak_mem_start_mb: float | None = None
    peak_mem_method: str | None = None
    feature_cache: bool | None = None
    feature_cache_blocker: str | None = None  # why features could not be cached; None: they were
    # the last module whose output was cached: "pre-logits" (the backbone; the head trained on it) or
    # a frozen prefix's last module (e.g. "blocks.3"; the rest trained on it); None: nothing cached
    # (records written before prefixes were cached say None for a backbone cache too)
    feature_cache_cut: str | None = None
    # out-of-distribution test sets (dataset.ood), each evaluated once on the selected model:
    # name -> {"acc", "balanced_acc", "n", "skipped_files"} ("skipped_files": unreadable images left out of the
    # set, dataset.bad_images=skip; records written before it lack the key); {} without any (not written then;
    # records written before read as {})
    ood: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per-class results of the selected model: {"classes": [names], "val": {...}, "test": {...}}, each split
    # {"confusion": rows true, columns predicted (counts), "recall": per class (its accuracy; null with no
    # images), "precision": per class (null when never predicted), "support": images per class}.
    # {} in records written before it (not written then: they read back unchanged).
    per_class: dict[str, Any] = field(default_factory=dict)
    # --- drift from the pretrained weights (src/measurement/drift.py; with trainer.drift_probe) ---
    drift_probe_images: int | None = None
    weight_change: dict[str, float | None] | None = None  # layer group -> ‖W − W₀‖ / ‖W₀‖
    cka: dict[str, float | None] | None = None  # layer group -> linear CKA with the pretrained output
    cka_features: float | None = None
    imagenet_agreement: float | None = None  # None: no ImageNet head to compare (random or custom start)
    drift_s: float | None = None
    # --- how it ended ---
    total_time_s: float | None = None
    status: str | None = None  # one of STATUSES
    pruned_epoch: int | None = None
    reason: str | None = None  # why a pruned run was stopped
    error: str | None = None
    failed_epoch: int | None = None
    measured_before_stop: dict[str, Any] | None = None  # a failed run's measurements, nested: not a result
    traceback: str | None = None
    # --- where it ran ---
    torch_version: str | None = None
    timm_version: str | None = None
    python_version: str | None = None
    cpu_threads: int | None = None
    hostname: str | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept
    schema_version: int = SCHEMA_VERSION

    CONFIG_FIELDS: ClassVar[tuple[str, ...]] = (
        "strategy", "model", "pretrained_weights", "dataset", "seed", "epochs", "image_size", "train_per_class",
        "min_epoch_steps", "lr", "strategy_params", "frozen_bn", "optimizer", "join_warmup_epochs", "run_dir",
    )
    DATA_FIELDS: ClassVar[tuple[str, ...]] = (
        "train_samples", "passes_per_epoch", "steps_per_epoch", "skipped_files", "val_samples", "test_samples",
        "num_classes", "num_groups", "device",
    )
    # blocks and keys a run without them does not write, so that an older file reads back unchanged
    OMITTED_WHEN_EMPTY: ClassVar[tuple[str, ...]] = ("ood", "per_class", "feature_cache_cut")
    FIT_FIELDS: ClassVar[tuple[str, ...]] = tuple(
        f.name for f in dataclasses.fields(FitMeasures) if f.name not in ("ood", "per_class", "feature_cache_cut"))
    PRUNED_FIELDS: ClassVar[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(Measured))
    DRIFT_FIELDS: ClassVar[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(DriftMeasures))
    ENVIRONMENT_FIELDS: ClassVar[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(Environment))

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def _null_written(self) -> set[str]:
        """The fields written even when None, where null is an answer and not a field that does not
        apply: the config always; the data, drift and environment sections once they were measured;
        every measurement of a completed run. Other None fields are left out of the file, so a
        failed or pruned run has no `test_acc` that a reader could take for a result."""
        out = set(self.CONFIG_FIELDS)
        for section in (self.DATA_FIELDS, self.DRIFT_FIELDS, self.ENVIRONMENT_FIELDS):
            if any(getattr(self, name) is not None for name in section):
                out |= set(section)
        if self.completed:
            out |= set(self.FIT_FIELDS) | {"total_time_s"}
        return out

    def to_json(self) -> dict[str, Any]:
        """The result.json object: schema_version first, the fields in declared order, then `extra`."""
        keep = self._null_written()
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in _names(RunRecord):
            value = getattr(self, name)
            if name in self.OMITTED_WHEN_EMPTY and not value:
                continue  # a run without such sets writes no block: an older file reads back unchanged
            if value is not None or name in keep:
                out[name] = value
        return out | self.extra

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """A record from a result.json object of any version; version 1's flat strategy knobs become
        `strategy_params` (the non-null ones: those of the run's own strategy). ValueError if
        `schema_version` is not a version number."""
        version = _version(data)
        data = dict(data)
        if version == 1:
            knobs = {k: data.pop(k) for k in V1_STRATEGY_KNOBS if k in data}
            data["strategy_params"] = {k: v for k, v in knobs.items() if v is not None}
            version = SCHEMA_VERSION
        known = set(_names(cls))
        extra = {k: v for k, v in data.items() if k not in known and k != "schema_version"}
        fields = {k: data[k] for k in known if k in data}
        if (status := fields.get("status")) is not None and status not in STATUSES:  # a number, a typo: rot or a hand
            raise ValueError(f"status {json.dumps(status)} is none of {', '.join(STATUSES)}")
        if fields.get("strategy_params") is None:
            fields["strategy_params"] = {}
        if isinstance(fields.get("augment"), bool):  # the old boolean spelling (src.config.augment_name)
            fields["augment"] = "shift" if fields["augment"] else "none"
        return cls(**fields, extra=extra, schema_version=version)

    def get(self, key: str, default: Any = None) -> Any:
        """A value by its name in the file (a measure, a setting, an extra key), `default` when
        missing or null: for readers that take the field's name as an argument."""
        return _get(self, key, default)

    def replace(self, *sections: Any, **changes: Any) -> RunRecord:
        """A copy with every field of each section (`SECTIONS`) and `changes` (dataclasses.replace:
        an unknown name is a TypeError)."""
        for section in sections:
            changes = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)} | changes
        return dataclasses.replace(self, **changes)


def _check_field_names() -> None:
    """Every name a section or a field list uses is a RunRecord field: a misspelling fails when
    this module loads, before any run starts, not when a run's record is written."""
    known = set(_names(RunRecord))
    lists = {cls.__name__: _names(cls) for cls in SECTIONS} | {
        f"RunRecord.{name}": getattr(RunRecord, name) for name in (
            "CONFIG_FIELDS", "DATA_FIELDS", "FIT_FIELDS", "PRUNED_FIELDS", "DRIFT_FIELDS", "OMITTED_WHEN_EMPTY",
            "ENVIRONMENT_FIELDS")}
    for where, names in lists.items():
        if unknown := sorted(set(names) - known):
            raise TypeError(f"{where} names fields that RunRecord does not have: {unknown}")


_check_field_names()
