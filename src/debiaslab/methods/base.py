"""The method contract: constructor stores hyperparameters, ``fit`` runs the method's stages on the engine.

Like scikit-learn estimators, ``Method(**hparams)`` only stores; ``fit(train, val)`` returns ``self`` with
``model_`` (the deployed model) and ``fit_result_`` (stages, history, what was selected and why) set.
A method never writes a training loop: it describes :class:`~debiaslab.engine.stage.Stage` objects.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.cost import run_cost
from debiaslab.engine.stage import StageResult
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DebiasLabError, MissingLabelsError
from debiaslab.evaluation.health import Check
from debiaslab.evaluation.metrics import EvalReport
from debiaslab.evaluation.selection import get_rule
from debiaslab.methods.hparams import HparamTable, TrainHparams, convert_hparams, hparam_names, resolve_hparams
from debiaslab.methods.premises import common_checks, common_record_checks
from debiaslab.methods.presets import DATASET_PRESETS
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace
from debiaslab.models import build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requirements:
    """Labels a method needs: bias attributes on the training split and/or on the validation split."""

    train_attrs: bool = False
    val_attrs: bool = False

    def describe(self) -> str:
        needs = [s for s, flag in (("training", self.train_attrs), ("validation", self.val_attrs)) if flag]
        return "attribute labels on " + " and ".join(needs) if needs else "no attribute labels for training"


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a method as a run announces it before training: its length (``epochs``, set by the
    hyperparameter ``epochs_from``; None for a step that is not an epoch loop), learning rate and what it keeps
    (``last``, or the selection rule it picks its epoch by)."""

    name: str
    epochs: int | None
    epochs_from: str = "epochs"
    lr: float | None = None
    selects: str = "last"

    def describe(self) -> str:
        if self.epochs is None:
            return f"{self.name}: {self.selects}"
        keeps = "keeps its last epoch" if self.selects == "last" else f"selects its epoch by {self.selects}"
        lr = f", lr {self.lr:g}" if self.lr is not None else ""
        return f"{self.name}: {self.epochs} epoch(s) ({self.epochs_from}){lr}, {keeps}"


@dataclass
class FitResult:
    """What ``fit`` produced: the deployed model, how to rebuild it, and every stage's history."""

    model: nn.Module
    model_spec: dict[str, Any]
    stages: list[StageResult]
    selection: str
    selected: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)
    #: seconds of training: the stages' own time (a resumed stage counts what it took before), or the time of
    #: ``fit`` for a method without trainer stages; set by :meth:`Method.fit`
    train_time_s: float | None = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return [line for stage in self.stages for line in stage.history]


