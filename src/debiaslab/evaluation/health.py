"""Premise checks ("health"): signals that show a run's method did what it assumes, computed without attribute
labels where possible.

A label-free method can fail silently: an error set that is empty or holds half the data, per-example weights on a
handful of examples, a model that never left chance. Each check here is a pure function of training signals
(predictions, weights, error sets, histories) returning a :class:`Check`; methods assemble them in their
``health`` hook and runs write them to ``final.json`` under ``health``. A check that reads attribute labels says
so (``uses_labels``): it scores the method against the truth, it is not something the method could see.

Statuses: ``ok``; ``warn`` (a premise looks shaky, read the result with care); ``fail`` (a premise is broken:
the result does not mean what the method's name says).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

STATUSES = ("ok", "warn", "fail")

#: a model within this many points (absolute accuracy) of the majority-class share has not left chance
CHANCE_MARGIN = 0.02
#: a loss within this fraction of log K means (near-)uniform outputs
UNIFORM_LOSS_TOLERANCE = 0.01
#: training minus validation accuracy above this is reported
GAP_WARN = 0.25
#: an error set larger than this share of the training set is not a minority
ERROR_SET_MAX_SHARE = 0.5
#: effective sample size below this share of the examples: the weights sit on few examples
ESS_MIN_SHARE = 0.01
#: the top 1 % of the examples holding more than this share of the total weight
TOP_SHARE_MAX = 0.5
#: a group weight at or above this is a collapse onto that group
COLLAPSE_Q = 0.9
#: two models trained side by side that disagree on fewer examples than this learned the same rule
MIN_DISAGREEMENT = 0.01
#: a student error below this is "no more mistakes"
STUDENT_MIN_ERROR = 0.01
#: the masked inputs should hold at least this many times their share of the saliency
SALIENCY_MIN_CONCENTRATION = 1.5


@dataclass(frozen=True)
class Check:
    """One premise check: ``name``, ``status`` (ok / warn / fail), the measured ``value`` (JSON-able), a one-line
    ``message`` and whether it reads attribute labels."""

    name: str
    status: str
    value: Any
    message: str
    uses_labels: bool = False
    #: where it was computed: ``run`` (during training) or ``record`` (re-scored from a finished run's final.json)
    source: str = field(default="run")

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        """One line for a log or a footnote: ``name [labels]: message``."""
        return f"{self.name}{' [uses attribute labels]' if self.uses_labels else ''}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        return cls(
            name=str(d["name"]),
            status=str(d["status"]),
            value=d.get("value"),
            message=str(d.get("message", "")),
            uses_labels=bool(d.get("uses_labels", False)),
            source=str(d.get("source", "run")),
        )


def failing(checks: Iterable[Check]) -> list[Check]:
    """The checks that did not pass, failures first."""
    bad = [c for c in checks if not c.passed]
    return sorted(bad, key=lambda c: (c.status != "fail", c.name))


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


# ---------------------------------------------------------------------------------------------- every method
def at_chance(accuracy: float, loss: float | None, n_classes: int, majority: float | None = None) -> bool:
    """Whether a model with this accuracy (and mean cross-entropy) has learned nothing: accuracy within
    :data:`CHANCE_MARGIN` of the majority share (1/K without it) and, when ``loss`` is given, near-uniform
    outputs (loss within :data:`UNIFORM_LOSS_TOLERANCE` of log K). With the loss this tells a dead model from a
    confident shortcut, which also scores 1/K on a split where the shortcut carries no information."""
    base = 1.0 / n_classes if majority is None else max(majority, 1.0 / n_classes)
    if not accuracy <= base + CHANCE_MARGIN:
        return False
    if loss is None or not math.isfinite(loss):
        return True
    return abs(loss - math.log(n_classes)) <= UNIFORM_LOSS_TOLERANCE * math.log(n_classes)


def chance_check(
    train_accuracy: float,
    train_loss: float,
    n_classes: int,
    majority: float,
    loss_history: Sequence[float] = (),
    name: str = "left_chance",
    what: str = "the deployed model",
) -> Check:
    """``fail`` when ``what`` is no better than predicting the majority class on the training set.

    ``loss_history``: the stage's per-epoch training loss, reported beside (flat at log K: it never learned)."""
    log_k = math.log(n_classes)
    value = {
        "train_accuracy": train_accuracy,
        "train_loss": train_loss,
        "log_k": log_k,
        "majority_share": majority,
    }
    if loss_history:
        value["train_loss_first_last"] = [float(loss_history[0]), float(loss_history[-1])]
    dead = train_accuracy <= max(majority, 1.0 / n_classes) + CHANCE_MARGIN
    if not dead:
        return Check(name, "ok", value, f"{what} left chance: training accuracy {_pct(train_accuracy)}")
    flat = ""
    if loss_history and all(abs(v - log_k) <= 0.05 * log_k for v in loss_history):
        flat = f"; training loss stayed at log K = {log_k:.2f} every epoch"
    return Check(
        name,
        "fail",
        value,
        f"{what} never left chance: training accuracy {_pct(train_accuracy)} (majority class "
        f"{_pct(majority)}), training loss {train_loss:.2f}{flat}; its scores mean nothing (check lr / optimiser)",
    )


