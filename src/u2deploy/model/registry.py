"""Weights described as data (as torchvision and timm do): what a file is, what it expects, what it scored.

The authors' checkpoints are not shipped (users bring them); the demo weights trained here are,
and their entry is read from the provenance record written by ``tools/train_demo_weights.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..artifact import IMAGENET_MEAN, IMAGENET_STD

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_NAME = "u2netp_demo_ecssd"


@dataclass(frozen=True)
class WeightsInfo:
    """One set of weights: the layout it loads into and the contract of its inputs."""

    name: str
    variant: str  # "full" or "small"
    filename: str
    num_params: int
    input_size: tuple[int, int]  # (height, width) the weights were trained and are evaluated at
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sha256: str | None = None  # None: the publishers give no hash for the file
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> metric -> value
    description: str = ""
    path: Path | None = None  # set for weights shipped inside the package

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_NAME


# The paper, Table 3 (ECSSD row): maxFβ and MAE of the authors' checkpoints.
_OFFICIAL = (
    WeightsInfo("u2net", "full", "u2net.pth", 44_009_869, (320, 320),
                published={"ECSSD": {"maxF": 0.951, "mae": 0.033}},
                description="authors' U²-Net, trained on DUTS-TR (176.3 MB)"),
    WeightsInfo("u2netp", "small", "u2netp.pth", 1_131_181, (320, 320),
                published={"ECSSD": {"maxF": 0.943, "mae": 0.041}},
                description="authors' U²-Net† (small), trained on DUTS-TR (4.7 MB)"),
    WeightsInfo("u2net_human_seg", "full", "u2net_human_seg.pth", 44_009_869, (320, 320),
                description="authors' U²-Net fine-tuned for human segmentation"),
)


def _demo_entry() -> WeightsInfo | None:
    record_path = WEIGHTS_DIR / f"{DEMO_NAME}.json"
    weights_path = WEIGHTS_DIR / f"{DEMO_NAME}.pth"
    if not (record_path.is_file() and weights_path.is_file()):
        return None
    record = json.loads(record_path.read_text())
    return WeightsInfo(
        name=DEMO_NAME, variant="small", filename=weights_path.name,
        num_params=record["num_params"], input_size=tuple(record["input_size"]),
        mean=tuple(record["mean"]), std=tuple(record["std"]), sha256=record["sha256"],
        published={"ECSSD 0801-1000": record["metrics"]},
        description=("demo weights trained here on 800 ECSSD images (0001-0800), "
                     "not the authors' checkpoint"),
        path=weights_path,
    )


@cache
def registry() -> dict[str, WeightsInfo]:
    entries = list(_OFFICIAL)
    demo = _demo_entry()
    if demo is not None:
        entries.append(demo)
    return {entry.name: entry for entry in entries}


def default_weights(variant: str) -> WeightsInfo | None:
    """The embedded weights used when no ``--weights`` is given (only the small variant has any)."""
    demo = registry().get(DEMO_NAME)
    return demo if demo is not None and demo.variant == variant else None


def official_for(variant: str) -> WeightsInfo:
    """The authors' checkpoint of a variant: the contract a user-supplied file is assumed to follow."""
    return next(w for w in _OFFICIAL if w.variant == variant)
