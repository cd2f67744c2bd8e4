"""Inferrer registry: ``@register_inferrer("error_set")`` on an :class:`~debiaslab.inference.base.Inferrer`."""

from __future__ import annotations

from typing import Any

from debiaslab.utils.registry import Registry, import_modules_beside

#: filled by the decorators of the inferrer modules of this package (``infer_*.py``), imported before the first lookup
INFERRERS: Registry[Any] = Registry(
    "group inferrer", load=lambda: import_modules_beside(__file__, __name__, prefix="infer_")
)
#: ``@register_inferrer(name)`` on a class: registers it and sets its ``name``
register_inferrer = INFERRERS.register_class
get_inferrer = INFERRERS.get
list_inferrers = INFERRERS.values
