"""The on-disk cache of derived image datasets (Colored MNIST, Corrupted CIFAR-10): one ``.npz`` per recipe holding
``<split>_x`` (uint8, N×C×H×W), ``<split>_y`` and ``<split>_attr`` (int64) and the recipe's JSON.

A cache is never fatal: an unreadable file, another recipe or arrays of the wrong shape mean "rebuild" (with a
warning), and a cache that cannot be written only costs the rebuild next time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.errors import DataError
from debiaslab.utils.io import atomic_write

log = logging.getLogger(__name__)

FIELDS = ("x", "y", "attr")


def split_names(protocol: str) -> tuple[str, ...]:
    """``default`` holds a validation split out of training; ``paper`` selects on test and has none."""
    return ("train", "val", "test") if protocol == "default" else ("train", "test")


@dataclass(frozen=True)
class ArrayCache:
    """The cache file of one recipe: ``path`` holds the arrays of ``splits`` and the recipe's JSON; ``label`` names
    the dataset in messages and ``image_shape_ok(C, H, W)`` says whether cached images have the expected shape."""

    path: Path
    recipe_json: str
    splits: tuple[str, ...]
    label: str
    image_shape_ok: Callable[[tuple[int, ...]], bool]

    def load(self) -> dict[str, np.ndarray] | None:
        """The cached arrays, or ``None`` (with a warning) when the file is unreadable, holds another recipe, or an
        array has the wrong dtype or shape."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["recipe"][()]) != self.recipe_json:
                    raise DataError("it holds a different recipe")
                arrays = {f"{s}_{f}": z[f"{s}_{f}"] for s in self.splits for f in FIELDS}
            for s in self.splits:
                x, y, attr = arrays[f"{s}_x"], arrays[f"{s}_y"], arrays[f"{s}_attr"]
                ok = x.dtype == np.uint8 and x.ndim == 4 and self.image_shape_ok(tuple(x.shape[1:]))
                ok = ok and y.dtype == attr.dtype == np.int64 and y.shape == attr.shape == (len(x),)
                if not ok:
                    raise DataError(f"split {s} has unexpected shapes or dtypes")
            return arrays
        except Exception as exc:  # a cache must never be fatal: any failure to read it means "rebuild"
            log.warning(
                "%s cache %s is unreadable (%s: %s); rebuilding it", self.label, self.path, type(exc).__name__, exc
            )
            return None

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        """Write the arrays and the recipe atomically; a failure is a warning, not an error."""
        try:
            atomic_write(self.path, lambda fh: np.savez(fh, recipe=np.array(self.recipe_json), **arrays))
            log.debug("cached %s in %s", self.label, self.path)
        except OSError as exc:
            log.warning("cannot write the %s cache %s (%s); continuing without it", self.label, self.path, exc)

    def arrays(self, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The recipe's arrays: read from the cache when it holds them, else ``build()`` them and cache them."""
        arrays = self.load() if self.path.exists() else None
        if arrays is not None:
            log.debug("loaded %s from cache %s", self.label, self.path)
            return arrays
        log.debug("building %s into %s", self.label, self.path)
        arrays = build()
        self.save(arrays)
        return arrays


def protocol_bundle(
    name: str,
    title: str,
    splits: dict[str, GroupDataset],
    protocol: str,
    recipe: dict[str, Any],
    default_model: str,
    test_described: str,
    notes: Sequence[str] = (),
) -> DatasetBundle:
    """The bundle of a derived dataset under ``protocol``: ``default`` selects on its held-out validation split;
    ``paper`` has none and selects on test, which a note (first) says makes its test numbers optimistic.

    ``test_described`` completes "checkpoints are selected on ..." (the test split and whose protocol it follows)."""
    lead = []
    if protocol == "paper":
        lead.append(
            f"{title} protocol='paper': there is no validation split; checkpoints are selected on {test_described}, "
            "so the test numbers are optimistic. Use protocol='default' to select on a held-out validation split."
        )
    return DatasetBundle(
        name=name,
        train=splits["train"],
        val=splits.get("val", splits["test"]),
        test=splits["test"],
        protocol=protocol,
        selection="val" if protocol == "default" else "test",
        recipe=recipe,
        default_model=default_model,
        notes=[*lead, *notes],
    )
