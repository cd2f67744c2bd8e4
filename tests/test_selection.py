"""Selection rules on a small validation history."""

from __future__ import annotations

import math

import pytest

from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.evaluation import check_rule_applicable, get_rule, list_rules, select_best

NAN = math.nan
HISTORY = [
    {"worst_group": 0.3, "unbiased": 0.60, "worst_class": 0.5, "class_diff": 0.20, "accuracy": 0.97},
    {"worst_group": 0.5, "unbiased": 0.55, "worst_class": 0.7, "class_diff": 0.10, "accuracy": 0.85},
    {"worst_group": 0.4, "unbiased": 0.70, "worst_class": 0.6, "class_diff": 0.05, "accuracy": 0.95},
    {"worst_group": 0.5, "unbiased": NAN, "worst_class": 0.7, "class_diff": NAN, "accuracy": 0.90},
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val_worst_group", 1),  # ties with epoch 3: the first wins
        ("val_unbiased", 2),
        ("val_worst_class", 1),
        ("val_classdiff", 2),  # NaN in epoch 3 never wins
        ("val_accuracy", 0),
        ("last", 3),
    ],
)
def test_rules_pick_expected_epoch(name, expected):
    assert select_best(HISTORY, name) == expected
    assert select_best(HISTORY, get_rule(name)) == expected


def test_rule_definitions():
    assert list_rules() == [
        "val_worst_group",
        "val_unbiased",
        "val_worst_class",
        "val_classdiff",
        "val_accuracy",
        "last",
    ]
    needs = {name: get_rule(name).needs_groups for name in list_rules()}
    assert needs == {
        "val_worst_group": True,
        "val_unbiased": True,
        "val_worst_class": False,
        "val_classdiff": False,
        "val_accuracy": False,
        "last": False,
    }
    assert get_rule("val_classdiff").mode == "min"
    with pytest.raises(Exception):  # frozen  # noqa: B017
        get_rule("val_accuracy").metric = "loss"


def test_is_better():
    rule = get_rule("val_worst_group")
    assert rule.is_better(0.1, None)
    assert not rule.is_better(NAN, None)
    assert not rule.is_better(NAN, 0.1)
    assert not rule.is_better(0.5, 0.5)  # strictly
    assert rule.is_better(0.6, 0.5)
    assert get_rule("val_classdiff").is_better(0.1, 0.2)
    assert get_rule("last").is_better(NAN, 1.0)
    assert rule.score({"worst_group": 0.25}) == 0.25


def test_all_nan_falls_back_to_last():
    assert select_best([{"class_diff": NAN}, {"class_diff": NAN}], "val_classdiff") == 1


def test_unknown_rule():
    with pytest.raises(ConfigError, match="val_worst_group"):
        get_rule("val_worstgroup")


def test_missing_labels():
    with pytest.raises(MissingLabelsError, match=r"val_worst_group.*val_classdiff"):
        check_rule_applicable("val_worst_group", has_val_attrs=False)
    check_rule_applicable("val_worst_group", has_val_attrs=True)
    check_rule_applicable("val_classdiff", has_val_attrs=False)
    with pytest.raises(ConfigError):
        select_best(HISTORY, "nope")
