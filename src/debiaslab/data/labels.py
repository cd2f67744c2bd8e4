"""Class / attribute ids for a user's own data: parsing, declared ranges, and the split when none is given.

Shared by the ``folder`` (images + CSV) and ``arrays`` (``.npz`` / ``.pt``) datasets. ``where(i)`` says where
value ``i`` came from (``labels.csv line 7``, ``data.npz y[6]``) so every error names the file and the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from debiaslab.data.files import check_fraction, check_seed, stratified_split
from debiaslab.errors import ConfigError, DataError

Where = Callable[[int], str]


def check_count(value: object, option: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} {value!r} is not a positive integer")
    return int(value)


def check_names(value: object, option: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str | int) for v in value):
        raise ConfigError(f"{option} {value!r} is not a list of names, e.g. [cat, dog]")
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        raise ConfigError(f"{option} {value!r} repeats a name")
    return names


def label_ids(
    values: Sequence[object],
    where: Where,
    what: str,
    *,
    declared: int | None,
    names: list[str] | None,
    unknown_ok: bool = False,
) -> tuple[np.ndarray, int]:
    """Integer ids and their count K from raw values (ints, integral floats, or names from ``names``).

    ``declared`` (else ``len(names)``, else ``max + 1``) is the number of ids; a value outside ``0..K-1`` is a
    DataError naming where it came from. With ``unknown_ok``, empty / ``-1`` values become ``-1``.
    """
    if names is not None and declared is not None and declared != len(names):
        raise ConfigError(f"{len(names)} {what} names given but {declared} {what}s declared")
    k = declared if declared is not None else (len(names) if names is not None else None)
    lookup = {n: i for i, n in enumerate(names)} if names is not None else {}
    out = np.empty(len(values), dtype=np.int64)
    for i, raw in enumerate(values):
        text = str(raw).strip()
        if unknown_ok and text in ("", "-1", "-1.0", "nan", "NaN"):
            out[i] = -1
            continue
        if text in lookup:
            out[i] = lookup[text]
            continue
        try:
            f = float(text)
            if not f.is_integer():
                raise ValueError
            v = int(f)
        except ValueError:
            hint = f"; expected one of {', '.join(names)} or an id" if names else "; expected an integer id"
            raise DataError(f"{where(i)}: {what} {text!r} is not valid{hint}") from None
        if v < 0 or (k is not None and v >= k):
            declared_txt = f"0..{k - 1}" if k is not None else "non-negative ids"
            raise DataError(f"{where(i)}: {what} {v} is outside the declared {what}s {declared_txt}")
        out[i] = v
    if k is None:
        known = out[out >= 0]
        k = int(known.max()) + 1 if known.size else 1
    return out, k


def split_ids(
    split: np.ndarray | None,
    y: np.ndarray,
    attr: np.ndarray | None,
    n_attrs: int,
    *,
    val_fraction: object,
    test_fraction: object,
    split_seed: object,
) -> tuple[np.ndarray, str]:
    """The given split ids, or a seeded split stratified by group (by class where attributes are unknown).

    Returns the ids and how they were made (for the recipe).
    """
    if split is not None:
        return split, "given"
    vf = check_fraction(val_fraction, "val_fraction")
    tf = check_fraction(test_fraction, "test_fraction")
    seed = check_seed(split_seed, "split_seed")
    strata = y * (n_attrs + 1) + (attr + 1 if attr is not None else 0)
    return stratified_split(strata, vf, tf, seed), f"stratified val_fraction={vf} test_fraction={tf} seed={seed}"
