"""What a run directory holds, and taking it over for a new run without ever losing a finished one.

States: ``empty`` (nothing of a run), ``failed_early`` (a run started but failed before its first epoch: a
``config.yaml`` and nothing trained), ``partial`` (epochs trained, not finished), ``finished`` (``final.json``).

- ``empty`` and ``failed_early`` are (re)used silently (the second with a log line);
- ``partial`` needs ``--resume`` (the same run) or ``--overwrite``; ``finished`` needs ``--overwrite``;
- ``--overwrite`` moves the old run's files aside into ``.previous-run/`` and deletes them only once the new run
  has finished; if the new run fails before its first epoch they are put back, and if it fails later they stay
  aside (the log says where) until the new run is resumed to its end.

Moving aside and putting back are two-phase, so a kill at any instant loses nothing: files go first into
``.previous-run.pending/``, which is renamed to ``.previous-run/`` once all are there; putting back renames
``.previous-run/`` to ``.previous-run.restoring/`` and then moves its files back. The next command on the folder
(:func:`recover_run_dir`) finishes what was interrupted: a pending move is rolled back, a restore completed, an
old run kept aside is put back when the new one trained nothing and deleted once the new one has finished.
It also removes the temporary files of writes a kill interrupted.

One process writes a run directory at a time: :func:`run_dir_lock` holds an OS lock (``fcntl.flock`` on
``.run.lock`` in the folder) while it trains; the OS releases it when the process exits or dies, and a second
writer is refused with one line naming the holder.

Only the files a run writes (:data:`RUN_FILES`) are moved or removed; anything else in the folder is left alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from debiaslab.errors import DataError, DebiasLabError, RunDirError, RunInUseError
from debiaslab.utils.io import current_umask, disk_full_error, read_yaml_mapping, remove_stale_temp_files

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
#: ``PREVIOUS`` while it is being filled (an interrupted move is rolled back) and while it is being emptied back
#: into the run directory (an interrupted restore is completed)
PENDING = ".previous-run.pending"
RESTORING = ".previous-run.restoring"
#: the lock file of :func:`run_dir_lock`
LOCK = ".run.lock"

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
    """The ``config.yaml`` of ``run_dir`` ({} when absent); an empty or garbled one is one error naming it."""
    path = run_dir / CONFIG
    if not path.is_file():
        return {}
    try:
        return read_yaml_mapping(path, "the configuration debiaslab wrote for this run")
    except DataError as exc:
        raise RunDirError(f"{exc}; start the run again with --overwrite") from exc


# ---------------------------------------------------------------------------------------------- one writer
_HELD: dict[str, list[int]] = {}  # real path of a locked run directory -> [file descriptor, nesting depth]


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (created with the folder when missing); a second process is refused
    with :class:`RunInUseError` naming the holder. Nested use in one process is free; the OS releases the lock
    of a process that dies, so a killed run never blocks the next one."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(run_dir, exc) from exc
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(run_dir)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        _release(run_dir / LOCK, fd)


def _acquire(run_dir: Path) -> int:
    import fcntl

    path = run_dir / LOCK
    for _ in range(20):  # the holder may remove the file between our open and our lock: try the new one
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            raise _unwritable(run_dir, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunInUseError(
                    f"run directory {run_dir} is in use by another process ({holder}); wait for it to end or "
                    "choose another --out"
                ) from exc
            log.warning("cannot lock %s (%s); going on without a lock", path, exc.strerror or exc)
            return -1
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _write_holder(fd)
            return fd
        os.close(fd)
    raise RunInUseError(f"run directory {run_dir}: its lock file {path} keeps changing; another process uses it")


def _holder_text() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    prog = "debiaslab" if prog == "__main__.py" else prog  # python -m debiaslab
    command = " ".join([prog, *sys.argv[1:]])
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"pid {os.getpid()} on {socket.gethostname()} since {when}"
    return text + (f": {command[:200]}" if command and not command.startswith("-c") else "")


def _write_holder(fd: int) -> None:
    with contextlib.suppress(OSError):  # the lock holds without the note (e.g. on a full disk)
        os.ftruncate(fd, 0)
        os.write(fd, _holder_text().encode())


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "no details recorded"


def _release(path: Path, fd: int) -> None:
    if fd < 0:
        return
    with contextlib.suppress(OSError):  # removed while still held, so no other process can take a stale file
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    os.close(fd)


# ---------------------------------------------------------------------------------------------- overwrite
def recover_run_dir(run_dir: Path) -> None:
    """Finish what a killed command left half done in ``run_dir`` (call it holding the lock): roll back an
    interrupted move aside, complete an interrupted restore, put back an old run kept aside when the new run
    trained nothing, delete it when the new run has finished; and remove killed writes' temporary files."""
    if not run_dir.is_dir():
        return
    for folder in (run_dir, run_dir / CHECKPOINTS):
        remove_stale_temp_files(folder)
    pending, restoring, previous = run_dir / PENDING, run_dir / RESTORING, run_dir / PREVIOUS
    if pending.is_dir():
        _move_back(pending, run_dir)
        log.warning("%s: an --overwrite was interrupted while moving the old run aside; the old run is back", run_dir)
    if restoring.is_dir():
        _move_back(restoring, run_dir)
        log.warning("%s: putting the old run back was interrupted; it is back now", run_dir)
    if not previous.is_dir():
        return
    state = run_dir_state(run_dir)
    if state == FINISHED:
        shutil.rmtree(previous)
        log.info("%s: the run that replaced the old one has finished; the old run is deleted", run_dir)
    elif state in (EMPTY, FAILED_EARLY):
        _restore(run_dir)
        log.warning("%s: the run that replaced the old one trained nothing; the old run is back", run_dir)


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
                _restore(run_dir)
                log.warning("the new run failed before its first epoch; the previous run in %s is back", run_dir)
        raise
    if previous.is_dir():
        shutil.rmtree(previous)


