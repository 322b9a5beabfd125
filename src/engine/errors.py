"""One error type for mistakes a user can fix, and the command-line plumbing that prints it as one line.

Library code raises `UserError` with a sentence that says what is wrong and how to fix it. The command-line
entry points (`train.py`, `sample.py`) run their `main` through `run_cli`, which prints that sentence as
`error: ...` on stderr and exits with status 1 instead of showing a Python traceback. Bugs (any other
exception) still show their traceback, because a traceback is what a developer needs to fix a bug.

`ArgumentParser` does the same for a mistyped or out-of-range flag: one line naming the flag and a pointer
to `--help`, exit status 2 (argparse's own convention for usage errors), instead of argparse's full usage
text above the one line that matters.

Who uses it: every module that can meet bad input raises `UserError`; `train.py` and `sample.py` use
`run_cli` and `ArgumentParser`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A problem with the user's input (data, flags, checkpoint), explained in one sentence."""


def run_cli(main: Callable[[], None]) -> None:
    """Run a CLI `main`; report a `UserError` as one line on stderr and exit 1."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def whole_number(text: str, low: int) -> int:
    """An argparse type: a whole number >= `low` (`100_000_000` is fine), else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `error: argument --lr: must be > 0, got -1 (see --help)`."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (`{self.prog} --help` lists the flags)", file=sys.stderr)
        sys.exit(2)
