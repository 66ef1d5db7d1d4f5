"""Images for checks that need real inputs: held-out ECSSD when it is there, generated ones if not.

The project's data lives in ``../shared`` beside the repository (``U2DEPLOY_SHARED`` overrides);
a user's machine has none, so every caller must work with the generated fallback.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from ..plural import plural
from .images import list_images, read_image

ECSSD_HELD_OUT = range(801, 1001)  # 0001-0800 train the demo weights and calibrate; never evaluate on them


def shared_dir() -> Path | None:
    env = os.environ.get("U2DEPLOY_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared")  # beside a source checkout
    candidates.append(Path.cwd().parent / "shared")
    return next((p for p in candidates if p.is_dir()), None)


def ecssd_root() -> Path | None:
    shared = shared_dir()
    root = shared / "datasets" / "ECSSD" if shared else None
    return root if root is not None and (root / "images").is_dir() else None


def generated_images(n: int, seed: int = 0, size: tuple[int, int] = (300, 400)) -> list[np.ndarray]:
    """Deterministic RGB uint8 scenes: a bright ellipse on a textured gradient (a salient object)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(n):
        background = (rng.uniform(20, 120, 3)[None, None, :] + 40 * np.sin(xx / rng.uniform(15, 60))[..., None]
                      + rng.normal(0, 8, (h, w, 3)))
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        background[inside] = rng.uniform(150, 255, 3)
        images.append(np.clip(background, 0, 255).astype(np.uint8))
    return images


def spread(paths: Sequence[Path], n: int) -> list[Path]:
    """``n`` of ``paths`` spaced evenly over the list (all of them when fewer): every part of a folder."""
    if len(paths) <= n:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]


def held_out_ecssd(exclude: Collection[Path] = ()) -> list[Path]:
    """ECSSD 0801-1000 beside the repository, less ``exclude`` (resolved paths); [] where it is absent."""
    root = ecssd_root()
    if root is None:
        return []
    paths = [root / "images" / f"{i:04d}.jpg" for i in ECSSD_HELD_OUT]
    return [p for p in paths if p.is_file() and p.resolve() not in exclude]


def verification_images(n: int = 8, folder: str | Path | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` images and a description of where they came from (test fixtures; export stages use
    :func:`u2deploy.validate.verify.choose_verification_images`, which also leaves out calibration images)."""
    if folder is not None:
        paths = spread(list_images(folder), n)
        return [read_image(p) for p in paths], f"{plural(len(paths), 'image')} from {folder}"
    paths = held_out_ecssd()
    if len(paths) == len(ECSSD_HELD_OUT):
        return [read_image(p) for p in spread(paths, n)], f"{n} ECSSD images (0801-1000)"
    return generated_images(n), f"{n} generated images"
