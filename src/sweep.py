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

Trials report validation accuracy after every epoch and hopeless ones are pruned (`src.pruning`):
successive halving by default (by accuracy for one objective, by Pareto rank for accuracy vs
cost), or our dominated-at-epoch-k rule, or Optuna's median or Hyperband pruner for one objective. After the search, `sweep.rerun_seeds=[1,2,3]` re-runs every Pareto-optimal
configuration on those seeds and reports test accuracy as mean ± 95% CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import timm
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError
from src.models import PretrainedWeightsError
from src.pruning import EpochReporter, PruneSpec, optuna_pruner, resolve
from src.report import publish
from src.results import RESULT_FILE, write_json
from src.run import DivergedError, RunPruned, interrupt_on_sigterm, run
from src.stats import format_ci, mean_ci
from src.strategies import layer_groups
from src.train import check_overrides, to_run_config

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
    # Workers started together on a fresh database race to create Optuna's tables; the loser gets
    # a DDL error (seen on PostgreSQL: duplicate key in pg_type). The tables exist by then: retry.
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_s, grace_period=grace_s, heartbeat_stale_trial_callback=retry
            )
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt == 4:
                raise
            log.warning("storage %s not ready (%s); retrying", url.split("@")[-1], type(err).__name__)
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


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
    parser.add_argument("--sweep", default="default", help="a study in sweeps/ (name without .yaml), or a path to a .yaml file")
    parser.add_argument("overrides", nargs="*", help="sweep.KEY=VALUE for the study, anything else for training")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and the retry callback are flagged experimental by Optuna; they are what makes resume work.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sweep_over = [o.removeprefix("sweep.") for o in args.overrides if o.startswith("sweep.")]
    train_over = [o for o in args.overrides if not o.startswith("sweep.")]
    try:
        check_overrides(train_over)
        sweep_dir, sweep_name = SWEEPS, args.sweep
        if args.sweep.endswith(".yaml"):  # a study file of your own, anywhere
            if not Path(args.sweep).is_file():
                raise ConfigError(f"--sweep={args.sweep}: no such file")
            sweep_dir, sweep_name = Path(args.sweep).resolve().parent, Path(args.sweep).stem
        elif not (SWEEPS / f"{args.sweep}.yaml").is_file():
            options = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
            raise ConfigError(f"--sweep={args.sweep!r}: no sweeps/{args.sweep}.yaml (options: {', '.join(options)})")
        with initialize_config_dir(config_dir=str(sweep_dir), version_base="1.3"):
            scfg = compose(sweep_name, overrides=sweep_over)
        spec: dict[str, Any] = OmegaConf.to_container(scfg, resolve=True)  # type: ignore[assignment]
        base_over = list(spec["train_overrides"]) + train_over
        base = compose_train(base_over)
        base_cfg = to_run_config(base)  # one-line error for a bad override before any trial starts
        groups = backbone_groups(base)
        out_dir = Path(spec["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        url = spec["storage"] or f"sqlite:///{out_dir.resolve() / 'optuna.db'}"
        objectives = list(spec["objectives"])
        directions = ["maximize" if o in MAXIMISE else "minimize" for o in objectives]
        prune = PruneSpec.from_dict(spec.get("pruner") or {})
        prune_mode = resolve(prune, objectives)
        epochs = int(base.trainer.epochs)
        storage = make_storage(url, int(spec["heartbeat_s"]), int(spec["grace_s"]))
        study = optuna.create_study(
            study_name=spec["study_name"], storage=storage, directions=directions, load_if_exists=True,
            pruner=optuna_pruner(prune_mode, prune, epochs),
        )
        rerun_seeds = [int(x) for x in spec.get("rerun_seeds") or []]
        rerun_over = [str(x) for x in spec.get("rerun_overrides") or []]
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
        reporter = EpochReporter(
            study, trial, objectives, prune_mode, prune, running_best=run_cfg.trainer.select == "best_val",
            epochs=run_cfg.trainer.epochs,
        )
        try:
            result = run(run_cfg, trial_dir, run_name=f"{spec['study_name']}-{trial.number}", on_epoch=reporter)
        except RunPruned as err:
            raise optuna.TrialPruned(str(err)) from None
        except KeyboardInterrupt:
            # Optuna records the trial as failed; the next start of the sweep runs these parameters again.
            trial.set_user_attr("interrupted", True)
            raise
        return tuple(float(result[o]) for o in objectives)

    requeue_interrupted(study)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    total = int(spec["n_trials"])
    already = len(study.get_trials(deepcopy=False, states=done))
    log.info("study %s (%s): %d of %d trials done; pruner %s; storage %s", spec["study_name"], ", ".join(
        f"{d} {o}" for d, o in zip(directions, objectives)), already, total, prune_mode, url)
    failed: list[str] = []
    max_failed = int(spec.get("max_failed") or 0)

    def stop_on_failures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Failed trials do not count toward the budget, so a search space where every trial fails
        # (diverges) would otherwise run forever.
        if trial.state == optuna.trial.TrialState.FAIL:
            failed.append(f"trial {trial.number}")
            if max_failed and len(failed) >= max_failed:
                study.stop()

    if already < total:
        # The callback counts trials of every worker on this study, so N workers share one budget.
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(total, states=done), stop_on_failures],
                       catch=(DivergedError,))
    if max_failed and len(failed) >= max_failed:
        print(f"error: stopped after {len(failed)} failed trials ({', '.join(failed)}; sweep.max_failed="
              f"{max_failed}); their result.json files say why", file=sys.stderr)
        return 1
    rows = pareto_rows(study, objectives)
    write_json(out_dir / "pareto.json", rows)
    print(f"\nPareto set of study {spec['study_name']} ({len(rows)} trials):\n{format_pareto(rows)}")
    print(f"saved {out_dir / 'pareto.json'}")
    summary = summarise(study, objectives, epochs) | {"pruner": prune_mode}
    write_json(out_dir / "summary.json", summary)
    print(format_summary(summary))
    if rerun_seeds and rows:
        try:
            rerun = rerun_pareto(study, rows, base_over + rerun_over, rerun_seeds, out_dir / "rerun", spec["study_name"])
        except (ConfigError, DivergedError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        write_json(out_dir / "pareto_rerun.json", rerun)
        print(f"\nPareto set re-run on seeds {rerun_seeds} (mean ± 95% CI):\n{format_rerun(rerun)}")
        print(f"saved {out_dir / 'pareto_rerun.json'}")
    page = publish([out_dir], out_dir / "report", base_cfg.logger, spec["study_name"])
    if page:
        print(f"report: {page}")
    return 0


def requeue_interrupted(study: optuna.Study) -> None:
    """Trials stopped by Ctrl-C or SIGTERM are failed in the study; queue their parameters once more
    so that a resumed sweep finishes what was interrupted instead of sampling something else."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            log.info("trial %d was interrupted: its parameters run again", t.number)


def summarise(study: optuna.Study, objectives: list[str], epochs: int) -> dict[str, Any]:
    """What the search cost: trials by state, epochs trained (of all trials, pruned included), best value."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for t in trials:
        states[t.state.name.lower()] += 1
    trained = [int(t.user_attrs.get("epochs_trained", 0)) for t in trials]
    flops = seconds = 0.0  # what every trial used, pruned and failed ones included, from its run files
    for t in trials:
        path = Path(t.user_attrs.get("run_dir", "")) / RESULT_FILE
        if t.user_attrs.get("run_dir") and path.is_file():
            r = json.loads(path.read_text())
            used = r if "train_time_s" in r else r.get("measured_before_stop", {})
            flops += used.get("train_flops") or 0
            seconds += used.get("train_time_s") or 0
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.values[0], default=None) if objectives[0] in MAXIMISE else \
        min(complete, key=lambda t: t.values[0], default=None)
    return {
        "study": study.study_name,
        "trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "epochs_per_trial": epochs,
        "epochs_trained": sum(trained),
        # what the same trials would have trained had none been stopped early
        "epochs_unpruned": epochs * sum(1 for t in trials if t.user_attrs.get("epochs_trained")),
        "total_train_flops": flops,
        "total_train_time_s": seconds,
        # first trial started to last trial finished (all workers; includes any pause between resumes)
        "span_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        f"best_{objectives[0]}": best.values[0] if best else None,
        "best_trial": best.number if best else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    states = ", ".join(f"{v} {k}" for k, v in s["states"].items())
    share = f" ({s['epochs_trained'] / s['epochs_unpruned']:.0%})" if s["epochs_unpruned"] else ""
    best = next(k for k in s if k.startswith("best_") and k != "best_trial")
    return (f"trials: {s['trials']} ({states}); pruner {s['pruner']}; epochs trained {s['epochs_trained']} of "
            f"{s['epochs_unpruned']}{share}; {best} {s[best]} (trial {s['best_trial']})")


def rerun_pareto(
    study: optuna.Study, rows: list[dict[str, Any]], overrides: list[str], seeds: list[int], out: Path, group: str
) -> list[dict[str, Any]]:
    """Each Pareto-optimal configuration again on `seeds`, reported on test. Resumable: a seed whose
    run already completed is read back, not trained again."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    table = []
    for row in rows:
        trial = by_number[row["trial"]]
        results = []
        for seed in seeds:
            run_dir = out / f"trial_{trial.number:04d}" / f"seed_{seed}"
            done = run_dir / RESULT_FILE
            if done.is_file() and json.loads(done.read_text()).get("status") == "completed":
                results.append(json.loads(done.read_text()))
                continue
            cfg = compose_train(overrides + [f"{k}={v}" for k, v in trial.params.items()] + [f"seed={seed}"])
            results.append(run(to_run_config(cfg, group=f"{group}-rerun"), run_dir, run_name=f"{group}-{trial.number}-s{seed}"))
        entry: dict[str, Any] = {"trial": trial.number, **trial.params, "seeds": seeds}
        for key in ("val_acc", "test_acc", "test_balanced_acc", "train_flops", "train_time_s"):
            values = [float(r[key]) for r in results if r.get(key) is not None]
            if values:
                entry[key], entry[f"{key}_ci95"] = mean_ci(values)
                entry[f"{key}_values"] = values
        table.append(entry)
    return table


def format_rerun(table: list[dict[str, Any]]) -> str:
    lines = []
    for e in table:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in e.items() if "." in k)
        lines.append(
            f"trial {e['trial']:>3}  test acc {format_ci(e['test_acc'], e['test_acc_ci95'])}  "
            f"val acc {format_ci(e['val_acc'], e['val_acc_ci95'])}  train FLOPs {e.get('train_flops', float('nan')):.4g}  ({params})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
