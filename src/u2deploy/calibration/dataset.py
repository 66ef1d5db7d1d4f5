"""The calibration set: a seeded sample of an image folder, preprocessed exactly as at inference.

INT8 scales are only as good as the activations they were measured on, so the images go through
the deployment preprocessing (:func:`u2deploy.data.preprocess.fast`) at the model's own input
size, with the mean and std recorded in the ONNX file. The documented source is DUTS-TR (the
authors' training set); any folder of images works.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..artifact import ArtifactSpec
from ..data import preprocess
from ..data.images import IMAGE_SUFFIXES, read_image
from ..errors import U2Error

log = logging.getLogger(__name__)

DEFAULT_CALIB_DIR = Path("DUTS-TR/DUTS-TR-Image")
DEFAULT_NUM = 300  # below this, min-max and histogram ranges of U²-Net's deep layers still move


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: (height, width), mean and std, read from the ONNX file."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_name: str

    def as_dict(self) -> dict[str, object]:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "resize": "u2deploy fast (antialiased bilinear on the 8-bit image, Pillow)"}


def input_spec(model: onnx.ModelProto, source: Path | str = "model") -> InputSpec:
    """Input size from the graph (or ``input_size`` when H, W are dynamic); mean and std from metadata."""
    spec = ArtifactSpec.from_metadata({p.key: p.value for p in model.metadata_props}, str(source))
    graph_input = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in graph_input.type.tensor_type.shape.dim]
    size: tuple[int, int] | None = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    size = size or spec.input_size
    if size is None:
        raise U2Error(f"{source}: input height and width are dynamic and no input_size metadata says "
                      "which size to calibrate at; export with --size")
    return InputSpec(size, spec.mean, spec.std, graph_input.name)  # type: ignore[arg-type]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        hint = (" (the default, DUTS' training images, is not here: pass --calib with a folder of a few "
                "hundred images like those you will run on; never your test set)"
                if folder == DEFAULT_CALIB_DIR else "")
        raise U2Error(f"--calib {folder}: no such folder{hint}")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise U2Error(f"--calib {folder}: no image files in this folder")
    return files


def sample_images(folder: str | Path, num: int | None = DEFAULT_NUM, seed: int = 0) -> list[Path]:
    """``num`` images of ``folder`` drawn with ``seed`` (all of them when fewer exist), in name order.

    Same folder, number and seed give the same files on every machine (file names sorted, NumPy's
    PCG64 generator), so two calibrations of one model agree.
    """
    files = _image_files(Path(folder))
    if num is None or num >= len(files):
        return files
    if num < 1:
        raise U2Error(f"--num {num}: calibrate on at least one image")
    picked = np.random.default_rng(seed).choice(len(files), size=num, replace=False)
    return [files[i] for i in sorted(picked)]


def list_digest(files: Sequence[Path]) -> str:
    """sha256 of the file names and sizes: the same images, wherever the folder is mounted."""
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()


@dataclass
class CalibrationSet:
    """The sampled files and how to turn them into network inputs, batch by batch."""

    folder: Path
    files: list[Path]
    spec: InputSpec
    seed: int
    requested: int | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason), filled while reading
    consumed: int = 0  # files read so far by batches()

    @property
    def digest(self) -> str:
        return list_digest(self.files)

    def describe(self) -> dict[str, object]:
        return {"folder": str(self.folder), "images": len(self.files), "requested": self.requested,
                "seed": self.seed, "skipped": len(self.skipped), "list_sha256": self.digest}

    def batches(self, batch_size: int = 1, limit: int | None = None, start: int = 0) -> Iterator[np.ndarray]:
        """Preprocessed N×3×H×W float32 batches of ``files[start:limit]``; unreadable images are skipped
        and counted once. ``consumed`` is the number of files read when a batch is handed out."""
        self.skipped.clear()
        self.consumed = start
        pending: list[np.ndarray] = []
        for index, path in enumerate(self.files[:limit][start:], start=start):
            self.consumed = index + 1
            try:
                pending.append(read_image(path))
            except U2Error as exc:
                self.skipped.append((path, str(exc)))
                continue
            if len(pending) == batch_size:
                yield preprocess.fast(pending, self.spec.size, self.spec.mean, self.spec.std)
                pending = []
        if pending:
            yield preprocess.fast(pending, self.spec.size, self.spec.mean, self.spec.std)
        if self.skipped:
            log.warning("calibration: skipped %d unreadable image%s (first: %s)", len(self.skipped),
                        "s" if len(self.skipped) > 1 else "", self.skipped[0][1])
        if start == 0 and len(self.skipped) == len(self.files[:limit]):
            raise U2Error(f"--calib {self.folder}: none of the {len(self.skipped)} sampled images "
                          "could be read")


def calibration_set(folder: str | Path, spec: InputSpec, num: int | None = DEFAULT_NUM,
                    seed: int = 0, warn_below: int = DEFAULT_NUM) -> CalibrationSet:
    """Sample the folder; warn when the set is smaller than ``warn_below`` (too few to calibrate on)."""
    folder = Path(folder)
    files = sample_images(folder, num, seed)
    if len(files) < warn_below:
        why = (f"the folder holds only {len(files)}" if num is None or len(files) < num
               else f"--num {num}")
        log.warning("calibrating on %d images (%s); %d or more give stabler INT8 ranges",
                    len(files), why, DEFAULT_NUM)
    return CalibrationSet(folder, files, spec, seed, num)
