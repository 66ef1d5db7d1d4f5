"""U²-Net (full) and U²-Net† (small): the two-level nested U-structure of Qin et al. (2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import RSU, RSU4F, _pool, resize_to


@dataclass(frozen=True)
class StageSpec:
    """One stage of the outer U: block kind (7, 6, 5, 4 for RSU-L; 0 for RSU-4F) and channels."""

    block: int
    in_ch: int
    mid_ch: int
    out_ch: int


_RSU4F = 0
_STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6",
                "stage5d", "stage4d", "stage3d", "stage2d", "stage1d")
_BLOCKS = (7, 6, 5, 4, _RSU4F, _RSU4F, _RSU4F, 4, 5, 6, 7)

# (in, mid, out) per stage, in _STAGE_NAMES order: the table of the architecture page.
_CHANNELS = {
    "full": ((3, 32, 64), (64, 32, 128), (128, 64, 256), (256, 128, 512), (512, 256, 512),
             (512, 256, 512), (1024, 256, 512), (1024, 128, 256), (512, 64, 128),
             (256, 32, 64), (128, 16, 64)),
    "small": ((3, 16, 64), (64, 16, 64), (64, 16, 64), (64, 16, 64), (64, 16, 64),
              (64, 16, 64), (128, 16, 64), (128, 16, 64), (128, 16, 64), (128, 16, 64),
              (128, 16, 64)),
}
VARIANTS = tuple(_CHANNELS)


def stage_specs(variant: str) -> dict[str, StageSpec]:
    if variant not in _CHANNELS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return {name: StageSpec(block, *ch)
            for name, block, ch in zip(_STAGE_NAMES, _BLOCKS, _CHANNELS[variant])}


def _block(spec: StageSpec) -> nn.Module:
    if spec.block == _RSU4F:
        return RSU4F(spec.in_ch, spec.mid_ch, spec.out_ch)
    return RSU(spec.block, spec.in_ch, spec.mid_ch, spec.out_ch)


class U2Net(nn.Module):
    """The authors' network: returns sigmoid(d0), sigmoid(d1) … sigmoid(d6), each N×1×H×W.

    d0, the fused map, is the prediction; d1 … d6 are the deep-supervision side outputs.
    """

    def __init__(self, variant: str = "full") -> None:
        super().__init__()
        self.variant = variant
        specs = stage_specs(variant)
        for name in _STAGE_NAMES:
            setattr(self, name, _block(specs[name]))
        side_inputs = ("stage1d", "stage2d", "stage3d", "stage4d", "stage5d", "stage6")
        for i, source in enumerate(side_inputs, start=1):
            setattr(self, f"side{i}", nn.Conv2d(specs[source].out_ch, 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)
        self.pool = _pool()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.sigmoid(d) for d in self.forward_logits(x))

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """d0 … d6 before the sigmoid: what a numerically stable BCE loss wants."""
        hx1 = self.stage1(x)
        hx2 = self.stage2(self.pool(hx1))
        hx3 = self.stage3(self.pool(hx2))
        hx4 = self.stage4(self.pool(hx3))
        hx5 = self.stage5(self.pool(hx4))
        hx6 = self.stage6(self.pool(hx5))

        hx5d = self.stage5d(torch.cat((resize_to(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((resize_to(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((resize_to(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((resize_to(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((resize_to(hx2d, hx1), hx1), 1))

        d1 = self.side1(hx1d)
        sides = [d1] + [resize_to(getattr(self, f"side{i}")(h), d1)
                        for i, h in zip(range(2, 7), (hx2d, hx3d, hx4d, hx5d, hx6))]
        d0 = self.outconv(torch.cat(sides, 1))
        return (d0, *sides)


def build(variant: str) -> U2Net:
    """A U²-Net of the given variant ("full" or "small") with PyTorch's default initialisation."""
    return U2Net(variant)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
