"""What one executor worker does for one run: train it and report, never raise.

This runs in a separate process (a spawned pool worker or a Ray worker), so it imports little at module level
and returns plain data. A failure is written to ``<run_dir>/error.txt`` with its traceback; a crash of the
process is noticed by the runner through the ``.bench-running`` marker that is left behind.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaslab.run.train import RunConfig

RUNNING = ".bench-running"
ERROR = "error.txt"
LOG = "bench.log"
SUMMARY_KEYS = ("unbiased", "worst_group", "conflicting", "aligned", "accuracy")


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs (picklable): the run's config and the suite's plugin modules."""

    config: RunConfig
    imports: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.out))


def execute_run(task: RunTask) -> dict[str, Any]:
    """Train ``task.config`` (resuming whatever is in its directory) and return ``{"status", ...}``. The run
    directory's lock is taken first: a run another process trains now fails here with its files left alone."""
    from debiaslab.errors import RunInUseError
    from debiaslab.run.directory import run_dir_lock

    started = time.perf_counter()
    try:
        with run_dir_lock(task.run_dir):
            return _execute_locked(task, started)
    except RunInUseError as exc:
        logging.getLogger(__name__).error("run %s not started: %s", task.run_dir, exc)
        elapsed = round(time.perf_counter() - started, 2)
        return {"status": "failed", "time_s": elapsed, "error": f"{type(exc).__name__}: {exc}", "log": None}


def _execute_locked(task: RunTask, started: float) -> dict[str, Any]:
    run_dir = task.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUNNING
    marker.write_text(str(os.getpid()))
    root = logging.getLogger()
    level = root.level
    handler = _log_to(run_dir / LOG)
    try:
        from debiaslab.bench.suite import import_plugins
        from debiaslab.run.train import train_run

        import_plugins(task.imports)
        final = train_run(task.config)
        (run_dir / ERROR).unlink(missing_ok=True)
        test = final.get("metrics", {}).get("test", {})
        return {
            "status": "finished",
            "time_s": round(time.perf_counter() - started, 2),
            "test": {k: test.get(k) for k in SUMMARY_KEYS},
            "log": str(run_dir / LOG),
        }
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
        write_error(run_dir, message, tb)
        logging.getLogger(__name__).error("run %s failed: %s", run_dir, message)
        elapsed = round(time.perf_counter() - started, 2)
        return {"status": "failed", "time_s": elapsed, "error": message, "log": str(run_dir / LOG)}
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        marker.unlink(missing_ok=True)


def write_error(run_dir: Path, message: str, tb: str) -> None:
    """``error.txt``: the one-line error, then the traceback (or what is known of a crash)."""
    from debiaslab.utils.io import atomic_write_text

    atomic_write_text(run_dir / ERROR, f"{message}\n\n{tb}")


def _log_to(path: Path) -> logging.Handler:
    """Send this process's log records (INFO and up) to the run's ``bench.log``, appending across attempts."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
