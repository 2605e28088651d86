"""The search explained: a sweep folder's Optuna study (a real sqlite storage, named by its study.json as
the sweeper names it) gives parameter importances, a slice view and the Pareto front with each point's
parameters, as PNGs in the report page and as W&B tables and images."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import optuna
import pytest

V1_RUN = Path(__file__).parent / "fixtures" / "v1_layerwise"
DEPTH, DECAY = "strategy.unfreeze_depth", "strategy.lr_decay"


def _study(folder: Path, n_trials: int, objectives: tuple[str, ...] = ("val_acc", "train_flops")) -> optuna.Study:
    """A study in the folder's optuna.db where accuracy and cost follow the unfreeze depth and the LR
    decay is noise: what a sweep over those two would find, without training anything."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'optuna.db'}"
    directions = ["maximize", "minimize"][: len(objectives)]
    study = optuna.create_study(study_name="s", storage=url, directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(list(objectives))
    noise = random.Random(0)
    for _ in range(n_trials):
        trial = study.ask()
        depth = trial.suggest_int(DEPTH, 0, 6)
        trial.suggest_float(DECAY, 1.0, 4.0, log=True)
        acc = 0.7 + 0.04 * depth + noise.uniform(-0.005, 0.005)
        study.tell(trial, [acc, 1e11 * (1 + depth)][: len(objectives)])
    (folder / "study.json").write_text(json.dumps({"study": "s", "uid": "x", "storage": url}))
    shutil.copytree(V1_RUN, folder / "0_layerwise")  # one completed run: the report needs runs to pool
    return study


def test_importances_find_the_parameter_that_mattered_with_fanova_and_the_fallbacks(tmp_path):
    from src.reporting.search import FANOVA_MIN, load_search

    _study(tmp_path / "many", 24)
    view = load_search(tmp_path / "many")
    assert view is not None and len(view.trials) == 24 and view.objectives == ["val_acc", "train_flops"]
    for objective in view.objectives:
        found = view.importances[objective]
        assert view.methods[objective].startswith("fANOVA") and max(found, key=found.get) == DEPTH
        assert found[DEPTH] > 0.8 and sum(found.values()) == pytest.approx(1)
    front = view.front()  # cost rises with depth and accuracy with it: every trial's depth is on the front
    assert sorted({t.params[DEPTH] for t in front}) == sorted({t.params[DEPTH] for t in view.trials})
    _study(tmp_path / "few", FANOVA_MIN - 3)
    few = load_search(tmp_path / "few")
    assert few.methods["val_acc"].startswith("|Spearman ρ|") and "not shares" in few.methods["val_acc"]
    assert max(few.importances["val_acc"], key=few.importances["val_acc"].get) == DEPTH
    # each parameter's |ρ| itself: shares summing to 1 gave a lone varied parameter 1.00 whatever its ρ
    from src.reporting.search import _encoded, _spearman
    target = [t.values[0] for t in few.trials]
    assert few.importances["val_acc"] == pytest.approx(
        {p: abs(_spearman(_encoded(few.trials, p, target), target)) for p in few.importances["val_acc"]})
    _study(tmp_path / "one", 1)
    one = load_search(tmp_path / "one")
    assert one.importances["val_acc"] == {} and one.methods["val_acc"].startswith("none: 1 completed trial")
    assert load_search(tmp_path) is None  # no study.json: no search
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "study.json").write_text(json.dumps({"study": "s", "storage": "sqlite:////nowhere/x.db"}))
    assert load_search(tmp_path / "gone") is None


