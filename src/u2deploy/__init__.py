"""u2deploy: U²-Net from PyTorch to verified, benchmarked deployment artifacts.

``u2deploy.remove(image, model=…)`` and ``u2deploy.mask(image, model=…)`` are the one-call API
(:mod:`u2deploy.api`), imported on first use so that ``import u2deploy`` stays light for the CLIs.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["remove", "mask", "open_model", "Model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("remove", "mask", "open_model", "Model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'u2deploy' has no attribute {name!r}")
