"""Saliency masks for a set of images from any artifact: the step before ``u2bench eval``.

Every artifact goes through the same runner interface, so ``u2bench predict`` followed by
``u2bench eval`` evaluates PyTorch, ONNX and TensorRT alike. A bad image is reported in one line
and skipped; the caller decides the exit status from :attr:`PredictReport.failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data import postprocess, preprocess
from ..data.images import read_image
from ..engines import Runner
from ..errors import U2Error
from ..files import atomic_path

DEFAULT_SIZE = (320, 320)


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def input_geometry(runner: Runner, size: tuple[int, int] | None = None) -> tuple[tuple[int, int], int | None]:
    """Input size and batch the artifact takes: fixed ones win, else the weights' own size."""
    info = runner.info
    if info.input_size is not None:
        if size is not None and tuple(size) != info.input_size:
            raise U2Error(f"{info.path}: fixed input {info.input_size[0]}×{info.input_size[1]}; "
                          f"--size {size[0]}x{size[1]} needs a --dynamic-hw export")
        chosen = info.input_size
    else:
        chosen = size or info.native_size or DEFAULT_SIZE
    fixed_batch = info.batch_range[0] if info.batch_range and info.batch_range[0] == info.batch_range[1] else None
    return tuple(chosen), fixed_batch  # type: ignore[return-value]


def normalisation(runner: Runner) -> tuple[tuple[float, ...], tuple[float, ...]]:
    meta = runner.info.metadata
    mean = tuple(float(v) for v in meta["mean"].split(",")) if meta.get("mean") else preprocess.IMAGENET_MEAN
    std = tuple(float(v) for v in meta["std"].split(",")) if meta.get("std") else preprocess.IMAGENET_STD
    return mean, std


def run_batched(runner: Runner, x: np.ndarray, fixed_batch: int | None, step: int) -> np.ndarray:
    """d0 for every row of ``x``, in chunks the artifact accepts (a fixed batch is padded)."""
    step = fixed_batch or step
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        pad = step - len(chunk) if fixed_batch else 0
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outs.append(runner.saliency(chunk)[:len(chunk) - pad])
    return np.concatenate(outs)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict(runner: Runner, paths: Sequence[Path], out_dir: Path, *, mode: str = "fast",
            size: tuple[int, int] | None = None, batch: int = 8, cutout: bool = False,
            progress: bool = True, on_error: Callable[[str], None] | None = None) -> PredictReport:
    """Write ``OUT/<stem>.png`` (8-bit mask at the original size) and, with ``cutout``,
    ``OUT/cutouts/<stem>.png`` (RGBA) for every readable image."""
    if mode not in preprocess.MODES:
        raise U2Error(f"--preprocess {mode}: expected one of {', '.join(preprocess.MODES)}")
    in_size, fixed_batch = input_geometry(runner, size)
    mean, std = normalisation(runner)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cutout:
        (out_dir / "cutouts").mkdir(exist_ok=True)
    report = PredictReport()
    step = fixed_batch or (1 if mode == "reference" else batch)
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(paths), step):
        images, names = [], []
        for path in paths[start:start + step]:
            try:
                images.append(read_image(path))
                names.append(path)
            except U2Error as exc:
                report.failed.append((path, str(exc)))
                if on_error:
                    on_error(str(exc))
        bar.update(len(paths[start:start + step]))
        if not images:
            continue
        x = preprocess.preprocess(images, in_size, mode, mean, std)
        d0 = run_batched(runner, x, fixed_batch, step)
        masks = postprocess.postprocess(d0, [im.shape[:2] for im in images], mode)
        for path, image, mask in zip(names, images, masks):
            target = out_dir / f"{path.stem}.png"
            _save_png(mask, target)
            if cutout:
                _save_png(postprocess.cutout(image, mask), out_dir / "cutouts" / f"{path.stem}.png")
            report.written.append(target)
    bar.close()
    return report
