"""Worker processes that end with the process that started them.

A pool worker whose parent is killed (``bench`` or ``tune`` stopped with ``kill``, a job cancelled) would
otherwise live on, reparented to init: still training, still writing into run directories the next command
uses, holding its memory. :func:`die_with_parent` runs first in every worker: on Linux it asks the kernel to
send the worker ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every system a watchdog
thread ends the worker as soon as its parent process is gone. What a killed worker leaves behind (a run's
checkpoints, a trial marked running) is what the next command resumes or marks failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: seconds between the watchdog's checks of the parent
POLL_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """End this process when the process ``parent_pid`` (its parent) ends; call it first in a worker."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    thread = threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent", daemon=True)
    thread.start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent_pid:
            log.error("the parent process %d has ended; this worker (%d) stops too", parent_pid, os.getpid())
            os._exit(1)
