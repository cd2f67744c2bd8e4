"""Atomic file writes: a temp file in the same directory, fsync, then rename. Nothing half-written survives.

The temp file (created private by :func:`tempfile.mkstemp`) gets the permissions an ordinary ``open`` would give
before it is renamed into place: ``0o666`` less the user's umask (``0o644`` under the usual ``022``). Its name,
``.<name>.<host>-<pid>.<random>.tmp``, says which process wrote it, so the temp file of a killed process can be
told from one being written (:func:`remove_stale_temp_files`). A full disk (or quota) is one
:class:`~debiaslab.errors.DiskFullError` naming the file; the file it would have replaced is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from debiaslab.errors import ConfigError, DataError, DiskFullError, OutputError, output_error

log = logging.getLogger(__name__)

#: errno values of a full disk or an exhausted quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_TEMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and rename it over ``path``; a full disk is a
    :class:`~debiaslab.errors.DiskFullError`, another place that cannot be written an
    :class:`~debiaslab.errors.OutputError`, each naming ``path``."""
    path = Path(path)
    try:
        return _atomic_write(path, write, mode)
    except OutputError:
        raise
    except BaseException as exc:
        full = disk_full_error(path, exc)
        if full is not None:
            raise full from exc
        if isinstance(exc, OSError):
            raise output_error(path, exc) from exc
        raise


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        give_default_permissions(tmp)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is a full disk or quota (``ENOSPC``, ``EDQUOT``):
    ``torch.save`` reports one as a ``RuntimeError`` raised while handling the ``OSError``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(path: str | os.PathLike[str], exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` when ``exc`` comes from a full disk, else None."""
    if isinstance(exc, DiskFullError) or not is_disk_full(exc):
        return None
    where = Path(path)
    free = ""
    with contextlib.suppress(OSError):
        free = f" ({shutil.disk_usage(_existing_parent(where)).free // 2**20} MiB free)"
    return DiskFullError(
        f"could not write {where}: no space left on its device{free}; nothing finished was lost (every file is "
        "written to a temporary file and renamed, so the previous version is intact); free some space and run "
        "the same command again (add --resume to continue a run)"
    )


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files that killed processes left in ``folder`` (not in subfolders): those of
    :func:`atomic_write` written by a process of this machine that no longer exists. Returns the files removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for item in folder.iterdir():
        match = _TEMP.match(item.name)
        if match is None or not item.is_file():
            continue
        if match["host"] == _host() and not pid_alive(int(match["pid"])):
            try:
                item.unlink()
                removed.append(item)
            except OSError:
                continue
    if removed:
        log.info("removed %d temporary file(s) left in %s by an interrupted write", len(removed), folder)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 asks without sending anything); a zombie, a
    killed process no one has reaped yet (as in a container without an init), does not run."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): signal 0 said it exists
    return state not in ("Z", "X")


def read_yaml_mapping(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; an empty, unreadable or garbled file (or one that is not a mapping)
    is one :class:`DataError` naming it and ``expected`` (what the file should hold)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({first_line(exc)}); expected {expected}") from exc
    if not text.strip():
        raise DataError(f"{path} is empty; expected {expected}")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML ({yaml_problem(exc)}); expected {expected}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path} holds a {type(doc).__name__}, not a mapping; expected {expected}")
    return doc


def load_yaml_file(path: Path, what: str) -> Any:
    """The YAML document in the user's file ``path``; a file that cannot be read or parsed is one
    :class:`ConfigError` naming ``what`` (``run file``, ``space file``) and the path."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML ({yaml_problem(exc)})") from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (``expected ',' or ']' at line 3, column 9``)."""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (just the type when the message is empty): a cause in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def current_umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else by a quick swap."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_default_permissions(path: str | os.PathLike[str]) -> None:
    """``chmod`` ``path`` to what ``open(path, "w")`` would have created: ``0o666`` less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def finite_or_none(obj: Any) -> Any:
    """A copy of nested dicts and lists with NaN and infinite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
