"""Method registry: ``@register_method("erm")`` on a :class:`~debiaslab.methods.base.Method` subclass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from debiaslab.utils.registry import Registry

METHODS: Registry[Any] = Registry("method")


def register_method(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        cls.name = name
        METHODS.register(name)(cls)
        return cls

    return decorator


def get_method(name: str) -> Any:
    _import_builtin_methods()
    return METHODS.get(name)


def list_methods() -> list[Any]:
    _import_builtin_methods()
    return [METHODS.get(n) for n in METHODS.names()]


def methods_that_work(*, train_attrs: bool, val_attrs: bool) -> list[str]:
    """Names of methods whose label requirements the data meets."""
    return [
        m.name
        for m in list_methods()
        if (train_attrs or not m.requires.train_attrs) and (val_attrs or not m.requires.val_attrs)
    ]


def _import_builtin_methods() -> None:
    """Import every module of ``debiaslab.methods`` so their decorators fill the registry (found in this
    module's folder, so that the registry imports none of the modules it lists)."""
    import importlib
    import pkgutil
    from pathlib import Path

    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{package}.{info.name}")
