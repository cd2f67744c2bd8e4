"""Hyperparameters: a dataclass per method, plus a per-dataset table of defaults that records each value's source.

Resolution order (later wins): the dataclass default, the table's ``"*"`` row, the table's row for the dataset,
then the user's overrides. The resolved values and their sources are written to every run's ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from debiaslab.engine.optim import OptimConfig
from debiaslab.engine.sparse import SparseConfig
from debiaslab.errors import ConfigError
from debiaslab.evaluation.selection import get_rule, list_rules
from debiaslab.utils.registry import did_you_mean
from debiaslab.utils.typed import convert_fields


class Default(NamedTuple):
    """A default value and where it comes from (paper, official code, or our own tuning run)."""

    value: Any
    source: str


HparamTable = dict[str, dict[str, Default]]


@dataclass(frozen=True)
class Bounds:
    """The numbers a hyperparameter may take: ``low`` to ``high`` (None: unbounded), each end included unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (NaN never does)."""
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return bool(above and below)

    def describe(self) -> str:
        """The range in words: ``>= 0``, ``> 0`` or ``in (0, 1]``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {opening}{self.low:g}, {self.high:g}{closing}"


NON_NEGATIVE = Bounds(low=0.0)
POSITIVE = Bounds(low=0.0, low_open=True)


def bounded(default: float, bounds: Bounds, why: str = "") -> Any:
    """A number field that :class:`TrainHparams` refuses outside ``bounds``; ``why`` follows the error in brackets.

    The bounds belong to the field: a subclass that only changes the default declares it with ``bounded`` again.
    """
    return field(default=default, metadata={"bounds": bounds, "why": why})


def one_of(default: str, choices: tuple[str, ...]) -> Any:
    """A text field that :class:`TrainHparams` refuses unless it is one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


def check_field(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``value`` falls outside the field's declared bounds or choices."""
    bounds: Bounds | None = metadata.get("bounds")
    if bounds is not None and not bounds.admits(value):
        why = metadata.get("why", "")
        raise ConfigError(f"{name} {value!r} must be {bounds.describe()}" + (f" ({why})" if why else ""))
    choices: tuple[str, ...] | None = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} {value!r} unknown; expected one of {', '.join(choices)}")


#: the most epochs a run may ask for (ours: no recipe we know of comes near it; a larger number is a typo that
#: would train until killed)
MAX_EPOCHS = 10_000


@dataclass
class TrainHparams:
    """Hyperparameters every method has: the model, the optimiser and how the epoch is selected.

    ``scheduler`` is ``none``, ``cosine``, ``step`` (every ``lr_step_size`` epochs), ``multistep`` (at
    ``lr_milestones``) or ``plateau`` (on the selection score, ``lr_patience`` epochs); each multiplies by ``lr_gamma``.
    ``density < 1`` trains sparse (any method whose stages come from :mod:`debiaslab.methods.stages`): ``sparse_*``
    are the :class:`~debiaslab.engine.sparse.SparseConfig` options (init ``erk``/``uniform``, ``update_every`` steps
    between mask updates, ``static`` masks, ``drop_fraction`` ζ_0, ``end_fraction`` of training with updates).
    ``selection="auto"`` becomes ``val_worst_group`` when validation has attribute labels and
    ``val_worst_class`` otherwise; the resolved rule is recorded with the result.
    ``report_rules``: further selection rules reported beside ``selection`` from the same training (a run keeps,
    for the method's final stage, the best epoch's weights under each and evaluates them; see ``debiaslab.run.train``).
    """

    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    lr_gamma: float = 0.1
    lr_step_size: int = 30
    lr_milestones: tuple[int, ...] = ()
    lr_patience: int = 5
    grad_clip: float | None = None
    density: float = 1.0  # dense; the sparse options below take SparseConfig's defaults
    sparse_init: str = SparseConfig.init
    sparse_update_every: int = SparseConfig.update_every
    sparse_static: bool = SparseConfig.static
    sparse_drop_fraction: float = SparseConfig.drop_fraction
    sparse_end_fraction: float = SparseConfig.end_fraction
    selection: str = "auto"
    report_rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs {self.epochs} must be >= 1")
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"epochs {self.epochs} must be at most {MAX_EPOCHS}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size} must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr {self.lr} must be a finite number > 0 (a step against the gradient)")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f"grad_clip {self.grad_clip} must be a finite number > 0 (the largest gradient norm)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay {self.weight_decay} must be a finite number >= 0")
        self.sparse_config()  # validates the sparse options
        self.report_rules = _rule_names(self.report_rules)
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name), f.metadata)

    def sparse_config(self) -> SparseConfig | None:
        """The stages' sparse-training settings; None when ``density == 1`` (dense training)."""
        cfg = SparseConfig(
            density=self.density,
            init=self.sparse_init,
            update_every=self.sparse_update_every,
            static=self.sparse_static,
            drop_fraction=self.sparse_drop_fraction,
            drop_fraction_min=min(SparseConfig.drop_fraction_min, self.sparse_drop_fraction),
            end_fraction=self.sparse_end_fraction,
        )
        return None if cfg.density == 1.0 else cfg

    def optim_config(self, **overrides: Any) -> OptimConfig:
        values = {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "scheduler": self.scheduler,
            "gamma": self.lr_gamma,
            "step_size": self.lr_step_size,
            "milestones": tuple(self.lr_milestones),
            "plateau_patience": self.lr_patience,
            "grad_clip": self.grad_clip,
        }
        values.update(overrides)
        return OptimConfig(**values)


def _rule_names(value: Any) -> tuple[str, ...]:
    """``report_rules`` as a tuple of known selection-rule names (a single name is accepted too)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"report_rules {value!r} must be a list of selection-rule names ({', '.join(list_rules())})")
    return tuple(get_rule(n).name for n in names)


def hparam_names(cls: type[TrainHparams]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def convert_hparams(cls: type[TrainHparams], values: dict[str, Any], method: str) -> dict[str, Any]:
    """``values`` checked against ``cls``: unknown names and values that do not fit a field's declared type are
    one-line :class:`ConfigError` s (``--hp lr=1e-3`` -> 0.001; ``--hp epochs=abc`` -> expected int)."""
    names = hparam_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"method {method!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(names)}.{did_you_mean(unknown[0], names)}"
        )
    return convert_fields(cls, values, f"method {method!r}: hyperparameter")


def resolve_hparams(
    cls: type[TrainHparams],
    table: HparamTable,
    dataset: str | None,
    overrides: dict[str, Any],
    method: str,
) -> tuple[TrainHparams, dict[str, str]]:
    """Build the hyperparameters and a ``{name: source}`` map."""
    names = hparam_names(cls)
    overrides = convert_hparams(cls, overrides, method)
    values: dict[str, Any] = {}
    sources = {n: "default" for n in names}
    for row in ("*", dataset):
        for name, default in (table.get(row, {}) if row else {}).items():
            if name not in names:
                raise ValueError(f"{method}: hparam table row {row!r} names unknown field {name!r}")
            values[name], sources[name] = default.value, default.source
    for name, value in overrides.items():
        values[name], sources[name] = value, "user"
    try:
        return cls(**values), sources
    except TypeError as exc:
        raise ConfigError(f"method {method!r}: invalid hyperparameters ({exc})") from exc
