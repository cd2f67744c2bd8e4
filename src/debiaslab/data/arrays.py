"""A user's own arrays: an ``.npz`` or ``.pt`` file holding ``x``, ``y`` and optionally ``attr`` and ``split``.

``x`` has the examples on its first dimension (features ``(N, D)`` or images ``(N, C, H, W)``; uint8 inputs
are scaled to [0, 1] batch by batch, other types become float32). ``y`` holds integer class ids, ``attr`` the
bias attribute ids (-1 where unknown), ``split`` 0/1/2 (or ``train``/``val``/``test``). Without ``split`` the
examples are split as in the ``folder`` dataset (seeded, stratified; ``val_fraction`` 0.1, ``test_fraction``
0.2). ``.npz`` files are read without pickle and ``.pt`` files with ``weights_only=True``: neither can run
code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.data.files import (
    check_bool,
    check_split_nonempty,
    file_sha256,
    parse_split_column,
    resolve_user_path,
    warn_empty_groups,
)
from debiaslab.data.labels import check_count, label_ids, split_ids
from debiaslab.data.transforms import ToFloat
from debiaslab.errors import ConfigError, DataError

NAME = "arrays"
KEYS: tuple[str, ...] = ("x", "y", "attr", "split")


def _load(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw: dict[str, Any] = {k: z[k] for k in z.files}
        elif suffix in (".pt", ".pth"):
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{path}: expected an .npz or .pt file, not {suffix or 'no extension'}")
    except DataError:
        raise
    except Exception as exc:  # corrupt zip, pickled objects, truncated file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path}: {msg}") from exc
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
    channels_last: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> DatasetBundle:
    """Your arrays: an .npz or .pt file with x, y[, attr][, split] (one entry per example).

    ``n_classes`` / ``n_attrs`` declare the ids (default: largest id + 1); ``channels_last`` reads images
    stored as ``(N, H, W, C)``.
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

    y, k = label_ids(arrays["y"].tolist(), at("y"), "label", declared=n_classes, names=None)
    attr: np.ndarray | None = None
    n_a = 1
    if "attr" in arrays:
        attr, n_a = label_ids(arrays["attr"].tolist(), at("attr"), "attribute", declared=n_attrs, names=None,
                              unknown_ok=True)  # fmt: skip
    elif n_attrs is not None:
        raise ConfigError(f"n_attrs={n_attrs} but {file} has no 'attr' array")
    given = None
    if "split" in arrays:
        values = [str(v) for v in arrays["split"].tolist()]
        given = parse_split_column(values, None, file, "split", where=at("split"))
    split, how = split_ids(
        given, y, attr, n_a, val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed
    )
    check_split_nonempty(split, file, NAME)

    x = torch.from_numpy(np.ascontiguousarray(arrays["x"]))
    if channels_last:
        if x.ndim != 4:
            raise ConfigError(f"channels_last=true needs images (N, H, W, C); x has shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).contiguous()
    if x.dtype == torch.uint8:
        transform = ToFloat(255.0)
    elif x.dtype.is_floating_point or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.bool):
        x, transform = x.float(), None
    else:
        raise DataError(f"{file}: x has dtype {x.dtype}; expected numbers (uint8 images or floats)")

    splits: dict[str, GroupDataset] = {}
    for sid, name in enumerate(("train", "val", "test")):
        idx = torch.from_numpy(np.flatnonzero(split == sid))
        splits[name] = GroupDataset(
            x=x[idx],
            y=torch.from_numpy(y)[idx],
            attr=None if attr is None else torch.from_numpy(attr)[idx],
            n_classes=k,
            n_attrs=n_a,
            transform=transform,
            name=NAME,
            split=name,
        )
    for ds in splits.values():
        warn_empty_groups(ds, file)
    notes = []
    if attr is None:
        notes.append(
            f"{file} has no attr array: group metrics are undefined and only methods that need no attribute "
            "labels can run"
        )
    return DatasetBundle(
        name=NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        recipe={
            "dataset": NAME,
            "path": str(file),
            "sha256": file_sha256(file),
            "n_classes": k,
            "n_attrs": n_a,
            "has_attr": attr is not None,
            "split": how,
            "channels_last": channels_last,
        },
        default_model="mlp",
        notes=notes,
    )
