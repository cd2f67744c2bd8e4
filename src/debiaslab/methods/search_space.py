"""Search spaces: the ranges a hyperparameter search draws from, declared by each method beside its hparam table.

A space maps hyperparameter names to a :class:`Distribution`: ``loguniform(1e-4, 1e-2)``, ``uniform(0, 1)``,
``intrange(1, 5)`` (``log=True`` for a log scale) or ``categorical(0.0, 1e-4, 1e-2)``. Every method searches the
learning rate and weight decay (:data:`COMMON_SPACE`) plus its own knobs. The same notation is read from text
(``"loguniform(1e-4, 1e-2)"``), so a user's YAML file can override a method's space (:func:`parse_distribution`).
Nothing here knows the search engine; :mod:`debiaslab.tune` turns a space into the engine's distributions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from debiaslab.errors import ConfigError

KINDS = ("uniform", "loguniform", "int", "intlog", "categorical")


@dataclass(frozen=True)
class Distribution:
    """One searched hyperparameter: ``kind`` is one of :data:`KINDS`; ``low``/``high`` bound the numeric kinds
    (inclusive), ``choices`` are the categorical values (numbers, strings, booleans or None)."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ConfigError(f"{self}: {problem}")

    def problem(self) -> str:
        """What is wrong with this distribution ('' when it is valid)."""
        if self.kind not in KINDS:
            return f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}"
        if self.kind == "categorical":
            if not self.choices:
                return "empty list of choices; expected at least one value"
            if any(not (c is None or isinstance(c, bool | int | float | str)) for c in self.choices):
                return "choices must be numbers, strings, booleans or null"
            if len(set(map(repr, self.choices))) != len(self.choices):
                return "repeated choices; expected distinct values"
            return ""
        low, high = self.low, self.high
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            return "bounds must be finite numbers"
        assert low is not None and high is not None
        if not low < high:
            return f"empty range ({low:g} >= {high:g}); expected low < high"
        if self.kind in ("loguniform", "intlog") and low <= 0:
            return f"a log scale needs low > 0 (got {low:g})"
        if self.kind in ("int", "intlog") and (int(low) != low or int(high) != high):
            return "integer bounds expected"
        return ""

    def __str__(self) -> str:
        if self.kind == "categorical":
            return f"categorical({', '.join(map(_show, self.choices))})"
        return f"{self.kind}({_show(self.low)}, {_show(self.high)})"


def _show(value: Any) -> str:
    if isinstance(value, float) and (value == 0 or 1e-3 <= abs(value) < 1e4):
        return f"{value:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def uniform(low: float, high: float) -> Distribution:
    return Distribution("uniform", float(low), float(high))


def loguniform(low: float, high: float) -> Distribution:
    return Distribution("loguniform", float(low), float(high))


def intrange(low: int, high: int, log: bool = False) -> Distribution:
    return Distribution("intlog" if log else "int", low, high)


def categorical(*choices: Any) -> Distribution:
    return Distribution("categorical", choices=tuple(choices))


SearchSpace = dict[str, Distribution]

#: what every method searches: DomainBed-style ranges for Adam/SGD learning rate and L2 weight decay
COMMON_SPACE: SearchSpace = {
    "lr": loguniform(1e-4, 1e-2),
    "weight_decay": loguniform(1e-6, 1e-1),
}

_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.S)


def parse_distribution(value: Any) -> Distribution:
    """A distribution from its text form (``"loguniform(1e-4, 1e-2)"``, ``"int(1, 5)"``, ``"int(5, 200, log)"``,
    ``"categorical(reweight, mask)"``) or a one-key mapping (``{uniform: [0, 1]}``, ``{categorical: [0, 0.01]}``).
    Raises :class:`ConfigError` saying what was expected."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, args),) = value.items()
        args = list(args) if isinstance(args, list | tuple) else [args]
    elif isinstance(value, str) and _CALL.match(value):
        match = _CALL.match(value)
        assert match is not None
        kind = match.group(1)
        inner = match.group(2).strip()
        try:
            args = yaml.safe_load(f"[{inner}]") if inner else []
        except yaml.YAMLError as exc:
            raise ConfigError(f"{value!r}: arguments are not readable ({exc.problem})") from exc
    else:
        raise ConfigError(
            f"{value!r} is not a distribution; expected e.g. loguniform(1e-4, 1e-2), uniform(0, 1), int(1, 5), "
            "int(5, 200, log) or categorical(a, b)"
        )
    kind = str(kind)
    if kind == "categorical":
        return categorical(*args)
    if kind == "int" and len(args) == 3 and args[2] == "log":
        kind, args = "intlog", args[:2]
    if kind not in KINDS:
        raise ConfigError(f"{value!r}: unknown distribution {kind!r}; expected one of {', '.join(KINDS)}")
    if len(args) != 2:
        raise ConfigError(f"{value!r}: {kind} takes two bounds (low, high), got {len(args)} value(s)")
    low, high = (_number(a, value) for a in args)
    if kind in ("int", "intlog"):
        if int(low) != low or int(high) != high:
            raise ConfigError(f"{value!r}: integer bounds expected")
        return Distribution(kind, int(low), int(high))
    return Distribution(kind, low, high)


def _number(arg: Any, value: Any) -> float:
    if isinstance(arg, str):  # YAML reads 1e-4 (no dot) as text
        try:
            arg = float(arg)
        except ValueError:
            raise ConfigError(f"{value!r}: bound {arg!r} is not a number") from None
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise ConfigError(f"{value!r}: bound {arg!r} is not a number")
    return float(arg)
