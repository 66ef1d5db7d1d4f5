"""The building blocks of U²-Net: conv-BN-ReLU and the residual U-blocks RSU-L / RSU-4F.

Attribute names are those of the authors' code, so that their checkpoints load unchanged;
``shared/reference/U2NET-ARCHITECTURE.md`` is the specification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``src`` to the exact spatial size of ``like``.

    A fixed ×2 would be wrong: ceil-mode pooling makes odd sizes, and the authors resize to the
    skip tensor's size. Sizes are read from ``like`` at run time so that the ONNX export stays
    correct for dynamic heights and widths.
    """
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=False)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class REBNCONV(nn.Module):
    """3×3 convolution (dilation d, padding d), BatchNorm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of height L (RSU-7 … RSU-4): a small U-Net whose output adds its input."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if height < 3:
            raise ValueError(f"RSU height must be at least 3, got {height}")
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        # Registered in the authors' order (encoder, bottom, decoder) so state_dict keys match.
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        for k in range(2, height):
            setattr(self, f"rebnconv{k}", REBNCONV(mid_ch, mid_ch))
        setattr(self, f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, dilation=2))
        for k in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{k}d", REBNCONV(2 * mid_ch, mid_ch))
        self.rebnconv1d = REBNCONV(2 * mid_ch, out_ch)
        self.pool = _pool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.rebnconvin(x)
        encoder = [self.rebnconv1(xin)]
        for k in range(2, self.height):
            encoder.append(getattr(self, f"rebnconv{k}")(self.pool(encoder[-1])))
        d = getattr(self, f"rebnconv{self.height}")(encoder[-1])
        d = getattr(self, f"rebnconv{self.height - 1}d")(torch.cat((d, encoder[-1]), 1))
        for k in range(self.height - 2, 0, -1):
            skip = encoder[k - 1]
            d = getattr(self, f"rebnconv{k}d")(torch.cat((resize_to(d, skip), skip), 1))
        return d + xin


class RSU4F(nn.Module):
    """RSU-4 with dilations (1, 2, 4, 8) instead of pooling: used where maps are already small."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dilation=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dilation=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dilation=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dilation=8)
        self.rebnconv3d = REBNCONV(2 * mid_ch, mid_ch, dilation=4)
        self.rebnconv2d = REBNCONV(2 * mid_ch, mid_ch, dilation=2)
        self.rebnconv1d = REBNCONV(2 * mid_ch, out_ch, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.rebnconvin(x)
        e1 = self.rebnconv1(xin)
        e2 = self.rebnconv2(e1)
        e3 = self.rebnconv3(e2)
        d = self.rebnconv4(e3)
        d = self.rebnconv3d(torch.cat((d, e3), 1))
        d = self.rebnconv2d(torch.cat((d, e2), 1))
        d = self.rebnconv1d(torch.cat((d, e1), 1))
        return d + xin
