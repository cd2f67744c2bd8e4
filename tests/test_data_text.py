"""CivilComments and MultiNLI loaders on small files in their published layouts (written here, never downloaded).

Texts are embedded by the instant ``test-hash`` encoder (tests/text_fixtures.py); the real MiniLM encoder and
fine-tuning are in test_text_encoder.py.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.data.civilcomments import IDENTITIES
from debiaslab.data.multinli import has_negation
from debiaslab.data.overlap import OverlappingGroupDataset
from debiaslab.errors import ConfigError, DataError
from text_fixtures import (
    CIVIL_ROWS,
    NLI_PAIRS,
    write_civilcomments,
    write_groupdro_metadata,
    write_jsonl,
    write_multinli,
)

pytestmark = pytest.mark.usefixtures("one_thread")

HASH = {"encoder": "test-hash"}
NONE = len(IDENTITIES)  # the 'none' attribute of groups='wilds'


@pytest.fixture()
def civil_root(tmp_path: Path) -> Path:
    write_civilcomments(tmp_path / "data" / "civilcomments_v1.0")
    return tmp_path / "data"


def civil(root: Path, cache: Path, **opts: object):
    return build_dataset("civilcomments", root, cache, **{**HASH, **opts})


# ---------------------------------------------------------------------------------------------- CivilComments
def test_civilcomments_wilds_groups_have_the_known_counts(civil_root: Path, tmp_path: Path) -> None:
    b = civil(civil_root, tmp_path / "cache", groups="wilds")
    assert (b.train.n_classes, b.train.n_attrs) == (2, 9)
    expected_train = {0: 2, 1: 1, 6: 1, 7: 1, NONE: 3, 9 + 0: 1, 9 + 4: 1, 9 + NONE: 2}  # group = y * 9 + attr
    assert {g: c for g, c in enumerate(b.train.group_counts.tolist()) if c} == expected_train
    # multi-identity comments take the identity rarest in training: muslim over male, black over white,
    # LGBTQ (0 in training) over male, female over muslim (1 each: tie broken in WILDS order)
    assert b.train.attr[8] == IDENTITIES.index("muslim") and b.train.y[8] == 1  # toxicity 0.5 is toxic
    assert b.train.attr[9] == IDENTITIES.index("black")
    assert b.train.attr[1] == NONE  # female 0.4 < 0.5
    assert b.train.y[11] == 0  # toxicity 0.49
    assert b.val.attr.tolist() == [NONE, IDENTITIES.index("christian"), IDENTITIES.index("LGBTQ")]
    assert b.test.attr.tolist() == [NONE, IDENTITIES.index("other_religions"), IDENTITIES.index("female")]
    assert b.recipe["identity_train_counts"] == [4, 1, 0, 0, 1, 0, 1, 2]
    assert not b.train.aligned_groups
    assert b.selection == "val" and b.protocol == "default"


def test_civilcomments_any_identity_is_four_groups(civil_root: Path, tmp_path: Path) -> None:
    b = civil(civil_root, tmp_path / "cache", groups="any_identity")
    assert (b.train.n_attrs, b.train.n_groups) == (2, 4)
    # (non-toxic, none) 3, (non-toxic, identity) 5, (toxic, none) 2, (toxic, identity) 2
    assert b.train.group_counts.tolist() == [3, 5, 2, 2]
    assert b.val.group_counts.tolist() == [1, 1, 0, 1]
    assert b.test.group_counts.tolist() == [0, 1, 1, 1]
    assert b.train.aligned_groups == frozenset({0, 3})
    assert b.recipe["attr_names"] == ["no identity", "identity"]


def test_every_row_is_read_and_other_splits_are_skipped(civil_root: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        b = civil(civil_root, tmp_path / "cache")
    assert (len(b.train), len(b.val), len(b.test)) == (12, 3, 3)
    assert sum(1 for r in CIVIL_ROWS if r[0] != "extra") == 18
    assert "'extra' (1 rows)" in caplog.text
    memberships = b.train.memberships
    assert memberships.shape == (12, 8)
    assert int(memberships.sum()) == 4 + 1 + 1 + 1 + 2  # male, female, muslim, black, white


def test_overlapping_accuracy_counts_every_identity_a_comment_mentions(civil_root: Path, tmp_path: Path) -> None:
    test = civil(civil_root, tmp_path / "cache").test
    assert isinstance(test, OverlappingGroupDataset)
    # rows: (toxic, none), (non-toxic, other_religions), (toxic, muslim + female); predict "toxic" for all
    logits = torch.tensor([[0.0, 1.0]] * 3)
    out = test.overlapping_accuracy(logits, ["non-toxic", "toxic"])
    by = {(g["subgroup"], g["y"]): g for g in out["groups"]}
    assert (by[("muslim", 1)]["n"], by[("female", 1)]["n"]) == (1, 1)  # the same comment counts for both
    assert by[("other_religions", 0)]["accuracy"] == 0.0 and by[("muslim", 1)]["accuracy"] == 1.0
    assert math.isnan(by[("male", 0)]["accuracy"]) and by[("male", 0)]["n"] == 0
    assert out["worst_group"] == 0.0 and out["worst"] == "other_religions, non-toxic"
    assert out["accuracy"] == pytest.approx(2 / 3)
    # the disjoint table puts that comment in (toxic, female) only
    assert test.group_counts[9 + IDENTITIES.index("muslim")] == 0
    sub = test.subset(torch.tensor([2]))
    assert isinstance(sub, OverlappingGroupDataset) and sub.memberships[0].nonzero().flatten().tolist() == [1, 4]


def test_empty_groups_warn_and_training_still_runs(civil_root: Path, tmp_path: Path, caplog, capsys) -> None:
    with caplog.at_level(logging.WARNING):
        civil(civil_root, tmp_path / "cache", groups="any_identity")
    assert "civilcomments/val has no examples in 1 of 4 groups: (toxic, no identity)" in caplog.text
    out = tmp_path / "run"
    code = main(["train", "--method", "groupdro", "--dataset", "civilcomments", "--data-root", str(civil_root),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--data-opt", "encoder=test-hash",
                 "--data-opt", "groups=any_identity", "--epochs", "1", "--no-progress",
                 "--hp", "model_kwargs={depth: 0}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "test_groups.csv").open()))
    assert rows[0]["n"] == "0" and rows[0]["accuracy"] == ""  # (non-toxic, no identity) is empty in test: NaN
    final = json.loads((out / "final.json").read_text())
    assert final["metrics"]["test"]["worst_group"] is not None


# ---------------------------------------------------------------------------------------------- MultiNLI
@pytest.mark.parametrize(("hypothesis", "expected"), [(p[1], p[3]) for p in NLI_PAIRS])
def test_negation_is_a_whole_word_case_insensitive(hypothesis: str, expected: bool) -> None:
    assert has_negation(hypothesis) is expected


def test_multinli_jsonl_layout(tmp_path: Path) -> None:
    write_multinli(tmp_path / "data" / "multinli_1.0")
    b = build_dataset("multinli", tmp_path / "data", tmp_path / "cache", **HASH)
    assert b.recipe["layout"] == "jsonl" and b.recipe["dropped_no_consensus"] == {"train": 1, "val": 0, "test": 1}
    assert (len(b.train), len(b.val), len(b.test)) == (11, 6, 5)
    labels = {"contradiction": 0, "entailment": 1, "neutral": 2}
    kept = [p for p in NLI_PAIRS if p[2] != "-"]
    assert b.train.y.tolist() == [labels[p[2]] for p in kept]
    assert b.train.attr.tolist() == [int(p[3]) for p in kept]
    # groups y * 2 + negation: (contradiction: 1 / 3), (entailment: 3 / 1), (neutral: 2 / 1)
    assert b.train.group_counts.tolist() == [1, 3, 3, 1, 2, 1]
    assert b.train.aligned_groups == frozenset({1, 2, 4})
    assert b.train.input_shape == (4 * 16,)  # [u, v, |u-v|, u*v]


def test_multinli_groupdro_layout_joins_metadata_with_the_jsonl_texts(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "multinli" / "data"
    splits = {"train": NLI_PAIRS, "val": NLI_PAIRS[:6], "test": NLI_PAIRS[6:]}
    write_multinli(folder, splits)
    meta = write_groupdro_metadata(folder, splits, seed=3)
    b = build_dataset("multinli", tmp_path / "data", tmp_path / "cache", **HASH)
    assert b.recipe["layout"] == "groupdro"
    rows = list(csv.reader(meta.open()))[1:]
    records = [r for s in ("train", "val", "test") for r in splits[s]]
    for split_id, ds in enumerate((b.train, b.val, b.test)):
        mine = [r for r in rows if r[3] == str(split_id)]
        assert ds.y.tolist() == [int(r[1]) for r in mine]
        assert ds.attr.tolist() == [int(r[2]) for r in mine]
        assert all(records[int(r[0])][2] != "-" for r in mine)
    jsonl = build_dataset("multinli", tmp_path / "data", tmp_path / "cache", layout="jsonl", **HASH)
    assert jsonl.recipe["layout"] == "jsonl" and len(jsonl.train) == 11


def test_groupdro_metadata_from_other_files_is_caught(tmp_path: Path) -> None:
    folder = tmp_path / "multinli"
    splits = {"train": NLI_PAIRS, "val": NLI_PAIRS[:6], "test": NLI_PAIRS[6:]}
    write_multinli(folder, splits)
    meta = write_groupdro_metadata(folder, splits)
    rows = list(csv.reader(meta.open()))
    rows[3][1] = str((int(rows[3][1]) + 1) % 3)  # record 2's label changed
    with meta.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError, match=r"metadata_random.csv: row 3: gold_label .* record 2 \(multinli_1.0_train"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)
    rows[3][1], rows[3][0] = rows[2][1], "999"
    with meta.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError, match="row 3: index 999 is outside the 24 records"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_files_name_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"all_data_with_identities.csv not found; looked in .*civilcomments_v1.0"):
        civil(tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match=r"multinli_1.0_train.jsonl not found"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", **HASH)
    write_jsonl(tmp_path / "multinli" / "multinli_1.0_train.jsonl", NLI_PAIRS)
    with pytest.raises(DataError, match=r"metadata_random.csv not found"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", layout="groupdro", **HASH)


def _civil_csv(tmp_path: Path, edit) -> Path:
    path = write_civilcomments(tmp_path / "civil")
    rows = list(csv.reader(path.open()))
    edit(rows)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_a_split_without_rows_is_an_error(tmp_path: Path) -> None:
    path = write_civilcomments(tmp_path / "civil", [r for r in CIVIL_ROWS if r[0] != "val"])
    with pytest.raises(DataError, match=r"civilcomments: no examples in split val \(read from .*all_data_with_id"):
        civil(tmp_path, tmp_path / "cache", path=str(path))


def test_csv_without_a_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = _civil_csv(tmp_path, lambda rows: [r.pop(5) for r in rows])  # the toxicity column
    with pytest.raises(DataError, match=r"all_data_with_identities.csv has no column 'toxicity'"):
        civil(tmp_path, tmp_path / "cache", path=str(path))


@pytest.mark.parametrize("value", ["1.7", "toxic", "", "-0.2"])
def test_label_outside_the_declared_range_names_file_and_row(tmp_path: Path, value: str) -> None:
    def edit(rows: list[list[str]]) -> None:
        rows[4][5] = value

    path = _civil_csv(tmp_path, edit)
    with pytest.raises(DataError, match=rf"all_data_with_identities.csv: row 4: toxicity '{value}' is not a number"):
        civil(tmp_path, tmp_path / "cache", path=str(path.parent))


def test_bad_multinli_records_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_multinli(folder)
    train = folder / "multinli_1.0_train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = lines[2].replace('"gold_label": "contradiction"', '"gold_label": "maybe"')
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"multinli_1.0_train.jsonl: line 3: gold_label 'maybe' is not one of"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)
    lines[2] = "{not json"
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"multinli_1.0_train.jsonl: line 3 is not valid JSON"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)


def test_bad_groupdro_metadata_values_name_file_row_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    splits = {"train": NLI_PAIRS, "val": NLI_PAIRS[:6], "test": NLI_PAIRS[6:]}
    write_multinli(folder, splits)
    meta = write_groupdro_metadata(folder, splits)
    rows = list(csv.reader(meta.open()))
    for column, value, message in [(1, "7", "gold_label '7'"), (2, "2", "sentence2_has_negation 2"),
                                   (3, "train", "split 'train'")]:  # fmt: skip
        bad = [list(r) for r in rows]
        bad[5][column] = value
        with meta.open("w", newline="") as fh:
            csv.writer(fh).writerows(bad)
        with pytest.raises(DataError, match=f"metadata_random.csv: row 5: {message}"):
            build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)
    with meta.open("w", newline="") as fh:
        csv.writer(fh).writerows([r[1:] for r in rows])  # saved without the index column
    with pytest.raises(DataError, match="has no index column"):
        build_dataset("multinli", tmp_path, tmp_path / "cache", path=str(folder), **HASH)


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("civilcomments", {"groups": "sixteen"}, "unknown CivilComments groups 'sixteen'; expected one of: wilds"),
        ("multinli", {"layout": "glue"}, "unknown MultiNLI layout 'glue'"),
        ("civilcomments", {"encoder": "bert"}, "unknown text encoder 'bert'; expected one of: minilm"),
        ("multinli", {"encoder": "tokens"}, "encoder 'tokens' needs tokenizer="),
        ("multinli", {"tokenizer": "/x"}, "tokenizer is only used with encoder='tokens'"),
        ("multinli", {"encoder": "tokens", "tokenizer": "/x", "max_length": 0}, "max_length 0 is not a positive"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, name: str, opts: dict, message: str) -> None:
    write_civilcomments(tmp_path / "civilcomments")
    write_multinli(tmp_path / "multinli")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_dataset(name, tmp_path, tmp_path / "cache", **{**HASH, **opts})


def test_cli_reports_a_missing_dataset_file_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "--method", "erm", "--dataset", "civilcomments", "--data-root", str(tmp_path),
                 "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "all_data_with_identities.csv not found" in err
    assert "Traceback" not in err
