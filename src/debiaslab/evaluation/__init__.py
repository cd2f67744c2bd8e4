"""Evaluation: per-group tables and summary metrics, bootstrap intervals, and epoch/config selection rules.

Imports nothing of data/models/engine/methods: it works on plain tensors (logits, labels, attributes).
"""

from debiaslab.evaluation.metrics import (
    CLASSDIFF_FORMS,
    GROUP_METRIC_KEYS,
    METRIC_KEYS,
    ClassRow,
    EvalReport,
    GroupRow,
    PredictionCollector,
    bootstrap_ci,
    class_diff,
    evaluate_predictions,
)
from debiaslab.evaluation.selection import (
    SelectionRule,
    check_rule_applicable,
    get_rule,
    label_free_rules,
    list_rules,
    select_best,
)

__all__ = [
    "CLASSDIFF_FORMS",
    "GROUP_METRIC_KEYS",
    "METRIC_KEYS",
    "ClassRow",
    "EvalReport",
    "GroupRow",
    "PredictionCollector",
    "SelectionRule",
    "bootstrap_ci",
    "check_rule_applicable",
    "class_diff",
    "evaluate_predictions",
    "get_rule",
    "label_free_rules",
    "list_rules",
    "select_best",
]
