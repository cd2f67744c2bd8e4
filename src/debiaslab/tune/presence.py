"""Whether other searches run in a search directory, so that a resumed search can tell a killed trial at once.

Every ``debiaslab tune`` process holds a shared OS lock (``fcntl.flock``) on ``<search dir>/.search.lock`` while it
searches. A process that can take the lock exclusively is the only search of that directory on this machine: every
trial its local study still marks running was left by a search that died, even one killed before its worker could
name itself on the trial. The OS releases the lock of a process that dies, so a killed search never blocks the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK = ".search.lock"


@contextlib.contextmanager
def search_presence(out: str | Path, when_alone: Callable[[], object]) -> Iterator[bool]:
    """Hold ``out``'s search lock for the block; yields whether no other search of ``out`` was running here.

    When none was, ``when_alone`` runs first while the lock is still exclusive (no other search can start in
    between), then the lock becomes shared so that a second search of the directory may join. Yields False without
    calling ``when_alone`` where the OS has no ``flock`` or the lock file cannot be opened."""
    path = Path(out) / LOCK
    try:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError) as exc:  # not POSIX, or an unwritable folder (the search says so itself)
        log.debug("no search lock at %s (%s)", path, exc)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fcntl.flock(fd, fcntl.LOCK_SH)  # another search of this directory runs: share it
            alone = False
        else:
            when_alone()
            fcntl.flock(fd, fcntl.LOCK_SH)
            alone = True
        yield alone
    finally:
        os.close(fd)  # releases the lock
