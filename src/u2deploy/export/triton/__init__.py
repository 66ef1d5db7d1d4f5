"""Artifacts → a Triton Inference Server model repository (``u2export triton``), written atomically.

Read in this order: :mod:`.artifacts` (what a model directory needs to know of one artifact, read
through :class:`~u2deploy.artifact.ArtifactSpec`, the contract check and the format's own reader),
:mod:`.plan` (the model directories: Triton's backend for the format or a python-backend model, and
the batching rules), :mod:`.ensemble` (``--preprocess-in-server``: image bytes in, mask out, by the
python-backend models in :mod:`.models`), :mod:`.config` (``config.pbtxt``: the typed record, its
text, the rules) and :mod:`.repository` (writing it: each model directory complete or absent).
:mod:`.server` runs the bundled ``tritonserver`` locally, for the live tests and ``tools/triton_load.py``, and
makes its python backend's environment (``u2export triton-env``, the one step here that downloads).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .artifacts import ArtifactFacts, read_artifact
from .config import DynamicBatching, EnsembleStep, ModelConfig, Tensor, check_config, render_pbtxt
from .plan import RepoOptions, batching_for, plan_repo
from .repository import ModelDir, TritonRepo, write_repo
from .server import LocalTriton, make_python_backend_env


def export_triton(artifacts: Sequence[str | Path], output: str | Path, *, name: str | None = None,
                  overwrite: bool = False, **options: Any) -> TritonRepo:
    """``u2export triton``: plan every model directory from the artifacts, then write them atomically.

    ``options`` are :class:`RepoOptions`' fields (the command's flags).
    """
    return write_repo(plan_repo(artifacts, output, name=name, options=RepoOptions(**options)), overwrite=overwrite)


__all__ = ["ArtifactFacts", "DynamicBatching", "EnsembleStep", "LocalTriton", "ModelConfig", "ModelDir",
           "RepoOptions", "Tensor", "TritonRepo", "batching_for", "check_config", "export_triton",
           "make_python_backend_env", "plan_repo", "read_artifact", "render_pbtxt", "write_repo"]
