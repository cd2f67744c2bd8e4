"""Where data and caches live: explicit argument, then environment variable, then the user cache dir."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DEBIASLAB_DATA"
CACHE_ENV = "DEBIASLAB_CACHE"


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "debiaslab"


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root`` > ``$DEBIASLAB_DATA`` > ``<user cache>/data``."""
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--cache-dir`` > ``$DEBIASLAB_CACHE`` > ``<user cache>/cache``. The data root may be read-only."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "cache"