class Method:
    """Base class. Subclasses set ``name``, ``Hparams``, ``hparam_table``, ``requires``, ``family`` and implement
    ``_fit``."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[TrainHparams]] = TrainHparams
    hparam_table: ClassVar[HparamTable] = {}
    #: what ``debiaslab tune`` searches (hyperparameter -> distribution); methods add their own knobs
    search_space: ClassVar[SearchSpace] = COMMON_SPACE
    requires: ClassVar[Requirements] = Requirements()
    summary: ClassVar[str] = ""
    #: the family ``debiaslab methods`` lists it under (a key of :data:`~debiaslab.methods.families.FAMILIES`)
    family: ClassVar[str] = ""
    #: hyperparameters that change how fast a run goes, not what it computes (e.g. worker processes); they are
    #: left out when deciding whether a run directory holds the same run (``--resume``, ``debiaslab bench``)
    execution_hparams: ClassVar[frozenset[str]] = frozenset()
    #: hyperparameters naming another finished run whose model this method uses (DFR's ``base_run``, a teacher):
    #: checked before training, and compared by the real path they point to when runs are matched
    run_inputs: ClassVar[frozenset[str]] = frozenset()
    #: whether the deployed model is the selected weights of the last trainer stage, so that the other selection
    #: rules of that stage (``report_rules``) can be evaluated on it; False for a method that re-fits a head
    deploys_last_stage: ClassVar[bool] = True
    #: whether training never reads the selection rule: only the last stage selects on validation, so a run's
    #: ``report_rules`` give exactly what a run trained for each of those rules would (one training serves the
    #: rules of a tuning suite that chose the same configuration). False where an earlier stage selects its epoch
    #: by the rule (DeNetDM's experts); a ``plateau`` scheduler, which steps on the selection score, also rules it out
    rule_free_training: ClassVar[bool] = False

    #: the trainer stages run before the final one, as ``(name, hyperparameter giving its epochs, hyperparameter
    #: giving its learning rate (None: ``lr``), whether it selects its epoch by the rule (else keeps its last))``
    earlier_stages: ClassVar[tuple[tuple[str, str, str | None, bool], ...]] = ()
    #: the final trainer stage's name (None: the method's) and the hyperparameter giving its learning rate
    final_stage: ClassVar[tuple[str | None, str | None]] = (None, None)

    @property
    def trains_without_rule(self) -> bool:
        """True when the selection rule cannot change what this configuration trains (see ``rule_free_training``)."""
        return (
            self.rule_free_training and self.deploys_last_stage and getattr(self.hparams, "scheduler", "") != "plateau"
        )

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        self.dataset = dataset
        self.hparams, self.hparam_sources = resolve_hparams(
            self.Hparams, with_dataset_preset(self.hparam_table, dataset, self.Hparams), dataset, hparams, self.name
        )
        self.model_: nn.Module | None = None
        self.fit_result_: FitResult | None = None
        #: further models worth reporting beside the deployed one (e.g. DeNetDM's experts), evaluated by runs
        self.readout_models_: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ contract
    def fit(self, train: GroupDataset, val: GroupDataset | None, *, trainer: Trainer | None = None) -> Method:
        """Run every stage and keep the selected model; labels the method needs are checked first, and the stage
        plan is logged (with progress: a default trainer shows it)."""
        self.check_labels(train, val)
        trainer = trainer or Trainer()
        self.log_plan(val)
        started = time.perf_counter()
        result = self._fit(train, val, trainer)
        if result.train_time_s is None:
            stages = sum(s.wall_time_s for s in result.stages)
            result.train_time_s = round(stages if result.stages else time.perf_counter() - started, 2)
        self.model_, self.fit_result_ = result.model, result
        return self

    def stage_plan(self, val: GroupDataset | None) -> list[PlannedStage]:
        """The stages ``fit`` runs, in order (from :attr:`earlier_stages` and :attr:`final_stage`)."""
        hp, rule = self.hparams, self.selection_rule(val)

        def lr(name: str | None) -> float:
            value = getattr(hp, name) if name else None
            return hp.lr if value is None else value

        plan = [
            PlannedStage(name, getattr(hp, epochs), epochs, lr(lr_name), rule if selects else "last")
            for name, epochs, lr_name, selects in self.earlier_stages
        ]
        name, lr_name = self.final_stage
        return [*plan, PlannedStage(name or self.name, hp.epochs, "epochs", lr(lr_name), rule)]

    def log_plan(self, val: GroupDataset | None) -> None:
        """Log the stage plan; when the user set ``epochs`` but not the length of an earlier stage, say that
        ``epochs`` sets the final stage only."""
        plan = self.stage_plan(val)
        log.info("%s plan: %s", self.name, "; ".join(stage.describe() for stage in plan))
        if self.hparam_sources.get("epochs") != "user" or len(plan) < 2:
            return
        others = [s for s in plan[:-1] if s.epochs is not None and self.hparam_sources.get(s.epochs_from) != "user"]
        if others:
            log.warning(
                "%s: epochs=%d sets the final stage %s only; %s (set with --hp NAME=N)",
                self.name,
                self.hparams.epochs,
                plan[-1].name,
                ", ".join(f"{s.name} runs {s.epochs} ({s.epochs_from})" for s in others),
            )

    @classmethod
    def convert_hparams(cls, values: dict[str, Any]) -> dict[str, Any]:
        """User hyperparameters checked by name and converted to their declared types (``"1e-3"`` -> 0.001);
        a value that does not fit is a one-line ConfigError naming it and the expected type."""
        return convert_hparams(cls.Hparams, values, cls.name)

    def check_setup(self, train: GroupDataset, val: GroupDataset | None) -> None:
        """Everything about this configuration that can fail, checked before a run touches its directory: the
        labels, the runs named by :attr:`run_inputs`, and the model (built once on the meta device, so an unknown
        option or a missing pretrained file fails here). Methods with more to check extend it."""
        self.check_labels(train, val)
        for name in sorted(self.run_inputs):
            value = getattr(self.hparams, name, None)
            if value and not (Path(value) / "model.pt").is_file() and not Path(value).is_file():
                raise ConfigError(
                    f"method {self.name!r}: {name} {str(value)!r} is not a finished run directory (no model.pt) "
                    "nor a model file"
                )
        self.check_model(train)

    def check_model(self, train: GroupDataset) -> None:
        """Build the model once on the meta device (no memory, no compute): an unknown option, a missing or
        mismatched pretrained file fails here. A model that cannot be built there is checked when it trains."""
        shape, n_classes = tuple(train.input_shape), train.n_classes  # read outside: the data stays on its device
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loading weights into meta tensors warns that it copies nothing
                build_model(self.hparams.model, shape, n_classes, **self.hparams.model_kwargs)
        except DebiasLabError:
            raise
        except Exception as exc:
            log.debug("%s: model not checked before training (%s)", self.name, exc)

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        raise NotImplementedError

    @torch.no_grad()
    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits of the deployed model for a batch of model-ready inputs (scikit-learn's ``decision_function``)."""
        model = self._fitted_model()
        model.eval()
        return model(x)

    decision_function = predict_logits

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities (softmax of the logits), one row per input."""
        return torch.softmax(self.predict_logits(x).float(), dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """The predicted class id of each input (``int64``), as scikit-learn's ``predict``."""
        return self.predict_logits(x).argmax(dim=1)

    def evaluate(self, dataset: GroupDataset, trainer: Trainer | None = None, **kwargs: Any) -> EvalReport:
        model = self._fitted_model()
        trainer = trainer or Trainer(progress=False)
        return trainer.evaluate(model, dataset, model, **kwargs)

    # ------------------------------------------------------------------ premise checks
    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Premise checks of the fitted run (:mod:`debiaslab.evaluation.health`). Every method's: the deployed
        model left chance, its training/validation gap, no selecting stage kept its first or last epoch. A
        method adds its own premises (``super().health(...) + [...]``) from what its ``fit`` kept."""
        trainer = trainer or Trainer(progress=False)
        return common_checks(self._fitted_result().stages, self._fitted_model(), train, val, trainer)

    @classmethod
    def record_health(cls, final: dict[str, Any]) -> list[Check]:
        """The checks a finished run's ``final.json`` still supports, for runs written before ``health`` was
        recorded (each marked ``source="record"``); a method adds what its records hold."""
        return common_record_checks(final)

    # ------------------------------------------------------------------ helpers for subclasses
    def selection_rule(self, val: GroupDataset | None) -> str:
        """The configured rule, with ``auto`` resolved from the labels validation has."""
        rule = self.hparams.selection
        if val is None:
            return "last"
        if rule == "auto":
            return "val_worst_group" if val.has_attrs else "val_worst_class"
        return get_rule(rule).name

    def build_model(self, train: GroupDataset, name: str | None = None, **kwargs: Any) -> nn.Module:
        name = name or self.hparams.model
        merged = {**self.hparams.model_kwargs, **kwargs} if name == self.hparams.model else kwargs
        return build_model(name, train.input_shape, train.n_classes, **merged)

    def model_spec(self, train: GroupDataset, name: str | None = None, **kwargs: Any) -> dict[str, Any]:
        name = name or self.hparams.model
        merged = {**self.hparams.model_kwargs, **kwargs} if name == self.hparams.model else kwargs
        return {
            "name": name,
            "kwargs": merged,
            "input_shape": list(train.input_shape),
            "n_classes": train.n_classes,
        }

    def fit_result(
        self,
        train: GroupDataset,
        model: nn.Module,
        stages: list[StageResult],
        selection: str,
        extras: dict[str, Any] | None = None,
    ) -> FitResult:
        """The :class:`FitResult` of a run that deploys ``model``, the selected epoch of its last stage; a sparse run
        (``density < 1``) also reports its measured cost in ``extras["cost"]`` (see ``engine.cost.run_cost``)."""
        last = stages[-1]
        extras = {} if extras is None else extras
        if getattr(self.hparams, "density", 1.0) < 1.0 and "cost" not in extras:
            extras["cost"] = run_cost(model, train.input_shape, stages)
        return FitResult(
            model=model,
            model_spec=self.model_spec(train),
            stages=stages,
            selection=selection,
            selected={"stage": last.name, "epoch": last.selected_epoch, "score": last.score},
            extras=extras,
        )

    def check_labels(self, train: GroupDataset, val: GroupDataset | None) -> None:
        """Fail before any training when the method or its selection rule needs labels the data lacks."""
        missing = []
        if self.requires.train_attrs and not train.has_attrs:
            missing.append(f"training split {train.name}/{train.split} has no attribute labels")
        if self.requires.val_attrs and (val is None or not val.has_attrs):
            missing.append("validation split has no attribute labels")
        if missing:
            from debiaslab.methods.registry import methods_that_work

            ok = methods_that_work(train_attrs=train.has_attrs, val_attrs=val is not None and val.has_attrs)
            raise MissingLabelsError(
                f"method {self.name!r} needs {self.requires.describe()}, but "
                + "; ".join(missing)
                + f". Methods that work with these labels: {', '.join(ok)}"
            )
        if val is not None:
            rule = get_rule(self.selection_rule(val))
            if rule.needs_groups and not val.has_attrs:
                raise MissingLabelsError(
                    f"selection rule {rule.name!r} needs attribute labels on validation, which "
                    f"{val.name}/{val.split} lacks; use val_worst_class, val_classdiff or val_accuracy"
                )

    def _fitted_result(self) -> FitResult:
        if self.fit_result_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(train, val) first")
        return self.fit_result_

    def _fitted_model(self) -> nn.Module:
        if self.model_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(train, val) first")
        return self.model_

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hparams})"


def with_dataset_preset(table: HparamTable, dataset: str | None, hparams_cls: type[TrainHparams]) -> HparamTable:
    """``table`` with the dataset's training preset (backbone, optimiser, budget; ``DATASET_PRESETS``) placed
    under the method's own rows: preset < the method's ``"*"`` row < the method's row for the dataset < user.

    Expressed as one merged dataset row: preset values the ``"*"`` row also sets are dropped, so the method-wide
    choice wins over the generic preset."""
    preset = DATASET_PRESETS.get(dataset or "", {})
    if not preset:
        return table
    names = set(hparam_names(hparams_cls))
    wide = table.get("*", {})
    row = {k: v for k, v in preset.items() if k in names and k not in wide}
    return {**table, dataset: {**row, **table.get(dataset, {})}}  # type: ignore[dict-item]
