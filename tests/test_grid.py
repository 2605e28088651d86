"""experiment=data_size_grid: the preset, several passes per epoch for small training sets, and the
which-strategy-wins map built from a real (tiny) grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats as sps

from src.data.batches import Batches, batches_per_pass, passes_for
from src.data.splits import Split
from src.models import Normalization
from src.reporting.stats import mean_ci
from tests.cli import REPO, TINY_OVERRIDES, env


def test_the_preset_composes_the_grid_it_documents(monkeypatch):
    from hydra import compose, initialize_config_dir

    from src.gate import install

    install()  # the typed schemas the config's defaults start from (conf/*/...: base_*)

    monkeypatch.setenv("MEDMNIST_DIR", "/data/x")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for dataset in ("digits", "pneumoniamnist"):
            cfg = compose("config", overrides=["experiment=data_size_grid", f"dataset={dataset}"], return_hydra_config=True)
            # the preset's settings win over the dataset group's own (digits alone would be 96 px)
            assert cfg.dataset.image_size == 64 and cfg.trainer.min_epoch_steps == 25 and cfg.trainer.epochs == 5
            assert cfg.strategy.frozen_bn == "all"
        assert cfg.dataset.root == "/data/x/pneumoniamnist.npz" and cfg.dataset.kind == "medmnist"
        params = cfg.hydra.sweeper.params
        axes = {k: str(v).split(",") for k, v in params.items()}
        assert axes["dataset"] == ["pneumoniamnist", "digits"]  # the one that needs a file first: fail fast
        assert axes["dataset.train_per_class"] == ["5", "10", "25", "50", "null"]
        assert set(axes["strategy"]) >= {"frozen", "full", "layerwise"} and len(axes["seed"]) >= 3
        # every name in the grid is a real option, so no job of the hour-long run fails at composition
        for name in axes["strategy"]:
            assert (REPO / "conf" / "strategy" / f"{name}.yaml").is_file()
        # without the preset nothing changes
        plain = compose("config", overrides=[], return_hydra_config=True)
        assert plain.trainer.min_epoch_steps == 0 and plain.dataset.image_size == 96 and not plain.hydra.sweeper.params


def test_batches_pass_over_a_small_set_several_times_per_epoch():
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous(),
                  torch.arange(10))
    assert batches_per_pass(10, 4) == 3 and batches_per_pass(9, 4) == 2  # a last batch of 1 is dropped
    assert passes_for(10, 4, 7) == 3 and passes_for(10, 4, 0) == 1 and passes_for(10, 4, 2) == 1
    b = Batches(split, 4, Normalization((0.5,) * 3, (0.5,) * 3), torch.device("cpu"), shuffle=True, seed=0,
                passes=passes_for(10, 4, 7))
    epoch = list(b)
    assert len(epoch) == len(b) == 9
    seen = torch.cat([y for _, y in epoch]).tolist()
    # each pass is a full permutation of the set, a different one each time
    passes = [seen[0:10], seen[10:20], seen[20:30]]
    assert all(sorted(p) == list(range(10)) for p in passes) and passes[0] != passes[1]
    assert len(b.unshuffled()) == 3  # one-off passes (feature caching) see each image once


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *TINY_OVERRIDES, "strategy=full", "trainer.progress=false",
         "trainer.drift_probe=0", f"hydra.run.dir={out}", *extra],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_min_epoch_steps_trains_and_counts_every_pass(tmp_path):
    # 3 digits per class = 30 training images = 2 steps at batch 16; 5 steps per epoch need 3 passes
    one = _run(tmp_path, "one")
    three = _run(tmp_path, "three", "trainer.min_epoch_steps=5")
    assert (one["passes_per_epoch"], one["steps_per_epoch"]) == (1, 2)
    assert (three["passes_per_epoch"], three["steps_per_epoch"], three["min_epoch_steps"]) == (3, 6, 5)
    assert one["train_samples"] == three["train_samples"] == 30
    # FLOPs are counted per image trained: three passes cost three times one pass, exactly
    assert three["train_flops"] == 3 * one["train_flops"]
    losses = [json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[0])["train_loss"] for n in ("one", "three")]
    assert losses[0] != losses[1]  # the extra passes trained


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """A real grid through the preset: 2 strategies x 2 sizes x 3 seeds of the tiny model on digits,
    tracked by W&B offline. 12 jobs (15 s): its tests are the slow tier's; the preset's composition
    is checked in the fast tier above."""
    sweep = tmp_path_factory.mktemp("grid") / "multi"
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", "experiment=data_size_grid", *TINY_OVERRIDES,
         "dataset=digits", "dataset.train_per_class=3,6", "dataset.image_size=32", "strategy=frozen,full",
         "seed=0,1,2", "trainer.epochs=1", "trainer.min_epoch_steps=2", "trainer.drift_probe=0",
         "logger=wandb", "logger.mode=offline", f"hydra.sweep.dir={sweep}"],
        cwd=sweep.parent, env=env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow  # uses the real grid
def test_grid_report_names_the_winner_of_each_cell_from_the_run_files(grid):
    runs = [json.loads(p.read_text()) for p in grid.glob("*/result.json")]
    assert len(runs) == 12 and {r["train_per_class"] for r in runs} == {3, 6}
    assert sorted(p.name for p in grid.iterdir() if p.is_dir() and p.name != "report")[0].startswith("0_digits_n3_")
    cells = json.loads((grid / "report" / "wins.json").read_text())
    assert [(c["dataset"], c["train_per_class"]) for c in cells] == [("digits", "3"), ("digits", "6")]
    for cell in cells:
        per_class = int(cell["train_per_class"])
        acc = {s: {r["seed"]: r["test_acc"] for r in runs if r["strategy"] == s and r["train_per_class"] == per_class}
               for s in ("frozen", "full")}
        means = {s: mean_ci(list(v.values()))[0] for s, v in acc.items()}
        winner = max(means, key=means.get)
        loser = min(means, key=means.get) if means["frozen"] != means["full"] else next(s for s in means if s != winner)
        assert cell["winner"] == winner and cell["entries"][0]["mean"] == pytest.approx(means[winner])
        behind = cell["entries"][1]
        assert behind["config"] == loser and behind["behind"] == pytest.approx(means[winner] - means[loser])
        diffs = [acc[winner][s] - acc[loser][s] for s in (0, 1, 2)]
        p = 1.0 if len(set(diffs)) == 1 and diffs[0] == 0 else (0.0 if len(set(diffs)) == 1 else
                                                               sps.ttest_rel([acc[winner][s] for s in (0, 1, 2)],
                                                                             [acc[loser][s] for s in (0, 1, 2)]).pvalue)
        assert behind["p"] == pytest.approx(p) and behind["tied"] == (p >= 0.05)
        assert cell["tied_with_winner"] == ([loser] if p >= 0.05 else [])
    page = (grid / "report" / "index.html").read_text()
    assert 'id="fig-wins"' in page and page.count("<tr>", page.index('id="wins"')) >= 2
    # paired comparisons stay inside a cell: frozen vs full, once per training-set size
    pairs = json.loads((grid / "report" / "paired.json").read_text())
    assert len(pairs) == 2 and all(p["seeds"] == [0, 1, 2] for p in pairs)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
def test_one_task_gets_no_win_map(tmp_path):
    from src.reporting.page import write_report

    _run(tmp_path, "a")
    page = write_report([tmp_path], tmp_path / "report")
    assert 'id="fig-wins"' not in page.read_text() and not (tmp_path / "report" / "wins.json").exists()


@pytest.mark.slow  # uses the real grid
def test_markdown_output_has_the_win_map(grid):
    proc = subprocess.run([sys.executable, "-m", "src.report", str(grid), "--markdown", "--no-html"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = json.loads((grid / "report" / "wins.json").read_text())
    table = proc.stdout[proc.stdout.index("| strategy | 3 / class | 6 / class |"):].splitlines()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:4]}
    for j, cell in enumerate(cells):
        assert rows[cell["winner"]][j].endswith("★") and rows[cell["winner"]][j].startswith(f"{cell['entries'][0]['mean']:.3f}")
        assert sum(r[j].endswith("★") for r in rows.values()) == 1


@pytest.mark.slow  # uses the real grid
def test_the_win_map_reaches_wandb(grid):
    from tests import wandb_files

    [summary_file] = (grid / "report").glob("wandb/offline-run-*/run-*.wandb")
    logged = {k.split("/")[0]: h[k] for h in wandb_files.history(summary_file) for k in h if k.endswith("/_type")}
    assert logged["win_map"] == "table-file" and logged["wins"] == "image-file"  # the table and the figure
    [path] = (grid / "report").glob("wandb/offline-run-*/files/media/table/win_map_*.table.json")
    table = json.loads(path.read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    cells = json.loads((grid / "report" / "wins.json").read_text())
    assert len(rows) == sum(len(c["entries"]) for c in cells) == 4
    for cell in cells:
        mine = [r for r in rows if r["train_per_class"] == cell["train_per_class"]]
        [winner] = [r for r in mine if r["winner"]]
        assert winner["config"] == cell["winner"] and winner["mean"] == pytest.approx(cell["entries"][0]["mean"])


@pytest.mark.slow  # uses the real grid
def test_the_notebook_maps_the_grid(grid, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("RESULTS_DIRS", str(grid))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4  # Pareto, curves, schedules, the win map
    text = "".join(o.get("text", "") for o in outputs)
    assert "| strategy | 3 / class | 6 / class |" in text and text.count("★ |") == 2
