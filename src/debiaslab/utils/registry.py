"""A decorator registry (timm-style) for datasets, models and methods."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from debiaslab.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """`` Did you mean a, b?`` for the names of ``known`` closest to ``name`` (case aside), else ``""``."""
    names = list(known)
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=3)
    return f" Did you mean {', '.join(lowered[c] for c in close)}?" if close else ""


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise a ConfigError that suggests the closest names."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        """``load`` imports the modules that register the built-in entries, once, before the first lookup."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = load

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._items

    def get(self, name: str) -> T:
        """The object registered as ``name``, or as ``name`` in another case (``ERM`` is ``erm``) when that is
        unambiguous."""
        return self._loaded()[self.canonical(name)]

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (case-insensitive when unambiguous); a ConfigError suggesting the
        closest names when there is none."""
        if name in self._loaded():
            return name
        folded = [n for n in self._items if isinstance(name, str) and n.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        hint = did_you_mean(name, self._items)
        raise ConfigError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(sorted(self._items))}.{hint}")

    def register_class(self, name: str) -> Callable[[type], type]:
        """Decorator for a class registered as ``name``, which it also gets as its ``name`` attribute."""

        def decorator(cls: type) -> type:
            cls.name = name  # type: ignore[attr-defined]
            self.register(name)(cls)  # type: ignore[arg-type]
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def values(self) -> list[T]:
        """Everything registered, by name."""
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_modules_beside(module_file: str, module_name: str, prefix: str = "") -> None:
    """Import the modules of the package ``module_name`` belongs to (those whose names start with ``prefix``), so
    that their decorators fill a registry; found in ``module_file``'s folder, so the registry imports none of the
    modules it lists."""
    import importlib
    import pkgutil
    from pathlib import Path

    package = module_name.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(module_file).parent)]):
        if info.name.startswith(prefix):
            importlib.import_module(f"{package}.{info.name}")