def test_the_sweep_report_shows_importances_slices_and_the_front_with_parameters(tmp_path, monkeypatch):
    from src.config import LoggerConfig
    from src.reporting.publish import publish
    from tests import wandb_files

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    sweep = tmp_path / "sweep"
    _study(sweep, 12)
    problems: list[str] = []
    page = publish([sweep], sweep / "report", LoggerConfig(mode="offline"), "g", problems=problems)
    assert page is not None and problems == []
    html = page.read_text()
    for name in ("importance", "slice", "search_front"):
        assert f'id="fig-{name}"' in html and (sweep / "report" / f"{name}.png").is_file(), name
    found = json.loads((sweep / "report" / "search.json").read_text())
    assert found["completed_trials"] == 12 and found["front"]
    assert all(set(row["params"]) == {DEPTH, DECAY} for row in found["front"])
    assert "The search explained" in html and "unfreeze_depth" in html and 'id="search-front"' in html
    # W&B: the importances and the front as tables, the figures as images
    [file] = (sweep / "report").glob("wandb/offline-run-*/run-*.wandb")
    wandb_files.closed(file)
    rows = wandb_files.table(sweep / "report", "param_importances")
    by = {(r["objective"], r["param"]): r["importance"] for r in rows}
    assert by == pytest.approx({(o, p): v for o, imp in found["importances"].items() for p, v in imp.items()})
    front = wandb_files.table(sweep / "report", "search_front")
    assert [r["trial"] for r in front] == [r["trial"] for r in found["front"]]
    logged = {k.split("/")[0]: h[k] for h in wandb_files.history(file) for k in h if k.endswith("/_type")}
    assert all(logged[k] == "image-file" for k in ("importance", "slice", "search_front"))


def test_search_figures_draw_for_one_objective_and_for_no_importances(tmp_path):
    import matplotlib.pyplot as plt

    from src.reporting import search_plots
    from src.reporting.search import load_search

    _study(tmp_path / "single", 5, objectives=("val_acc",))
    view = load_search(tmp_path / "single")
    assert len(view.front()) == 1 and view.front()[0].values[0] == max(view.values("val_acc"))
    for draw in (search_plots.importance, search_plots.slices, search_plots.front):
        fig = draw(view)
        fig.savefig(tmp_path / "x.png")
        plt.close(fig)
    fig = search_plots.front(view)
    [ax] = fig.axes
    assert ax.get_xlabel() == "trial number" and any(t.get_text().startswith(f"#{view.front()[0].number}: ")
                                                       for t in ax.texts)
    plt.close(fig)
    _study(tmp_path / "one", 1)
    fig = search_plots.importance(load_search(tmp_path / "one"))
    assert "no parameter importances" in fig.axes[0].texts[0].get_text()
    plt.close(fig)


def test_a_moved_or_copied_sweep_folder_is_reported_from_its_own_study(tmp_path):
    """study.json names its storage by the path it was written at. A copy of the sweep folder (rsync
    from a cluster) was reported from the original's study: none once that was gone, and another
    study's trials once one of that name was made there again."""
    from src.reporting.search import find_searches, load_search

    first, copy = tmp_path / "cluster" / "sweep", tmp_path / "laptop" / "sweep"
    _study(first, 24).set_user_attr("uid", "x")  # the uid its study.json names
    shutil.copytree(first, copy)
    shutil.rmtree(first)
    assert len(load_search(copy).trials) == 24
    _study(first, 5).set_user_attr("uid", "y")  # made again under the same name (and its study.json lost)
    (first / "study.json").write_text(json.dumps({"study": "s", "uid": "x", "storage": f"sqlite:///{first / 'optuna.db'}"}))
    assert len(load_search(copy).trials) == 24
    with pytest.raises(ValueError, match=f"{first / 'optuna.db'} holds another study named s"):
        load_search(first)
    assert [len(v.trials) for v in find_searches([first, copy])] == [24]  # the remade one left out, with a warning


def test_a_journal_storage_is_read_too(tmp_path):
    """Several workers share a study through a journal file (hydra.sweeper.storage=journal:...)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from src.reporting.search import load_search

    log_file = tmp_path / "study.log"
    study = optuna.create_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(log_file))),
                                directions=["maximize"])
    for depth in (0, 3, 6, 2):
        study.enqueue_trial({DEPTH: depth})
        trial = study.ask()
        trial.suggest_int(DEPTH, 0, 6)
        study.tell(trial, 0.7 + 0.04 * trial.params[DEPTH])
    (tmp_path / "study.json").write_text(json.dumps({"study": "j", "uid": "x", "storage": f"journal:{log_file}"}))
    view = load_search(tmp_path)
    assert view is not None and [t.params[DEPTH] for t in view.trials] == [0, 3, 6, 2]
    assert [t.params[DEPTH] for t in view.front()] == [6]  # one objective: the best trial
    assert view.objectives == ["objective 0"] and view.methods["objective 0"].startswith("|Spearman ρ|")
