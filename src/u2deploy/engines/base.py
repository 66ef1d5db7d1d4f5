"""The runner interface that every backend implements (after Polygraphy's runners).

A runner is built from an artifact, owns whatever session or engine it needs, and maps an
N×3×H×W float32 batch (already preprocessed) to the artifact's named float32 outputs. Everything
above it (predict, parity, latency) sees only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..artifact import ArtifactSpec


@dataclass(frozen=True)
class ArtifactInfo:
    """What a runner knows of its artifact; read from the artifact's own metadata where it has some."""

    path: str
    backend: str
    precision: str  # "fp32", "fp16", "int8", "bf16"
    device: str  # "cpu", "cuda"
    input_size: tuple[int, int] | None  # fixed (H, W), or None when any size is accepted
    batch_range: tuple[int, int] | None  # (min, max) accepted batch sizes; None: any
    output_names: tuple[str, ...]
    size_bytes: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> ArtifactSpec:
        """The artifact's typed contract, read from its metadata (one-line error on a bad value)."""
        return ArtifactSpec.from_metadata(self.metadata, self.path)

    @property
    def native_size(self) -> tuple[int, int] | None:
        """The input size the weights were made for, when the artifact records it."""
        return self.input_size if self.input_size is not None else self.spec.input_size


class Runner(ABC):
    """Runs one artifact. Use as a context manager, or call :meth:`close`."""

    info: ArtifactInfo

    @classmethod
    @abstractmethod
    def open(cls, artifact: str, **options: Any) -> Runner:
        """Load the artifact; raise :class:`~u2deploy.errors.U2Error` with one line when it can't be."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for an N×3×H×W float32 batch (outputs are float32 on the host)."""

    def saliency(self, batch: np.ndarray) -> np.ndarray:
        """The fused probability map d0, N×1×H×W: the first output of every artifact."""
        return self.infer(batch)[self.info.output_names[0]]

    def synchronize(self) -> None:  # noqa: B027 (optional hook: synchronous backends need nothing)
        """Wait for queued device work; a no-op on synchronous backends."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free sessions, engines and device memory."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
