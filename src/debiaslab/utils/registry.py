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

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as ``name``, or as ``name`` in another case (``ERM`` is ``erm``) when that is
        unambiguous."""
        return self._items[self.canonical(name)]

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (case-insensitive when unambiguous); a ConfigError suggesting the
        closest names when there is none."""
        if name in self._items:
            return name
        folded = [n for n in self._items if isinstance(name, str) and n.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        hint = did_you_mean(name, self._items)
        raise ConfigError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(sorted(self._items))}.{hint}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
