"""`python -m src.report DIR [DIR ...]`: the comparison table, and a self-contained HTML report.

Reads only the run files under the folders (a multirun, a sweep, or several of them) and writes
`<out>/index.html` with its PNGs beside it (embedded in the page too, so the HTML file alone can be
mailed or attached): the answer in a few sentences (`verdict.answer`: ties named as ties, with their
evidence), accuracy against each cost with the Pareto front, validation curves, the layer-group LR
schedules, and a table with mean ± 95% CI over seeds. The console table (and `--markdown`) starts
with the same sentences. A figure that cannot be drawn is a note in its place; the page is written.
Without `--out`, the report goes into `DIR/report`, or `DIR/report_1`, ... when an earlier report is
there: a report never replaces another.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from src.cli_args import OneLineParser
from src.record.io import RESULT_FILE, SkippedFile
from src.reporting.configs import group_configs
from src.reporting.comparisons import win_map
from src.reporting.ood_section import ood_markdown, ood_section
from src.reporting.robustness import split_sets
from src.reporting.page import write_report
from src.reporting.runs import UNFINISHED, Run, load_runs, resume_hint, unfinished_runs
from src.reporting.tables import console_summary, wins_markdown, wins_worth_showing


class FolderError(Exception):
    """The report cannot go where it was asked to: str() is the one line to print."""


def report_folder(out: Path | None, first: Path) -> tuple[Path, bool]:
    """The folder the command-line report goes into, and whether this call created it. `--out` must
    be a new or empty folder: one that holds files (an earlier report) is refused, not overwritten.
    Without `--out`: `<first DIR>/report`, or `report_1`, `report_2`, ... when an earlier report is
    there, so that a report of other folders (`src.report A B`) never replaces A's own. mkdir is
    atomic, so two reports started at once get two folders. FolderError when it cannot be written."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise FolderError(f"--out {out} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()):
            raise FolderError(f"--out {out} already holds files (an earlier report?); nothing was overwritten: "
                              "give a new or empty folder")
        created = not out.exists()
        _writable(out, "--out")
        return out, created
    for n in range(1000):
        folder = first / ("report" if n == 0 else f"report_{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise FolderError(f"cannot create the report folder {folder} ({err.strerror or err}); "
                              "give one with --out FOLDER") from None
        _writable(folder, "the report folder")
        return folder, True
    raise FolderError(f"{first} already holds report ... report_999; give a folder with --out FOLDER")


def _writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise FolderError(f"cannot write {what} {folder} ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run, multirun or sweep folders")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--out", help="report folder, new or empty (default: DIR/report of the first DIR, "
                        "or DIR/report_1, ... when that holds an earlier report)")
    parser.add_argument("--metric", default="test_acc", choices=("test_acc", "val_acc", "test_balanced_acc"),
                        help="the accuracy plotted against cost (default: test_acc)")
    parser.add_argument("--no-html", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    # Path("") is Path("."): `src.report "$UNSET"` reported whatever lay below the current folder and
    # wrote report/ there. An empty name is refused, as a missing folder is.
    if "" in [*args.dirs, args.out]:
        print(f"error: {'--out' if args.out == '' else 'a folder'} is an empty path (an unset variable?)", file=sys.stderr)
        return 2
    args.dirs, args.out = [Path(d) for d in args.dirs], None if args.out is None else Path(args.out)
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    # a run's result.json stands for its folder (it answered "no readable result.json under .../result.json")
    args.dirs = [d.parent if d.is_file() and d.name == RESULT_FILE else d for d in args.dirs]
    if files := [str(d) for d in args.dirs if not d.is_dir()]:
        print(f"error: {', '.join(files)}: not a folder (give run, multirun or sweep folders, or a result.json)",
              file=sys.stderr)
        return 2
    # --out is checked before any run is read: a file or a folder of files there was refused only after
    # the whole answer and table had been printed, on stdout, so that the "one line, exit 2" came last.
    claimed = None
    if args.out is not None and not args.no_html:
        try:
            claimed = report_folder(args.out, args.dirs[0])
        except FolderError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    skipped: list[SkippedFile] = []
    runs = load_runs(args.dirs, skipped)
    _warn_left_out(skipped, args.dirs, runs)
    if not runs:
        if claimed is not None:
            _clear(*claimed)
        unreadable = f" ({len(skipped)} unreadable, above)" if skipped else ""
        print(f"error: no readable result.json under {', '.join(map(str, args.dirs))}{unreadable}", file=sys.stderr)
        return 2
    print(console_summary([(r.dir, r.result) for r in runs], args.metric, markdown=args.markdown))
    if args.markdown and wins_worth_showing(cells := win_map(group_configs(runs), args.metric)):
        print("\n" + wins_markdown(cells))
    if args.markdown and (ood := ood_markdown(ood_section(group_configs(runs)))):
        print("\n" + ood)
    if args.no_html:
        return 0
    return _write(args.dirs, args.metric, runs, skipped, claimed)


def _write(dirs: list[Path], metric: str, runs: list[Run], skipped: list[SkippedFile],
           claimed: tuple[Path, bool] | None) -> int:
    """The HTML report into the --out folder already claimed, or the first folder's report/ (report_1, ...)."""
    try:
        out, created = claimed or report_folder(None, dirs[0])
    except FolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    figures_missing: dict[str, str] = {}
    try:
        page = write_report(dirs, out, metric, runs, skipped, figures_missing)
    except BaseException as err:
        _clear(out, created)
        if not isinstance(err, (ValueError, OSError)):
            raise  # Ctrl-C, SIGTERM: the folder is cleared all the same
        why = str(err) if isinstance(err, ValueError) else f"report not written in {out} ({err.strerror or err})"
        print(f"error: {why}", file=sys.stderr)
        return 1
    for name, why in figures_missing.items():
        print(f"warning: figure {name} not drawn ({why}); the page says so in its place", file=sys.stderr)
    print(f"report: {page}", file=sys.stderr)
    return 0


def _warn_left_out(skipped: list[SkippedFile], dirs: list[Path], runs: list) -> None:
    """A `warning:` line for each file left out, each run folder without result.json (a killed
    job: in no number of the report) and each OOD set name that is other images in some runs (kept
    apart, it may be in no table: `robustness.split_sets`), before the table, so that none is missed."""
    for bad in skipped:
        print(f"warning: skipped {bad}", file=sys.stderr)
    for folder in unfinished_runs(dirs):
        print(f"warning: {folder}: {UNFINISHED}; {resume_hint(folder)}", file=sys.stderr)
    for line in split_sets([r.result for r in runs]):
        print(f"warning: {line}", file=sys.stderr)


def _clear(folder: Path, created: bool) -> None:
    """What a report that stopped half-way wrote into `folder`, removed, and the folder too when this
    call made it. report_folder gave a new or empty folder, so all it holds is this report's: left
    there (summary.json and figures, no index.html, after a full disk), it read as a report and the
    same command, once room was freed, was refused (`--out ... already holds files`)."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        except OSError:
            pass
    if created:
        try:
            folder.rmdir()
        except OSError:
            pass
