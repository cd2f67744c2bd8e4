"""Rules that pick an epoch (or a configuration) from a history of validation metrics.

Which rule is used changes reported numbers a lot (SubpopBench), so rules are named objects that are recorded
with every result, and a rule that needs group labels refuses to run on a validation split without them
instead of silently selecting on NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from debiaslab.errors import ConfigError, MissingLabelsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionRule:
    """Select by ``metrics[metric]`` (a key of ``EvalReport.metrics``), maximised or minimised.

    ``mode`` is ``"max"``, ``"min"`` or ``"last"`` (every newer entry wins). ``needs_groups``: the rule needs
    bias attributes on the validation split.
    """

    name: str
    metric: str
    mode: str
    needs_groups: bool
    description: str

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min", "last"):
            raise ConfigError(f"selection rule {self.name!r}: mode must be 'max', 'min' or 'last', got {self.mode!r}")

    def score(self, metrics: Mapping[str, float]) -> float:
        """The value this rule compares (NaN when the metric is absent for rule ``last``)."""
        if self.metric not in metrics:
            if self.mode == "last":
                return math.nan
            raise ConfigError(
                f"selection rule {self.name!r} needs metric {self.metric!r}; "
                f"got only: {', '.join(sorted(metrics)) or 'none'}"
            )
        v = metrics[self.metric]
        return math.nan if v is None else float(v)

    def is_better(self, candidate: float, best: float | None) -> bool:
        """Strictly better (ties keep the earlier one); NaN never wins; any number beats ``None`` / NaN."""
        if self.mode == "last":
            return True
        if candidate is None or math.isnan(candidate):
            return False
        if best is None or math.isnan(best):
            return True
        return candidate > best if self.mode == "max" else candidate < best


_RULES: dict[str, SelectionRule] = {
    r.name: r
    for r in (
        SelectionRule("val_worst_group", "worst_group", "max", True, "highest validation worst-group accuracy"),
        SelectionRule("val_unbiased", "unbiased", "max", True, "highest validation unbiased (mean group) accuracy"),
        SelectionRule("val_worst_class", "worst_class", "max", False, "highest validation worst-class accuracy"),
        SelectionRule(
            "val_classdiff",
            "class_diff",
            "min",
            False,
            "smallest validation ClassDiff, the gap between class accuracies (BAM; no group labels)",
        ),
        SelectionRule("val_accuracy", "accuracy", "max", False, "highest validation accuracy"),
        SelectionRule("last", "accuracy", "last", False, "the last epoch, whatever its metrics"),
    )
}


def list_rules() -> list[str]:
    """Names of the selection rules."""
    return list(_RULES)


def get_rule(name: str | SelectionRule) -> SelectionRule:
    """The rule called ``name`` (a rule passes through); ConfigError listing the accepted names otherwise."""
    if isinstance(name, SelectionRule):
        return name
    try:
        return _RULES[name]
    except KeyError:
        raise ConfigError(f"unknown selection rule {name!r}; expected one of: {', '.join(_RULES)}") from None


def label_free_rules() -> list[str]:
    """Rules usable without validation attributes."""
    return [r.name for r in _RULES.values() if not r.needs_groups]


def check_rule_applicable(rule: str | SelectionRule, has_val_attrs: bool) -> None:
    """Raise MissingLabelsError when ``rule`` needs group labels that the validation split does not have."""
    rule = get_rule(rule)
    if rule.needs_groups and not has_val_attrs:
        raise MissingLabelsError(
            f"selection rule {rule.name!r} needs bias attributes (group labels) on the validation split, "
            f"which this dataset does not provide; use a label-free rule: {', '.join(label_free_rules())}"
        )


def select_best(history: Sequence[Mapping[str, float]], rule: str | SelectionRule) -> int:
    """Index of the best entry of ``history`` under ``rule`` (the first one on ties).

    If no entry has a defined score (all NaN) the last entry is returned, with a warning.
    """
    rule = get_rule(rule)
    if not history:
        raise ValueError(f"selection rule {rule.name!r}: empty history, nothing to select")
    best_i: int | None = None
    best: float | None = None
    for i, metrics in enumerate(history):
        score = rule.score(metrics)
        if rule.is_better(score, best):
            best_i, best = i, score
    if best_i is None:
        log.warning(
            "selection rule %r: metric %r is NaN in all %d entries; taking the last one",
            rule.name,
            rule.metric,
            len(history),
        )
        return len(history) - 1
    return best_i
