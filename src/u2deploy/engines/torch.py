"""PyTorch runner: the reference every artifact is compared with, and the latency baseline.

Everything that changes how the network runs is an option of :meth:`TorchRunner.open` (autocast
precision, channels-last, ``torch.compile``, CUDA-graph replay, threads, cuDNN TF32), so a caller
never reaches into the runner's module. Threads and TF32 are process-wide in PyTorch: the runner
sets them when opened and puts the previous values back when closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..artifact import ArtifactSpec
from ..errors import U2Error
from ..model.deploy import DeployModel
from ..model.network import U2Net
from ..model.registry import default_weights, official_for
from ..model.weights import LoadedWeights, load_model
from .base import ArtifactInfo, BoundCall, DeviceMemory, Runner

log = logging.getLogger(__name__)

_VARIANTS = {"torch:full": "full", "torch:small": "small"}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
RANDOM_INIT = "random init (timing only)"


class CudaEvents:
    """CUDA events on PyTorch's current stream (a :class:`~.base.DeviceTimer`)."""

    def __init__(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record()

    def stop(self) -> None:
        self._stop.record()

    def elapsed_ms(self) -> float:
        return self._start.elapsed_time(self._stop)


class TorchRunner(Runner):
    """Runs :class:`~u2deploy.model.deploy.DeployModel` in eval mode, FP32 or under autocast."""

    def __init__(self, loaded: LoadedWeights, device: str = "cpu", precision: str = "fp32",
                 outputs: str = "fused", channels_last: bool = False, compile: bool = False,
                 cuda_graphs: bool = False, threads: int | None = None, tf32: bool | None = None,
                 weights_note: str | None = None) -> None:
        if precision not in ("fp32", *_AUTOCAST):
            raise U2Error(f"--precision {precision}: PyTorch runs fp32, fp16 or bf16")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise U2Error("--device cuda: PyTorch sees no CUDA device")
        if cuda_graphs and not device.startswith("cuda"):
            raise U2Error("--cuda-graphs needs --device cuda")
        self.loaded = loaded
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last, self.compiled, self.cuda_graphs = channels_last, compile, cuda_graphs
        self._restore: list[Callable[[], None]] = []
        if threads:
            old_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
            self._restore.append(lambda: torch.set_num_threads(old_threads))
        if tf32 is not None:
            old_tf32 = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32
            self._restore.append(lambda: setattr(torch.backends.cudnn, "allow_tf32", old_tf32))
        self.model = DeployModel(loaded.net, outputs).to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._module: Callable[..., Any] = torch.compile(self.model) if compile else self.model
        w = loaded.info
        self.info = ArtifactInfo(
            path=f"torch:{w.variant}", backend="torch", precision=precision, device=self.device.type,
            input_size=None, batch_range=None, output_names=self.model.output_names,
            metadata=ArtifactSpec(variant=w.variant, precision=precision, input_size=w.input_size, batch=None,
                                  dynamic_hw=True, mean=w.mean, std=w.std, weights=weights_note or w.name,
                                  weights_sha256=loaded.sha256 or None).to_metadata())

    @classmethod
    def open(cls, artifact: str, weights: str | None = None, device: str = "cpu", precision: str = "fp32",
             outputs: str = "fused", channels_last: bool = False, compile: bool = False,
             cuda_graphs: bool = False, threads: int | None = None, tf32: bool | None = None,
             random_if_no_weights: bool = False) -> TorchRunner:
        """``random_if_no_weights``: without ``weights`` and with none embedded (the full model ships
        none), run random ones instead of failing. Only for timing: speed does not depend on the values."""
        if artifact not in _VARIANTS:
            raise U2Error(f"{artifact}: expected torch:full or torch:small")
        variant = _VARIANTS[artifact]
        note = None
        if weights is None and random_if_no_weights and default_weights(variant) is None:
            log.info("%s: no weights given and none embedded; timing random weights", artifact)
            loaded = LoadedWeights(net=U2Net(variant).eval(), info=official_for(variant), path=None, sha256=None)
            note = RANDOM_INIT
        else:
            loaded = load_model(variant, weights)
        return cls(loaded, device, precision, outputs, channels_last, compile, cuda_graphs, threads, tf32, note)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Device tensors in, device tensors out."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            out = self._module(x)
        return out if isinstance(out, tuple) else (out,)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        outs = self.forward(x)
        return {name: o.float().cpu().numpy() for name, o in zip(self.info.output_names, outs)}

    def bind(self, batch: np.ndarray) -> BoundCall:
        """``forward`` on a device tensor made once (no host↔device copies), or a CUDA graph of it."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.cuda_graphs:
            return BoundCall(self._capture(x), "CUDA graph replay of forward() on a device tensor")
        return BoundCall(lambda: self.forward(x), "forward() on a device tensor (no host↔device copies)")

    def _capture(self, x: torch.Tensor) -> Callable[[], object]:
        """Capture one forward pass; replaying it removes the per-kernel launch cost."""
        self.model.requires_grad_(False)  # autocast must not cache casted weights inside a capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.forward(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.forward(x)
        return graph.replay

    def device_timer(self) -> CudaEvents | None:
        return CudaEvents() if self.device.type == "cuda" else None

    def reset_device_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def device_memory(self) -> DeviceMemory | None:
        if self.device.type != "cuda":
            return None
        return DeviceMemory(torch.cuda.max_memory_allocated(self.device), "torch.cuda.max_memory_allocated")

    def settings(self) -> dict[str, Any]:
        on_cuda = self.device.type == "cuda"
        return {"threads": torch.get_num_threads(), "channels_last": self.channels_last,
                "cuda_graphs": self.cuda_graphs, "compile": self.compiled,
                "tf32": torch.backends.cudnn.allow_tf32 if on_cuda else None}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        while self._restore:
            self._restore.pop()()
