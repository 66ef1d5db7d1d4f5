"""The runner interface that every backend implements (after Polygraphy's runners).

A runner is built from an artifact, owns whatever session or engine it needs, and maps an
N×3×H×W float32 batch (already preprocessed) to the artifact's named float32 outputs. Everything
above it (predict, parity, latency) sees only this interface.

What a backend can do beyond that is declared here, with defaults that are right for a synchronous
host backend: :meth:`Runner.bind` (a repeatable call with the input staged once, what model-only
latency times), :meth:`Runner.device_timer` (a GPU clock), :meth:`Runner.device_memory` and
:meth:`Runner.settings` (what it was opened with that changes its speed). Callers never test for a
method or a runner class, and never reach into a runner's session or model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..artifact import ArtifactSpec, resolve_input_size


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

    def size_for(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The input size to run at (see :func:`~u2deploy.artifact.resolve_input_size`)."""
        return resolve_input_size(self.input_size, requested, self.spec.input_size, self.path)


class DeviceTimer(Protocol):
    """Device time of the work enqueued between ``start`` and ``stop`` (read after synchronising)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def elapsed_ms(self) -> float: ...


@dataclass(frozen=True)
class BoundCall:
    """A call that runs one staged batch again and again, and what it covers (for the result record)."""

    call: Callable[[], object]
    covers: str


@dataclass(frozen=True)
class DeviceMemory:
    peak_bytes: int
    method: str  # how it was measured


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

    def bind(self, batch: np.ndarray) -> BoundCall:
        """A repeatable call on ``batch``; backends that can stage the input on their device once do so."""
        covers = "infer(): host array in, host arrays out"
        if self.info.device == "cuda":
            covers += " (includes host↔device copies)"
        return BoundCall(lambda: self.infer(batch), covers)

    def device_timer(self) -> DeviceTimer | None:
        """A clock on the runner's device stream; None for host backends."""
        return None

    def reset_device_memory(self) -> None:  # noqa: B027 (optional hook)
        """Start a new device-memory high-water mark (before a timed run)."""

    def device_memory(self) -> DeviceMemory | None:
        """Device memory high-water mark since :meth:`reset_device_memory`; None where unknown."""
        return None

    def settings(self) -> dict[str, Any]:
        """What the runner was opened with that changes its speed (threads, provider, graphs …)."""
        return {}

    def describe(self) -> str:
        """The backend as tables print it, with how it runs this artifact where that is not the usual way."""
        return self.info.backend

    def synchronize(self) -> None:  # noqa: B027 (optional hook: synchronous backends need nothing)
        """Wait for queued device work; a no-op on synchronous backends."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free sessions, engines and device memory."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
