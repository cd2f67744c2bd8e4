"""A debiaslab plugin: one dataset, one model and one method, each registered with the decorator debiaslab's own
use. Import it with ``--imports my_extension`` (``train``, ``tune``) or ``imports: [my_extension]`` (a suite)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data import DatasetBundle, GroupDataset, register_dataset
from debiaslab.engine.stage import StepContext
from debiaslab.methods.base import Method
from debiaslab.methods.hparams import Default, TrainHparams
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, uniform
from debiaslab.methods.stages import method_stage
from debiaslab.models.base import Backbone, flat_dim
from debiaslab.models.registry import register_model


# ---------------------------------------------------------------------------------------------- a dataset
def blobs(n: int, agree: float, split: str, seed: int) -> GroupDataset:
    """Two Gaussian classes on feature 0; feature 1 is a shortcut equal to the class for a share ``agree``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    attr = torch.where(torch.rand(n, generator=g) < agree, y, 1 - y)  # the shortcut's value
    x = torch.randn(n, 2, generator=g) * 0.8
    x[:, 0] += 2.0 * y - 1.0
    x[:, 1] += 3.0 * attr - 1.5
    # attribute c is the aligned one of class c (GroupDataset's default when there are as many of each)
    return GroupDataset(x=x, y=y, attr=attr, n_classes=2, n_attrs=2, name="two_blobs", split=split)


@register_dataset("two_blobs")
def build_two_blobs(
    data_root: Path, cache_dir: Path, *, n: int = 800, agree: float = 0.95, seed: int = 0
) -> DatasetBundle:
    """Two blobs whose class a shortcut feature predicts for ``agree`` of training; validation and test unbiased."""
    return DatasetBundle(
        name="two_blobs",
        train=blobs(n, agree, "train", seed),
        val=blobs(n // 4, 0.5, "val", seed + 1),
        test=blobs(n // 2, 0.5, "test", seed + 2),
        recipe={"dataset": "two_blobs", "n": n, "agree": agree, "seed": seed},
        default_model="small_mlp",  # what runs use unless the user or a preset chooses a model
    )


# ---------------------------------------------------------------------------------------------- a model
class SmallMLP(Backbone):
    """A backbone is ``head(features(x))``: set ``feature_dim`` and ``head``, write ``features``."""

    def __init__(self, in_dim: int, n_classes: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU())
        self.feature_dim = width
        self.head = nn.Linear(width, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))


@register_model("small_mlp")
def small_mlp(input_shape: tuple[int, ...], n_classes: int, *, width: int = 16) -> SmallMLP:
    """One hidden layer of ``width`` units (options like ``width`` are set with --hp model_kwargs={width: 32})."""
    return SmallMLP(flat_dim(input_shape), n_classes, width)


# ---------------------------------------------------------------------------------------------- a method
@dataclass
class FocalHparams(TrainHparams):
    """The usual hyperparameters (model, optimiser, epochs, selection) plus the focusing parameter."""

    gamma: float = 2.0


@register_method("focal")
class Focal(Method):
    """Focal loss: the cross-entropy of each example scaled by (1 - p_correct)^gamma."""

    summary = "focal loss (Lin et al. 2017): easy, shortcut-following examples count less"
    Hparams: ClassVar[type[TrainHparams]] = FocalHparams
    hparam_table: ClassVar[dict] = {"*": {"gamma": Default(2.0, "Lin et al. 2017, focal loss paper: gamma = 2")}}
    search_space: ClassVar[dict] = {**COMMON_SPACE, "gamma": uniform(0.0, 5.0)}  # what `debiaslab tune` searches

    def _fit(self, train, val, trainer):
        rule = self.selection_rule(val)  # the epoch is selected on validation by this rule
        gamma = self.hparams.gamma

        def build():
            model = self.build_model(train)

            def loss(batch, ctx: StepContext) -> Tensor:
                ce = F.cross_entropy(model(batch.x), batch.y, reduction="none")
                return ((1 - torch.exp(-ce)) ** gamma * ce).mean()

            return method_stage(self, "focal", train, rule, modules=model, loss_fn=loss, predict_fn=model)

        stage, result = trainer.run_stage("focal", build, train, val)  # the engine trains, selects, checkpoints
        return self.fit_result(train, stage.modules, [result], rule)
