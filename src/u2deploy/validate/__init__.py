"""Validation as a stage of its own (as in Hugging Face optimum): every artifact against PyTorch.

``tolerances`` is the one table of declared tolerances per precision; ``compare`` is the one
comparator (after Polygraphy's) that every backend's outputs go through, all of them where an
artifact exports several (d0 … d6).
"""

from .compare import Comparison, compare_maps
from .tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["Comparison", "compare_maps", "TOLERANCES", "Tolerance", "tolerance_for"]
