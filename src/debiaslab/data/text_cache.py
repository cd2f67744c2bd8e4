"""Content-addressed caches of derived text arrays (embeddings, token ids) and a progress bar for building them.

A cache file is ``<cache_dir>/<kind>/<dataset>/<sha256 of the recipe>.npz`` holding the arrays plus the recipe
as JSON; it is used only when the stored recipe equals the requested one and every array has the expected
shape and dtype. Anything else (unreadable, another recipe, wrong shapes) is rebuilt with a warning: a cache is
never fatal. Files are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from debiaslab.errors import DataError
from debiaslab.utils.io import atomic_write

log = logging.getLogger(__name__)

#: ``{array name: (dtype, shape)}``; ``None`` in a shape matches any size.
Expected = dict[str, tuple[np.dtype[Any] | type, tuple[int | None, ...]]]


def canonical_json(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def cache_path(cache_dir: Path, kind: str, dataset: str, recipe: dict[str, Any]) -> Path:
    key = hashlib.sha256(canonical_json(recipe).encode()).hexdigest()
    return Path(cache_dir) / kind / dataset / f"{key}.npz"


def load_cache(path: Path, recipe: dict[str, Any], expected: Expected) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` when absent or not usable (a warning says why)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["recipe"][()]) != canonical_json(recipe):
                raise DataError("it holds a different recipe")
            arrays = {name: z[name] for name in expected}
        for name, (dtype, shape) in expected.items():
            a = arrays[name]
            ok = a.dtype == np.dtype(dtype) and a.ndim == len(shape)
            ok = ok and all(s is None or s == d for s, d in zip(shape, a.shape))
            if not ok:
                raise DataError(f"array {name} is {a.dtype} {a.shape}; expected {np.dtype(dtype)} {shape}")
        return arrays
    except Exception as exc:  # any failure to read a cache means "rebuild"
        log.warning("cache %s is unusable (%s: %s); rebuilding it", path, type(exc).__name__, exc)
        return None


def save_cache(path: Path, recipe: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    try:
        atomic_write(path, lambda fh: np.savez(fh, recipe=np.array(canonical_json(recipe)), **arrays))
        log.debug("cached %s", path)
    except OSError as exc:
        log.warning("cannot write the cache %s (%s); continuing without it", path, exc)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (silent when stderr is not a terminal); yields ``advance(n)``."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda n: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
