"""Shared command-line plumbing: one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (``prog: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` on one line and exit with code 2. Under ``torchrun`` only rank 0 prints (every
    rank meets the same error), so a bad option is one line, not one per process."""
    if os.environ.get("RANK", "0") == "0":
        print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def require_positive(config: object, names: Sequence[str]) -> None:
    """Raise ``ValueError("steps: expected a positive integer, got 0")`` for the first option below 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{name.replace('_', '-')}: expected a positive integer, got {value}")
