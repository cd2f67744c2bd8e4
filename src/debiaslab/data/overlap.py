"""Overlapping subgroups: an example may belong to several (a comment can mention several identities).

A :class:`GroupDataset` has one attribute per example, so its groups are disjoint. WILDS evaluates CivilComments
on overlapping groups instead: for each identity and each label, the accuracy over every comment that mentions
that identity, and the worst of these 16. :class:`OverlappingGroupDataset` keeps the multi-hot memberships
beside the disjoint attribute, and :func:`overlapping_group_accuracy` computes that evaluation from logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset


class OverlappingGroupDataset(GroupDataset):
    """A :class:`GroupDataset` plus ``memberships`` ``(N, M)`` bool: which of M overlapping subgroups each example
    belongs to (examples may be in none or several). ``subset`` keeps them aligned with the examples."""

    def __init__(self, *, memberships: Tensor, membership_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        memberships = torch.as_tensor(memberships, dtype=torch.bool)
        if memberships.ndim != 2 or memberships.shape[0] != len(self):
            raise ValueError(f"memberships must have shape ({len(self)}, M); got {tuple(memberships.shape)}")
        if memberships.shape[1] != len(membership_names):
            raise ValueError(f"{memberships.shape[1]} membership columns but {len(membership_names)} names")
        self.memberships = memberships
        self.membership_names = list(membership_names)

    def subset(self, index: Tensor, split: str | None = None) -> OverlappingGroupDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        base = super().subset(index, split)
        return OverlappingGroupDataset(
            memberships=self.memberships[index],
            membership_names=self.membership_names,
            y=base.y,
            attr=base.attr,
            n_classes=base.n_classes,
            n_attrs=base.n_attrs,
            x=base.x,
            loader=base.loader,
            transform=base.transform,
            aligned_groups=base.aligned_groups,
            name=base.name,
            split=base.split,
        )

    def overlapping_accuracy(self, logits: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """:func:`overlapping_group_accuracy` of ``logits`` (N, K) on this split."""
        return overlapping_group_accuracy(
            logits, self.y, self.memberships, self.membership_names, self.n_classes, class_names
        )


def overlapping_group_accuracy(
    logits: Tensor,
    y: Tensor,
    memberships: Tensor,
    names: Sequence[str],
    n_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy per (subgroup, class) over every example in the subgroup, and the worst of them (WILDS).

    Returns ``{"accuracy", "worst_group", "worst", "groups": [{"subgroup", "y", "class", "n", "accuracy"}]}``;
    groups with no examples have accuracy NaN and are left out of ``worst_group`` (NaN if all are empty).
    """
    pred = torch.as_tensor(logits).argmax(dim=1).cpu()
    y = torch.as_tensor(y).cpu().long()
    member = torch.as_tensor(memberships, dtype=torch.bool).cpu()
    correct = (pred == y).double()
    rows: list[dict[str, Any]] = []
    for m, name in enumerate(names):
        for c in range(n_classes):
            mask = member[:, m] & (y == c)
            n = int(mask.sum())
            rows.append(
                {
                    "subgroup": name,
                    "y": c,
                    "class": class_names[c] if class_names else str(c),
                    "n": n,
                    "accuracy": float(correct[mask].mean()) if n else float("nan"),
                }
            )
    present = [r for r in rows if r["n"] > 0]
    worst = min(present, key=lambda r: r["accuracy"]) if present else None
    return {
        "accuracy": float(correct.mean()) if len(y) else float("nan"),
        "worst_group": worst["accuracy"] if worst else float("nan"),
        "worst": f"{worst['subgroup']}, {worst['class']}" if worst else None,
        "groups": rows,
    }
