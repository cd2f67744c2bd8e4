"""From the audit's evidence to its figures: which examples go in which panel, and their input gradients.

Image inputs get every figure; other inputs (features, text embeddings) get the counts, a classes x features
saliency heatmap and the per-group accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from debiaslab.audit import figures
from debiaslab.audit.reference import Grouping
from debiaslab.audit.saliency import class_means, input_gradients, is_image, magnitude_maps, per_class_sample
from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.evaluation.metrics import EvalReport

#: figures by key: file name (which are drawn depends on the inputs)
FIGURE_FILES = {
    "counts": "counts.png",
    "examples": "examples.png",
    "saliency_mean": "saliency_mean.png",
    "saliency_examples": "saliency_examples.png",
    "saliency_features": "saliency_features.png",
    "group_accuracy": "group_accuracy.png",
}
MAX_CLASSES = 20  # classes drawn in the figures (the page's tables and audit.json have them all)


@dataclass
class Evidence:
    """What the figures are drawn from. ``split`` names the evaluation split (``validation``, or ``test`` where
    the protocol has none); ``loss`` and ``wrong`` are the reference's per training example; ``minority`` marks
    training examples outside the majority groups; ``hardest`` / ``easiest`` hold indices per class."""

    train: GroupDataset
    val: GroupDataset
    split: str
    models: dict[str, nn.Module]
    trainer: Trainer
    grouping: Grouping
    counts: dict[str, Tensor]
    reports: dict[str, EvalReport]
    loss: Tensor
    wrong: Tensor
    minority: Tensor
    hardest: list[Tensor]
    easiest: list[Tensor]
    seed: int


def draw_figures(out: Path, ev: Evidence, *, saliency_examples: int, per_class: int) -> dict[str, Path]:
    """Every figure the inputs allow, into ``out``; returns ``{key: path}``."""
    path = {key: out / name for key, name in FIGURE_FILES.items()}
    grouping = ev.grouping
    shown = min(ev.train.n_classes, MAX_CLASSES)
    title = f"examples per class and {grouping.label}"
    counts = {split: table[:shown] for split, table in ev.counts.items()}
    drawn = {"counts": figures.counts_figure(counts, grouping.names, title, path["counts"])}
    sample = per_class_sample(ev.val.y, shown, per_class, ev.seed)
    grads = {name: input_gradients(model, ev.val, sample, ev.trainer) for name, model in ev.models.items()}
    magnitudes = {name: class_means(magnitude_maps(g), ev.val.y[sample], shown) for name, g in grads.items()}
    if is_image(tuple(ev.train.input_shape)):
        drawn["examples"] = examples(ev, shown, path["examples"])
        rows = {}
        for name, g in grads.items():
            rows[f"{name} |g|"] = figures.heat_rgb(figures.scaled(magnitudes[name]))
            rows[f"{name} g"] = figures.signed_rgb(class_means(g, ev.val.y[sample], shown), per_item=False)
        mean_images = class_means(figures.display_images(ev.val, sample), ev.val.y[sample], shown)
        drawn["saliency_mean"] = figures.mean_saliency_figure(mean_images, rows, path["saliency_mean"], split=ev.split)
        drawn["saliency_examples"] = example_saliency(ev, shown, saliency_examples, path["saliency_examples"])
    else:
        drawn["saliency_features"] = figures.feature_saliency_figure(magnitudes, path["saliency_features"])
    matrices = {name: r.accuracy_matrix()[:shown] for name, r in ev.reports.items()}
    if grouping.source == "inferred":
        matrices.pop("reference")  # its accuracy on groups made from its own predictions says nothing
    if matrices:
        drawn["group_accuracy"] = figures.group_accuracy_figure(
            matrices, counts[ev.split], grouping.names, path["group_accuracy"], split=ev.split
        )
    return drawn


def examples(ev: Evidence, shown: int, path: Path) -> Path:
    k = max((h.numel() for h in ev.hardest), default=0)
    index = [padded(h, k) + padded(e, k) for h, e in zip(ev.hardest[:shown], ev.easiest[:shown])]
    if ev.grouping.source == "attributes":
        minority_label = "bias-conflicting (attribute not the class's aligned one)"
    elif ev.grouping.names == ["reference right", "reference wrong"]:
        minority_label = "the reference gets it wrong"
    else:
        minority_label = f"in a minority group of the {ev.grouping.label}"
    return figures.examples_figure(
        gather_images(ev.train, index), gather(ev.minority, index), k, path, minority_label=minority_label
    )


def example_saliency(ev: Evidence, shown: int, m: int, path: Path) -> Path:
    """The ``m`` hardest and ``m`` easiest training images of each class beside each model's signed gradient."""
    index = [padded(h, m) + padded(e, m) for h, e in zip(ev.hardest[:shown], ev.easiest[:shown])]
    picked = torch.tensor([i for row in index for i in row if i >= 0], dtype=torch.long)
    maps = {}
    for name, model in ev.models.items():
        grad = input_gradients(model, ev.train, picked, ev.trainer)
        maps[name] = scatter_rows(figures.signed_rgb(grad, per_item=True), index)
    labels = [f"hardest {j + 1}" for j in range(m)] + [f"easiest {j + 1}" for j in range(m)]
    return figures.example_saliency_figure(
        gather_images(ev.train, index), maps, gather(ev.minority, index), labels, path
    )


def padded(index: Tensor, k: int) -> list[int]:
    """The first ``k`` of ``index``, padded with -1 to ``k``."""
    row = [int(i) for i in index[:k]]
    return row + [-1] * (k - len(row))


def gather(values: Tensor, index: list[list[int]]) -> Tensor:
    """``values[index]`` as a ``(rows, cols)`` bool tensor, False where the index is -1."""
    idx = torch.tensor(index, dtype=torch.long)
    return values.bool()[idx.clamp_min(0)] & (idx >= 0)


def gather_images(data: GroupDataset, index: list[list[int]]) -> Tensor:
    """``(rows, cols, H, W, 3)`` display images, NaN where the index is -1."""
    idx = torch.tensor(index, dtype=torch.long)
    images = figures.display_images(data, idx.flatten().clamp_min(0))
    images = images.reshape(*idx.shape, *images.shape[1:])
    return torch.where((idx >= 0)[..., None, None, None], images, torch.full_like(images, float("nan")))


def scatter_rows(panels: Tensor, index: list[list[int]]) -> Tensor:
    """Panels computed for the valid (>= 0) entries of ``index`` in row order, laid out as ``(rows, cols, ...)``
    with NaN for the -1 entries."""
    idx = torch.tensor(index, dtype=torch.long)
    out = torch.full((*idx.shape, *panels.shape[1:]), float("nan"))
    out[idx >= 0] = panels
    return out
