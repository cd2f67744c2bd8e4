"""Where data and caches live: explicit argument, then environment variable, then the user cache dir."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DATA_ENV = "DEBIASLAB_DATA"
CACHE_ENV = "DEBIASLAB_CACHE"


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "debiaslab"


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """``--data-root`` > ``$DEBIASLAB_DATA`` > ``<user cache>/data``."""
    return _resolve(data_root, DATA_ENV, "data")


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--cache-dir`` > ``$DEBIASLAB_CACHE`` > ``<user cache>/cache``. The data root may be read-only."""
    return _resolve(cache_dir, CACHE_ENV, "cache")


def _resolve(given: str | os.PathLike[str] | None, env: str, default: str) -> Path:
    if given is not None:
        return Path(given).expanduser()
    value = os.environ.get(env)
    return Path(value).expanduser() if value else user_cache_dir() / default


def shipped_suites(package: str) -> list[str]:
    """Names of the suite files shipped in ``debiaslab/<package>/suites/*.yaml``, read as package files so that
    listing them imports nothing (the tune package needs Optuna)."""
    import importlib.resources

    root = importlib.resources.files("debiaslab") / package / "suites"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def suite_file(name_or_path: str, package: str, what: str) -> tuple[str, str, bool]:
    """``(text, location, shipped)`` of a suite: the file ``name_or_path`` (a ``.yaml`` path or an existing file),
    else the suite of that name shipped in ``debiaslab/<package>/suites``. A missing file or an unknown name is one
    :class:`ConfigError` naming ``what`` (``suite``, ``tuning suite``) and the shipped suites."""
    import importlib.resources

    from debiaslab.errors import ConfigError

    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{what} file {path} does not exist")
        return path.read_text(), str(path), False
    shipped = shipped_suites(package)
    if name_or_path not in shipped:
        raise ConfigError(
            f"unknown {what} {name_or_path!r}: not a file and not a shipped suite; "
            f"expected a path to a .yaml file or one of: {', '.join(shipped)}"
        )
    resource = importlib.resources.files("debiaslab") / package / "suites" / f"{name_or_path}.yaml"
    return resource.read_text(), str(resource), True


def options_slug(options: Mapping[str, Any]) -> str:
    """Dataset options as a folder-name part, ``ratio0.01-protocolpaper``: a value that is a path (it holds a
    ``/`` or ends in a file suffix) is named by its file or folder name alone (``path=/data/mine.npz`` -> ``mine``),
    so that no data path becomes folders; other characters outside ``[A-Za-z0-9_.+=-]`` become ``_``."""
    parts = []
    for key, value in sorted(options.items()):
        text = str(value)
        if isinstance(value, str | os.PathLike) and ("/" in text or "\\" in text or re.search(r"\.[A-Za-z]\w*$", text)):
            parts.append(Path(text.replace("\\", "/")).stem or key)
        else:
            parts.append(f"{key}{text}")
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", "-".join(parts)).strip("_")
