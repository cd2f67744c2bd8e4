"""Published numbers to compare with (from ../shared/specs/reference-results.md), in percent.

Colored MNIST (LfF protocol), unbiased test accuracy, DeNetDM paper Table 1 (checkpoints selected on the reported
split), keyed by conflicting ratio. ``MEASURED_ERM_PAPER_PROTOCOL`` is the bare-PyTorch ERM measured on this
project's machine under the paper protocol (seed 0), recorded in the same reference file.
"""

from __future__ import annotations

CMNIST_RATIOS = (0.005, 0.01, 0.02, 0.05)

CMNIST_UNBIASED: dict[str, tuple[float, float, float, float]] = {
    "groupdro": (59.67, 71.33, 76.30, 84.40),
    "erm": (35.34, 50.34, 62.29, 77.63),
    "jtt": (53.03, 61.68, 74.23, 85.03),
    "lff": (63.39, 74.01, 80.48, 85.39),
    "dfa": (59.12, 71.04, 82.86, 88.29),
    "lc": (63.48, 78.41, 83.63, 88.18),
    "denetdm": (74.72, 85.22, 89.29, 93.54),
}

MEASURED_ERM_PAPER_PROTOCOL: tuple[float, float, float, float] = (43.9, 58.0, 73.4, 85.2)


def cmnist_reference(method: str, ratio: float) -> float | None:
    """The published unbiased accuracy (%) of ``method`` at ``ratio``, or None."""
    values = CMNIST_UNBIASED.get(method)
    if values is None or ratio not in CMNIST_RATIOS:
        return None
    return values[CMNIST_RATIOS.index(ratio)]
