"""Tuning reports print each chosen value short, but never rounded into a different-looking setting."""

import pytest

from debiaslab.tune.values import short_value


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (0.99999, 3, "0.99999"),  # class-balanced loss's beta: "1" would name another weighting
        (0.9999, 3, "0.9999"),
        (0.000868123, 3, "0.000868"),
        (2.4213, 3, "2.42"),
        (30.0, 3, "30"),  # a whole float stays whole
        (1.0, 4, "1"),
        (999.97, 3, "999.97"),  # "1e+03" would read as a whole number
        (30, 3, "30"),
        ("sgd", 3, "sgd"),
        (float("inf"), 3, "inf"),
    ],
)
def test_short_value(value: object, digits: int, expected: str) -> None:
    assert short_value(value, digits) == expected
