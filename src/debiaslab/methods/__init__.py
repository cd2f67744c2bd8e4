"""Methods: one file each, saying only what is different about them."""

from debiaslab.methods.base import FitResult, Method, Requirements
from debiaslab.methods.registry import get_method, list_methods, register_method

__all__ = ["FitResult", "Method", "Requirements", "get_method", "list_methods", "register_method"]
