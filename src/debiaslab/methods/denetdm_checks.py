"""DeNetDM's premises, as checks on its experts' predictions or recorded metrics.

DeNetDM assumes that stage 1 splits the product of experts into a biased deep expert and a debiased shallow one,
and that stage 2's target then learns beyond the biased expert. These functions read metric dicts (``accuracy``,
``loss``, ``aligned``, ``conflicting``; from a live evaluation or from a run record's ``readouts``) or
predictions, so a finished run can be re-scored from its ``final.json`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from debiaslab.evaluation.health import Check, accuracy_on_errors, agreement, at_chance

#: experts agreeing on more than this share of the examples did not split
MAX_AGREEMENT = 0.95
#: the target must beat chance by this much on the biased expert's errors
TARGET_MARGIN = 0.05
NAMES = {"deep": "deep expert", "shallow": "shallow expert", "target": "target"}


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) or math.isnan(x) else f"{100 * x:.1f} %"


def _fmt(metrics: Mapping[str, Any]) -> str:
    text = f"accuracy {_pct(metrics.get('accuracy'))}"
    loss = metrics.get("loss")
    return text + (f", loss {loss:.3f}" if isinstance(loss, int | float) and math.isfinite(loss) else "")


def experts_alive_check(
    metrics: Mapping[str, Mapping[str, Any]],
    n_classes: int,
    where: str,
    majority: float | None = None,
    source: str = "run",
) -> Check:
    """``fail`` when an expert's read-out learned nothing on ``where``: accuracy within the chance margin of the
    majority share and, when the metrics hold a loss, near-uniform outputs (a loss at log K; without it a
    confident shortcut on an unbiased split would look the same)."""
    dead = [k for k, m in metrics.items() if at_chance(m["accuracy"], m.get("loss"), n_classes, majority)]
    value = {k: dict(m) for k, m in metrics.items()} | {"split": where, "log_k": math.log(n_classes)}
    if not dead:
        text = "; ".join(f"{NAMES[k]} {_fmt(m)}" for k, m in metrics.items())
        return Check(
            "denetdm_experts_alive", "ok", value, f"neither expert is at chance on {where} ({text})", source=source
        )
    parts = [
        f"the {NAMES[k]} is at chance on {where} ({_fmt(metrics[k])}; log K = {math.log(n_classes):.3f})" for k in dead
    ]
    why = (
        ": stage 1 gave the whole product to the shallow branch, so there is no biased expert to learn beyond"
        if "deep" in dead
        else ": the distillation teacher knows nothing"
    )
    return Check("denetdm_experts_alive", "fail", value, "; ".join(parts) + why, source=source)


def expert_split_check(pred: Mapping[str, Tensor], y: Tensor, where: str) -> Check:
    """How the experts' predictions relate on ``where``: agreement and each one's accuracy on the other's errors.
    ``warn`` when they agree on more than :data:`MAX_AGREEMENT` of the examples (no biased/debiased split)."""
    deep, shallow = pred["deep"], pred["shallow"]
    value = {
        "split": where,
        "agreement": agreement(deep, shallow),
        "deep_on_shallow_errors": accuracy_on_errors(deep, shallow, y),
        "shallow_on_deep_errors": accuracy_on_errors(shallow, deep, y),
    }
    text = (
        f"on {where} the experts agree on {_pct(value['agreement'])}; the shallow expert is right on "
        f"{_pct(value['shallow_on_deep_errors'])} of the deep one's errors, the deep on "
        f"{_pct(value['deep_on_shallow_errors'])} of the shallow one's"
    )
    if value["agreement"] > MAX_AGREEMENT:
        return Check("denetdm_expert_split", "warn", value, text + ": they did not split into two roles")
    return Check("denetdm_expert_split", "ok", value, text)


def target_beyond_check(pred_target: Tensor, pred_deep: Tensor, y: Tensor, n_classes: int, where: str) -> Check:
    """Stage 2's target on the examples the deep (biased) expert gets wrong: ``warn`` when it is no better
    there than chance plus :data:`TARGET_MARGIN` (it learned nothing beyond the biased expert)."""
    acc = accuracy_on_errors(pred_target, pred_deep, y)
    value = {"split": where, "target_on_deep_errors": acc, "deep_errors": int((pred_deep != y).sum())}
    text = f"the target is right on {_pct(acc)} of the deep expert's errors on {where}"
    if not math.isnan(acc) and acc <= 1.0 / n_classes + TARGET_MARGIN:
        return Check("denetdm_target_beyond_biased", "warn", value, text + ": no better than chance there")
    return Check("denetdm_target_beyond_biased", "ok", value, text)


def expert_role_checks(metrics: Mapping[str, Mapping[str, Any]], where: str, source: str = "run") -> list[Check]:
    """With attribute labels: which expert is the biased one (the larger gap between aligned and conflicting
    accuracy), and whether the target beats it on the conflicting examples. ``fail`` when the shallow expert
    is the more biased (the experts' roles are swapped, or the deep one learned nothing)."""
    gaps = {k: metrics[k]["aligned"] - metrics[k]["conflicting"] for k in ("deep", "shallow")}
    value = {
        k: {"aligned": metrics[k].get("aligned"), "conflicting": metrics[k].get("conflicting")} for k in metrics
    } | {"split": where}
    desc = "; ".join(
        f"{NAMES[k]} aligned {_pct(metrics[k]['aligned'])}, conflicting {_pct(metrics[k]['conflicting'])}"
        for k in ("deep", "shallow")
    )
    if gaps["shallow"] > gaps["deep"]:
        role = Check(
            "denetdm_biased_expert",
            "fail",
            value,
            f"on {where} the shallow expert is the biased one, not the deep one ({desc}): the premise that depth "
            "takes the shortcut failed, and stage 2 distils from a biased teacher",
            uses_labels=True,
            source=source,
        )
    else:
        role = Check(
            "denetdm_biased_expert", "ok", value, f"the deep expert is the biased one on {where} ({desc})", True, source
        )
    checks = [role]
    if "target" in metrics:
        biased = max(gaps, key=lambda k: gaps[k])
        target, ref = metrics["target"]["conflicting"], metrics[biased]["conflicting"]
        text = f"target conflicting accuracy {_pct(target)} against the biased ({NAMES[biased]}) {_pct(ref)} on {where}"
        checks.append(
            Check(
                "denetdm_target_vs_biased",
                "ok" if target > ref else "warn",
                {"target_conflicting": target, "biased_expert": biased, "biased_conflicting": ref, "split": where},
                text + ("" if target > ref else ": the target did not learn beyond the biased expert"),
                uses_labels=True,
                source=source,
            )
        )
    return checks
