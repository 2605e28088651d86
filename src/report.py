"""`python -m src.report DIR [DIR ...]`: the comparison table of every run found under the folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.results import find_results, format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run, multirun or sweep folders")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = find_results(args.dirs)
    if not rows:
        print(f"error: no result.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    print(format_table(rows, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