def gap_check(train_accuracy: float, val_accuracy: float) -> Check:
    """``warn`` when training accuracy exceeds validation accuracy by more than :data:`GAP_WARN`."""
    gap = train_accuracy - val_accuracy
    value = {"train_accuracy": train_accuracy, "val_accuracy": val_accuracy, "gap": gap}
    if not gap > GAP_WARN:
        return Check("train_val_gap", "ok", value, f"training {_pct(train_accuracy)}, validation {_pct(val_accuracy)}")
    return Check(
        "train_val_gap",
        "warn",
        value,
        f"training accuracy {_pct(train_accuracy)} but validation {_pct(val_accuracy)}: the model fits training "
        "far better than validation (memorised, or a shortcut validation does not share)",
    )


def selected_epoch_check(stages: Sequence[Mapping[str, Any]]) -> Check:
    """``warn`` when a stage that selects on validation kept its first or its last epoch (3 epochs or more).

    ``stages``: ``{"name", "selected_epoch", "epochs", "selection"}`` per stage (``final.json["stages"]``), with
    ``"scores"`` (the rule's score per epoch) where known, to tell a score that never moved from one that fell."""
    edges = []
    for s in stages:
        n, k = int(s.get("epochs") or 0), int(s.get("selected_epoch") or 0)
        if s.get("selection") in (None, "last") or n < 3 or k not in (1, n):
            continue
        scores = [v for v in s.get("scores") or [] if v is not None and math.isfinite(v)]
        if len(scores) == n and max(scores) == min(scores):
            why = f"its {s['selection']} score never changed ({scores[0]:.3g} every epoch)"
        elif k == 1:
            why = "no later epoch scored better: training hurt it, or lr is too high"
        else:
            why = "it was still improving: train longer"
        edges.append(f"{s['name']}: epoch {k} of {n} ({why})")
    value = {"at_edge": edges}
    if not edges:
        return Check("selected_epoch_at_edge", "ok", value, "every selecting stage kept an inner epoch")
    return Check("selected_epoch_at_edge", "warn", value, "selected " + "; ".join(edges))


