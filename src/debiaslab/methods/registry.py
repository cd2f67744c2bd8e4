"""Method registry: ``@register_method("erm")`` on a :class:`~debiaslab.methods.base.Method` subclass."""

from __future__ import annotations

from typing import Any

from debiaslab.utils.registry import Registry, import_modules_beside

#: filled by the decorators of every module of ``debiaslab.methods``, imported before the first lookup
METHODS: Registry[Any] = Registry("method", load=lambda: import_modules_beside(__file__, __name__))
#: ``@register_method(name)`` on a class: registers it and sets its ``name``
register_method = METHODS.register_class
get_method = METHODS.get
list_methods = METHODS.values


def methods_that_work(*, train_attrs: bool, val_attrs: bool) -> list[str]:
    """Names of methods whose label requirements the data meets."""
    return [
        m.name
        for m in list_methods()
        if (train_attrs or not m.requires.train_attrs) and (val_attrs or not m.requires.val_attrs)
    ]
