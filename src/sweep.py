"""Optuna sweep driver: `python -m src.sweep [--sweep NAME] [sweep.KEY=VALUE ...] [train overrides ...]`.

A second entrypoint beside `src.train`, on the same `run()`. The search space and study settings
are a YAML file in `sweeps/` (composed with Hydra, so `sweep.n_trials=40` overrides it); every other
argument is a Hydra override of the training config, exactly as for `src.train`.

Each trial is a normal run in `<out_dir>/trial_NNNN/` with the usual files. The study lives in an
Optuna storage (a sqlite file in `out_dir` by default), so a killed sweep resumes where it stopped:
completed trials are kept, and a trial whose process died (no heartbeat for `grace_s`) is marked
failed and retried once with the same parameters (heartbeats need an RDB storage: sqlite or
PostgreSQL). sqlite is for one driver process; several workers on one study share a journal file
(`storage: journal:/shared/path.log`) or a PostgreSQL URL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
import timm
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError
from src.models import PretrainedWeightsError
from src.results import write_json
from src.run import DivergedError, run
from src.strategies import layer_groups
from src.train import to_run_config

log = logging.getLogger("src.sweep")
REPO = Path(__file__).resolve().parents[1]
CONF, SWEEPS = REPO / "conf", REPO / "sweeps"
# Minimised unless named here.
MAXIMISE = {"val_acc", "val_balanced_acc"}


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def backbone_groups(train_cfg: DictConfig) -> int:
    """The model's real number of backbone layer groups (the upper bound for unfreeze_depth)."""
    model = timm.create_model(train_cfg.model.name, pretrained=False, num_classes=2)
    return len(layer_groups(model, train_cfg.strategy.granularity)) - 1


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any], groups: int) -> Any:
    kind = spec["type"]
    if kind == "float":
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        high = groups if spec["high"] == "groups" else int(spec["high"])
        return trial.suggest_int(key, int(spec["low"]), high, log=bool(spec.get("log", False)))
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    raise ConfigError(f"sweep params.{key}.type={kind!r} is not allowed (float | int | categorical)")


def make_storage(url: str, heartbeat_s: int, grace_s: int) -> optuna.storages.BaseStorage:
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=heartbeat_s, grace_period=grace_s, heartbeat_stale_trial_callback=retry
    )


def pareto_rows(study: optuna.Study, objectives: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0], reverse=True):
        rows.append({"trial": t.number, **dict(zip(objectives, t.values)), **t.params, "run_dir": t.user_attrs.get("run_dir")})
    return rows


def format_pareto(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no completed trials)"
    keys = [k for k in rows[0] if k != "run_dir"]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="default", help="a file in sweeps/ (without .yaml)")
    parser.add_argument("overrides", nargs="*", help="sweep.KEY=VALUE for the study, anything else for training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and the retry callback are flagged experimental by Optuna; they are what makes resume work.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sweep_over = [o.removeprefix("sweep.") for o in args.overrides if o.startswith("sweep.")]
    train_over = [o for o in args.overrides if not o.startswith("sweep.")]
    try:
        if not (SWEEPS / f"{args.sweep}.yaml").is_file():
            options = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
            raise ConfigError(f"--sweep={args.sweep!r}: no sweeps/{args.sweep}.yaml (options: {', '.join(options)})")
        with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
            scfg = compose(args.sweep, overrides=sweep_over)
        spec: dict[str, Any] = OmegaConf.to_container(scfg, resolve=True)  # type: ignore[assignment]
        base_over = list(spec["train_overrides"]) + train_over
        base = compose_train(base_over)
        to_run_config(base)  # one-line error for a bad override before any trial starts
        groups = backbone_groups(base)
        out_dir = Path(spec["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        url = spec["storage"] or f"sqlite:///{out_dir.resolve() / 'optuna.db'}"
        objectives = list(spec["objectives"])
        directions = ["maximize" if o in MAXIMISE else "minimize" for o in objectives]
        storage = make_storage(url, int(spec["heartbeat_s"]), int(spec["grace_s"]))
        study = optuna.create_study(
            study_name=spec["study_name"], storage=storage, directions=directions, load_if_exists=True
        )
        # A sampler restarted with the same seed would propose the same parameters again (the
        # random start-up trials repeat exactly). The seed therefore moves on with the trials
        # already in the study: a single driver stays reproducible across resumes. Workers that
        # share a study also mix in their process id so that they never propose the same trials.
        seed = int(spec["seed"]) + len(study.get_trials(deepcopy=False))
        if spec["storage"]:
            seed = hash((seed, os.getpid())) % 2**31
        sampler_cls = optuna.samplers.TPESampler if spec["sampler"] == "tpe" else optuna.samplers.NSGAIISampler
        study.sampler = sampler_cls(seed=seed)
    except (ConfigError, PretrainedWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        sampled = {key: suggest(trial, key, p, groups) for key, p in spec["params"].items()}
        cfg = compose_train(base_over + [f"{k}={v}" for k, v in sampled.items()])
        run_cfg = to_run_config(cfg, group=spec["study_name"])
        trial_dir = out_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(trial_dir))
        result = run(run_cfg, trial_dir, run_name=f"{spec['study_name']}-{trial.number}")
        return tuple(float(result[o]) for o in objectives)

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    total = int(spec["n_trials"])
    already = len(study.get_trials(deepcopy=False, states=done))
    log.info("study %s (%s): %d of %d trials done; storage %s", spec["study_name"], ", ".join(
        f"{d} {o}" for d, o in zip(directions, objectives)), already, total, url)
    if already < total:
        # The callback counts trials of every worker on this study, so N workers share one budget.
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(total, states=done)],
                       catch=(DivergedError,))
    rows = pareto_rows(study, objectives)
    write_json(out_dir / "pareto.json", rows)
    print(f"\nPareto set of study {spec['study_name']} ({len(rows)} trials):\n{format_pareto(rows)}")
    print(f"saved {out_dir / 'pareto.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
