"""The report: numbers from the run files, a page that renders in real headless Chromium, the notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from src.reporting.comparisons import COSTS
from src.reporting.pareto import pareto_front
from src.reporting.stats import mean_ci, paired
from tests.cli import REPO, TINY_OVERRIDES, env

STRATEGIES = ("frozen", "full", "layerwise")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A small real result set: three strategies x two seeds of the tiny model, via the Hydra multirun,
    tracked by W&B offline."""
    sweep = tmp_path_factory.mktemp("results") / "multi"
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", f"strategy={','.join(STRATEGIES)}", "seed=0,1", *TINY_OVERRIDES,
         "trainer.epochs=2", "trainer.progress=false", "logger=wandb", "logger.mode=offline",
         f"hydra.sweep.dir={sweep}"],
        cwd=sweep.parent, env=env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run([sys.executable, "-m", "src.report", str(results), "--out", str(out)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'index.html'}" in proc.stderr
    return out


def test_report_pools_seeds_with_t_intervals_and_marks_the_front(results, report):
    from src.config import DataConfig
    from src.data.identity import dataset_identity

    rows = json.loads((report / "summary.json").read_text())
    assert [r["config"] for r in rows] == list(STRATEGIES) and all(r["seeds"] == 2 for r in rows)
    # every run recorded what it measured: the digits with the default split
    ids = {json.loads(p.read_text())["dataset_id"] for p in results.glob("*/result.json")}
    assert ids == {dataset_identity(DataConfig(kind="digits"))}
    for row in rows:
        runs = [json.loads((Path(d) / "result.json").read_text()) for d in row["run_dirs"]]
        assert sorted(r["seed"] for r in runs) == [0, 1] and {r["strategy"] for r in runs} == {row["strategy"]}
        mean, half = mean_ci([r["test_acc"] for r in runs])
        assert row["test_acc"] == pytest.approx(mean)
        assert (row["test_acc_ci95"] or 0.0) == pytest.approx(0.0 if math.isnan(half) else half)
    for cost in COSTS:  # each cost's front (the figure's panels), by the definition, not by the code under test
        points = [(r["test_acc"], r[cost]) for r in rows]
        for i, row in enumerate(rows):
            beaten = any(a >= points[i][0] and c <= points[i][1] and (a, c) != points[i] for a, c in points)
            assert row["pareto_by_cost"][cost] == (not beaten), (cost, row)
            assert cost != "train_flops" or row["pareto"] == (not beaten), row
    assert pareto_front([(0.9, 1.0), (0.95, 2.0), (0.94, 3.0), (0.8, 0.5)]) == [3, 0, 1]
    page = (report / "index.html").read_text()
    assert " ± " in page and "frozen" in page and "Pareto" in page
    for name in ("pareto", "curves", "schedules", "drift"):
        assert (report / f"{name}.png").stat().st_size > 10_000
        assert f'id="fig-{name}" src="data:image/png;base64,' in page  # self-contained


def test_report_compares_strategies_paired_by_seed(report):
    rows = {r["config"]: r for r in json.loads((report / "summary.json").read_text())}
    pairs = json.loads((report / "paired.json").read_text())
    assert [(p["a"], p["b"]) for p in pairs] == [(a, b) for i, a in enumerate(STRATEGIES) for b in STRATEGIES[i + 1:]]
    for p in pairs:
        by_seed = [{json.loads((Path(d) / "result.json").read_text())["seed"]: json.loads(
            (Path(d) / "result.json").read_text())["test_acc"] for d in rows[c]["run_dirs"]} for c in (p["a"], p["b"])]
        diffs = [by_seed[0][s] - by_seed[1][s] for s in (0, 1)]
        assert p["seeds"] == [0, 1] and p["diff"] == pytest.approx(sum(diffs) / 2)
        assert 0.0 <= p["p"] <= 1.0
    page = (report / "index.html").read_text()
    assert 'id="paired"' in page and "paired t-test" in page


def test_paired_t_test_matches_the_textbook_case():
    # Differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.46 on 2 df, p = 0.0742
    result = paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert result["diff"] == pytest.approx(2.0) and result["n"] == 3
    assert result["p"] == pytest.approx(0.0742, abs=1e-4)
    assert result["ci95"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)  # t(0.975, 2) * sd / sqrt(n)
    assert paired([1.0, 2.0], [1.0, 2.0])["p"] == 1.0  # identical: no difference, no spread
    with pytest.raises(ValueError, match="equal-length"):
        paired([1.0], [2.0])


def _table(run_dir: Path, key: str) -> list[dict]:
    [path] = run_dir.glob(f"wandb/offline-run-*/files/media/table/{key}_*.table.json")
    table = json.loads(path.read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def test_multirun_ends_with_a_report_and_a_wandb_summary_run(results):
    from tests import wandb_files

    # the multirun itself wrote the report (the callback), with the same pooled rows as `python -m src.report`
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert [r["config"] for r in summary] == list(STRATEGIES) and (results / "report" / "index.html").is_file()
    [summary_file] = (results / "report").glob("wandb/offline-run-*/run-*.wandb")
    info = wandb_files.run_info(summary_file)
    [a_run] = (results / "0_frozen").glob("wandb/offline-run-*/run-*.wandb")
    assert info.job_type == "summary" and info.run_group == wandb_files.run_info(a_run).run_group != ""
    logged = {k.split("/")[0]: h[k] for h in wandb_files.history(summary_file) for k in h if k.endswith("/_type")}
    tables = ("runs", "configs", "accuracy_vs_flops_table", "val_acc_curves_table", "pareto_front", "pareto_front_chart_table")
    assert {k: logged[k] for k in tables} == dict.fromkeys(tables, "table-file")
    front = _table(results / "report", "pareto_front")
    assert [f["config"] for f in front] == [r["config"] for r in sorted(summary, key=lambda r: r["train_flops"]) if r["pareto"]]
    assert all(f["log10 train_flops"] == pytest.approx(math.log10(f["train_flops"])) for f in front)
    assert set(wandb_files.run_info(summary_file).tags) >= {*STRATEGIES, "test_efficientnet"}
    assert all(logged[k] == "image-file" for k in ("pareto", "curves", "schedules"))
    assert wandb_files.summary(summary_file)["n_runs"] == 2 * len(STRATEGIES)
    assert wandb_files.summary(summary_file)["pareto_configs_by_cost"] == {  # each cost's front, as summary.json has it
        cost: [r["config"] for r in summary if r["pareto_by_cost"][cost]] for cost in COSTS}
    runs = _table(results / "report", "runs")
    on_disk = {p.parent.name: json.loads(p.read_text()) for p in results.glob("*/result.json")}
    assert {r["run"] for r in runs} == set(on_disk)
    for r in runs:
        assert r["test_acc"] == on_disk[r["run"]]["test_acc"] and r["train_flops"] == on_disk[r["run"]]["train_flops"]
        # every recorded knob of the run's strategy is a column of its own, frozen_bn included
        for knob, value in on_disk[r["run"]]["strategy_params"].items():
            assert r[knob] == value, (r["run"], knob)
        assert r["frozen_bn"] == on_disk[r["run"]]["frozen_bn"] and r["model"] == "test_efficientnet"
    assert any(k in runs[0] for k in ("lr_decay", "unfreeze_depth"))  # layerwise's knobs, even on another's row
    configs = _table(results / "report", "configs")
    assert [c["test_acc"] for c in configs] == pytest.approx([c["test_acc"] for c in summary])
    # each training run: tagged, its epochs on the `epoch` axis, validation accuracy summarised as its best epoch
    for run_dir in (results / "0_frozen", results / "4_layerwise"):
        [run_file] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        record = on_disk[run_dir.name]
        assert list(wandb_files.run_info(run_file).tags) == [record["strategy"], record["dataset"], record["model"]]
        assert wandb_files.metrics(run_file)["val_acc"] == {"step_metric": "epoch", "summary": ["max"]}
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        run_summary = wandb_files.summary(run_file)
        assert run_summary["val_acc"] == {"max": max(e["val_acc"] for e in epochs)}
        assert run_summary["selected_val_acc"] == record["val_acc"] and run_summary["test_acc"] == record["test_acc"]
    # each run has its layer-group schedule as a table, equal to its param_groups.json
    for run_dir in (results / "0_frozen", results / "4_layerwise"):
        groups = json.loads((run_dir / "param_groups.json").read_text())["groups"]
        table = _table(run_dir, "param_groups")
        assert [(t["name"], t["lr"], t["epochs"]) for t in table] == \
            [(g["name"], g["lr"], ",".join(map(str, g["epochs"]))) for g in groups]


def test_report_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "src.report", str(tmp_path / "nope")],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no such folder: {tmp_path / 'nope'}"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium; .ci/run installs it)")
def test_report_page_renders_in_headless_chromium(report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
    from PIL import Image

    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto((report / "index.html").as_uri())
        page.wait_for_load_state("load")
        sizes = {n: page.eval_on_selector(f"#fig-{n}", "e => [e.complete, e.naturalWidth, e.naturalHeight]")
                 for n in ("pareto", "curves", "schedules")}
        page.locator("#fig-pareto").screenshot(path=str(tmp_path / "pareto.png"))
        rows = page.locator("#summary tbody tr").count()
        browser.close()
    assert problems == []
    assert all(done and w > 300 and h > 200 for done, w, h in sizes.values()), sizes
    assert rows == len(STRATEGIES)
    shot = Image.open(tmp_path / "pareto.png").convert("RGB")
    colors = shot.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # not a blank or single-colour box
    non_white = sum(n for n, c in colors if min(c) < 240) / (shot.width * shot.height)
    assert non_white > 0.02
    # every strategy's marker colour is on screen (the first three of the palette)
    def near(rgb, hex_):
        want = tuple(int(hex_[i : i + 2], 16) for i in (1, 3, 5))
        return all(abs(a - b) < 30 for a, b in zip(rgb, want))
    for hex_ in ("#1f77b4", "#d62728", "#2ca02c"):
        assert any(near(c, hex_) for _, c in colors), hex_


def test_analysis_notebook_runs_on_real_results_and_is_committed_clean(results):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = REPO / "notebooks" / "analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "commit the notebook without outputs"
    # run where a notebook server and nbconvert run it, in notebooks/, with the folder given relative to the
    # repository root, as `make notebook DIR=...` and the README's commands give it
    os.environ["RESULTS_DIRS"] = os.path.relpath(results, REPO)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        del os.environ["RESULTS_DIRS"]
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # the Pareto plot, the curves, the schedules
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "6 runs, 3 completed configurations" in text and "1 dataset/size cell(s): no map" in text
    # the paired comparison and the verdict, as the report's page shows them
    from src.reporting.comparisons import paired_rows
    from src.reporting.configs import group_configs
    from src.reporting.runs import load_runs
    from src.reporting.tables import pair_cells
    from src.reporting.verdict import answer

    configs = group_configs(load_runs([results]))
    for a, b, seeds, diff, p, p_holm in pair_cells(paired_rows(configs)):
        assert f"{a} − {b}  seeds {seeds}  test_acc A − B {diff}  p {p}  Holm p {p_holm}" in text
    assert all(sentence in text for sentence in answer(configs))


@pytest.mark.slow
def test_make_notebook_runs_the_notebook_headless_on_a_folder_relative_to_the_repository(results, tmp_path):
    pytest.importorskip("nbconvert")  # make install installs it (the notebook extra)
    proc = subprocess.run(["make", "notebook", f"PY={sys.executable}", f"DIR={os.path.relpath(results, REPO)}",
                           f"OUT={tmp_path}"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = unescape((tmp_path / "analysis.html").read_text())
    assert "6 runs, 3 completed configurations" in page and "seeds 0, 1  test_acc A − B" in page


V1_RUN = Path(__file__).parent / "fixtures" / "v1_layerwise"


def _v2_copy(dst: Path, seed: int, **changes) -> Path:
    """The fixture's run as this version writes it (schema_version 2, knobs in strategy_params),
    on another seed: what a run of the same configuration writes today."""
    from src.record.io import append_jsonl, read_jsonl, write_json
    from src.record.schema import EpochRecord, RunRecord

    dst.mkdir(parents=True)
    old = RunRecord.from_json(json.loads((V1_RUN / "result.json").read_text()))
    write_json(dst / "result.json", old.replace(seed=seed, run_dir=str(dst), **changes).to_json())
    for line in read_jsonl(V1_RUN / "metrics.jsonl"):
        append_jsonl(dst / "metrics.jsonl", EpochRecord.from_json(line).to_json())
    shutil.copy(V1_RUN / "param_groups.json", dst / "param_groups.json")
    return dst


def test_a_version_1_run_pools_with_a_version_2_run_and_reports(tmp_path):
    from src.record.io import format_table
    from src.reporting.configs import group_configs
    from src.reporting.runs import load_runs
    from src.reporting.page import write_report

    shutil.copytree(V1_RUN, tmp_path / "old" / "0_layerwise")
    _v2_copy(tmp_path / "new" / "1_layerwise", seed=1, test_acc=0.96)
    _v2_copy(tmp_path / "new" / "2_layerwise", seed=0, strategy_params={"lr_decay": 3.0, "unfreeze_depth": "all",
                                                                      "unfreeze_every": 0})
    runs = load_runs([tmp_path / "old", tmp_path / "new"])
    assert [r.result.schema_version for r in runs] == [2, 2, 2] and all(len(r.metrics) == 6 for r in runs)
    same, other = group_configs(runs)
    assert same.seeds == [0, 1] and same.label == "layerwise (lr_decay=2.6)" and other.label == "layerwise (lr_decay=3)"
    assert same.stats["test_acc"][0] == pytest.approx((0.9805555555555555 + 0.96) / 2)
    table = format_table([(r.dir, r.result) for r in runs])
    assert table.splitlines()[2].split()[:5] == ["layerwise", "0.9806", "0.9806", "0.9805", "3.38"]
    assert "2.71 T" in table and table.count("completed") == 3
    page = write_report([tmp_path / "old", tmp_path / "new"], tmp_path / "report")
    html = page.read_text()
    assert "3 runs (3 completed)" in html and "layerwise (lr_decay=2.6)" in html and "2.71 T ± " in html
    assert json.loads((tmp_path / "report" / "summary.json").read_text())[0]["seeds"] == 2


def test_the_page_escapes_what_it_shows(tmp_path):
    from src.reporting.configs import group_configs
    from src.reporting.runs import load_runs
    from src.reporting.page import write_report

    _v2_copy(tmp_path / "runs" / "<i>x&y", seed=0, strategy="<script>alert(1)</script>")
    page = write_report([tmp_path / "runs"], tmp_path / "report", runs=load_runs([tmp_path / "runs"]))
    html = page.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<i>x" not in html and "&lt;i&gt;x&amp;y" in html
    assert [c.label for c in group_configs(load_runs([tmp_path / "runs"]))] == ["<script>alert(1)</script>"]


def test_pareto_dominance_is_one_definition_with_ties_and_equal_points():
    from src.reporting.pareto import dominates, pareto_front, pareto_ranks
    from src.search import pruning

    # the sweep's pruner and the report share one definition. By where it is defined, not `is`: a Hydra
    # app run earlier in this process scans hydra_plugins and executes its modules again (new objects)
    def where(f):
        return f.__module__, f.__qualname__, f.__code__.co_firstlineno

    assert where(pruning.pareto_ranks) == where(pareto_ranks) == ("hydra_plugins.ft_optuna_sweeper.halving",
                                                                 "pareto_ranks", where(pareto_ranks)[2])
    assert pareto_front([(0.9, 1.0), (0.95, 2.0), (0.94, 3.0), (0.8, 0.5)]) == [3, 0, 1]
    # equal points dominate neither each other nor, strictly, anything equal: both on the front
    assert pareto_front([(0.9, 1.0), (0.9, 1.0), (0.8, 2.0)]) == [0, 1]
    assert pareto_ranks([(0.9, 1.0), (0.9, 1.0), (0.8, 2.0)]) == [0, 0, 1]
    # a tie on one axis: the one better on the other dominates
    assert pareto_front([(0.9, 1.0), (0.9, 2.0), (0.95, 2.0)]) == [0, 2]
    assert pareto_ranks([(0.9, 1.0), (0.8, 2.0), (0.95, 3.0), (0.7, 0.5)]) == [0, 1, 0, 0]
    # NaN: never on the front, dominates nothing
    assert pareto_front([(math.nan, 1.0), (0.5, 9.0)]) == [1]
    assert not dominates((math.nan, 0.0), (0.5, 9.0)) and not dominates((0.5, 9.0), (math.nan, 0.0))
    # the pruner's weak form: an equal point is beaten; min_delta asks for a margin
    assert not dominates((0.9, 1.0), (0.9, 1.0)) and dominates((0.9, 1.0), (0.9, 1.0), strict=False)
    assert not dominates((0.9, 1.0), (0.85, 1.0), min_delta=0.1, strict=False)


# --- the answer, the plots' conventions: synthetic records, no training ---------------------------


SIX = tuple(range(6))  # seeds: the fewest on which an exact gap on every seed separates two (sign test)
SAME, EACH, SIGN = "(the same on every seed)", "on each of their 6 common seeds", "p = 0.03 by the sign test"
# three configurations are three pairs: Holm asks the first of 3 x 2/2**n < 0.05, so seven seeds
SEVEN, EACH7 = tuple(range(7)), "on each of their 7 common seeds"
SIGN7 = "p = 0.02 by the sign test, Holm p = 0.047 over 3 pairs"


def _runs(spec: dict[str, tuple[float, float, float]], seeds=(0, 1), root: Path = Path("/study"), **same):
    """Runs of configurations named by strategy: (val acc, test acc, train FLOPs), the same on every seed."""
    from src.record.schema import RunRecord
    from src.reporting.runs import Run

    fields = {"dataset": "digits", "train_samples": 50} | same
    return [Run(root / f"{name}_{seed}", RunRecord(strategy=name, seed=seed, status="completed", val_acc=v, test_acc=t,
                                                   train_flops=int(f), train_time_s=f / 1e11,
                                                   trainable_params=int(f / 1e6), **fields))
            for name, (v, t, f) in spec.items() for seed in seeds]


def test_the_answer_names_the_best_on_validation_and_test_and_what_the_cheapest_gives_up():
    from src.reporting.configs import group_configs
    from src.reporting.verdict import answer

    # the same accuracy on every seed: every paired gap is exact, so the sign test decides, and among
    # three configurations' 3 pairs seven seeds that all agree are the fewest it separates (Holm:
    # 3 x 2/2**7 = 0.047; six gave 0.094); two such seeds read "p < 0.001" before
    spec = {"frozen": (0.90, 0.919, 1.0e11), "full": (0.99, 0.992, 1.83e12), "layerwise": (0.995, 0.985, 9.0e11)}
    configs = group_configs(_runs(spec, seeds=SEVEN))
    [text] = answer(configs, "test_acc")
    assert text.startswith(f"7 seeds per configuration (mean ± 95% CI; gaps paired by seed). Best on validation: "
                           f"layerwise (0.995 {SAME}, next full 0.5 points behind {EACH7}, {SIGN7}). Best on test: full "
                           f"(0.992 {SAME}, next layerwise 0.7 points behind {EACH7}, {SIGN7}).")
    # frozen: 0.919 vs full's 0.992 = 7.3 points, at 1e11 / 1.83e12 = 1/18 of its FLOPs
    assert (f"The cheapest configuration on the Pareto front of test accuracy against training FLOPs, frozen, reaches "
            f"0.919 {SAME} test accuracy, 7.3 points below full {EACH7} ({SIGN7}), at 1/18 of its training FLOPs.") in text
    # on validation the front is frozen and layerwise (full costs more for less)
    [on_val] = answer(configs, "val_acc")
    assert f"9.5 points below layerwise {EACH7} ({SIGN7}), at 1/9 of its training FLOPs" in on_val
    # on six seeds each pair's own p (0.03) is under 0.05, but not among the 3 pairs: all three tie
    [six] = answer(group_configs(_runs(spec, seeds=SIX)), "test_acc")
    assert "Best on validation and on test: full, layerwise and frozen, which the seeds cannot tell apart" in six
    assert f"{SIGN}, Holm p = 0.09 over 3 pairs" in six


def test_the_answer_when_one_configuration_wins_everything_and_per_task():
    from src.reporting.comparisons import cost_ratio
    from src.reporting.configs import group_configs
    from src.reporting.verdict import answer

    [text] = answer(group_configs(_runs({"frozen": (0.9, 0.9, 1e11), "full": (0.99, 0.98, 1e10)}, seeds=SIX)))
    assert text.endswith(f"Best on validation and on test: full (validation: 0.990 {SAME}, next frozen 9.0 points behind "
                         f"{EACH}, {SIGN}; test: 0.980 {SAME}, next frozen 8.0 points behind {EACH}, {SIGN}). On test "
                         "accuracy against training FLOPs, full is also the cheapest: no configuration trades test accuracy "
                         "for a lower cost.")
    two = _runs({"frozen": (0.9, 0.9, 1e11)}, dataset="a") + _runs({"frozen": (0.8, 0.8, 1e11)}, dataset="b")
    a, b = answer(group_configs(two))
    assert a.startswith("On a (all per class): 2 seeds per configuration") and "frozen (validation: 0.900" in a
    assert b.startswith("On b (all per class): ")
    assert [cost_ratio(1, 18.3), cost_ratio(1, 2.5), cost_ratio(0.73, 1.0)] == ["1/18", "1/2.5", "73%"]
    # no FLOPs counted (trainer.count_flops=false): the front is on training time, and says so
    no_flops = [r.__class__(r.dir, r.result.replace(train_flops=None))
                for r in _runs({"frozen": (0.9, 0.9, 1e11), "full": (0.99, 0.98, 4e11)}, seeds=SIX)]
    assert answer(group_configs(no_flops))[0].endswith(f"8.0 points below full {EACH} ({SIGN}), at 1/4 of its training time "
                                                     "(1 s against 4 s, the same on every seed).")


def test_the_answer_is_at_the_top_of_the_page_and_of_the_console_table(tmp_path):
    from src.reporting.configs import group_configs
    from src.reporting.page import write_report
    from src.reporting.tables import console_summary
    from src.reporting.verdict import answer

    runs = _runs({"frozen": (0.9, 0.919, 1e11), "full": (0.99, 0.992, 1.83e12)}, root=tmp_path / "study")
    for r in runs:  # a real folder per run: the page lists them
        r.dir.mkdir(parents=True)
        (r.dir / "result.json").write_text(json.dumps(r.result.to_json()))
    sentences = answer(group_configs(runs))
    html = write_report([tmp_path / "study"], tmp_path / "report").read_text()
    body = html[html.index("<h1>"):]
    assert body.index('id="answer"') < body.index("<h2>") and all(s in unescape(html) for s in sentences)
    printed = console_summary([(r.dir, r.result) for r in runs], markdown=True)
    assert printed.startswith("\n".join(sentences) + "\n\n|")
    proc = subprocess.run([sys.executable, "-m", "src.report", str(tmp_path / "study"), "--no-html"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(sentences[0])


def test_plots_keep_legends_off_the_points_log_cost_axes_and_trial_numbers(tmp_path):
    import matplotlib.pyplot as plt

    from src.reporting import plots
    from src.reporting.configs import group_configs
    from src.reporting.runs import trial_number

    # the default study's FLOPs (1.5e11 and 2.7e12): a span matplotlib labelled unreadably
    runs = _runs({"frozen": (0.9, 0.9, 1.52e11), "full": (0.99, 0.98, 2.71e12)}, root=tmp_path / "sweep")
    runs = [r.__class__(tmp_path / "sweep" / ("trial_0003" if r.result.strategy == "frozen" else "rerun/trial_0011/seed_1"),
                        r.result) for r in runs]
    configs = group_configs(runs)
    assert [c.trials for c in configs] == [[3], [11]] and configs[1].name == "full, trial 11"
    assert trial_number(tmp_path / "0_frozen") is None
    fig = plots.pareto(configs, "test_acc")
    fig.canvas.draw()
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_xscale() == "log" for ax in axes)  # FLOPs, time, params alike
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    legend_box = fig.legends[0].get_window_extent()
    for ax in axes:  # the legend is outside every panel, so it covers no point
        assert not legend_box.overlaps(ax.get_window_extent())
        assert {t.get_text() for t in ax.texts} == {"#3", "#11"}
        # the cost axis's tick labels are readable: none runs into another (matplotlib's minor
        # labels in scientific notation did, on a span of one to two decades)
        labels = [t.get_window_extent() for t in ax.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
        assert labels and not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:]), ax.get_xlabel()
    plt.close(fig)


def test_a_job_of_the_hydra_optuna_sweeper_is_labelled_with_its_trial(tmp_path):
    from src.reporting.runs import trial_number

    def job(name: str, target: str, num: int) -> Path:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  sweeper:\n    _target_: {target}\n  job:\n    num: {num}\n")
        return tmp_path / name

    assert trial_number(job("7_layerwise", "hydra_plugins.ft_optuna_sweeper.optuna_sweeper.OptunaSweeper", 7)) == 7
    assert trial_number(job("2_full", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", 2)) is None


def test_a_paired_gap_reads_signed_mean_plus_or_minus_an_unsigned_half_width(tmp_path):
    # the page's paired table printed "-0.0975 ± +0.0318": the gap's sign formatter wrote the half-width too
    from src.reporting.comparisons import paired_rows
    from src.reporting.configs import group_configs
    from src.reporting.runs import load_runs
    from src.reporting.tables import pair_cells
    from tests.test_verdict import TIED, write_runs

    [row] = [r for r in pair_cells(paired_rows(group_configs(load_runs([write_runs(tmp_path, TIED)]))))
             if (r[0], r[1]) == ("frozen", "full")]
    diff, half = row[3].split(" ± ")
    assert diff.startswith("-") and not half.startswith(("+", "-")) and float(half) > 0, row[3]


def test_a_cheaper_cost_never_reads_as_the_same_cost_or_the_dearer_one_as_cheaper():
    # The trade's "at 100% of its training FLOPs" was written for a configuration 0.2% cheaper (0.998
    # of the other's): a share rounded up to 100% said the two cost the same where the front put one below.
    from src.reporting.comparisons import cost_ratio

    assert cost_ratio(0.998, 1.0) == "99.8%"
    assert cost_ratio(0.99996, 1.0) == "99.996%"
    assert cost_ratio(0.994, 1.0) == "99%" and cost_ratio(1.0, 1.0) == "100%"
    assert [cost_ratio(1, 18.3), cost_ratio(1, 2.5), cost_ratio(0.73, 1.0)] == ["1/18", "1/2.5", "73%"]
