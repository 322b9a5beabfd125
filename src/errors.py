"""One error type for mistakes a user can fix, and the wrapper that turns it into a one-line message.

Library code raises `UserError` with a sentence that says what is wrong and how to fix it. The command-line
entry points (`train.py`, `sample.py`) run their `main` through `run_cli`, which prints that sentence as
`error: ...` on stderr and exits with status 1 instead of showing a Python traceback. Bugs (any other
exception) still show their traceback, because a traceback is what a developer needs to fix a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (data, flags, checkpoint), explained in one sentence."""


def run_cli(main: Callable[[], None]) -> None:
    """Run a CLI `main`; report a `UserError` as one line on stderr and exit 1."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
