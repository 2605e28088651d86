"""Entrypoint: `python -m src.report DIR...`, the HTML report of result folders (src/reporting/cli.py)."""

import sys

from src.reporting.cli import main

if __name__ == "__main__":
    sys.exit(main())
