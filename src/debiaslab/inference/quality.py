"""Score inferred groups against a dataset's true groups: called after inference, never by an inferrer."""

from __future__ import annotations

from typing import Any

from debiaslab.data.core import DatasetBundle
from debiaslab.evaluation.group_inference import inference_quality
from debiaslab.inference.base import InferredGroups


def score_groups(bundle: DatasetBundle, groups: InferredGroups) -> dict[str, Any]:
    """Per split: counts per (class, pseudo-group) and, where the split has attributes, precision / recall / F1 of
    the minority against the bias-conflicting examples and ARI / NMI against the true groups."""
    out: dict[str, Any] = {}
    for name, split in groups.splits.items():
        ds = getattr(bundle, name)
        known = ds.has_attrs
        conflicting = ~ds.is_aligned if known and ds.aligned_groups else None
        out[name] = inference_quality(
            ds.y,
            split.pseudo,
            split.minority,
            ds.n_classes,
            groups.n_per_class,
            ds.group if known else None,
            conflicting,
        )
    return out
