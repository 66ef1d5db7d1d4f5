"""Runners: one per backend, one interface (:class:`~u2deploy.engines.base.Runner`).

Backends never import each other; :func:`open_runner` imports the one an artifact needs, found
through the format table, so that a machine without TensorRT can still run ONNX and PyTorch.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import U2Error
from ..formats import for_artifact
from .base import Runner


def open_runner(artifact: str, **options: Any) -> Runner:
    """The runner for ``artifact`` (``torch:small``, ``model.onnx``, ``model.engine``).

    Options left at None are not passed; one the runner does not take is an error, never silently
    dropped (``--weights`` with an ONNX file would otherwise run the file's own weights unannounced).
    """
    entry = for_artifact(artifact)
    module_name, class_name = entry.runner.split(":")
    runner = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    given = {k: v for k, v in options.items() if v is not None}
    taken = inspect.signature(runner.open).parameters
    unknown = [k for k in given if k not in taken]
    if unknown:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unknown)
        raise U2Error(f"{artifact}: {flags} does not apply to {entry.name} artifacts"
                      + (" (an exported file carries its own weights)" if "weights" in unknown else ""))
    return runner.open(artifact, **given)


__all__ = ["Runner", "open_runner"]
