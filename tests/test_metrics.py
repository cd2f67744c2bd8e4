"""Evaluation metrics on hand-computed examples."""

from __future__ import annotations

import csv
import io
import json
import logging
import math

import pytest
import torch
from rich.console import Console
from rich.table import Table

from debiaslab.errors import ConfigError
from debiaslab.evaluation import (
    GROUP_METRIC_KEYS,
    METRIC_KEYS,
    EvalReport,
    PredictionCollector,
    bootstrap_ci,
    class_diff,
    evaluate_predictions,
)

# 2 classes x 2 attributes, aligned groups {0, 3}: (y, attr, n, correct) per group.
TOY = [(0, 0, 4, 4), (0, 1, 2, 1), (1, 0, 2, 0), (1, 1, 4, 3)]
CORRECT_LOSS = math.log(1 + math.exp(-2.0))
WRONG_LOSS = math.log(1 + math.exp(2.0))


def make(spec=TOY, n_classes: int = 2):
    """Logits with margin 2 on the label (correct) or on another class (wrong)."""
    logits, ys, attrs = [], [], []
    for y, a, n, correct in spec:
        for i in range(n):
            row = torch.zeros(n_classes)
            row[y if i < correct else (y + 1) % n_classes] = 2.0
            logits.append(row)
            ys.append(y)
            attrs.append(a)
    return torch.stack(logits), torch.tensor(ys), torch.tensor(attrs)


def toy_report(**kwargs) -> EvalReport:
    logits, y, attr = make()
    return evaluate_predictions(logits, y, attr, n_classes=2, n_attrs=2, aligned_groups=(0, 3), **kwargs)


