"""debiaslab: train classifiers that do not fall for spurious correlations, and measure it honestly."""

import logging

from debiaslab.errors import DebiasLabError

__version__ = "0.1.0"
__all__ = ["DebiasLabError", "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
