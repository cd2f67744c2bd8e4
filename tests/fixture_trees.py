"""Tiny on-disk datasets in the published layouts, written by the tests themselves (Pillow / numpy / pickle).

Every image is a flat colour that encodes its labels (red = class, green = attribute), so a test can check
that the loader hands out the right pixels for each row, even through JPEG.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

#: Waterbirds fixture: split -> examples per group (group = 2 * y + place).
WATERBIRDS_COUNTS: dict[int, list[int]] = {0: [4, 2, 1, 3], 1: [1, 1, 1, 1], 2: [2, 1, 1, 2]}
#: CelebA fixture: split -> examples per group (group = 2 * Blond_Hair + Male).
CELEBA_COUNTS: dict[int, list[int]] = {0: [3, 3, 2, 1], 1: [1, 1, 1, 1], 2: [1, 2, 1, 1]}
CELEBA_ATTRS: tuple[str, ...] = ("5_o_Clock_Shadow", "Blond_Hair", "Male", "Smiling")


def colour(y: int, a: int) -> tuple[int, int, int]:
    """The flat colour of an image with class ``y`` and attribute ``a``."""
    return 20 + 22 * y, 20 + 22 * a, 90


def write_image(path: Path, rgb: Sequence[int], size: tuple[int, int] = (8, 8)) -> Path:
    """A flat ``size = (width, height)`` image; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(rgb)).save(path)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------- Waterbirds
def make_waterbirds(root: Path, counts: dict[int, list[int]] = WATERBIRDS_COUNTS) -> Path:
    """``root/metadata.csv`` (GroupDRO column order) plus JPEGs of varying sizes in class folders."""
    rows = []
    for split, per_group in counts.items():
        for g, n in enumerate(per_group):
            y, place = divmod(g, 2)
            for k in range(n):
                name = f"{y + 1:03d}.Bird/s{split}_g{g}_{k}.jpg"
                write_image(root / name, colour(y, place), size=(12 + k, 10))
                rows.append([len(rows) + 1, name, y, split, place, f"place{place}.jpg"])
    write_csv(root / "metadata.csv", ["img_id", "img_filename", "y", "split", "place", "place_filename"], rows)
    return root


# ---------------------------------------------------------------------------------------------- CelebA
def make_celeba(root: Path, fmt: str = "csv", counts: dict[int, list[int]] = CELEBA_COUNTS) -> Path:
    """``img_align_celeba/``, attributes and partition as the Kaggle CSVs (``fmt="csv"``) or original TXTs."""
    attr_rows, part_rows = [], []
    i = 0
    for split, per_group in counts.items():
        for g, n in enumerate(per_group):
            blond, male = divmod(g, 2)
            for _ in range(n):
                i += 1
                name = f"{i:06d}.jpg"
                write_image(root / "img_align_celeba" / name, colour(blond, male), size=(20, 24))
                smiling = i % 2
                values = [1 if v else -1 for v in (i % 3 == 0, blond, male, smiling)]
                attr_rows.append([name, *values])
                part_rows.append([name, split])
    if fmt == "csv":
        write_csv(root / "list_attr_celeba.csv", ["image_id", *CELEBA_ATTRS], attr_rows)
        write_csv(root / "list_eval_partition.csv", ["image_id", "partition"], part_rows)
    else:
        lines = [str(len(attr_rows)), " ".join(CELEBA_ATTRS)]
        lines += [f"{r[0]} " + " ".join(f"{v:2d}" for v in r[1:]) for r in attr_rows]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in part_rows))
    return root


# ---------------------------------------------------------------------------------------------- DFA folders
def make_dfa(
    base: Path,
    *,
    pcts: dict[str, tuple[int, int]],
    n_val: int,
    n_test: int,
    classes: Sequence[int],
    n_attrs: int,
    valid_in_pct: bool,
    valid_class_folders: bool,
    test_class_folders: bool,
) -> Path:
    """A DFA release tree: per pct ``(aligned, conflicting)`` images per class; validation and test with
    ``n_val`` / ``n_test`` images per class, half of them aligned. Names are ``<idx>_<y>_<b>.png``."""
    idx = 0

    def put(folder: Path, y: int, b: int, class_folder: bool) -> None:
        nonlocal idx
        idx += 1
        target = (folder / str(y) if class_folder else folder) / f"{idx}_{y}_{b}.png"
        write_image(target, colour(y, b))

    for pct, (n_align, n_conflict) in pcts.items():
        for y in classes:
            for _ in range(n_align):
                put(base / pct / "align", y, y, True)
            for k in range(n_conflict):
                put(base / pct / "conflict", y, (y + 1 + k) % n_attrs, True)
        valid_root = base / pct / "valid" if valid_in_pct else base / "valid"
        for y in classes:
            for k in range(n_val):
                put(valid_root, y, y if k % 2 == 0 else (y + 1) % n_attrs, valid_class_folders)
    for y in classes:
        for k in range(n_test):
            put(base / "test", y, y if k % 2 == 0 else (y + 1) % n_attrs, test_class_folders)
    return base


# ---------------------------------------------------------------------------------------------- CIFAR-10
def make_cifar10(root: Path, per_class_per_batch: int = 2, test_per_class: int = 2, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with five training batches and a test batch of random images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(name: str, per_class: int) -> None:
        labels = [c for _ in range(per_class) for c in range(10)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        obj = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh)

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_class_per_batch)
    batch("test_batch", test_per_class)
    return folder


CLASS_FOLDER_NAMES = ("cat", "dog")
#: (class id, attribute) -> images per cell of :func:`make_class_folders`
CLASS_FOLDER_CELLS = {(0, 0): 12, (0, 1): 4, (1, 0): 4, (1, 1): 12}


def make_class_folders(root: Path, *, splits: bool = False) -> list[tuple[str, int]]:
    """Flat-colour 8x8 images under ``root/<class>/`` (or ``root/<split>/<class>/``); returns (path, attribute)
    rows, paths relative to ``root``."""
    rows = []
    for (y, a), n in CLASS_FOLDER_CELLS.items():
        for i in range(n):
            split = ("train", "train", "val", "test")[i % 4] if splits else ""
            rel = f"{split + '/' if split else ''}{CLASS_FOLDER_NAMES[y]}/{a}-{i}.png"
            write_image(root / rel, colour(y, a))
            rows.append((rel, a))
    return rows