def render_text(table: Table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_hand_computed_metrics():
    rep = toy_report(train_group_counts=torch.tensor([6, 1, 1, 2]))
    m = rep.metrics
    assert set(m) == set(METRIC_KEYS)
    assert m["n"] == 12
    assert m["accuracy"] == pytest.approx(8 / 12)
    assert m["worst_group"] == 0.0
    assert m["unbiased"] == pytest.approx((1 + 0.5 + 0 + 0.75) / 4)
    assert m["aligned"] == pytest.approx((1 + 0.75) / 2)
    assert m["conflicting"] == pytest.approx((0.5 + 0) / 2)
    assert m["aligned_samples"] == pytest.approx(7 / 8)
    assert m["conflicting_samples"] == pytest.approx(1 / 4)
    assert m["worst_class"] == pytest.approx(0.5)
    assert m["mean_class"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert m["class_diff"] == pytest.approx(5 / 6 - 0.5)
    assert m["weighted_group"] == pytest.approx(0.6 * 1 + 0.1 * 0.5 + 0.1 * 0 + 0.2 * 0.75)
    assert m["loss"] == pytest.approx((8 * CORRECT_LOSS + 4 * WRONG_LOSS) / 12, rel=1e-5)
    assert all(isinstance(v, float) for v in m.values())

    assert [(r.group, r.y, r.attr, r.n, r.correct, r.aligned) for r in rep.rows] == [
        (0, 0, 0, 4, 4, True),
        (1, 0, 1, 2, 1, False),
        (2, 1, 0, 2, 0, False),
        (3, 1, 1, 4, 3, True),
    ]
    assert [r.accuracy for r in rep.rows] == pytest.approx([1.0, 0.5, 0.0, 0.75])
    assert rep.rows[1].loss == pytest.approx((CORRECT_LOSS + WRONG_LOSS) / 2, rel=1e-5)
    assert [(c.n, c.correct) for c in rep.class_rows] == [(6, 5), (6, 3)]
    assert (rep.n_classes, rep.n_attrs) == (2, 2)


def test_without_train_counts_or_aligned_groups_those_metrics_are_nan():
    logits, y, attr = make()
    rep = evaluate_predictions(logits, y, attr, n_classes=2, n_attrs=2)
    for key in ("weighted_group", "aligned", "conflicting", "aligned_samples", "conflicting_samples"):
        assert math.isnan(rep.metrics[key])
    assert rep.metrics["unbiased"] == pytest.approx(0.5625)


def test_empty_group_is_nan_and_skipped(caplog):
    spec = [g for g in TOY if (g[0], g[1]) != (1, 0)]
    logits, y, attr = make(spec)
    with caplog.at_level(logging.WARNING, logger="debiaslab.evaluation"):
        rep = evaluate_predictions(
            logits, y, attr, n_classes=2, n_attrs=2, aligned_groups=(0, 3), train_group_counts=[6, 1, 1, 2]
        )
    assert rep.rows[2].n == 0 and math.isnan(rep.rows[2].accuracy) and math.isnan(rep.rows[2].loss)
    assert rep.metrics["worst_group"] == pytest.approx(0.5)
    assert rep.metrics["unbiased"] == pytest.approx((1 + 0.5 + 0.75) / 3)
    assert rep.metrics["conflicting"] == pytest.approx(0.5)
    assert rep.metrics["weighted_group"] == pytest.approx((0.6 + 0.05 + 0.15) / 0.9)
    assert any("no examples" in rec.getMessage() for rec in caplog.records)


def test_unknown_attributes():
    logits, y, _ = make()
    rep = evaluate_predictions(logits, y, torch.full_like(y, -1), n_classes=2, n_attrs=2, aligned_groups=(0, 3))
    for key in GROUP_METRIC_KEYS:
        assert math.isnan(rep.metrics[key]), key
    assert rep.metrics["accuracy"] == pytest.approx(8 / 12)
    assert rep.metrics["worst_class"] == pytest.approx(0.5)
    assert rep.metrics["class_diff"] == pytest.approx(1 / 3)
    assert all(r.n == 0 for r in rep.rows)
    assert "worst-class 50.0" in rep.summary_line()
    assert rep.render_auto().columns[0].header == "class"
    assert evaluate_predictions(logits, y, None, n_classes=2, n_attrs=2).metrics["accuracy"] == pytest.approx(8 / 12)


def test_partially_unknown_attributes_use_known_ones(caplog):
    logits, y, attr = make()
    attr = attr.clone()
    attr[4:6] = -1  # group 1 (y0, a1) loses both its examples
    with caplog.at_level(logging.WARNING, logger="debiaslab.evaluation"):
        rep = evaluate_predictions(logits, y, attr, n_classes=2, n_attrs=2, aligned_groups=(0, 3))
    assert rep.rows[1].n == 0
    assert rep.metrics["unbiased"] == pytest.approx((1 + 0 + 0.75) / 3)
    assert rep.metrics["accuracy"] == pytest.approx(8 / 12)
    assert any("unknown for 2 of 12" in rec.getMessage() for rec in caplog.records)


def test_class_diff_forms():
    assert class_diff([0.9, 0.6], "binary") == pytest.approx(0.3)
    assert class_diff([0.9, 0.6], "mean_pairwise") == pytest.approx(0.3)
    assert class_diff([0.9, 0.6, 0.3], "mean_pairwise") == pytest.approx((0.3 + 0.6 + 0.3) / 3)
    # BAM official code (github.com/motivationss/BAM, loss.py, LossComputer.helper): |a0 + a0 - a1 - a2|
    assert class_diff([0.9, 0.6, 0.3], "official3") == pytest.approx(abs(2 * 0.9 - 0.6 - 0.3))
    assert class_diff([0.6, 0.9, 0.3], "official3") == pytest.approx(0.0)  # not the mean pairwise gap (0.4)
    assert class_diff([0.9, float("nan"), 0.3]) == pytest.approx(0.6)  # empty class skipped
    assert math.isnan(class_diff([0.9, None]))
    with pytest.raises(ConfigError):
        class_diff([0.9, 0.6], "official3")
    with pytest.raises(ConfigError):
        class_diff([0.9, 0.6, 0.3], "binary")
    with pytest.raises(ConfigError):
        class_diff([0.9, 0.6], "nope")


def test_classdiff_official3_is_bam_official_loss_py_form_in_evaluation():
    logits, y, attr = make([(0, 0, 2, 2), (1, 0, 2, 1), (2, 0, 4, 1)], n_classes=3)
    rep = evaluate_predictions(logits, y, attr, n_classes=3, n_attrs=1, classdiff_form="official3")
    # class accuracies 1, 0.5, 0.25 -> |2 * 1 - 0.5 - 0.25| (BAM official loss.py)
    assert rep.metrics["class_diff"] == pytest.approx(1.25)
    with pytest.raises(ConfigError):
        evaluate_predictions(logits, y, attr, n_classes=3, n_attrs=1, classdiff_form="binary")


def test_ece():
    p = torch.tensor([0.8, 0.2]).log().expand(10, 2)
    calibrated = torch.tensor([0] * 8 + [1] * 2)
    rep = evaluate_predictions(p, calibrated, None, n_classes=2, n_attrs=1)
    assert rep.metrics["ece"] == pytest.approx(0.0, abs=1e-6)
    overconfident = torch.tensor([0] * 5 + [1] * 5)
    rep = evaluate_predictions(p, overconfident, None, n_classes=2, n_attrs=1)
    assert rep.metrics["ece"] == pytest.approx(0.3, abs=1e-6)


def test_round_trip_json_and_csv(tmp_path):
    rep = evaluate_predictions(*make(TOY[:3]), n_classes=2, n_attrs=2, aligned_groups=(0, 3))
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)  # JSON-safe: no NaN literal
    assert d["groups"][3]["accuracy"] is None
    back = EvalReport.from_dict(json.loads(text))
    assert math.isnan(back.rows[3].accuracy)
    assert back.to_dict() == d

    rep.to_json(tmp_path / "out" / "eval.json")
    assert EvalReport.from_dict(json.loads((tmp_path / "out" / "eval.json").read_text())).to_dict() == d
    rep.to_csv(tmp_path / "eval.csv")
    rows = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert len(rows) == 4 and rows[0]["n"] == "4" and float(rows[1]["accuracy"]) == 0.5
    assert rows[3]["accuracy"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_render():
    rep = toy_report()
    table = rep.render()
    assert isinstance(table, Table) and table.row_count == 4
    assert "unbiased 56.2" in render_text(table) or "unbiased 56.3" in render_text(table)
    assert rep.summary_line() == "unbiased 56.2 | worst-group 0.0 | aligned 87.5 | conflicting 25.0 | acc 66.7 (%)"
    assert isinstance(rep.render_matrix(), Table) and rep.render_matrix().row_count == 2
    assert rep.render_auto().row_count == 4  # few groups: the group table

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(10, (300,), generator=gen)
    attr = torch.randint(10, (300,), generator=gen)
    big = evaluate_predictions(
        torch.randn(300, 10, generator=gen),
        y,
        attr,
        n_classes=10,
        n_attrs=10,
        aligned_groups=range(0, 100, 11),
    )
    auto = big.render_auto()
    assert auto.row_count == 10 and len(auto.columns) == 12  # class x attribute matrix
    assert "y \\ a" in render_text(auto)


def test_collector_equals_one_shot():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 3, generator=gen)
    y = torch.randint(3, (50,), generator=gen)
    attr = torch.randint(-1, 2, (50,), generator=gen)
    kwargs = {"n_classes": 3, "n_attrs": 2, "aligned_groups": (0, 3)}
    col = PredictionCollector(**kwargs)
    for i in range(0, 50, 16):
        col.add(logits[i : i + 16].requires_grad_(), y[i : i + 16], attr[i : i + 16])
    assert len(col) == 50
    assert col.report().to_dict() == evaluate_predictions(logits, y, attr, **kwargs).to_dict()
    assert math.isnan(PredictionCollector().report(n_classes=3, n_attrs=2).metrics["accuracy"])


def test_bootstrap_ci():
    logits, y, attr = make()
    kwargs = {"n_classes": 2, "n_attrs": 2, "aligned_groups": (0, 3)}
    point = evaluate_predictions(logits, y, attr, **kwargs).metrics
    low, high = bootstrap_ci(logits, y, attr, "accuracy", n_boot=300, **kwargs)
    assert low <= point["accuracy"] <= high and low < high
    assert (low, high) == bootstrap_ci(logits, y, attr, "accuracy", n_boot=300, **kwargs)  # seeded
    lo_u, hi_u = bootstrap_ci(logits, y, attr, "unbiased", n_boot=300, **kwargs)
    assert lo_u <= point["unbiased"] <= hi_u

    big = (logits.repeat(20, 1), y.repeat(20), attr.repeat(20))
    low_b, high_b = bootstrap_ci(*big, "accuracy", n_boot=300, **kwargs)
    assert low_b <= point["accuracy"] <= high_b
    assert high_b - low_b < (high - low) / 2
    with pytest.raises(ConfigError):
        bootstrap_ci(logits, y, attr, "nope", **kwargs)
