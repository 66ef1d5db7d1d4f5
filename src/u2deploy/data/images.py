"""Decoding the images users throw at the pipeline, with one-line errors for the bad ones.

Handled: 8-bit and 16-bit, grayscale, palette, RGBA (first three channels, as the authors do),
CMYK, EXIF orientation. Refused with a message: unreadable or truncated files, and images over
:data:`MAX_PIXELS` (decompression bombs) before they are decoded.
"""

from __future__ import annotations

import errno
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import U2Error

MAX_PIXELS = 64_000_000  # ~8000×8000; U²-Net works at 320×320, so larger inputs are almost surely bombs
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image(path: str | Path) -> np.ndarray:
    """H×W×C integer array (C = 1 for grayscale, 3 otherwise; uint8, or uint16 for 16-bit files).

    Grayscale stays one channel because the authors normalise it with the first channel's
    mean and std for all three copies; see :mod:`u2deploy.data.preprocess`.
    """
    path = Path(path)
    if not path.is_file():
        raise U2Error(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise U2Error(f"{path}: {width}×{height} pixels is over the {MAX_PIXELS:,} limit "
                                  "(a decompression bomb?)")
                im = ImageOps.exif_transpose(im)
                return pil_to_array(im)
    except U2Error:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise U2Error(f"{path}: not a readable image ({_reason(exc)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise U2Error(f"{path}: corrupt or truncated image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def pil_to_array(im: Image.Image) -> np.ndarray:
    """A decoded image as :func:`read_image` returns it (H×W×1 or H×W×3; uint8, or uint16 for 16-bit)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im)
        if arr.dtype != np.uint16:  # mode "I" holds int32; 16-bit PNGs decode to it in some Pillows
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return arr[:, :, None]
    if im.mode in ("L", "LA", "1"):
        return np.asarray(im.convert("L"))[:, :, None]
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "RGBa", "RGBX"):
        return np.ascontiguousarray(np.asarray(im)[:, :, :3])
    if im.mode == "RGB":
        return np.asarray(im)
    arr = np.asarray(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, F …
    return arr


def unit_float(image: np.ndarray) -> np.ndarray:
    """Integer image to float64 in [0, 1], as scikit-image's ``img_as_float`` does."""
    return image.astype(np.float64) / float(np.iinfo(image.dtype).max)


def list_images(folder_or_files: str | Path | list[str | Path],
                skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Image files of a folder (sorted by name; GIFs too, first frame), or the given files as they are.

    A folder's entries that are named like images but are not files (a folder ``x.jpg``, a dangling
    symlink, a symlink loop, a FIFO …) are left out; with ``skipped``, each is appended there with
    the reason, so that the caller can report it rather than drop it silently.
    """
    return [path for path, _ in image_tree(folder_or_files, skipped=skipped)]


def image_tree(folder_or_files: str | Path | list[str | Path], *, recursive: bool = False,
               skipped: list[tuple[Path, str]] | None = None,
               exclude: Sequence[str | Path] = ()) -> list[tuple[Path, Path]]:
    """Like :func:`list_images`, with each image's folder relative to the folder it was found under.

    ``recursive`` walks subfolders too (sorted: a folder's images, then its subfolders; symlinked
    folders are followed once, never in a loop), so a caller can mirror the tree: ``a/b/x.jpg``
    found under ``a`` comes with ``b``; files given directly come with ``.``. Folders in ``exclude``
    (an output folder inside the input tree) are not entered; with ``skipped`` they are reported.
    """
    items = folder_or_files if isinstance(folder_or_files, list) else [folder_or_files]
    excluded = {Path(p).resolve() for p in exclude}
    found: list[tuple[Path, Path]] = []
    for item in map(Path, items):
        if item.is_dir():
            _walk(item, Path("."), recursive, found, skipped, excluded, {item.resolve()})
        elif item.exists():
            found.append((item, Path(".")))
        else:
            raise U2Error(f"{item}: no such file or folder")
    if not found:
        raise U2Error(f"{', '.join(map(str, items))}: no images found")
    return found


_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")  # read_image takes GIFs given directly; a folder's are no different


def _walk(folder: Path, rel: Path, recursive: bool, found: list[tuple[Path, Path]],
          skipped: list[tuple[Path, str]] | None, excluded: set[Path], visiting: set[Path]) -> None:
    def skip(entry: Path, why: str) -> None:
        if skipped is not None:
            skipped.append((entry, why))

    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        if rel == Path("."):
            raise U2Error(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
        skip(folder, f"cannot list the folder ({exc.strerror or exc})")
        return
    subfolders = []
    for entry in entries:
        named_like_image = entry.suffix.lower() in _SUFFIXES
        if not (named_like_image or recursive):
            continue
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            if not named_like_image:
                continue
            if exc.errno == errno.ELOOP:
                why = "symlink loop"
            elif entry.is_symlink():
                why = "dangling symlink (its target does not exist)"
            else:
                why = f"cannot read it ({exc.strerror or exc})"
            skip(entry, why)
            continue
        if stat.S_ISDIR(mode) and recursive:
            subfolders.append(entry)
        elif not named_like_image:
            continue
        elif stat.S_ISREG(mode):
            found.append((entry, rel))
        else:
            skip(entry, "a folder, not an image file" if stat.S_ISDIR(mode) else "not a regular file")
    for sub in subfolders:
        real = sub.resolve()
        if real in excluded:
            skip(sub, "the output folder; not read as input")
        elif real in visiting:
            skip(sub, "a symlink to a folder already being listed; not followed again")
        else:
            _walk(sub, rel / sub.name, True, found, skipped, excluded, visiting | {real})
