"""A user's own data: the ``folder`` (images + CSV) and ``arrays`` (.npz / .pt) datasets, their errors, the
label-requirement error for data without attributes, and end-to-end CLI runs on a generated folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.errors import ConfigError, DataError, MissingLabelsError
from debiaslab.methods.registry import get_method
from fixture_trees import colour, write_csv, write_image

pytestmark = pytest.mark.usefixtures("one_thread")

#: (label, attribute, split) -> count of the generated folder dataset.
CELLS: dict[tuple[int, int, str], int] = {
    (0, 0, "train"): 12, (0, 1, "train"): 3, (1, 0, "train"): 2, (1, 1, "train"): 11,
    (0, 0, "val"): 2, (0, 1, "val"): 2, (1, 0, "val"): 2, (1, 1, "val"): 2,
    (0, 0, "test"): 3, (0, 1, "test"): 2, (1, 0, "test"): 2, (1, 1, "test"): 3,
}  # fmt: skip


def make_folder(root: Path, *, attribute: bool = True, split: bool = True, numeric_split: bool = False) -> Path:
    """``root/labels.csv`` + ``root/images/<label>/<i>.png`` with a flat colour per (label, attribute)."""
    header = ["path", "label"] + (["attribute"] if attribute else []) + (["split"] if split else [])
    rows = []
    for (y, a, s), n in CELLS.items():
        for _ in range(n):
            rel = f"images/{y}/{len(rows)}.png"
            write_image(root / rel, colour(y, a))
            sid = {"train": 0, "val": 1, "test": 2}[s]
            rows.append([rel, y] + ([a] if attribute else []) + ([sid if numeric_split else s] if split else []))
    return write_csv(root / "labels.csv", header, rows)


def counts(ds) -> list[int]:
    return ds.group_counts.tolist()


# ---------------------------------------------------------------------------------------------- folder
@pytest.mark.parametrize("numeric_split", [False, True])
def test_folder_splits_groups_and_pixels(tmp_path: Path, numeric_split: bool) -> None:
    csv = make_folder(tmp_path / "mine", numeric_split=numeric_split)
    b = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv))
    for name in ("train", "val", "test"):
        ds = b.splits()[name]
        assert counts(ds) == [CELLS[(y, a, name)] for y in (0, 1) for a in (0, 1)], name
        assert ds.input_shape == (3, 8, 8) and ds.has_attrs
        x = ds.batch(torch.arange(len(ds))).x
        expected_red = torch.tensor([colour(int(y), 0)[0] / 255 for y in ds.y])
        assert torch.allclose(x[:, 0, 0, 0], expected_red, atol=1e-6)
    assert b.recipe["split"] == "given" and b.train.x is not None  # small: preloaded
    rel = build_dataset("folder", tmp_path, tmp_path / "cache", csv="mine/labels.csv")  # relative to data root
    assert counts(rel.test) == counts(b.test)


def test_folder_without_split_is_a_seeded_stratified_split(tmp_path: Path) -> None:
    csv = make_folder(tmp_path, split=False)
    b = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv), val_fraction=0.2, test_fraction=0.2)
    total = [sum(n for (y, a, _), n in CELLS.items() if (y, a) == g) for g in ((0, 0), (0, 1), (1, 0), (1, 1))]
    assert [t + v + s for t, v, s in zip(counts(b.train), counts(b.val), counts(b.test))] == total
    assert counts(b.test) == [round(n * 0.2) for n in total]  # stratified by group
    assert counts(b.val) == [round(n * 0.2) for n in total]
    again = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv), val_fraction=0.2, test_fraction=0.2)
    assert torch.equal(again.train.x, b.train.x)
    other = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv), val_fraction=0.2,
                          test_fraction=0.2, split_seed=1)  # fmt: skip
    assert not torch.equal(other.train.x, b.train.x) or not torch.equal(other.test.y, b.test.y)
    assert "stratified" in b.recipe["split"]


def test_folder_without_attribute_allows_only_label_free_methods(tmp_path: Path) -> None:
    csv = make_folder(tmp_path, attribute=False)
    b = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv))
    assert (b.train.attr == -1).all() and b.train.n_attrs == 1 and not b.train.has_attrs
    assert any("no attribute column" in n for n in b.notes)
    with pytest.raises(MissingLabelsError, match=r"'groupdro' needs attribute labels on training.*Methods that work"):
        get_method("groupdro")().check_labels(b.train, b.val)
    try:
        get_method("groupdro")().check_labels(b.train, b.val)
    except MissingLabelsError as exc:
        works = str(exc).split("Methods that work with these labels: ")[1].split(", ")
    assert "erm" in works and "jtt" in works and "groupdro" not in works
    get_method("erm")().check_labels(b.train, b.val)  # fine


def test_folder_class_names_and_declared_classes(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (1, 2, 3))
    rows = [["a.png", "cat", s] for s in ("train", "val", "test")] + [["a.png", "dog", "train"]]
    csv = write_csv(tmp_path / "named.csv", ["path", "label", "split"], rows)
    b = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv), class_names=["cat", "dog", "cow"])
    assert b.train.y.tolist() == [0, 1] and b.train.n_classes == 3
    with pytest.raises(DataError, match=r"named\.csv line 2: label 'cat' is not valid; expected an integer id"):
        build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv))


@pytest.mark.parametrize(
    ("edit", "options", "error", "message"),
    [
        ("drop-label", {}, DataError, r"labels\.csv has no column 'label'"),
        ("label-3", {"n_classes": 2}, DataError, r"labels\.csv line 4: label 3 is outside the declared labels 0\.\.1"),
        ("split-x", {}, DataError, r"labels\.csv line 4, column 'split': split 'holdout' is not one of train"),
        ("missing-image", {}, DataError, r"images/0/2\.png \(.*labels\.csv line 4\)"),
        ("broken-image", {}, DataError, r"cannot decode image .*images/0/2\.png \(.*labels\.csv line 4\)"),
        ("no-csv", {}, ConfigError, r"needs --data-opt csv=PATH"),
        ("wrong-csv", {}, DataError, r"csv='nope\.csv': no such file"),
        ("bad-size", {}, DataError, r"images/0/2\.png \(.*line 4\) is 5x5 .*image_size"),
    ],
)
def test_folder_bad_input_names_file_and_line(tmp_path: Path, edit: str, options: dict, error: type, message: str):
    csv = make_folder(tmp_path)
    lines = csv.read_text().splitlines()
    if edit == "drop-label":
        csv.write_text("\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != 1) for line in lines))
    elif edit == "label-3":
        fields = lines[3].split(",")
        fields[1] = "3"
        lines[3] = ",".join(fields)
        csv.write_text("\n".join(lines) + "\n")
    elif edit == "split-x":
        lines[3] = lines[3].rsplit(",", 1)[0] + ",holdout"
        csv.write_text("\n".join(lines) + "\n")
    elif edit == "missing-image":
        (tmp_path / "images" / "0" / "2.png").unlink()
    elif edit == "broken-image":
        (tmp_path / "images" / "0" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif edit == "bad-size":
        write_image(tmp_path / "images" / "0" / "2.png", (0, 0, 0), size=(5, 5))
    kwargs = {} if edit == "no-csv" else {"csv": "nope.csv" if edit == "wrong-csv" else str(csv)}
    with pytest.raises(error, match=message):
        build_dataset("folder", tmp_path, tmp_path / "cache", **kwargs, **options)


def test_folder_decode_failure_when_lazy_names_the_file_at_load(tmp_path: Path) -> None:
    csv = make_folder(tmp_path)
    (tmp_path / "images" / "0" / "30.png").write_bytes(b"garbage")  # row 30 (file line 32): val
    b = build_dataset("folder", tmp_path, tmp_path / "cache", csv=str(csv), preload=False)
    assert b.train.x is None
    with pytest.raises(DataError, match=r"cannot decode image .*images/0/30\.png \(.*labels\.csv line 32\)"):
        b.val.batch(torch.arange(len(b.val)))


# ---------------------------------------------------------------------------------------------- arrays
def _arrays(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {
        "x": g.normal(size=(n, 5)).astype(np.float32),
        "y": np.arange(n) % 2,
        "attr": (np.arange(n) // 4) % 2,
        "split": np.array(["train", "val", "test", "train"] * (n // 4)),
    }


def test_arrays_npz_and_pt(tmp_path: Path) -> None:
    data = _arrays()
    np.savez(tmp_path / "d.npz", **data)
    b = build_dataset("arrays", tmp_path, tmp_path / "cache", path="d.npz")
    assert (len(b.train), len(b.val), len(b.test)) == (20, 10, 10)
    assert counts(b.train) == [5, 5, 5, 5] and counts(b.val) == [0, 0, 5, 5] and b.train.input_shape == (5,)
    assert torch.allclose(b.val.batch(torch.arange(2)).x, torch.from_numpy(data["x"][[1, 5]]))
    pt = {"x": torch.randint(0, 256, (12, 4, 4, 3), dtype=torch.uint8), "y": torch.arange(12) % 3}
    torch.save(pt, tmp_path / "d.pt")
    p = build_dataset("arrays", tmp_path, tmp_path / "cache", path=str(tmp_path / "d.pt"), channels_last=True,
                      val_fraction=0.25, test_fraction=0.25)  # fmt: skip
    assert p.train.input_shape == (3, 4, 4) and p.train.n_classes == 3 and not p.train.has_attrs
    assert len(p.train) + len(p.val) + len(p.test) == 12 and len(p.test) == 3
    assert p.test.batch(torch.arange(1)).x.max() <= 1.0  # uint8 scaled batch by batch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y": None}, r"d\.npz has no array 'y'"),
        ({"attr": np.zeros(39, dtype=np.int64)}, r"attr has 39 entries but x has 40"),
        (
            {"y": np.r_[np.zeros(39, dtype=np.int64), 7]},
            r"d\.npz y\[39\]: label 7 is outside the declared labels 0\.\.1",
        ),
        ({"split": np.array(["train"] * 39 + ["later"])}, r"d\.npz split\[39\]: split 'later' is not one of"),
    ],
)
def test_arrays_bad_input(tmp_path: Path, change: dict, message: str) -> None:
    data = {**_arrays(), **change}
    np.savez(tmp_path / "d.npz", **{k: v for k, v in data.items() if v is not None})
    with pytest.raises(DataError, match=message):
        build_dataset("arrays", tmp_path, tmp_path / "cache", path="d.npz", n_classes=2)


# ---------------------------------------------------------------------------------------------- end to end
FAST = ["--no-progress", "--epochs", "2", "--batch-size", "8", "--hp", "model_kwargs={width: 16, depth: 1}"]


@pytest.mark.parametrize(("method", "extra"), [("erm", []), ("jtt", ["--hp", "identify_epochs=1"])])
def test_train_on_a_user_folder(tmp_path: Path, method: str, extra: list[str], capsys) -> None:
    csv = make_folder(tmp_path / "data")
    out = tmp_path / "runs" / method
    code = main(["train", "--method", method, "--dataset", "folder", "--data-root", str(tmp_path / "data"),
                 "--data-opt", "csv=labels.csv", "--out", str(out), *FAST, *extra])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    assert final["selection"] == "val_worst_group"  # the folder has attributes, so auto picks worst-group
    test = final["metrics"]["test"]
    assert test["n"] == sum(n for (_, _, s), n in CELLS.items() if s == "test")
    assert 0.0 <= test["worst_group"] <= test["accuracy"] <= 1.0
    assert csv.is_file()


def test_group_method_on_unlabelled_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    make_folder(tmp_path, attribute=False)
    code = main(["train", "--method", "groupdro", "--dataset", "folder", "--data-root", str(tmp_path),
                 "--data-opt", "csv=labels.csv", "--out", str(tmp_path / "r"), *FAST])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "needs attribute labels on training" in err and "erm" in err
    assert "Traceback" not in err