# ---------------------------------------------------------------------------------------------- error sets
def error_set_checks(
    errors: Tensor,
    y: Tensor,
    n_classes: int,
    conflicting: Tensor | None = None,
    what: str = "error set",
) -> list[Check]:
    """Size and spread of an error set (indices into the training set) and, when ``conflicting`` (a boolean per
    training example) is given, how well it finds the bias-conflicting examples (a separate, labelled check).

    ``fail`` when it is empty (the upweighting stage is plain ERM); ``warn`` when it exceeds
    :data:`ERROR_SET_MAX_SHARE` of the data (it is not a minority) or when one class dominates it (more than
    half of it, and over twice that class's share of the data; for two classes, over 90 %)."""
    key = what.replace(" ", "_")
    y = y.reshape(-1).long().cpu()
    errors = errors.reshape(-1).long().cpu()
    n = y.numel()
    per_class = torch.bincount(y[errors], minlength=n_classes).tolist() if errors.numel() else [0] * n_classes
    class_n = torch.bincount(y, minlength=n_classes).tolist()
    share = errors.numel() / max(n, 1)
    value = {
        "size": int(errors.numel()),
        "share": share,
        "per_class": per_class,
        "share_of_class": [e / c if c else None for e, c in zip(per_class, class_n)],
    }
    if errors.numel() == 0:
        size = Check(f"{key}_size", "fail", value, f"the {what} is empty: the upweighting stage is plain ERM")
    elif share > ERROR_SET_MAX_SHARE:
        size = Check(
            f"{key}_size",
            "warn",
            value,
            f"the {what} holds {_pct(share)} of the training set ({errors.numel()} / {n}): not a minority; the model "
            "that found it had not learned the majority rule yet",
        )
    else:
        size = Check(f"{key}_size", "ok", value, f"{errors.numel()} / {n} training examples ({_pct(share)})")
    checks = [size]
    if errors.numel():
        top = max(range(n_classes), key=lambda c: per_class[c])
        top_share = per_class[top] / errors.numel()
        prior = class_n[top] / max(n, 1)
        limit = 0.9 if n_classes == 2 else max(0.5, 2 * prior)
        spread = {"dominant_class": top, "dominant_share": top_share, "class_share_of_data": prior}
        if top_share > limit:
            checks.append(
                Check(
                    f"{key}_classes",
                    "warn",
                    spread,
                    f"class {top} holds {_pct(top_share)} of the {what} (its share of the data: {_pct(prior)}): "
                    "the upweighting mostly rebalances classes",
                )
            )
        else:
            checks.append(Check(f"{key}_classes", "ok", spread, f"largest class share {_pct(top_share)}"))
    if conflicting is not None:
        checks.append(error_set_vs_conflicting(errors, conflicting, what))
    return checks


def error_set_vs_conflicting(errors: Tensor, conflicting: Tensor, what: str = "error set") -> Check:
    """Precision and recall of an error set for the bias-conflicting examples (reads attribute labels).
    ``warn`` when its precision is no better than the conflicting share of the data (it finds them no better
    than a random pick) or its recall is below 10 %."""
    key = what.replace(" ", "_")
    conflicting = conflicting.reshape(-1).bool().cpu()
    errors = errors.reshape(-1).long().cpu()
    n_conf, base = int(conflicting.sum()), float(conflicting.float().mean()) if conflicting.numel() else 0.0
    hit = int(conflicting[errors].sum()) if errors.numel() else 0
    precision = hit / errors.numel() if errors.numel() else math.nan
    recall = hit / n_conf if n_conf else math.nan
    value = {"precision": precision, "recall": recall, "conflicting_share": base}
    text = f"precision {_pct(precision)}, recall {_pct(recall)} for the bias-conflicting examples ({_pct(base)})"
    bad = errors.numel() and n_conf and (precision <= base or recall < 0.1)
    return Check(f"{key}_vs_conflicting", "warn" if bad else "ok", value, text, uses_labels=True)


