"""Groups files: inferred pseudo-groups per split and per example index, with the recipe that made them, the
reference model they came from and a SHA-256 of their content.

One ``.npz`` (loaded with ``allow_pickle=False``): arrays ``train_pseudo``, ``train_minority``, ``val_pseudo``,
``val_minority`` and ``meta``, a JSON text with the format name, the dataset and its options, the split sizes, the
number of pseudo-groups per class, the inferrer's recipe, the reference (trained here, or a run directory), the
content hash and, where the dataset has attributes, the inference quality (computed after inference).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.errors import DataError
from debiaslab.inference.base import InferredGroups, SplitGroups
from debiaslab.utils.io import atomic_write

FORMAT = "debiaslab-groups/1"
SPLITS = ("train", "val")


@dataclass
class GroupsFile:
    """A read and verified groups file."""

    path: Path
    meta: dict[str, Any]
    splits: dict[str, SplitGroups]

    @property
    def sha256(self) -> str:
        return str(self.meta["sha256"])

    @property
    def n_per_class(self) -> int:
        return int(self.meta["n_per_class"])

    def source(self) -> str:
        """How runs name this file: ``inferred:<file name> sha256:<first 12 hex>``."""
        return f"inferred:{self.path.name} sha256:{self.sha256[:12]}"


def content_hash(n_per_class: int, splits: dict[str, SplitGroups]) -> str:
    """SHA-256 over the number of pseudo-groups per class and every split's arrays, in a fixed order."""
    h = hashlib.sha256(f"{FORMAT}:{n_per_class}".encode())
    for name in sorted(splits):
        h.update(name.encode())
        h.update(splits[name].pseudo.numpy().astype("<i8").tobytes())
        h.update(splits[name].minority.numpy().astype("u1").tobytes())
    return h.hexdigest()


def write_groups(path: str | Path, groups: InferredGroups, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``groups`` with ``meta`` (dataset, options, recipe, reference, quality) atomically; returns the full
    meta as written (with format, sizes and hash)."""
    meta = {
        "format": FORMAT,
        **meta,
        "inferrer": groups.inferrer,
        "n_per_class": groups.n_per_class,
        "sizes": {name: int(s.pseudo.numel()) for name, s in groups.splits.items()},
        "details": groups.details,
        "sha256": content_hash(groups.n_per_class, groups.splits),
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True, default=str))}
    for name, split in groups.splits.items():
        arrays[f"{name}_pseudo"] = split.pseudo.numpy().astype(np.int64)
        arrays[f"{name}_minority"] = split.minority.numpy().astype(np.bool_)

    def write(f: Any) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        f.write(buffer.getvalue())

    atomic_write(Path(path), write)
    return meta


def read_groups(path: str | Path) -> GroupsFile:
    """Read and verify a groups file; anything wrong with it is one :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"groups file {path} does not exist; write one with `debiaslab infer-groups`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"groups file {path} is not a readable .npz groups file ({type(exc).__name__})") from None
    if "meta" not in arrays:
        raise DataError(f"groups file {path} has no 'meta' entry; expected a file written by `debiaslab infer-groups`")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError:
        raise DataError(f"groups file {path}: its 'meta' entry is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"groups file {path}: format {found!r}; expected {FORMAT!r}")
    splits = {}
    for name in SPLITS:
        pseudo, minority = arrays.get(f"{name}_pseudo"), arrays.get(f"{name}_minority")
        if pseudo is None or minority is None:
            raise DataError(f"groups file {path} lacks the {name} split ({name}_pseudo, {name}_minority)")
        if pseudo.ndim != 1 or minority.shape != pseudo.shape:
            raise DataError(f"groups file {path}: the {name} arrays are not two 1-D arrays of one length")
        splits[name] = SplitGroups(
            pseudo=torch.from_numpy(pseudo.astype(np.int64)), minority=torch.from_numpy(minority)
        )
    n_per_class = meta.get("n_per_class")
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise DataError(f"groups file {path}: n_per_class {n_per_class!r}; expected an integer >= 1")
    for name, split in splits.items():
        if split.pseudo.numel() and (int(split.pseudo.min()) < 0 or int(split.pseudo.max()) >= n_per_class):
            raise DataError(f"groups file {path}: {name} pseudo-groups outside 0..{n_per_class - 1}")
    digest = content_hash(n_per_class, splits)
    if digest != meta.get("sha256"):
        raise DataError(
            f"groups file {path}: content hash {digest[:12]} does not match the recorded "
            f"{str(meta.get('sha256'))[:12]}; the file was changed after it was written"
        )
    return GroupsFile(path=path, meta=meta, splits=splits)
