"""The report: numbers from the run files, a page that renders in real headless Chromium, the notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.reporting.analysis import pareto_front
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
    rows = json.loads((report / "summary.json").read_text())
    assert [r["config"] for r in rows] == list(STRATEGIES) and all(r["seeds"] == 2 for r in rows)
    for row in rows:
        runs = [json.loads((Path(d) / "result.json").read_text()) for d in row["run_dirs"]]
        assert sorted(r["seed"] for r in runs) == [0, 1] and {r["strategy"] for r in runs} == {row["strategy"]}
        mean, half = mean_ci([r["test_acc"] for r in runs])
        assert row["test_acc"] == pytest.approx(mean)
        assert (row["test_acc_ci95"] or 0.0) == pytest.approx(0.0 if math.isnan(half) else half)
    points = [(r["test_acc"], r["train_flops"]) for r in rows]
    for i, row in enumerate(rows):  # the front by the definition, not by the code under test
        beaten = any(a >= points[i][0] and c <= points[i][1] and (a, c) != points[i] for a, c in points)
        assert row["pareto"] == (not beaten), row
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

    # the multirun itself wrote the report (the callback), with the same pooled rows as src.reporting.page
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert [r["config"] for r in summary] == list(STRATEGIES) and (results / "report" / "index.html").is_file()
    [summary_file] = (results / "report").glob("wandb/offline-run-*/run-*.wandb")
    info = wandb_files.run_info(summary_file)
    [a_run] = (results / "0_frozen").glob("wandb/offline-run-*/run-*.wandb")
    assert info.job_type == "summary" and info.run_group == wandb_files.run_info(a_run).run_group != ""
    logged = {k.split("/")[0]: h[k] for h in wandb_files.history(summary_file) for k in h if k.endswith("/_type")}
    assert {k: logged[k] for k in ("runs", "configs", "accuracy_vs_flops_table", "val_acc_curves_table")} == \
        dict.fromkeys(("runs", "configs", "accuracy_vs_flops_table", "val_acc_curves_table"), "table-file")
    assert all(logged[k] == "image-file" for k in ("pareto", "curves", "schedules"))
    assert wandb_files.summary(summary_file)["n_runs"] == 2 * len(STRATEGIES)
    runs = _table(results / "report", "runs")
    on_disk = {p.parent.name: json.loads(p.read_text()) for p in results.glob("*/result.json")}
    assert {r["run"] for r in runs} == set(on_disk)
    for r in runs:
        assert r["test_acc"] == on_disk[r["run"]]["test_acc"] and r["train_flops"] == on_disk[r["run"]]["train_flops"]
    configs = _table(results / "report", "configs")
    assert [c["test_acc"] for c in configs] == pytest.approx([c["test_acc"] for c in summary])
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
    os.environ["RESULTS_DIRS"] = str(results)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        del os.environ["RESULTS_DIRS"]
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # the Pareto plot, the curves, the schedules
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "6 runs, 3 completed configurations" in text and "1 dataset/size cell(s): no map" in text


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
    from src.reporting.analysis import group_configs, load_runs
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
    from src.reporting.analysis import group_configs, load_runs
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

    assert pruning.pareto_ranks is pareto_ranks  # the sweep's pruner and the report share it
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
