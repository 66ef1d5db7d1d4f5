"""The deployment view of the network: the fused map only, unless all seven are asked for."""

from __future__ import annotations

import torch
from torch import nn

from .network import U2Net

OUTPUT_NAMES = ("saliency",)
ALL_OUTPUT_NAMES = ("d0", "d1", "d2", "d3", "d4", "d5", "d6")


class DeployModel(nn.Module):
    """Wraps :class:`U2Net` for inference and export.

    ``outputs="fused"`` returns d0 (N×1×H×W probabilities), the map the authors use at test time;
    ``outputs="all"`` returns the seven maps d0 … d6.
    """

    def __init__(self, net: U2Net, outputs: str = "fused") -> None:
        super().__init__()
        if outputs not in ("fused", "all"):
            raise ValueError(f"outputs must be 'fused' or 'all', got {outputs!r}")
        self.net = net.eval()
        self.outputs = outputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES if self.outputs == "fused" else ALL_OUTPUT_NAMES

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        maps = self.net(x)
        return maps[0] if self.outputs == "fused" else maps
