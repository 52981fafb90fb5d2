"""The project's bad-input errors, and the command-line wrapper that reports them.

Bad input from the user (a config value, a flag, a dataset, a CSV, an image file, a workdir) is
raised as InputError, or MissingInput when something named does not exist, with a message that
says what to change. `run_cli` turns exactly these into one `error: ...` line and exit status 2;
every other exception is a bug (or an outage) and keeps its traceback. This module sits in the
lowest package, so data_prep and xrayjax raise and report the same errors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

# Set to show the traceback of bad input too (what called what before the error was raised).
TRACEBACK_VARIABLE = "XRAYJAX_TRACEBACK"
INPUT_ERROR_STATUS = 2


class InputError(ValueError):
    """Bad input from the user: a config value, flag, dataset, CSV, image file or workdir."""


class MissingInput(InputError, FileNotFoundError):
    """A dataset, folder, file or checkpoint the command needs does not exist."""


def run_cli(
    body: Callable[[], object], statuses: Mapping[type[Exception], int] | None = None
) -> int:
    """Run a command's body; its exit status: 0, or after one `error: ...` line on stderr, 2 for
    an InputError and `statuses[type]` for an exception of a type listed there."""
    statuses = {InputError: INPUT_ERROR_STATUS, **(statuses or {})}
    try:
        body()
    except tuple(statuses) as err:
        if isinstance(err, InputError) and os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"error: {err}", file=sys.stderr)
        return next(status for kind, status in statuses.items() if isinstance(err, kind))
    return 0
