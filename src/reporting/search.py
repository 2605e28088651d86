"""The search explained: for a sweep's folder, what Optuna's study says about its parameters. Which
mattered (`get_param_importances`), how each objective moved with each parameter, and the Pareto front
with each point's parameters; drawn by `src.reporting.search_plots`, shown in the report page and
logged to W&B (src/reporting/page.py, publish.py).

The study is read from the storage its folder's `study.json` names (src/search/study.py writes it):
a sqlite file or a journal file, or the folder's own file of that name when the folder was moved or
copied since; a study of that name made again there (another uid) is not this folder's search. A
database server's study (postgresql) is not reopened here (the password is not recorded), and a
folder without a study has no search section.

Importances need enough completed trials: fANOVA (Optuna's default evaluator, a random forest over
the trials) from `FANOVA_MIN` of them; below that, the absolute Spearman rank correlation of each
parameter with the objective (categorical choices ranked by their mean objective), each in [0, 1] and
not normalised (shares that sum to 1 gave a lone varied parameter 1.00 whatever its correlation, 0.05
included); below `RANK_MIN`, none. The method used is recorded beside the numbers.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from src.record.owner import read_owner
from src.reporting.pareto import pareto_front

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"  # src.gate.STUDY_FILE: the file a sweep's folder names its study in
FANOVA_MIN = 8  # completed trials from which fANOVA's forest is worth fitting
RANK_MIN = 3  # fewer than this: no importance at all


@dataclass
class SearchView:
    """A study's completed trials and what they say about the parameters."""

    name: str
    storage: str
    objectives: list[str]
    trials: list[FrozenTrial]  # completed ones, by number
    params: list[str]  # every parameter a completed trial has, in first-seen order
    log_params: set[str] = field(default_factory=set)  # searched on a log scale
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # objective -> param -> importance
    methods: dict[str, str] = field(default_factory=dict)  # objective -> how its importances were computed

    def values(self, objective: str) -> list[float]:
        i = self.objectives.index(objective)
        return [t.values[i] for t in self.trials]

    def front(self) -> list[FrozenTrial]:
        """The Pareto-optimal trials on the first two objectives (accuracy up, cost down), by rising
        cost; with one objective, the best trial."""
        if not self.trials:
            return []
        acc = self.values(self.objectives[0])
        if len(self.objectives) < 2:
            return [self.trials[max(range(len(acc)), key=acc.__getitem__)]]
        cost = self.values(self.objectives[1])
        return [self.trials[i] for i in pareto_front(list(zip(acc, cost)))]


def _storage(url: str) -> Any:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


_FILE_STORAGES = ("sqlite:///", "journal:")


def _storage_file(url: str) -> Path | None:
    """The file of a sqlite or journal storage; None for any other (a database server)."""
    prefix = next((p for p in _FILE_STORAGES if url.startswith(p)), None)
    return None if prefix is None else Path(url.removeprefix(prefix))


def _own_storage(folder: Path, url: str) -> str:
    """The storage a sweep's folder is reported from: study.json names it by the path it was written
    at; a folder moved or copied since (rsync from a cluster) carries its own file of that name (the
    default sweeps-out/STUDY/optuna.db), and that one is read. The named path read the original's, or
    a study made there again since, beside this folder's runs; or, the original gone, no search at all."""
    named = _storage_file(url)
    if named is None:
        return url
    own = folder / named.name
    if own.is_file() and not (named.is_file() and own.samefile(named)):
        return url.removesuffix(str(named)) + str(own.absolute())
    return url


def load_search(folder: Path) -> SearchView | None:
    """The study of a sweep's folder with its importances, or None when the folder names no study
    this report can open (no study.json, a database server, the file gone)."""
    owner = folder / STUDY_FILE
    try:
        named = read_owner(owner) if owner.is_file() else {}
    except ValueError as err:  # rotted or edited: the study it names cannot be told
        log.warning("%s: %s: the report has no search section", owner, err)
        return None
    url, name = _own_storage(folder, str(named.get("storage", ""))), named.get("study")
    path = _storage_file(url)
    if not name or path is None:
        return None
    if not path.is_file():
        log.warning("%s names the study storage %s, which is gone: the report has no search section", owner, path)
        return None
    study = optuna.load_study(study_name=name, storage=_storage(url))
    theirs, ours = study.user_attrs.get("uid"), named.get("uid")
    if theirs and ours and theirs != ours:  # deleted and made again under the same name
        raise ValueError(f"{path} holds another study named {name} than the one {owner} names (uid {ours} -> {theirs}); "
                         "its search is not this folder's")
    objectives = list(study.metric_names or study.user_attrs.get("identity", {}).get("objectives")
                      or [f"objective {i}" for i in range(len(study.directions))])
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    params = list(dict.fromkeys(p for t in trials for p in t.params))
    view = SearchView(name, url, objectives, trials, params,
                      {p for t in trials for p, d in t.distributions.items() if getattr(d, "log", False)})
    for i, objective in enumerate(objectives):
        view.importances[objective], view.methods[objective] = importances(study, trials, params, i)
    return view


