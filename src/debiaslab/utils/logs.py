"""Logging that a user sees without configuring it, and that says a repeated warning once.

:func:`show_progress_logs` makes the library's INFO lines (stage plans, per-epoch progress) visible on stderr when
nothing has configured logging (a script or notebook calling the Python API); a program that configures logging
itself, such as the command line, is left alone. :class:`OncePerRun` drops the repeats of a warning (the same
evaluation warning every epoch).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

LIBRARY = "debiaslab"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each message; silent once logging is configured elsewhere."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # configured since: the root's handlers show the record
            return
        self.stream = sys.stderr
        super().emit(record)


def show_progress_logs() -> None:
    """When no logging is configured at all, show the library's INFO messages on stderr."""
    library = logging.getLogger(LIBRARY)
    if logging.getLogger().handlers or library.handlers:
        return
    library.addHandler(_Stderr())
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)


class OncePerRun(logging.Filter):
    """Lets each distinct warning through once (by its text); later repeats are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True

    @contextlib.contextmanager
    def on(self, *names: str) -> Iterator[None]:
        """Apply the filter to the named loggers for the block."""
        loggers: list[Any] = [logging.getLogger(n) for n in names]
        for logger in loggers:
            logger.addFilter(self)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(self)
