"""Entrypoint: `python -m src.report DIR...`, the HTML report of result folders (src/reporting/page.py)."""

import sys

from src.reporting.page import main

if __name__ == "__main__":
    sys.exit(main())
