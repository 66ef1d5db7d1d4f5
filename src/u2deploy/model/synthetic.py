"""Random weights with realistic activations, for checks of the full model (no trained weights here).

Freshly initialised BatchNorm layers have running mean 0 and variance 1, so a random U²-Net in eval
mode produces saturated or constant maps, and comparing those proves nothing. Re-estimating the
running statistics on real images (forward passes in train mode, no gradients) gives activations
of realistic range and non-degenerate output maps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import atomic_path
from .network import U2Net


@torch.no_grad()
def reestimate_batchnorm(net: U2Net, batches: Iterable[np.ndarray]) -> U2Net:
    """Replace every BatchNorm's running statistics by their cumulative average over ``batches``."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average: every batch weighs the same
    net.train()
    for batch in batches:
        net(torch.from_numpy(batch))
    return net.eval()


def random_calibrated(variant: str, batches: Iterable[np.ndarray], seed: int = 0) -> U2Net:
    torch.manual_seed(seed)
    return reestimate_batchnorm(U2Net(variant), batches)


def save_state_dict(net: U2Net, path: str | Path) -> Path:
    """A plain state_dict in the official layout, written atomically."""
    with atomic_path(path) as tmp:
        torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    return Path(path)
