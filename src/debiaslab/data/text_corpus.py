"""Text datasets before featurisation: each split's texts, labels and attributes, as read from a user's files.

The CivilComments and MultiNLI readers parse their published layouts into a :class:`TextCorpus`;
:mod:`debiaslab.data.text_features` turns it into :class:`~debiaslab.data.core.GroupDataset` s (frozen-encoder
embeddings or token ids). Problems in the files raise a :class:`~debiaslab.errors.DataError` naming the file,
the row (1-based, header excluded) and the column.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from debiaslab.errors import DataError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_FIELD_LIMIT = 2**31 - 1  # comments can be long; the csv module's default limit is 128 KiB per field


@dataclass
class TextSplit:
    """One split: ``texts`` holds one list per text field (a comment; or premise and hypothesis), N each.

    ``memberships`` (optional, ``(N, M)`` bool) marks overlapping subgroups an example belongs to, e.g. every
    identity a comment mentions; ``attr`` is the single attribute used for the disjoint groups.
    """

    texts: tuple[list[str], ...]
    y: np.ndarray
    attr: np.ndarray
    memberships: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.int64)
        self.attr = np.asarray(self.attr, dtype=np.int64)
        n = len(self.y)
        if len(self.attr) != n or any(len(t) != n for t in self.texts):
            raise ValueError(f"text split fields disagree in length: y {n}, attr {len(self.attr)}")
        if self.memberships is not None and self.memberships.shape[0] != n:
            raise ValueError(f"{self.memberships.shape[0]} membership rows for {n} examples")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TextCorpus:
    """The three splits of a text dataset plus what its labels mean and how it was read.

    Groups are ``y * n_attrs + attr`` as everywhere in debiaslab. ``recipe`` records the files and options
    that produced the corpus (it goes into the bundle's recipe and every run's ``config.yaml``).
    """

    name: str
    splits: dict[str, TextSplit]
    n_classes: int
    n_attrs: int
    class_names: list[str]
    attr_names: list[str]
    text_fields: tuple[str, ...]
    aligned_groups: list[int] = field(default_factory=list)
    membership_names: list[str] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def group_counts(self, split: str) -> np.ndarray:
        s = self.splits[split]
        return np.bincount(s.y * self.n_attrs + s.attr, minlength=self.n_classes * self.n_attrs)

    def group_name(self, g: int) -> str:
        return f"({self.class_names[g // self.n_attrs]}, {self.attr_names[g % self.n_attrs]})"

    def warn_empty_groups(self) -> None:
        """Log a warning per split with empty groups: their rows in evaluation tables will be NaN."""
        for split in self.splits:
            counts = self.group_counts(split)
            empty = [self.group_name(g) for g in np.flatnonzero(counts == 0)]
            if empty:
                log.warning(
                    "%s/%s has no examples in %d of %d groups: %s; their accuracy will be NaN (not counted in "
                    "worst-group), and group-balanced methods give them no weight",
                    self.name,
                    split,
                    len(empty),
                    len(counts),
                    ", ".join(empty),
                )

    def describe(self) -> dict[str, Any]:
        return {s: {"n": len(d), "group_counts": self.group_counts(s).tolist()} for s, d in self.splits.items()}


# ---------------------------------------------------------------------------------------------- reading files
def find_file(name: str, folders: Sequence[Path], what: str) -> Path:
    """The first ``folder / name`` that exists; otherwise a DataError listing every place looked at."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(f) for f in dict.fromkeys(folders))
    raise DataError(f"{what}: {name} not found; looked in {looked} (set --data-root or the dataset option path)")


def csv_rows(path: Path, required: Sequence[str]) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Column positions and an iterator of ``(row number, cells)`` (rows count from 1 after the header).

    A missing file, an empty file, a missing required column or a short row is a DataError naming the file.
    """
    if not path.is_file():
        raise DataError(f"{path} not found")
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(min(_FIELD_LIMIT, sys.maxsize))
    fh = path.open(newline="", encoding="utf-8")
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        fh.close()
        raise DataError(f"{path} is empty; expected a header with the columns {', '.join(required)}")
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in required if c not in columns]
    if missing:
        fh.close()
        raise DataError(
            f"{path} has no column {', '.join(map(repr, missing))}; expected the columns {', '.join(required)} "
            f"(found: {', '.join(c for c in columns if c) or 'none'})"
        )
    width = max(columns[c] for c in required) + 1

    def rows() -> Iterator[tuple[int, list[str]]]:
        with fh:
            for number, cells in enumerate(reader, start=1):
                if not cells:
                    continue
                if len(cells) < width:
                    raise DataError(f"{path}: row {number} has {len(cells)} cells; expected {len(header)}")
                yield number, cells

    return columns, rows()


def parse_fraction(value: str, column: str, path: Path, row: int, *, empty: float | None = None) -> float:
    """A rater fraction in [0, 1]; ``empty`` (when given) stands for a blank or NaN cell."""
    text = value.strip()
    try:
        x = float(text) if text else float("nan")
    except ValueError:
        x = None
    if x is not None and x != x and empty is not None:  # NaN: blank cell
        return empty
    if x is None or not 0.0 <= x <= 1.0:
        raise DataError(f"{path}: row {row}: {column} {value!r} is not a number in [0, 1]")
    return x


def parse_choice(value: str, column: str, path: Path, row: int, allowed: dict[str, int]) -> int:
    """An integer code from a cell whose value must be one of ``allowed`` (e.g. ``{"0": 0, "1": 1}``)."""
    text = value.strip()
    if text.endswith(".0"):  # pandas writes integer columns with missing values as floats
        text = text[:-2]
    if text not in allowed:
        raise DataError(f"{path}: row {row}: {column} {value!r} is not one of the declared values {', '.join(allowed)}")
    return allowed[text]


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a sequence of texts (length-prefixed, so the boundaries count)."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
