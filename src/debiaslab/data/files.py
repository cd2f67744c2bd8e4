"""Reading datasets that users keep on disk: locating folders, CSV columns, integer labels, split columns.

Every problem is a :class:`~debiaslab.errors.DataError` that names the file, the line and the column, and says
what was expected, so a user can open the file and fix it. Line numbers count from 1 and include the header.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from debiaslab.data.core import GroupDataset
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Split ids used everywhere (the Waterbirds / CelebA convention).
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES: dict[str, int] = {
    "train": 0,
    "training": 0,
    "0": 0,
    "val": 1,
    "valid": 1,
    "validation": 1,
    "dev": 1,
    "1": 1,
    "test": 2,
    "testing": 2,
    "2": 2,
}
_MAX_LISTED = 5


# ---------------------------------------------------------------------------------------------- locating
def resolve_user_path(value: str | os.PathLike[str], data_root: Path, option: str) -> Path:
    """A path a user gave as a dataset option: absolute as is; relative to the data root, else to the cwd."""
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path(data_root) / path, Path.cwd() / path]
    for c in candidates:
        if c.exists():
            return c
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"{option}={str(value)!r}: no such file or folder ({tried})")


def find_dataset_dir(
    data_root: Path,
    root: str | os.PathLike[str] | None,
    candidates: Sequence[str],
    marker: str,
    dataset: str,
) -> Path:
    """The folder of a dataset: ``root`` when given, else the first of ``<data_root>/<candidate>`` and
    ``<data_root>`` itself that contains ``marker``. The error lists every place looked at."""
    if root is not None:
        folder = resolve_user_path(root, data_root, "root")
        if not (folder / marker).exists():
            raise DataError(f"{dataset}: {folder / marker} not found; root={str(root)!r} must hold {marker}")
        return folder
    places = [Path(data_root) / c for c in candidates] + [Path(data_root)]
    for folder in places:
        if (folder / marker).exists():
            return folder
    looked = ", ".join(str(p / marker) for p in places)
    raise DataError(
        f"{dataset}: {marker} not found (looked for {looked}); point --data-root at the folder that holds "
        f"the dataset, or pass --data-opt root=/path/to/{candidates[0] if candidates else dataset}"
    )


def check_files_exist(paths: Sequence[Path], lines: Sequence[int] | None, table: Path | str) -> None:
    """Fail with the first few missing files (and the lines of ``table`` that name them)."""
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if not missing:
        return
    shown = []
    for i in missing[:_MAX_LISTED]:
        where = f" ({table} line {lines[i]})" if lines is not None else ""
        shown.append(f"{paths[i]}{where}")
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    raise DataError(f"{len(missing)} image file(s) listed in {table} are missing: {'; '.join(shown)}{more}")


# ---------------------------------------------------------------------------------------------- CSV
@dataclass
class CsvColumns:
    """The wanted columns of a CSV file as strings, with the file line of every row."""

    path: Path
    columns: dict[str, list[str]]
    lines: list[int]
    header: list[str]

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, column: str) -> list[str]:
        return self.columns[column]

    def has(self, column: str) -> bool:
        return column in self.columns


def read_csv_columns(
    path: Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    delimiter: str = ",",
) -> CsvColumns:
    """Read only the named columns of a CSV with a header line (other columns are ignored).

    A missing required column, a row with too few fields or an empty file is a DataError naming the file
    (and the line). Column names are matched after stripping spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty; expected a header line with columns {', '.join(required)}")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column {', '.join(map(repr, missing))}; its header is "
                    f"{', '.join(header)}; expected columns {', '.join(required)}"
                    + (f" (optional: {', '.join(optional)})" if optional else "")
                )
            wanted = [c for c in (*required, *optional) if c in header]
            where = {c: header.index(c) for c in wanted}
            need = max(where.values()) + 1
            columns: dict[str, list[str]] = {c: [] for c in wanted}
            lines: list[int] = []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) < need:
                    raise DataError(
                        f"{path} line {reader.line_num}: {len(row)} field(s), expected at least {need} "
                        f"(columns {', '.join(header)})"
                    )
                for c, i in where.items():
                    columns[c].append(row[i].strip())
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from exc
    if not lines:
        raise DataError(f"{path} has a header but no rows")
    return CsvColumns(path, columns, lines, header)


