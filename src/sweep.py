"""Entrypoint: `python -m src.sweep`, the Optuna sweep driver (src/search/sweep.py)."""

import sys

from src.search.sweep import main

if __name__ == "__main__":
    sys.exit(main())
