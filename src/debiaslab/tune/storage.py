"""Where a search lives: an Optuna storage.

- default: ``sqlite:///<search dir>/study.db``, a file beside the trials, shared by the worker processes of one
  machine and reopened by a resumed search;
- any database URL Optuna (SQLAlchemy) accepts, e.g. ``postgresql://user@host/db`` for several machines;
- ``journal:PATH``: Optuna's journal file, an append-only log on a file system several machines share (NFS).

A storage that cannot be opened is one ``ConfigError`` naming it (password hidden) and the reason.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from debiaslab.errors import ConfigError

DEFAULT_DB = "study.db"
JOURNAL = "journal:"
#: seconds between a running trial's heartbeats in a database storage; a trial silent for GRACE_S (its process was
#: killed) is marked failed the next time a worker starts a trial
HEARTBEAT_S = 30
GRACE_S = 120


def default_storage_url(out: str | Path) -> str:
    return f"sqlite:///{Path(out).resolve() / DEFAULT_DB}"


def shown(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if url.startswith(JOURNAL):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def check_sqlite(path: Path) -> None:
    """A one-line ``ConfigError`` when the SQLite file ``path`` is damaged (SQLite's ``quick_check`` of every page:
    a search must not go on over a database that lost part of its record); an absent or empty file passes (the
    search directory's check tells a new study from a lost one)."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)) as con:
            found = [row[0] for row in con.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as exc:
        found = [str(exc)]
    if found != ["ok"]:
        raise ConfigError(
            f"study storage {path} is damaged ({found[0]}); restore it from a copy or choose another --out"
        )


def open_storage(url: str | None, out: str | Path, *, heartbeat_s: int | None = HEARTBEAT_S) -> Any:
    """An Optuna storage for ``url`` (None: the SQLite file in ``out``); ``ConfigError`` when it cannot be opened."""
    import optuna

    if url is None:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create search directory {out} ({exc.strerror or exc})") from exc
        url = default_storage_url(out)
    try:
        if url.startswith(JOURNAL):
            path = Path(url[len(JOURNAL) :]).expanduser()
            if not path.parent.is_dir():
                raise ConfigError(f"storage {url}: folder {path.parent} does not exist; expected journal:PATH in one")
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine: dict[str, Any] = {}
        if url.startswith("sqlite"):  # several processes write one file: wait for the lock instead of failing
            engine = {"connect_args": {"timeout": 120}}
            db = url.split("///", 1)[-1]
            if db and not Path(db).parent.is_dir():
                raise ConfigError(f"storage {url}: folder {Path(db).parent} does not exist")
            check_sqlite(Path(db))
        heartbeat = {"heartbeat_interval": heartbeat_s, "grace_period": GRACE_S} if heartbeat_s else {}
        with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what marks killed trials
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)
    except ConfigError:
        raise
    except Exception as exc:  # driver missing, host unreachable, bad URL, unwritable file: one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"storage {shown(url)} cannot be opened ({type(exc).__name__}: {reason}); expected a reachable "
            "database URL (sqlite:///PATH, postgresql://..., mysql://...) or journal:PATH"
        ) from exc
