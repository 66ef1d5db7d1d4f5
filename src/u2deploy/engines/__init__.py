"""Runners: one per backend, one interface (:class:`~u2deploy.engines.base.Runner`).

Backends never import each other; :func:`open_runner` imports the one an artifact needs, found
through the format table, so that a machine without TensorRT can still run ONNX and PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..formats import for_artifact
from .base import Runner


def open_runner(artifact: str, **options: Any) -> Runner:
    """The runner for ``artifact`` (``torch:small``, ``model.onnx``, ``model.engine``)."""
    module_name, class_name = for_artifact(artifact).runner.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name).open(artifact, **options)


__all__ = ["Runner", "open_runner"]