# ---------------------------------------------------------------------------------------------- weights
def effective_sample_size(weights: Tensor) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` of non-negative weights (0 when they are all 0)."""
    w = weights.reshape(-1).double()
    total = float(w.sum())
    squares = float((w * w).sum())
    return total * total / squares if squares > 0 else 0.0


def top_share(weights: Tensor, fraction: float = 0.01) -> float:
    """Share of the total weight held by the top ``fraction`` of examples (at least one)."""
    w = weights.reshape(-1).double()
    total = float(w.sum())
    if total <= 0 or w.numel() == 0:
        return math.nan
    k = max(1, math.ceil(fraction * w.numel()))
    return float(w.topk(k).values.sum()) / total


def weight_checks(weights: Tensor, conflicting: Tensor | None = None, what: str = "example weights") -> list[Check]:
    """Effective sample size and concentration of per-example weights; with ``conflicting``, the mean weight of
    bias-conflicting against aligned examples (labelled). ``warn`` when the effective sample size is below
    :data:`ESS_MIN_SHARE` of the examples or the top 1 % hold more than :data:`TOP_SHARE_MAX` of the weight."""
    key = what.replace(" ", "_")
    w = weights.reshape(-1).double().cpu()
    n = w.numel()
    ess = effective_sample_size(w)
    top = top_share(w)
    value = {"ess": ess, "ess_share": ess / max(n, 1), "top1pct_share": top, "n": n}
    text = f"effective sample size {ess:.0f} of {n} ({_pct(ess / max(n, 1))}); top 1 % hold {_pct(top)} of the weight"
    if ess / max(n, 1) < ESS_MIN_SHARE or (not math.isnan(top) and top > TOP_SHARE_MAX):
        checks = [Check(f"{key}_ess", "warn", value, f"the {what} sit on few examples: {text}")]
    else:
        checks = [Check(f"{key}_ess", "ok", value, text)]
    if conflicting is not None:
        conflicting = conflicting.reshape(-1).bool().cpu()
        if conflicting.any() and (~conflicting).any():
            conf, alig = float(w[conflicting].mean()), float(w[~conflicting].mean())
            ratio = conf / alig if alig > 0 else math.inf
            checks.append(
                Check(
                    f"{key}_on_conflicting",
                    "ok" if ratio > 1 else "warn",
                    {"mean_conflicting": conf, "mean_aligned": alig, "ratio": ratio},
                    f"mean weight {conf:.3g} on bias-conflicting examples vs {alig:.3g} on aligned ones"
                    + ("" if ratio > 1 else ": the weighting does not favour the conflicting examples"),
                    uses_labels=True,
                )
            )
    return checks


# ---------------------------------------------------------------------------------------------- group weights
def group_weight_check(
    q_max_history: Sequence[float], q_group_history: Sequence[int], final_q: Sequence[float]
) -> Check:
    """GroupDRO's adversary: ``warn`` when the largest group weight was at least :data:`COLLAPSE_Q` at the end of
    every epoch (the run optimised one group only). Reports the final weights' effective number of groups
    ``1 / Σ q²``."""
    q = torch.as_tensor(list(final_q), dtype=torch.float64)
    effective = float(1.0 / (q * q).sum()) if q.numel() and float((q * q).sum()) > 0 else math.nan
    collapsed = [float(v) >= COLLAPSE_Q for v in q_max_history]
    value = {
        "q_max_per_epoch": [float(v) for v in q_max_history],
        "q_max_group_per_epoch": [int(g) for g in q_group_history],
        "final_q": [float(v) for v in final_q],
        "effective_groups": effective,
    }
    if collapsed and all(collapsed):
        groups = sorted(set(int(g) for g in q_group_history))
        return Check(
            "group_weights_collapse",
            "warn",
            value,
            f"the group weights sat on one group (q ≥ {COLLAPSE_Q:g}; group {', '.join(map(str, groups))}) at the end "
            "of every epoch: the other groups were barely trained on (eta too large?)",
        )
    return Check("group_weights_collapse", "ok", value, f"final weights spread over {effective:.1f} groups (1 / Σ q²)")


# ---------------------------------------------------------------------------------------------- two models
def agreement(pred_a: Tensor, pred_b: Tensor) -> float:
    """Share of examples on which two models predict the same class."""
    return float((pred_a == pred_b).float().mean()) if pred_a.numel() else math.nan


def accuracy_on_errors(pred: Tensor, other_pred: Tensor, y: Tensor) -> float:
    """Accuracy of ``pred`` on the examples ``other_pred`` gets wrong (NaN when it gets none wrong)."""
    wrong = other_pred != y
    return float((pred[wrong] == y[wrong]).float().mean()) if bool(wrong.any()) else math.nan


def disagreement_checks(
    pred_a: Tensor, pred_b: Tensor, conflicting: Tensor | None = None, names: tuple[str, str] = ("teacher", "student")
) -> list[Check]:
    """How often two models trained side by side predict differently (``warn`` below :data:`MIN_DISAGREEMENT`:
    the second learned the first's rule); with ``conflicting``, the disagreement on bias-conflicting against
    aligned examples (labelled; ``warn`` when it is not higher on the conflicting ones)."""
    a, b = names
    key = f"{a}_{b}_disagreement"
    differ = pred_a.reshape(-1) != pred_b.reshape(-1)
    rate = float(differ.float().mean()) if differ.numel() else math.nan
    value = {"disagreement": rate}
    if rate < MIN_DISAGREEMENT:
        checks = [Check(key, "warn", value, f"the {a} predicts as the {b} on {_pct(1 - rate)} of the examples")]
    else:
        checks = [Check(key, "ok", value, f"{a} and {b} disagree on {_pct(rate)} of the examples")]
    if conflicting is not None:
        conflicting = conflicting.reshape(-1).bool().cpu()
        if conflicting.any() and (~conflicting).any():
            on_conf, on_alig = float(differ[conflicting].float().mean()), float(differ[~conflicting].float().mean())
            checks.append(
                Check(
                    f"{key}_on_conflicting",
                    "ok" if on_conf > on_alig else "warn",
                    {"conflicting": on_conf, "aligned": on_alig},
                    f"they disagree on {_pct(on_conf)} of the bias-conflicting and {_pct(on_alig)} of the aligned "
                    "examples" + ("" if on_conf > on_alig else ": not where the bias is"),
                    uses_labels=True,
                )
            )
    return checks


def student_error_check(wrong_per_epoch: Sequence[float]) -> Check:
    """A student meant to stay biased (ULE, mistake reweighting): its training error per epoch. ``warn`` when it
    falls below :data:`STUDENT_MIN_ERROR` within the first half of training: from then on the teacher learns
    from a student that no longer errs, the minority included."""
    errs = [float(v) for v in wrong_per_epoch]
    below = next((i + 1 for i, v in enumerate(errs) if v < STUDENT_MIN_ERROR), None)
    value = {"train_error_per_epoch": errs, "first_epoch_below": below}
    if below is not None and below <= max(1, len(errs) // 2):
        return Check(
            "student_keeps_erring",
            "warn",
            value,
            f"the student's training error fell below {_pct(STUDENT_MIN_ERROR)} at epoch {below} of {len(errs)}: "
            "it stopped making mistakes early (memorised the minority; a regularised student keeps its shortcut)",
        )
    last = f"{_pct(errs[-1])} at the last epoch" if errs else "not logged"
    return Check("student_keeps_erring", "ok", value, f"student training error {last}")


def saliency_mass_check(scores: Tensor, k: int) -> Check:
    """How much of the saliency the ``k`` masked units of each example held (``scores``: |gradient| per unit,
    shape ``(N, U)``). ``warn`` when the mass is below :data:`SALIENCY_MIN_CONCENTRATION` times the masked
    share of the units: the saliency is so diffuse that masking its top removes nothing specific."""
    s = scores.reshape(scores.shape[0], -1).double().abs()
    total = s.sum(dim=1)
    kept = total > 0
    share = k / s.shape[1]
    mass = float((s[kept].topk(k, dim=1).values.sum(dim=1) / total[kept]).mean()) if kept.any() else math.nan
    value = {"masked_mass": mass, "masked_share_of_units": share, "examples": int(s.shape[0])}
    text = f"the masked {_pct(share)} of the inputs held {_pct(mass)} of the student's saliency"
    if math.isnan(mass) or mass < SALIENCY_MIN_CONCENTRATION * share:
        return Check("saliency_mass_masked", "warn", value, text + ": the saliency is diffuse (or zero)")
    return Check("saliency_mass_masked", "ok", value, text)
