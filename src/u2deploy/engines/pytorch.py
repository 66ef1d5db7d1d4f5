"""PyTorch runner: the reference every artifact is compared with, and the latency baseline."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..artifact import ArtifactSpec
from ..errors import U2Error
from ..model.deploy import DeployModel
from ..model.weights import LoadedWeights, load_model
from .base import ArtifactInfo, Runner

_VARIANTS = {"torch:full": "full", "torch:small": "small"}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """Runs :class:`~u2deploy.model.deploy.DeployModel` in eval mode, FP32 or under autocast."""

    def __init__(self, loaded: LoadedWeights, device: str = "cpu", precision: str = "fp32",
                 outputs: str = "fused", channels_last: bool = False) -> None:
        if precision not in ("fp32", *_AUTOCAST):
            raise U2Error(f"--precision {precision}: PyTorch runs fp32, fp16 or bf16")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise U2Error("--device cuda: PyTorch sees no CUDA device")
        self.loaded = loaded
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = channels_last
        self.model = DeployModel(loaded.net, outputs).to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        w = loaded.info
        self.info = ArtifactInfo(
            path=f"torch:{w.variant}", backend="torch", precision=precision, device=self.device.type,
            input_size=None, batch_range=None, output_names=self.model.output_names,
            metadata=ArtifactSpec(variant=w.variant, precision=precision, input_size=w.input_size, batch=None,
                                  dynamic_hw=True, mean=w.mean, std=w.std, weights=w.name,
                                  weights_sha256=loaded.sha256 or None).to_metadata())

    @classmethod
    def open(cls, artifact: str, weights: str | None = None, device: str = "cpu",
             precision: str = "fp32", outputs: str = "fused", channels_last: bool = False) -> TorchRunner:
        if artifact not in _VARIANTS:
            raise U2Error(f"{artifact}: expected torch:full or torch:small")
        return cls(load_model(_VARIANTS[artifact], weights), device, precision, outputs, channels_last)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Device tensors in, device tensors out: what latency measurement times."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            out = self.model(x)
        return out if isinstance(out, tuple) else (out,)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        outs = self.forward(x)
        return {name: o.float().cpu().numpy() for name, o in zip(self.info.output_names, outs)}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
