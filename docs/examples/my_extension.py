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
class FloodHparams(TrainHparams):
    """The usual hyperparameters (model, optimiser, epochs, selection) plus the flood level."""

    flood: float = 0.1


@register_method("flood")
class Flood(Method):
    """Flooding: once the mean training loss falls below the flood level b, it is pushed back up to b."""

    summary = "flooding (Ishida et al. 2020): the training loss is kept from going below a level b"
    Hparams: ClassVar[type[TrainHparams]] = FloodHparams
    hparam_table: ClassVar[dict] = {"*": {"flood": Default(0.1, "example value, not tuned")}}
    search_space: ClassVar[dict] = {**COMMON_SPACE, "flood": uniform(0.0, 0.5)}  # what `debiaslab tune` searches

    def _fit(self, train, val, trainer):
        rule = self.selection_rule(val)  # the epoch is selected on validation by this rule
        b = self.hparams.flood

        def build():
            model = self.build_model(train)

            def loss(batch, ctx: StepContext) -> Tensor:
                ce = F.cross_entropy(model(batch.x), batch.y)
                return (ce - b).abs() + b

            return method_stage(self, "flood", train, rule, modules=model, loss_fn=loss, predict_fn=model)

        stage, result = trainer.run_stage("flood", build, train, val)  # the engine trains, selects, checkpoints
        return self.fit_result(train, stage.modules, [result], rule)
