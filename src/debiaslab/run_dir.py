"""What a run directory holds, and taking it over for a new run without ever losing a finished one.

States: ``empty`` (nothing of a run), ``failed_early`` (a run started but failed before its first epoch: a
``config.yaml`` and nothing trained), ``partial`` (epochs trained, not finished), ``finished`` (``final.json``).

- ``empty`` and ``failed_early`` are (re)used silently (the second with a log line);
- ``partial`` needs ``--resume`` (the same run) or ``--overwrite``; ``finished`` needs ``--overwrite``;
- ``--overwrite`` moves the old run's files aside into ``.previous-run/`` and deletes them only once the new run
  has finished; if the new run fails before its first epoch they are put back, and if it fails later they stay
  aside (the log says where) until the new run is resumed to its end.

Only the files a run writes (:data:`RUN_FILES`) are moved or removed; anything else in the folder is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from debiaslab.errors import RunDirError

log = logging.getLogger(__name__)

FINAL = "final.json"
CONFIG = "config.yaml"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
#: Everything a run writes into its directory.
#: ``tensorboard/``, ``mlflow.db`` and ``mlflow_run_id.txt`` are the experiment trackers' (``--tensorboard`` /
#: ``--mlflow`` with its default store)
RUN_FILES = (
    FINAL,
    CONFIG,
    MODEL,
    METRICS,
    "report.md",
    "test_groups.csv",
    CHECKPOINTS,
    "tensorboard",
    "mlflow.db",
    "mlflow_run_id.txt",
)
#: Where ``--overwrite`` keeps the replaced run until the new one has finished.
PREVIOUS = ".previous-run"

EMPTY, FAILED_EARLY, PARTIAL, FINISHED = "empty", "failed_early", "partial", "finished"


def has_trained_epochs(run_dir: Path) -> bool:
    """Whether at least one epoch was trained and recorded (a metrics line or a checkpoint)."""
    metrics = run_dir / METRICS
    if metrics.is_file() and metrics.stat().st_size > 0:
        return True
    ckpt = run_dir / CHECKPOINTS
    return ckpt.is_dir() and any(p.is_file() for p in ckpt.iterdir())


def run_dir_state(run_dir: Path) -> str:
    """One of ``empty``, ``failed_early``, ``partial``, ``finished`` (see the module docstring)."""
    if (run_dir / FINAL).is_file():
        return FINISHED
    if has_trained_epochs(run_dir):
        return PARTIAL
    if any((run_dir / name).exists() for name in RUN_FILES):
        return FAILED_EARLY
    return EMPTY


def plan_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> str:
    """What starting a run in ``run_dir`` will do — ``new``, ``replace_failed``, ``resume`` or ``overwrite`` — or a
    :class:`RunDirError` when it must not; reads only (the write probe aside), so a refused run changes nothing."""
    if overwrite and resume:
        raise RunDirError(
            "--resume and --overwrite exclude each other: --resume continues the run in the directory, "
            "--overwrite replaces it; give one"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output path {run_dir} exists and is not a directory")
    state = run_dir_state(run_dir) if run_dir.is_dir() else EMPTY
    if state == FINISHED and not overwrite:
        raise RunDirError(
            f"run directory {run_dir} already holds a finished run ({FINAL}); "
            "pass --overwrite to replace it or choose another --out"
        )
    if state == PARTIAL and not (overwrite or resume):
        raise RunDirError(
            f"run directory {run_dir} holds an unfinished run; pass --resume to continue it "
            f"or --overwrite to start again{previous_run_note(run_dir)}"
        )
    _check_writable(run_dir)
    if state != FINISHED and previous_run_note(run_dir):
        log.warning("%s", previous_run_note(run_dir).removeprefix("; "))
    if state in (FINISHED, PARTIAL) and overwrite:
        return "overwrite"
    if state == PARTIAL:
        return "resume"
    return "replace_failed" if state == FAILED_EARLY else "new"


def previous_run_note(run_dir: Path) -> str:
    """``"; the finished run ... is kept in <run_dir>/.previous-run ..."`` when an ``--overwrite`` that did not
    finish (a killed process) left the run it replaces aside, else ``""``: for every message about the folder."""
    previous = Path(run_dir) / PREVIOUS
    if not (previous / FINAL).is_file():
        return ""
    return (
        f"; the finished run that an interrupted --overwrite replaced is kept in {previous}: finish the new run "
        "with --resume (it is then deleted), or move its files back to keep it"
    )


def read_config(run_dir: Path) -> dict:
    """The ``config.yaml`` of ``run_dir`` ({} when absent or empty)."""
    path = run_dir / CONFIG
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


@contextlib.contextmanager
def claimed_run_dir(run_dir: Path, action: str) -> Iterator[None]:
    """Make ``run_dir`` ready for the run ``plan_run_dir`` planned, run the block, then settle the old run's files:
    deleted after success, restored or kept aside after a failure (see the module docstring)."""
    previous = run_dir / PREVIOUS
    if action == "replace_failed":
        log.info("run directory %s holds a run that failed before its first epoch; starting it again", run_dir)
        _remove_run_files(run_dir)
    elif action == "overwrite":
        _move_aside(run_dir, previous)
        log.info("--overwrite: the run in %s is kept in %s until the new run has finished", run_dir, previous)
    try:
        yield
    except BaseException:
        if previous.is_dir():
            if has_trained_epochs(run_dir):
                log.warning(
                    "the replaced run stays in %s until this run is finished (--resume); move it back by hand "
                    "to keep it instead",
                    previous,
                )
            else:
                _remove_run_files(run_dir)
                for item in previous.iterdir():
                    item.rename(run_dir / item.name)
                previous.rmdir()
                log.warning("the new run failed before its first epoch; the previous run in %s is back", run_dir)
        raise
    if previous.is_dir():
        shutil.rmtree(previous)


def _move_aside(run_dir: Path, previous: Path) -> None:
    """Move the run files of ``run_dir`` into ``previous``; a finished run already kept there (from an overwrite
    that was interrupted) is kept instead of an unfinished one."""
    if previous.is_dir():
        if run_dir_state(run_dir) != FINISHED:
            _remove_run_files(run_dir)
            return
        shutil.rmtree(previous)
    previous.mkdir()
    for name in RUN_FILES:
        if (run_dir / name).exists():
            (run_dir / name).rename(previous / name)


def _remove_run_files(run_dir: Path) -> None:
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to output directory {run_dir}: {exc.strerror or exc}") from exc
