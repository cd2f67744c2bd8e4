"""A user's own arrays: an ``.npz`` or ``.pt`` file holding ``x``, ``y`` and optionally ``attr`` and ``split``.

``x`` has the examples on its first dimension (features ``(N, D)`` or images ``(N, C, H, W)``; uint8 inputs
are scaled to [0, 1] batch by batch, other types become float32). ``y`` holds integer class ids, ``attr`` the
bias attribute ids (-1 where unknown), ``split`` 0/1/2 (or ``train``/``val``/``test``). Without ``split`` the
examples are split as in the ``folder`` dataset (seeded, stratified; ``val_fraction`` 0.1, ``test_fraction``
0.2). ``.npz`` files are read without pickle and ``.pt`` files with ``weights_only=True``: neither can run
code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.data.files import (
    SPLIT_NAMES,
    check_bool,
    file_sha256,
    parse_split_column,
    resolve_user_path,
    warn_empty_groups,
)
from debiaslab.data.labels import Aligned, check_count, label_ids, user_labels
from debiaslab.data.transforms import ToFloat
from debiaslab.errors import ConfigError, DataError

NAME = "arrays"
KEYS: tuple[str, ...] = ("x", "y", "attr", "split")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read without pickle; a file that is not one is a one-line DataError."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # a truncated archive, pickled objects
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _load(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw: Any = load_npz(path)
    elif suffix in (".pt", ".pth"):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch file, pickled objects, truncated file
            raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc
    else:
        raise DataError(f"{path}: expected an .npz or .pt file, not {suffix or 'no extension'}")
    if not isinstance(raw, dict):
        raise DataError(f"{path} holds a {type(raw).__name__}; expected a dict with arrays x, y[, attr][, split]")
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if key not in KEYS:
            continue
        out[key] = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    missing = [k for k in ("x", "y") if k not in out]
    if missing:
        have = ", ".join(map(str, raw)) or "nothing"
        raise DataError(f"{path} has no array {', '.join(map(repr, missing))} (it has {have}); expected x, y")
    if out["x"].ndim < 2:
        raise DataError(
            f"{path}: x has shape {out['x'].shape}; expected the examples on its first dimension: (N, D) features "
            "or (N, C, H, W) images (one feature per example is x.reshape(-1, 1))"
        )
    n = len(out["x"])
    for key, arr in out.items():
        if key != "x" and arr.ndim != 1:
            raise DataError(f"{path}: {key} has shape {arr.shape}; expected one value per example, shape ({n},)")
        if len(arr) != n:
            raise DataError(f"{path}: {key} has {len(arr)} entries but x has {n}; expected one per example")
    return out


@register_dataset(NAME)
def build_arrays(
    data_root: Path,
    cache_dir: Path,
    *,
    path: str | None = None,
    n_classes: int | None = None,
    n_attrs: int | None = None,
    aligned: Aligned = "auto",
    channels_last: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> DatasetBundle:
    """Your arrays: an .npz or .pt file with x, y[, attr][, split] (one entry per example).

    ``n_classes`` / ``n_attrs`` declare the ids (default: largest id + 1); ``aligned`` pairs each class with its
    bias-aligned attribute (see :mod:`debiaslab.data.labels`); ``channels_last`` reads images stored as
    ``(N, H, W, C)``.
    """
    if path is None:
        raise ConfigError(
            "dataset 'arrays' needs --data-opt path=FILE: an .npz or .pt with arrays x, y[, attr][, split]"
        )
    n_classes = check_count(n_classes, "n_classes")
    n_attrs = check_count(n_attrs, "n_attrs")
    channels_last = check_bool(channels_last, "channels_last")
    file = resolve_user_path(path, data_root, "path")
    arrays = _load(file)

    def at(key: str) -> Any:
        return lambda i: f"{file} {key}[{i}]"

    y = label_ids(arrays["y"].tolist(), at("y"), "label", declared=n_classes, names=None)
    attr = None
    if "attr" in arrays:
        values = arrays["attr"].tolist()
        attr = label_ids(values, at("attr"), "attribute", declared=n_attrs, names=None, unknown_ok=True)
    elif n_attrs is not None:
        raise ConfigError(f"n_attrs={n_attrs} but {file} has no 'attr' array")
    given = None
    if "split" in arrays:
        values = [str(v) for v in arrays["split"].tolist()]
        given = parse_split_column(values, None, file, "split", where=at("split"))
    labels = user_labels(
        NAME, file, y, attr, given, aligned=aligned, val_fraction=val_fraction, test_fraction=test_fraction,
        split_seed=split_seed,
    )  # fmt: skip
    x, transform = _inputs(arrays["x"], file, channels_last)
    splits: dict[str, GroupDataset] = {}
    for sid, name in enumerate(SPLIT_NAMES):
        idx = torch.from_numpy(np.flatnonzero(labels.split == sid))
        splits[name] = GroupDataset(
            x=x[idx],
            y=torch.from_numpy(labels.y)[idx],
            attr=None if labels.attr is None else torch.from_numpy(labels.attr)[idx],
            n_classes=labels.n_classes,
            n_attrs=labels.n_attrs,
            transform=transform,
            aligned_groups=labels.aligned_groups,
            name=NAME,
            split=name,
        )
        warn_empty_groups(splits[name], file)
    recipe = {"path": str(file), "sha256": file_sha256(file), "has_attr": attr is not None}
    return DatasetBundle(
        name=NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        recipe={"dataset": NAME, **recipe, **labels.recipe(), "channels_last": channels_last},
        default_model="mlp",
        notes=labels.notes,
    )


def _inputs(raw: np.ndarray, file: Path, channels_last: bool) -> tuple[torch.Tensor, Any]:
    """``x`` as a tensor with the examples first (images moved to channels-first) and its batch transform; inputs
    that are not finite numbers are refused, naming the first such example."""
    x = torch.from_numpy(np.ascontiguousarray(raw))
    if channels_last:
        if x.ndim != 4:
            raise ConfigError(f"channels_last=true needs images (N, H, W, C); x has shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).contiguous()
    if x.dtype == torch.uint8:
        return x, ToFloat(255.0)
    if not (x.dtype.is_floating_point or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)):
        raise DataError(f"{file}: x has dtype {x.dtype}; expected numbers (uint8 images or floats)")
    x = x.float()
    check_finite(x, f"{file} x")
    return x, None


def check_finite(x: torch.Tensor, what: str) -> None:
    """Refuse NaN or infinite inputs, naming the first example that holds one (``what[i]``)."""
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1) if len(x) else torch.zeros(0, dtype=torch.bool)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise DataError(
            f"{what}[{first}] holds NaN or infinite values ({int(bad.sum())} example(s) do); every input must be a "
            "finite number: fix or drop those examples"
        )
