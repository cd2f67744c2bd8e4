"""A search's space: the method's declared space, overridden from a YAML file, minus what the user fixed; and the
translation of its distributions into Optuna's.

A space file maps hyperparameter names to distributions in the methods' notation (``lr: loguniform(1e-4, 1e-2)``,
``omega: categorical(reweight, mask)``, ``lambda_up: int(5, 200, log)``, or ``{uniform: [0, 1]}``); a plain
value fixes that hyperparameter instead of searching it. Every problem names the file, the key and what was
expected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from debiaslab.errors import ConfigError
from debiaslab.methods.hparams import hparam_names
from debiaslab.methods.search_space import Distribution, SearchSpace, parse_distribution
from debiaslab.utils.io import load_yaml_file


def load_space_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a space file (``ConfigError`` naming the file when it is missing or not a mapping)."""
    path = Path(path)
    doc = load_yaml_file(path, "space file")
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"space file {path}: expected a mapping of hyperparameter names to distributions")
    return doc


def resolve_space(
    method_cls: Any,
    overrides: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    source: str = "space",
) -> tuple[SearchSpace, dict[str, Any]]:
    """``(space, fixed)``: the method's ``search_space`` with ``overrides`` applied (a distribution replaces or adds
    an entry, a plain value fixes the hyperparameter), minus the hyperparameters in ``fixed`` (the user's ``--hp``,
    which win). ``source`` names the overrides in errors (the space file)."""
    names = hparam_names(method_cls.Hparams)
    space: SearchSpace = dict(method_cls.search_space)
    fixed = dict(fixed or {})
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ConfigError(
                f"{source}: method {method_cls.name!r} has no hyperparameter {key!r}; "
                f"expected one of: {', '.join(names)}"
            )
        if isinstance(value, Distribution):
            space[key] = value
        elif isinstance(value, dict) or (isinstance(value, str) and "(" in value):
            try:
                space[key] = parse_distribution(value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {key}: {exc}") from exc
        else:
            space.pop(key, None)
            fixed.setdefault(key, value)
    for key in list(space):
        if key in fixed:
            space.pop(key)
    if not space:
        raise ConfigError(f"{source}: nothing left to search for method {method_cls.name!r} (every entry is fixed)")
    return space, fixed


def describe_space(space: SearchSpace) -> dict[str, str]:
    """``{name: "loguniform(0.0001, 0.01)"}``: the space as text (recorded with the study, shown in reports)."""
    return {name: str(dist) for name, dist in space.items()}


def suggest(trial: Any, name: str, dist: Distribution) -> Any:
    """Draw ``name`` from ``dist`` through an Optuna trial."""
    if dist.kind == "categorical":
        return trial.suggest_categorical(name, list(dist.choices))
    if dist.kind in ("int", "intlog"):
        return trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.kind == "intlog")  # type: ignore[arg-type]
    return trial.suggest_float(name, dist.low, dist.high, log=dist.kind == "loguniform")


def as_hparams(method_cls: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Sampled values as the method's hyperparameters: a value for a tuple-typed field (DFR's ``c_grid``) becomes
    a one-element tuple."""
    defaults = {f.name: f for f in dataclasses.fields(method_cls.Hparams)}
    out = {}
    for name, value in params.items():
        field = defaults.get(name)
        default = None if field is None else field.default
        if field is not None and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        out[name] = [value] if isinstance(default, tuple) and not isinstance(value, list | tuple) else value
    return out
