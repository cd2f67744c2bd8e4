"""Class / attribute ids for a user's own data: parsing, declared ranges, and the split when none is given.

Shared by the ``folder`` (images + CSV) and ``arrays`` (``.npz`` / ``.pt``) datasets. ``where(i)`` says where
value ``i`` came from (``labels.csv line 7``, ``data.npz y[6]``) so every error names the file and the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from debiaslab.data.files import SPLIT_IDS, check_fraction, check_seed, stratified_split
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

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
        if v < 0:
            unknown = " (or -1 for unknown)" if unknown_ok else "; only attributes may be -1 (unknown)"
            raise DataError(f"{where(i)}: {what} {v} is negative; expected an id from 0{unknown}")
        if k is not None and v >= k:
            raise DataError(f"{where(i)}: {what} {v} is outside the declared {what}s 0..{k - 1}")
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


# ---------------------------------------------------------------------------------------------- the whole set
#: What ``aligned`` may be: a word (``auto``, ``identity``, ``none``), one attribute id per class, or a mapping.
Aligned = str | list[int] | dict[int | str, int]
ALIGNED_WORDS = ("auto", "identity", "none")
_ALIGNED_HINT = (
    "expected auto, identity, none, a list of one attribute id per class (e.g. [1, 0]) or a mapping "
    "{class: attribute} (e.g. {0: 1, 1: 0})"
)


def aligned_pairing(
    aligned: object, n_classes: int, n_attrs: int, *, has_attr: bool, class_names: Sequence[str] | None = None
) -> tuple[tuple[int, ...], str]:
    """The bias-aligned groups (``class * n_attrs + attribute``) the ``aligned`` option declares, and the pairing
    in words. ``auto`` pairs attribute id c with class id c when there are as many attribute values as classes
    (``identity``), else declares no pairing (``none``: aligned / conflicting accuracy are not reported)."""
    if not has_attr:
        return (), "none (no attribute labels)"
    word = aligned.strip().lower() if isinstance(aligned, str) else None
    if word is not None and word not in ALIGNED_WORDS:
        raise ConfigError(f"aligned {aligned!r}; {_ALIGNED_HINT}")
    if word == "auto":
        word = "identity" if n_attrs == n_classes else "none"
    if word == "none":
        return (), "none declared: aligned / conflicting accuracy are not reported (per-group and worst-group are)"
    if word == "identity":
        if n_attrs != n_classes:
            raise ConfigError(
                f"aligned=identity pairs attribute id c with class id c, but there are {n_classes} classes and "
                f"{n_attrs} attribute values; give a mapping {{class: attribute}}"
            )
        pairs = {c: c for c in range(n_classes)}
    elif isinstance(aligned, list | tuple):
        if len(aligned) != n_classes:
            raise ConfigError(f"aligned {list(aligned)!r}: {len(aligned)} entries; expected {n_classes}, one per class")
        pairs = dict(enumerate(aligned))
    elif isinstance(aligned, dict):
        names = {str(n): i for i, n in enumerate(class_names or [])}
        pairs = {}
        for key, value in aligned.items():
            c = names.get(str(key), _as_id(key))
            if c is None or not 0 <= c < n_classes:
                known = f" or one of {', '.join(names)}" if names else ""
                raise ConfigError(f"aligned: class {key!r} is not a class id 0..{n_classes - 1}{known}")
            pairs[c] = value
    else:
        raise ConfigError(f"aligned {aligned!r}; {_ALIGNED_HINT}")
    for c, a in pairs.items():
        if _as_id(a) is None or not 0 <= int(a) < n_attrs:
            raise ConfigError(f"aligned: attribute {a!r} of class {c} is not an attribute id 0..{n_attrs - 1}")
    shown = [f"{class_names[c] if class_names else c}->{a}" for c, a in sorted(pairs.items())]
    words = ", ".join(shown[:10]) + (f", ... ({len(shown)} classes)" if len(shown) > 10 else "")
    how = "attribute id == class id" if word == "identity" else "declared"
    return tuple(c * n_attrs + int(a) for c, a in sorted(pairs.items())), f"{how} (class->attribute: {words})"


def _as_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def warn_empty_classes(y: np.ndarray, n_classes: int, source: object, names: Sequence[str] | None = None) -> None:
    """Log the class ids no example has: the model still gets one output per id (a stray large label makes
    every id below it a class)."""
    counts = np.bincount(y, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if not empty.size:
        return
    listed = ", ".join(str(names[c]) if names else str(int(c)) for c in empty[:10])
    more = f" and {empty.size - 10} more" if empty.size > 10 else ""
    top = int(y.max()) if y.size else 0
    log.warning(
        "%s: class id(s) %s%s have no examples, yet the model gets %d outputs (ids 0..%d; the largest label, %d, "
        "has %d example(s)); check for a stray label, or declare n_classes / class_names",
        source,
        listed,
        more,
        n_classes,
        n_classes - 1,
        top,
        int(counts[top]) if y.size else 0,
    )


@dataclass
class UserLabels:
    """The checked labels of a user's dataset: class ids (``n_classes``), attribute ids (None: no attribute
    column; ``n_attrs``), split ids 0/1/2 (``how`` they were made) and the aligned groups (``pairing`` in words)."""

    y: np.ndarray
    n_classes: int
    attr: np.ndarray | None
    n_attrs: int
    split: np.ndarray
    how: str
    aligned_groups: tuple[int, ...]
    pairing: str
    notes: list[str] = field(default_factory=list)

    def recipe(self) -> dict[str, object]:
        return {"n_classes": self.n_classes, "n_attrs": self.n_attrs, "split": self.how, "aligned": self.pairing}


def user_labels(
    dataset: str,
    source: object,
    y: tuple[np.ndarray, int],
    attr: tuple[np.ndarray, int] | None,
    given_split: np.ndarray | None,
    *,
    aligned: object,
    class_names: Sequence[str] | None = None,
    val_fraction: object,
    test_fraction: object,
    split_seed: object,
) -> UserLabels:
    """Split ids (the given ones, else a seeded stratified split), a warning for class ids without examples, the
    aligned pairing (logged: which one is used), and the note that group metrics are undefined without attributes.
    ``y`` and ``attr`` are ``(ids, count)`` from :func:`label_ids`."""
    ids, k = y
    attr_ids, n_a = attr if attr is not None else (None, 1)
    split, how = split_ids(
        given_split, ids, attr_ids, n_a, val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed
    )
    for name, sid in SPLIT_IDS.items():
        if not (split == sid).any():
            raise DataError(
                f"{dataset}: {source} has no {name} examples (split {how}); every split needs examples: add some, "
                "or change val_fraction / test_fraction"
            )
    warn_empty_classes(ids, k, source, class_names)
    groups, pairing = aligned_pairing(aligned, k, n_a, has_attr=attr_ids is not None, class_names=class_names)
    notes = []
    if attr_ids is None:
        notes.append(
            f"{source} has no attribute labels (no attribute column, attr array or attributes CSV): group "
            "metrics are undefined and only methods that need no attribute labels can run"
        )
    elif isinstance(aligned, str) and aligned.strip().lower() == "auto" and groups:
        notes.append(
            f"{dataset}: aligned / conflicting accuracy take attribute id c as the aligned attribute of class c "
            "(the default); if your attribute ids mean something else, declare --data-opt "
            "aligned={class: attribute, ...} or aligned=none"
        )
    return UserLabels(ids, k, attr_ids, n_a, split, how, groups, pairing, notes)
