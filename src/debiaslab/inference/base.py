"""The inferrer contract: ``Inferrer(dataset, **hparams).infer(train, val, trainer)`` -> :class:`InferredGroups`.

An inferrer trains a biased *reference* model through the engine (the recipe of the method it comes from, at that
method's dataset preset) or is handed one (``reference=``, e.g. a finished run's model), then maps every training
and validation example to a within-class pseudo-group: 0 is the class's majority (the part the reference model
finds easy, playing "bias-aligned"), the others its minority. :meth:`Inferrer.infer` gives the subclass copies of
the splits with every attribute set to unknown, so inference cannot read one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.stage import Stage
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.methods.hparams import HparamTable, convert_hparams, hparam_names, resolve_hparams
from debiaslab.methods.registry import get_method

log = logging.getLogger(__name__)


@dataclass
class SplitGroups:
    """One split's inferred groups: within-class pseudo-group per example and the minority mask (pseudo != 0)."""

    pseudo: Tensor
    minority: Tensor

    def __post_init__(self) -> None:
        self.pseudo = torch.as_tensor(self.pseudo, dtype=torch.long).reshape(-1).cpu()
        self.minority = torch.as_tensor(self.minority, dtype=torch.bool).reshape(-1).cpu()
        if self.pseudo.numel() != self.minority.numel():
            raise ValueError("pseudo-groups and minority mask differ in length")


@dataclass
class InferredGroups:
    """What an inferrer produced: per split (``train``, ``val``) the pseudo-groups, their number per class, the
    reference model they came from and details worth recording (chosen cluster counts, penalties, ...)."""

    inferrer: str
    n_per_class: int
    splits: dict[str, SplitGroups]
    reference: nn.Module | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoHparams:
    """An inferrer with no settings of its own beyond its reference model's."""


class Inferrer:
    """Base class. Subclasses set ``name``, ``summary``, ``Hparams``/``hparam_table``, ``reference_method``, and
    implement :meth:`train_reference` (unless the reference comes from elsewhere) and :meth:`assign`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: where the inferrer comes from (paper and official code), shown by ``debiaslab infer-groups --list``
    source: ClassVar[str] = ""
    Hparams: ClassVar[type] = NoHparams
    hparam_table: ClassVar[HparamTable] = {}
    #: the registered method whose dataset preset gives the reference model's training recipe
    reference_method: ClassVar[str] = "erm"

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        self.dataset = dataset
        own_names = set(hparam_names(self.Hparams))
        own = {k: v for k, v in hparams.items() if k in own_names}
        rest = {k: v for k, v in hparams.items() if k not in own_names}
        self.hparams, self.hparam_sources = resolve_hparams(self.Hparams, self.hparam_table, dataset, own, self.name)
        method_cls = get_method(self.reference_method)
        try:
            rest = convert_hparams(method_cls.Hparams, rest, self.reference_method)
        except ConfigError as exc:
            raise ConfigError(
                f"group inferrer {self.name!r}: {exc} (its own settings: {', '.join(sorted(own_names)) or 'none'})"
            ) from None
        #: the reference method, built only for its resolved hyperparameters (its dataset preset + overrides)
        self.method = method_cls(dataset=dataset, **rest)

    @classmethod
    def check_hparams(cls, values: dict[str, Any]) -> None:
        """Fail with one line on a setting that is neither the inferrer's nor its reference method's."""
        cls(None, **values)

    def recipe(self) -> dict[str, Any]:
        """Every resolved setting with its source: the inferrer's and its reference model's."""
        return {
            "inferrer": self.name,
            "hparams": _plain(dataclasses.asdict(self.hparams)),
            "hparam_sources": dict(self.hparam_sources),
            "reference_method": self.reference_method,
            "reference_hparams": _plain(dataclasses.asdict(self.method.hparams)),
            "reference_sources": dict(self.method.hparam_sources),
        }

    # ------------------------------------------------------------------ contract
    def infer(
        self,
        train: GroupDataset,
        val: GroupDataset | None,
        trainer: Trainer | None = None,
        reference: nn.Module | None = None,
    ) -> InferredGroups:
        """Pseudo-groups of ``train`` and ``val`` (attributes hidden from the inferrer), from ``reference`` or a
        reference model trained here."""
        trainer = trainer or Trainer(progress=False)
        blind = {"train": train.without_attributes()}
        if val is not None:
            blind["val"] = val.without_attributes()
        if reference is None:
            reference = self.train_reference(blind["train"], trainer)
        reference.to(trainer.device)
        result = self.assign(reference, blind, trainer)
        result.reference = reference
        return result

    def train_reference(self, train: GroupDataset, trainer: Trainer) -> nn.Module:
        raise NotImplementedError

    def assign(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def train_one_stage(
        self, name: str, train: GroupDataset, trainer: Trainer, stage_of: Callable[[nn.Module], Stage]
    ) -> nn.Module:
        """A fresh model of the reference method (built first, so its initialisation does not depend on the rest)
        trained by the one stage ``stage_of(model)``, named ``name``, without validation; returns the model."""
        built: dict[str, nn.Module] = {}

        def build() -> Stage:
            model = built["model"] = self.method.build_model(train)
            return stage_of(model)

        trainer.run_stage(name, build, train, None)
        return built["model"]

    @staticmethod
    def logits(reference: nn.Module, dataset: GroupDataset, trainer: Trainer) -> Tensor:
        """The reference model's logits for every example, from a clean pass in eval mode."""
        with eval_mode(reference):
            return trainer.predict(reference, dataset)

    def error_groups(self, reference: nn.Module, splits: dict[str, GroupDataset], trainer: Trainer) -> InferredGroups:
        """Two pseudo-groups per class: what the reference gets right (0) and wrong (1, the minority)."""
        out = {}
        for name, ds in splits.items():
            wrong = self.logits(reference, ds, trainer).argmax(dim=1) != ds.y
            out[name] = SplitGroups(pseudo=wrong.long(), minority=wrong)
        return InferredGroups(self.name, 2, out)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