def _move_aside(run_dir: Path, previous: Path) -> None:
    """Move the run files of ``run_dir`` into ``previous`` in two phases (``PENDING``, then one rename); an old run
    already kept there (the unfinished run now in ``run_dir`` replaced it) is kept instead of that run."""
    if previous.is_dir():
        if run_dir_state(run_dir) != FINISHED:
            _remove_run_files(run_dir)
            return
        shutil.rmtree(previous)
    pending = run_dir / PENDING
    pending.mkdir(exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            (run_dir / name).rename(pending / name)
    _sync_dir(pending)
    pending.rename(previous)  # the commit: from here on the old run is whole in PREVIOUS
    _sync_dir(run_dir)


def _restore(run_dir: Path) -> None:
    """Put the run kept in ``PREVIOUS`` back: remove the new run's files, rename ``PREVIOUS`` to ``RESTORING``,
    move its files back (an interruption after the rename is completed by :func:`recover_run_dir`)."""
    _remove_run_files(run_dir)
    restoring = run_dir / RESTORING
    (run_dir / PREVIOUS).rename(restoring)
    _move_back(restoring, run_dir)


def _move_back(folder: Path, run_dir: Path) -> None:
    for item in sorted(folder.iterdir()):
        target = run_dir / item.name
        if target.exists():
            raise RunDirError(
                f"{run_dir} and {folder} both hold {item.name}; keep the one you want in {run_dir} and delete {folder}"
            )
        item.rename(target)
    folder.rmdir()
    _sync_dir(run_dir)


def _sync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (its directory entry flushed), where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_path(run_dir: str | os.PathLike[str], target: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse an output that would overwrite a file of the run itself (``predict --out RUN/final.json``)."""
    run = Path(run_dir).resolve()
    out = Path(target).resolve()
    if out == run:
        raise RunDirError(f"{flag} {target} is the run directory itself; expected a file name")
    for name in (*RUN_FILES, PREVIOUS, PENDING, RESTORING, LOCK):
        own = run / name
        if out == own or own in out.parents:
            raise RunDirError(
                f"{flag} {target} would overwrite {name} of the run {run_dir}; choose another output file"
            )


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
        raise _unwritable(run_dir, exc) from exc


def _unwritable(run_dir: Path, exc: OSError) -> DebiasLabError:
    """The error for an output directory that cannot be written: a full disk says so, anything else names why."""
    return disk_full_error(run_dir, exc) or RunDirError(
        f"cannot write to output directory {run_dir}: {exc.strerror or exc}"
    )
