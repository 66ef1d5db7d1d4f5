"""Runners: one per backend, one interface (:class:`~u2deploy.engines.base.Runner`).

Backends never import each other; :func:`open_runner` imports the one an artifact needs, found
through the format table (:mod:`u2deploy.formats`), so that a machine without TensorRT can still
run ONNX and PyTorch.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import U2Error
from ..formats import Backend, backend_for, for_artifact
from .base import Runner


def runner_class(entry: Backend) -> type[Runner]:
    return getattr(importlib.import_module(f"{__name__}.{entry.name}"), entry.runner)


def runner_options(artifact: str, backend: str = "auto") -> frozenset[str]:
    """The options the runner of ``artifact`` takes (what its ``open`` declares)."""
    params = inspect.signature(runner_class(backend_for(artifact, backend)).open).parameters
    return frozenset(name for name in params if name != "artifact")


def open_runner(artifact: str, backend: str = "auto", **options: Any) -> Runner:
    """The runner for ``artifact`` (``torch:small``, ``model.onnx``, ``model.engine``, ``model.xml``).

    ``backend`` picks one of the backends the format table lists for the artifact (``auto``: its
    default). Options left at None are not passed; one the runner does not take is an error, never
    silently dropped (``--weights`` with an ONNX file would otherwise run the file's own weights).
    """
    entry = backend_for(artifact, backend)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in runner_options(artifact, backend)]
    if unknown:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unknown)
        why = " (an exported file carries its own weights)" if "weights" in unknown else ""
        raise U2Error(f"{artifact}: {flags} does not apply to {for_artifact(artifact).name} artifacts on "
                      f"{entry.title}{why}")
    return runner_class(entry).open(artifact, **given)


__all__ = ["Runner", "open_runner", "runner_options"]
