"""What the last-layer retraining methods (CRT, ReWeightCRT, AFR) share: a base ERM model, its frozen embeddings, a
head trained on them as an engine stage, and the head put back into the model.

The base model is trained here as stage ``erm`` (selection ``last``: SubpopBench's two-stage methods load the base
run's final ``model.pkl``; the stage name seeds it as the ``erm`` method) or read from a finished run (``base_run``).
The head stage trains only a linear layer on the penultimate features of the frozen model, computed once in eval
mode for the training and the validation split; it selects its epoch on the validation embeddings by the method's
rule, so its history and selection are the engine's. The deployed model is the base model with that head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.stage import Stage, StageResult
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.hparams import TrainHparams
from debiaslab.methods.stages import method_ce_stage
from debiaslab.methods.teachers import check_backbone, load_finished_model
from debiaslab.models.base import Backbone

log = logging.getLogger(__name__)


def embed(trainer: Trainer, model: Backbone, data: GroupDataset, split: str | None = None) -> GroupDataset:
    """``data`` with the frozen model's penultimate features as inputs (eval mode; labels, attributes kept)."""
    with eval_mode(model):
        features = trainer.predict(model.features, data)
    return data.replaced(x=features, transform=None, split=split or data.split)


@dataclass
class LastLayerHparams(TrainHparams):
    """The training fields configure the base ERM stage; ``head_*`` the head stage where they are set (None: the
    base stage's value). ``base_run``: a finished run (or its ``model.pt``) to re-head instead of training one."""

    base_run: str | None = None
    head_epochs: int | None = None
    head_lr: float | None = None
    head_weight_decay: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_epochs is not None and self.head_epochs < 1:
            raise ConfigError(f"head_epochs {self.head_epochs} must be >= 1 (or None: the base stage's epochs)")
        if self.base_run is not None:
            self.base_run = str(self.base_run)

    def head_optim(self, **overrides: Any) -> Any:
        """The head stage's optimiser: the base settings with ``head_lr`` / ``head_weight_decay`` where set."""
        values = {k: v for k, v in (("lr", self.head_lr), ("weight_decay", self.head_weight_decay)) if v is not None}
        return self.optim_config(**{**values, **overrides})


class LastLayer(Method):
    """Base ERM model (trained or loaded), frozen embeddings, one head stage (:meth:`head_stage`), head installed."""

    family = "last-layer retraining"
    rule_free_training: ClassVar[bool] = True  # the base stage keeps its last epoch; only the head stage selects
    deploys_last_stage: ClassVar[bool] = False  # the last stage trains the head alone, on embeddings
    run_inputs: ClassVar[frozenset[str]] = frozenset({"base_run"})
    #: the head stage's name
    head_name: ClassVar[str] = "head"

    def check_model(self, train: GroupDataset) -> None:
        """The model settings matter only when the base model is trained here."""
        if not getattr(self.hparams, "base_run", None):
            super().check_model(train)

    def head_stage(self, head: nn.Linear, train: GroupDataset, rule: str, trainer: Trainer) -> Stage:
        """The stage that trains ``head`` on the training embeddings ``train``."""
        raise NotImplementedError

    def new_head(self, model: Backbone) -> nn.Linear:
        """The head the stage starts from: a fresh layer (CRT re-initialises the classifier)."""
        return nn.Linear(model.feature_dim, model.n_classes)

    def head_extras(self, train: GroupDataset) -> dict[str, Any]:
        """What the fit reports about the head stage (e.g. its sampling or weights)."""
        return {}

    def base_source(self) -> str:
        base_run = getattr(self.hparams, "base_run", None)
        return f"run {base_run}" if base_run else "trained (stage erm)"

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        model, spec, stages = self.base_model(train, val, trainer)
        return self.fit_head(model, spec, stages, train, val, trainer)

    def fit_head(
        self,
        model: Backbone,
        spec: dict[str, Any],
        stages: list[StageResult],
        train: GroupDataset,
        val: GroupDataset | None,
        trainer: Trainer,
    ) -> FitResult:
        """Embed ``train`` and ``val`` with the frozen ``model``, run the head stage, install the selected head."""
        rule = self.selection_rule(val)
        model.requires_grad_(False)
        emb_train = embed(trainer, model, train)
        emb_val = embed(trainer, model, val) if val is not None else None

        def build() -> Stage:
            return self.head_stage(self.new_head(model), emb_train, rule, trainer)

        stage, result = trainer.run_stage(self.head_name, build, emb_train, emb_val)
        head = stage.modules
        assert isinstance(head, nn.Linear)
        model.head = head.to(next(model.parameters()).device)
        model.requires_grad_(True)
        return FitResult(
            model=model,
            model_spec=spec,
            stages=[*stages, result],
            selection=result.selection,
            selected={"stage": result.name, "epoch": result.selected_epoch, "score": result.score},
            extras={"base": self.base_source(), **self.head_extras(train)},
        )

    def base_model(
        self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer
    ) -> tuple[Backbone, dict[str, Any], list[StageResult]]:
        """The frozen ERM model: loaded from ``base_run`` (shape and classes checked) or trained as stage ``erm``
        on ``train`` keeping its last epoch (``val`` is only scored, for the history)."""
        base_run = getattr(self.hparams, "base_run", None)
        if base_run:
            model, spec = load_finished_model(base_run, f"{self.name} base_run", "erm")
            shape, k = tuple(int(d) for d in spec["input_shape"]), int(spec["n_classes"])
            if shape != tuple(train.input_shape) or k != train.n_classes:
                raise ConfigError(
                    f"{self.name} base_run {base_run!r} holds a model for inputs {shape} with {k} classes, but "
                    f"{train.name}/{train.split} has inputs {tuple(train.input_shape)} with {train.n_classes} classes"
                )
            log.info("%s: base model loaded from %s (training hyperparameters unused)", self.name, base_run)
            return check_backbone(model, base_run, self.name).to(trainer.device), spec, []

        def build() -> Stage:
            return method_ce_stage(self, "erm", self.build_model(train), train, "last")

        stage, result = trainer.run_stage("erm", build, train, val)
        return check_backbone(stage.modules, "the base ERM stage", self.name), self.model_spec(train), [result]