# ---------------------------------------------------------------------------------------------- values
def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def parse_int_column(
    values: Sequence[str],
    lines: Sequence[int],
    path: Path | str,
    column: str,
    *,
    allowed: Collection[int] | None = None,
    what: str = "",
) -> np.ndarray:
    """Integers from a column; a non-integer, or a value outside ``allowed``, names the file, line and value."""
    out = np.empty(len(values), dtype=np.int64)
    allowed_set = None if allowed is None else set(allowed)
    for i, text in enumerate(values):
        v = _as_int(text)
        if v is None:
            raise DataError(f"{path} line {lines[i]}, column {column!r}: {text!r} is not an integer{what}")
        if allowed_set is not None and v not in allowed_set:
            expected = ", ".join(str(a) for a in sorted(allowed_set))
            raise DataError(f"{path} line {lines[i]}, column {column!r}: value {v} is not one of {expected}{what}")
        out[i] = v
    return out


def parse_split_column(
    values: Sequence[str],
    lines: Sequence[int] | None,
    path: Path | str,
    column: str,
    *,
    where: Callable[[int], str] | None = None,
) -> np.ndarray:
    """Split ids 0/1/2 from ``train``/``val``/``test`` (also ``valid``, ``validation``) or ``0``/``1``/``2``.

    Errors name ``<path> line <n>, column <column>``, or ``where(i)`` when given (arrays have no lines).
    """
    out = np.empty(len(values), dtype=np.int64)
    for i, text in enumerate(values):
        key = text.strip().lower()
        if key not in _SPLIT_ALIASES:
            as_int = _as_int(key)
            key = str(as_int) if as_int is not None else key
        if key not in _SPLIT_ALIASES:
            place = where(i) if where is not None else f"{path} line {lines[i] if lines else '?'}, column {column!r}"
            raise DataError(f"{place}: split {text!r} is not one of train, val, test (or 0, 1, 2)")
        out[i] = _SPLIT_ALIASES[key]
    return out


def check_split_nonempty(split: np.ndarray, source: Path | str, dataset: str) -> None:
    for name, sid in SPLIT_IDS.items():
        if not (split == sid).any():
            raise DataError(f"{dataset}: {source} has no {name} rows (split {sid}); every split needs examples")


# ---------------------------------------------------------------------------------------------- splits
def stratified_split(strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split ids (0 train, 1 val, 2 test) drawn per stratum with a seeded generator.

    In a stratum of n examples, ``round(n * test_fraction)`` go to test and ``round(n * val_fraction)`` to
    validation (fewer when that would leave training with none), the rest to training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} {value} is outside [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction} >= 1 leaves no training examples"
        )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 7])))
    split = np.zeros(len(strata), dtype=np.int64)
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        n = len(idx)
        k_test = min(int(np.rint(n * test_fraction)), max(n - 1, 0))
        k_val = min(int(np.rint(n * val_fraction)), max(n - 1 - k_test, 0))
        split[idx[:k_test]] = 2
        split[idx[k_test : k_test + k_val]] = 1
    return split


def warn_empty_groups(ds: GroupDataset, source: Path | str) -> None:
    """Log the groups of a split that have no examples (their evaluation rows will be NaN)."""
    if not ds.has_attrs:
        return
    counts = ds.group_counts.tolist()
    empty = [g for g, n in enumerate(counts) if n == 0]
    if not empty:
        return
    named = ", ".join(f"{g} (y={g // ds.n_attrs}, attr={g % ds.n_attrs})" for g in empty[:_MAX_LISTED])
    if len(empty) > _MAX_LISTED:
        named += f" and {len(empty) - _MAX_LISTED} more (of {len(counts)})"
    consequence = (
        "its rows of the evaluation table will be NaN and summaries skip them"
        if ds.split != "train"
        else "methods that balance groups will ignore them"
    )
    log.warning("%s/%s: group(s) %s have no examples in %s; %s", ds.name, ds.split, named, source, consequence)


# ---------------------------------------------------------------------------------------------- options
def check_bool(value: object, option: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{option} {value!r} is not true or false")
    return value


def check_choice(value: object, option: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{option} {value!r}; expected one of: {', '.join(choices)}")
    return str(value)


def check_fraction(value: object, option: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{option} {value!r} is not a fraction in [0, 1)")
    return float(value)


def check_seed(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{option} {value!r} is not a non-negative integer")
    return int(value)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (for recipes and cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
