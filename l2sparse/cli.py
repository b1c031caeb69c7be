"""Shared command-line plumbing: one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import torch.distributed as dist

from l2sparse import distributed
from l2sparse.distributed import REPORTED_ON_MAIN
from l2sparse.errors import ConfigError, UserError

T = TypeVar("T")

SILENT_RANK_DELAY_S = 2.0


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (``prog: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, error: str | BaseException) -> NoReturn:
    """Print ``prog: error: message`` on one line and exit with code 2.

    Under ``torchrun`` every rank meets a bad option alike, so rank 0 speaks for all: another rank prints (as
    ``prog: error: [rank r] message``) only an error that may be its own, one met after the ranks joined or, before,
    by the first rank of another machine; an error that rank 0 decided for everyone (its note says so) is never
    repeated."""
    text = " ".join(str(error).split())  # one line, whatever the message holds (torch's load errors hold newlines)
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    decided = REPORTED_ON_MAIN in getattr(error, "__notes__", ())
    if rank == 0:
        print(f"{prog}: error: {text}", file=sys.stderr)
    elif not decided and ((dist.is_available() and dist.is_initialized()) or local_rank == 0):
        print(f"{prog}: error: [rank {rank}] {text}", file=sys.stderr)
    else:  # rank 0 prints it: leave it time to, since torchrun stops every rank once one has exited
        time.sleep(SILENT_RANK_DELAY_S)
    raise SystemExit(2)


def require_positive(config: object, names: Sequence[str]) -> None:
    """Raise ``ConfigError("steps: expected a positive integer, got 0")`` for the first option below 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ConfigError(f"{name.replace('_', '-')}: expected a positive integer, got {value}")


def run_launched(prog: str, cfg: Any, timeout_s: float, work: Callable[[], T]) -> tuple[T, bool]:
    """A command that may run under ``torchrun``: check ``cfg`` (before joining the process group, so a bad option
    stops every rank alike, at once), join it, run ``work``; returns its result and whether this is the main rank.
    A [`UserError`][l2sparse.errors.UserError] anywhere exits with ``prog: error: ...`` ([`fail`][])."""
    try:
        cfg.validate()
        distributed.setup(cfg.device, timeout_s)
        return work(), distributed.current().main
    except UserError as e:
        fail(prog, e)
