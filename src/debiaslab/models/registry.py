"""Model registry: ``@register_model(name)`` on a factory ``(input_shape, n_classes, **opts)``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone, check_n_classes
from debiaslab.utils.registry import Registry

ModelFactory = Callable[..., Backbone]

MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a factory under ``name`` and returns it unchanged."""
    return MODELS.register(name)


def model_options(name: str) -> dict[str, Any]:
    """A factory's keyword options and their defaults (everything after input_shape and n_classes)."""
    params = list(inspect.signature(MODELS.get(name)).parameters.values())[2:]
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in params
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **kwargs: Any) -> Backbone:
    """Build a registered model; an unknown name or option is a ConfigError naming what is accepted."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = model_options(name)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            close = sorted({c for u in unknown for c in difflib.get_close_matches(u, accepted, n=1)})
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"expected some of: {', '.join(accepted) or '(none)'}.{hint}"
            )
    shape = tuple(int(d) for d in input_shape)
    return factory(shape, check_n_classes(n_classes), **kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
