"""The ``class_folders`` dataset: images in ``root/<class>/<file>`` (or ``root/<split>/<class>/<file>``), the bias
attribute from an optional ``path,attribute`` CSV, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.errors import ConfigError, DataError, MissingLabelsError
from debiaslab.methods.registry import get_method
from fixture_trees import CLASS_FOLDER_CELLS as CELLS
from fixture_trees import CLASS_FOLDER_NAMES as CLASSES
from fixture_trees import colour, make_class_folders, write_csv, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def test_classes_are_the_sorted_folders_and_attributes_come_from_the_csv(tmp_path: Path) -> None:
    rows = make_class_folders(tmp_path / "pets")
    write_csv(tmp_path / "attrs.csv", ["path", "attribute"], rows)
    b = build_dataset("class_folders", tmp_path, tmp_path / "c", root="pets", attributes="attrs.csv")
    assert b.recipe["class_names"] == list(CLASSES)
    assert sum(len(s) for s in b.splits().values()) == sum(CELLS.values())
    for split in b.splits().values():
        assert split.has_attrs and split.n_classes == 2 and split.n_attrs == 2
        x = split.inputs(torch.arange(len(split)))
        # every pixel is the colour of its (class, attribute): labels and attributes belong to the right file
        for i in range(len(split)):
            rgb = colour(int(split.y[i]), int(split.attr[i]))
            assert torch.allclose(x[i, :, 0, 0], torch.tensor(rgb) / 255.0)
    counts = b.train.group_counts + b.val.group_counts + b.test.group_counts
    assert counts.tolist() == [CELLS[(0, 0)], CELLS[(0, 1)], CELLS[(1, 0)], CELLS[(1, 1)]]


def test_split_folders_are_the_splits(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "pets", splits=True)
    b = build_dataset("class_folders", tmp_path, tmp_path / "c", root="pets")
    assert b.recipe["split"] == "folders"
    assert (len(b.train), len(b.val), len(b.test)) == (16, 8, 8)
    assert not b.train.has_attrs


def test_without_attributes_only_label_free_methods_run(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "pets")
    b = build_dataset("class_folders", tmp_path, tmp_path / "c", root="pets")
    assert (b.train.attr == -1).all()
    with pytest.raises(MissingLabelsError, match=r"'groupdro' needs attribute labels.*Methods that work.*erm"):
        get_method("groupdro")(dataset="class_folders").check_labels(b.train, b.val)


def test_cli_trains_on_class_folders(tmp_path: Path, capsys) -> None:
    make_class_folders(tmp_path / "pets")
    out = tmp_path / "run"
    code = main(["train", "--method", "erm", "--dataset", "class_folders", "--data-root", str(tmp_path),
                 "--data-opt", "root=pets", "--out", str(out), "--no-progress", "--epochs", "1",
                 "--batch-size", "8", "--hp", "model=mlp", "--hp", "model_kwargs={width: 8, depth: 1}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (out / "final.json").is_file()


@pytest.mark.parametrize(
    ("setup", "options", "error", "message"),
    [
        ("none", {}, ConfigError, r"needs --data-opt root=PATH"),
        ("none", {"root": "nowhere"}, DataError, r"root='nowhere': no such file or folder"),
        ("file", {"root": "f.png"}, ConfigError, r"root='f.png' is not a folder"),
        ("one_class", {"root": "pets"}, DataError, r"has 1 class folder\(s\) \(cat\); expected one sub-folder per"),
        ("empty_class", {"root": "pets"}, DataError, r"class folder .*dog holds no images"),
        ("split_mismatch", {"root": "pets"}, DataError, r"val has class folders cat; expected the same as .*train"),
        ("bad_attr_path", {"root": "pets", "attributes": "a.csv"}, DataError, r"a.csv line 2: path 'cat/zzz.png'"),
        ("bad_attr_value", {"root": "pets", "attributes": "a.csv"}, DataError, r"a.csv line 2"),
        ("ok", {"root": "pets", "n_attrs": 2}, ConfigError, r"n_attrs=2 but no attributes=CSV"),
    ],
)
def test_bad_layouts_are_one_line_errors(tmp_path: Path, setup: str, options: dict, error: type, message: str):
    pets = tmp_path / "pets"
    if setup in ("ok", "bad_attr_path", "bad_attr_value"):
        make_class_folders(pets)
    if setup == "file":
        write_image(tmp_path / "f.png", (1, 2, 3))
    if setup == "one_class":
        write_image(pets / "cat" / "a.png", (1, 2, 3))
    if setup == "empty_class":
        write_image(pets / "cat" / "a.png", (1, 2, 3))
        (pets / "dog").mkdir()
    if setup == "split_mismatch":
        write_image(pets / "train" / "cat" / "a.png", (1, 2, 3))
        write_image(pets / "train" / "dog" / "a.png", (1, 2, 3))
        write_image(pets / "val" / "cat" / "a.png", (1, 2, 3))
    if setup == "bad_attr_path":
        write_csv(tmp_path / "a.csv", ["path", "attribute"], [["cat/zzz.png", 0]])
    if setup == "bad_attr_value":
        write_csv(tmp_path / "a.csv", ["path", "attribute"], [["cat/0-0.png", "blue"]])
    with pytest.raises(error, match=message):
        build_dataset("class_folders", tmp_path, tmp_path / "c", **options)