def importances(study: optuna.Study, trials: Sequence[FrozenTrial], params: Sequence[str],
                index: int) -> tuple[dict[str, float], str]:
    """Each parameter's importance for objective `index` (fANOVA's shares, summing to 1; or each
    parameter's |Spearman ρ|, not shares), and the method that gave them."""
    varied = [p for p in params if len({json.dumps(t.params.get(p), default=str) for t in trials}) > 1]
    if len(trials) < RANK_MIN or not varied:
        return {}, f"none: {len(trials)} completed trial(s) and {len(varied)} varied parameter(s)"
    if len(trials) >= FANOVA_MIN:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, params=varied, target=lambda t: t.values[index])
            return {p: float(v) for p, v in found.items()}, f"fANOVA over {len(trials)} trials"
        except Exception as err:  # a space fANOVA cannot fit: the rank correlation below still answers
            log.warning("fANOVA importances failed (%s: %s); rank correlation instead", type(err).__name__, err)
    target = [t.values[index] for t in trials]
    raw = {p: abs(_spearman(_encoded(trials, p, target), target)) for p in varied}
    out = dict(sorted(raw.items(), key=lambda kv: -kv[1]))
    return out, f"|Spearman ρ| over {len(trials)} trials, each 0 to 1, not shares (fewer than {FANOVA_MIN} for fANOVA)"


def _encoded(trials: Sequence[FrozenTrial], param: str, target: Sequence[float]) -> list[float]:
    """A parameter's values as numbers: numbers as they are, other choices by their mean objective
    (so that a categorical parameter's rank correlation is its best ordering's); a trial without the
    parameter is NaN."""
    values = [t.params.get(param) for t in trials]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    groups: dict[str, list[float]] = {}
    for v, y in zip(values, target):
        groups.setdefault(json.dumps(v, default=str), []).append(y)
    means = {k: sum(ys) / len(ys) for k, ys in groups.items()}
    return [means[json.dumps(v, default=str)] if v is not None else math.nan for v in values]


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy), 0 where it is undefined (a constant input)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 2:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return 0.0 if rho is None or math.isnan(rho) else float(rho)


def short(param: str) -> str:
    """A parameter's name without its config section: strategy.lr_decay -> lr_decay."""
    return param.split(".")[-1]


def params_text(trial: FrozenTrial) -> str:
    """A trial's parameters in one short line: lr_decay=2.6, unfreeze_depth=3."""
    return ", ".join(f"{short(k)}={v:.3g}" if isinstance(v, float) else f"{short(k)}={v}" for k, v in trial.params.items())


def search_json(view: SearchView) -> dict[str, Any]:
    """What the page and search.json show: the importances and the front with each point's parameters."""
    return {
        "study": view.name, "storage": view.storage, "objectives": view.objectives, "completed_trials": len(view.trials),
        "importances": view.importances, "methods": view.methods,
        "front": [{"trial": t.number, **dict(zip(view.objectives, t.values)), "params": t.params} for t in view.front()],
    }


def find_searches(dirs: Sequence[Path]) -> list[SearchView]:
    """The study of each folder that is a sweep's (a folder without one, or whose study cannot be
    read, is left out with a warning for the latter: the rest of the report does not need it)."""
    out = []
    for folder in dirs:
        try:
            view = load_search(Path(folder))
        except Exception as err:  # a damaged or locked storage costs the search section, not the report
            log.warning("the study of %s could not be read (%s: %s)", folder, type(err).__name__, err)
            continue
        if view is not None:
            out.append(view)
    return out


def recorded_finished(sweep_dir: Path, number: int) -> str | None:
    """"COMPLETE" or "PRUNED" when the study of `sweep_dir` (its study.json) records trial `number` as
    finished, else None (not finished, or no study this report can open). A trial's folder without
    result.json was said to be resumed by the same command; where the study counts it finished, its
    record was lost after the run (deleted, a copy that left it out) and nothing trains it again."""
    try:
        named = read_owner(sweep_dir / STUDY_FILE)
        url = _own_storage(sweep_dir, str(named.get("storage", "")))
        if (path := _storage_file(url)) is None or not path.is_file():
            return None
        study = optuna.load_study(study_name=named["study"], storage=_storage(url))
        if study.user_attrs.get("uid") != named.get("uid"):  # a study made again under the name: not this folder's
            return None
        state = next((t.state for t in study.get_trials(deepcopy=False) if t.number == number), None)
    except Exception:  # a hint, not worth failing a report for: no study, a damaged or locked storage
        return None
    return state.name if state in (TrialState.COMPLETE, TrialState.PRUNED) else None
