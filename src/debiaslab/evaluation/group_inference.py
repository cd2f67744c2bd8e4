"""How well inferred groups match the true ones: read only after inference, never fed back into it.

The inferred *minority* (a pseudo-group other than the class's majority, e.g. JTT's error set) is scored as a
detector of bias-conflicting examples (precision / recall / F1); the pseudo-groups as a whole are compared with the
true groups by the adjusted Rand index and normalised mutual information (scikit-learn), and counted per
(class, pseudo-group) with how many of each are conflicting.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def minority_scores(minority: Tensor, conflicting: Tensor) -> dict[str, float | int]:
    """Precision, recall and F1 of the inferred minority set against the bias-conflicting examples."""
    found = minority.bool().numpy()
    truth = conflicting.bool().numpy()
    hit = int((found & truth).sum())
    n_found, n_true = int(found.sum()), int(truth.sum())
    precision = hit / n_found if n_found else float("nan")
    recall = hit / n_true if n_true else float("nan")
    f1 = 2 * hit / (n_found + n_true) if n_found + n_true else float("nan")
    return {
        "minority": n_found,
        "conflicting": n_true,
        "hits": hit,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def partition_scores(pseudo_groups: Tensor, true_groups: Tensor) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information of two partitions of the same examples."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, b = pseudo_groups.numpy(), true_groups.numpy()
    return {"ari": float(adjusted_rand_score(b, a)), "nmi": float(normalized_mutual_info_score(b, a))}


def count_table(
    y: Tensor, pseudo: Tensor, n_classes: int, n_pseudo: int, conflicting: Tensor | None
) -> list[dict[str, Any]]:
    """One row per (class, pseudo-group): its size and, where known, how many of it are bias-conflicting."""
    yv, pv = y.numpy(), pseudo.numpy()
    cv = conflicting.bool().numpy() if conflicting is not None else None
    rows = []
    for c in range(n_classes):
        for p in range(n_pseudo):
            mask = (yv == c) & (pv == p)
            n = int(mask.sum())
            if not n:
                continue
            row: dict[str, Any] = {"class": c, "pseudo_group": p, "n": n}
            if cv is not None:
                row["conflicting"] = int((cv & mask).sum())
            rows.append(row)
    return rows


def inference_quality(
    y: Tensor,
    pseudo: Tensor,
    minority: Tensor,
    n_classes: int,
    n_pseudo: int,
    true_groups: Tensor | None,
    conflicting: Tensor | None,
) -> dict[str, Any]:
    """Every score of one split's inferred groups; the truth-based ones only where the truth is known."""
    out: dict[str, Any] = {
        "n": int(y.numel()),
        "minority_share": float(minority.float().mean()) if y.numel() else float("nan"),
        "counts": count_table(y, pseudo, n_classes, n_pseudo, conflicting),
    }
    if conflicting is not None:
        out.update(minority_scores(minority, conflicting))
    if true_groups is not None:
        out.update(partition_scores(y * n_pseudo + pseudo, true_groups))
    return out
