"""How tuning reports print a hyperparameter's value: short, but never rounded into a different-looking number."""

from __future__ import annotations

import math
from typing import Any

MAX_DIGITS = 12


def short_value(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, more where fewer would print a fraction as a whole number.

    ``0.99999`` at 3 digits would read ``1``, a different setting (class-balanced loss's β = 1 is another
    weighting); it prints ``0.99999``. Non-floats print as ``str``.
    """
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    precision = digits
    text = f"{value:.{precision}g}"
    while precision < MAX_DIGITS and not value.is_integer() and float(text).is_integer():
        precision += 1
        text = f"{value:.{precision}g}"
    return text
