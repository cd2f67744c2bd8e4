"""Values converted to their declared type (with pydantic) and refused in one line when they do not fit.

Used for hyperparameters (dataclass fields) and dataset options (builder keyword arguments). A value may come
as text from the command line (``--hp lr=1e-3``), as YAML from a config file, or as a Python object:

- text for a field that takes only text (``str``, ``str | None``) is kept as written (``--hp model=on`` stays
  ``"on"``); ``null``/``none``/``~`` is None where None is allowed;
- other text is read as YAML first (``{width: 32}``, ``[30, 60]``, ``true``) and then converted, so numbers YAML
  leaves as text (``1e-3``, ``1E4``) still become numbers;
- a single value for a tuple field is a tuple of one (``--hp report_rules=val_unbiased``);
- conversion is pydantic's lax mode: ``"3"`` -> 3 for an int, but ``1.5`` or ``"abc"`` for an int is an error,
  and so is ``true`` for a number.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from typing import Any

import pydantic
import yaml

from debiaslab.errors import ConfigError

NULL_WORDS = frozenset({"null", "none", "~", ""})


@functools.cache
def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(hint)


def _members(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``float | None`` -> ``(float, NoneType)``), else ``(hint,)``."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _takes_text(hint: Any) -> bool:
    return str in _members(hint)


def _text_only(hint: Any) -> bool:
    """``str`` or ``str | None``: text is kept as written (other unions read it as YAML first)."""
    return {m for m in _members(hint) if m is not type(None)} == {str}


def _takes_none(hint: Any) -> bool:
    return type(None) in _members(hint) or hint is Any


def _is_sequence(hint: Any) -> bool:
    return any(typing.get_origin(m) in (tuple, list) for m in _members(hint))


def type_name(hint: Any) -> str:
    """``float``, ``tuple[int, ...]``, ``str | None``: the type as a user reads it in a message."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def convert(name: str, value: Any, hint: Any, what: str = "value", shown: str | None = None) -> Any:
    """``value`` as type ``hint``; a :class:`ConfigError` naming ``what name``, the value and the expected type
    when it does not fit. ``shown`` overrides how the type is written in that message."""
    expected = shown or type_name(hint)
    original = value
    if isinstance(value, os.PathLike) and _takes_text(hint):
        value = os.fspath(value)
    if isinstance(value, str):
        if value.strip().lower() in NULL_WORDS and _takes_none(hint):
            return None
        if not _text_only(hint):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"{what} {name}={original!r} is not valid YAML; expected {expected}") from None
    if (
        _is_sequence(hint)
        and isinstance(value, str | int | float | bool)
        and not (isinstance(value, str) and _takes_text(hint))
    ):
        value = [value]  # a single value for a sequence field (text stays text where the field also takes text)
    if isinstance(value, bool) and bool not in _members(hint) and hint is not Any:
        # pydantic's lax mode reads True as 1 / 1.0: a flag given for a number is a mistake, not a number
        raise ConfigError(f"{what} {name}={original!r}: expected {expected} (got a true/false value)")
    try:
        return _adapter(hint).validate_python(value)
    except pydantic.ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid value")
        raise ConfigError(
            f"{what} {name}={original!r}: expected {expected} ({reason[0].lower() + reason[1:]})"
        ) from None


def field_types(cls: type) -> dict[str, tuple[Any, str]]:
    """``{field: (type, annotation as written)}`` of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.type if isinstance(f.type, str) else type_name(f.type))
        for f in dataclasses.fields(cls)
    }


def convert_fields(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """Each of ``values`` converted to the type of the dataclass field of the same name (unknown names pass)."""
    types_ = _cached_field_types(cls)
    return {k: convert(k, v, types_[k][0], what, shown=types_[k][1]) if k in types_ else v for k, v in values.items()}


@functools.cache
def _cached_field_types(cls: type) -> dict[str, tuple[Any, str]]:
    return field_types(cls)


def convert_arguments(fn: Any, values: dict[str, Any], what: str) -> dict[str, Any]:
    """Each of ``values`` converted to the annotated type of ``fn``'s keyword argument of the same name; text for
    an argument without an annotation is read as YAML, other values pass unchanged."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not evaluate on this Python: read as untyped
        hints = {}
    return {k: convert(k, v, hints.get(k, Any), what) for k, v in values.items()}
