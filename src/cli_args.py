"""The command-line parser of src.report and src.predict: argparse's, with a bad command line told in
one line, as every other refusal of this project is (exit 2). argparse prints its usage block (four
lines for src.report) and then the error; a log or a cluster's job output kept only the usage's end."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")
