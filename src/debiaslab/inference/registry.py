"""Inferrer registry: ``@register_inferrer("error_set")`` on an :class:`~debiaslab.inference.base.Inferrer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from debiaslab.utils.registry import Registry

INFERRERS: Registry[Any] = Registry("group inferrer")


def register_inferrer(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        cls.name = name
        INFERRERS.register(name)(cls)
        return cls

    return decorator


def get_inferrer(name: str) -> Any:
    _import_builtin_inferrers()
    return INFERRERS.get(name)


def list_inferrers() -> list[Any]:
    _import_builtin_inferrers()
    return [INFERRERS.get(n) for n in INFERRERS.names()]


def _import_builtin_inferrers() -> None:
    """Import the inferrer modules of this package (``infer_*.py``) so their decorators fill the registry."""
    import importlib
    import pkgutil
    from pathlib import Path

    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("infer_"):
            importlib.import_module(f"{package}.{info.name}")
