"""CIFAR-10 from a local copy of the python version (``cifar-10-batches-py/``: five training batches and
``test_batch``, each a pickled dict with ``data`` (N x 3072 uint8, channel-major) and ``labels``).

The batches are pickles, which can run code when loaded. They are read with an unpickler that only admits
the few globals a numpy array needs, so a tampered file fails with a DataError instead of executing.
"""

from __future__ import annotations

import codecs
import importlib
import io
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from debiaslab.data.files import file_sha256
from debiaslab.errors import DataError

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SEARCH: tuple[str, ...] = (FOLDER, f"cifar10/{FOLDER}", f"CIFAR10/{FOLDER}", f"cifar-10/{FOLDER}")
CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _numpy_global(module: str, name: str) -> Any:
    for mod in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"numpy has no {module}.{name}")


_ALLOWED: dict[tuple[str, str], Any] = {}


def _allowed(module: str, name: str) -> Any | None:
    key = (module, name)
    if key not in _ALLOWED:
        if key in {("numpy", "ndarray"), ("numpy", "dtype")}:
            _ALLOWED[key] = getattr(np, name)
        elif key in {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }:
            _ALLOWED[key] = _numpy_global(module, name)
        elif key == ("_codecs", "encode"):  # bytes pickled by Python 3 at protocol 2
            _ALLOWED[key] = codecs.encode
        else:
            return None
    return _ALLOWED[key]


class _ArrayUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dicts, lists, numbers and strings; refuses every other global."""

    def __init__(self, fh: io.BufferedIOBase, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise DataError(
                f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR-10 batch holds only numpy arrays, "
                "lists and strings (the file is not a genuine CIFAR-10 batch)"
            )
        return obj


def _get(d: dict[Any, Any], key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 images ``(N, 32, 32, 3)`` and int64 labels ``(N,)``."""
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} is missing") from None
    except Exception as exc:  # truncated or not a pickle
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict with 'data' and 'labels', found {type(obj).__name__}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if data is None or labels is None:
        raise DataError(f"{path}: the batch has no 'data' / 'labels' entries")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"{path}: expected uint8 data of shape (N, 3072) and N labels; found {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(labels[(labels < 0) | (labels > 9)][0])
        raise DataError(f"{path}: label {bad} outside the CIFAR-10 classes 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


@dataclass(frozen=True)
class Cifar10Arrays:
    """Images uint8 ``(N, 32, 32, 3)``, labels int64; ``sha256`` of each batch file by name."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    folder: Path
    sha256: dict[str, str] = field(default_factory=dict)


def locate_cifar10(data_root: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None) -> Path:
    """``folder`` when given, else the first of ``<data_root>/cifar-10-batches-py`` (or under ``cifar10/``,
    ``CIFAR10/``, ``cifar-10/``) holding ``test_batch``."""
    if folder is not None:
        candidates = [Path(folder).expanduser()]
        if not candidates[0].is_absolute():
            candidates = [Path(data_root) / candidates[0], Path.cwd() / candidates[0]]
    else:
        candidates = [Path(data_root) / s for s in SEARCH]
    for c in candidates:
        if (c / TEST_BATCH).is_file():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"CIFAR-10 (python version) not found: no {TEST_BATCH} in {looked}. Unpack cifar-10-python.tar.gz "
        f"under the data root (it makes {FOLDER}/) or pass --data-opt cifar_dir=/path/to/{FOLDER}"
    )


def batch_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every batch file (a missing one is a DataError naming it)."""
    out = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch {path} is missing; expected {', '.join((*TRAIN_BATCHES, TEST_BATCH))}")
        out[name] = file_sha256(path)
    return out


def load_cifar10(folder: Path) -> Cifar10Arrays:
    """Read the five training batches (in order) and the test batch from ``folder``."""
    parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(folder / TEST_BATCH)
    log.debug("loaded CIFAR-10 from %s", folder)
    return Cifar10Arrays(
        train_x=np.concatenate([p[0] for p in parts]),
        train_y=np.concatenate([p[1] for p in parts]),
        test_x=test_x,
        test_y=test_y,
        folder=folder,
    )
