"""Saliency datasets on disk: image/mask pairs matched by file stem, in the layouts they ship in.

Recognised layouts (folder names matched case-insensitively):

- DUTS: ``DUTS-TR/DUTS-TR-Image`` + ``DUTS-TR-Mask`` and ``DUTS-TE/DUTS-TE-Image`` + ``DUTS-TE-Mask``;
  the DUTS root (test split unless ``split="TR"``), a split folder, or any ``X-Image`` + ``X-Mask``.
- ECSSD and similar: ``images/`` + ``masks/`` (this project's copy) or ``ground_truth_mask/`` (as
  distributed), and a few other common names (``imgs``, ``gt``).
- Anything else (DUT-OMRON, HKU-IS, PASCAL-S, SOD): explicit ``images=`` and ``masks=`` folders.

Files that have no partner are reported in one warning line with counts, never dropped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import U2Error
from ..plural import plural
from .images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img")
MASK_DIR_NAMES = ("masks", "mask", "ground_truth_mask", "gt", "gts", "groundtruth")
Bound = str | int | None


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path | None  # None when only masks are known (evaluating a folder of predictions)
    mask: Path


@dataclass(frozen=True)
class Dataset:
    """Image/mask pairs sorted by stem, with the files that had no partner."""

    name: str
    pairs: tuple[Pair, ...]
    images_dir: Path | None
    masks_dir: Path
    images_without_mask: tuple[Path, ...] = field(default=(), repr=False)
    masks_without_image: tuple[Path, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.pairs]

    def select(self, start: Bound = None, stop: Bound = None) -> Dataset:
        """Pairs whose stem lies in [start, stop] (both inclusive; None is open).

        Integer bounds compare stems as numbers (so ``select(801, 1000)`` is ECSSD 0801–1000),
        string bounds compare them as text.
        """
        kept = tuple(p for p in self.pairs if in_range(p.stem, start, stop))
        name = f"{self.name} {kept[0].stem}–{kept[-1].stem}" if kept else self.name
        return replace(self, name=name, pairs=kept)

    def limit(self, n: int | None) -> Dataset:
        """The first ``n`` pairs (by stem); all of them for None."""
        if n is None or n >= len(self.pairs):
            return self
        if n < 1:
            raise U2Error(f"--limit must be at least 1, not {n}")
        return replace(self, pairs=self.pairs[:n])

    def unpaired_summary(self) -> str | None:
        """One line like ``ECSSD: 3 images without a mask, 1 mask without an image (first: …)``."""
        parts, first = [], []
        for files, what, partner in ((self.images_without_mask, "image", "a mask"),
                                     (self.masks_without_image, "mask", "an image")):
            if files:
                parts.append(f"{len(files)} {what}{'s' if len(files) > 1 else ''} without {partner}")
                first.append(str(files[0]))
        if not parts:
            return None
        return f"{self.name}: {', '.join(parts)} (first: {', '.join(first)})"


def in_range(stem: str, start: Bound, stop: Bound) -> bool:
    """Whether ``start ≤ stem ≤ stop``: as numbers when a bound is an int, else as text."""
    if isinstance(start, int) or isinstance(stop, int):
        if not stem.isdigit():
            raise U2Error(f"numeric range {start}-{stop} given but file stem {stem!r} is not a number")
        value: str | int = int(stem)
        lo, hi = (None if b is None else int(b) for b in (start, stop))
    else:
        value, lo, hi = stem, start, stop
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def parse_subset(text: str) -> tuple[Bound, Bound]:
    """``"0801-1000"`` or ``"0801:1000"`` → bounds for :meth:`Dataset.select` (ints when numeric)."""
    match = re.fullmatch(r"\s*([^:\s]*?)\s*[:\-–]\s*([^:\s]*)\s*", text)
    if not match or not (match[1] or match[2]):
        raise U2Error(f"subset {text!r}: expected START-STOP, e.g. 0801-1000")
    lo, hi = match[1] or None, match[2] or None
    if all(b is None or b.isdigit() for b in (lo, hi)):
        return (None if lo is None else int(lo)), (None if hi is None else int(hi))
    return lo, hi


def files_by_stem(folder: str | Path) -> dict[str, Path]:
    """Image files of a folder keyed by stem (sorted); one-line errors for a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise U2Error(f"{folder}: no such folder")
    files: dict[str, Path] = {}
    duplicates: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in files:
                duplicates.append(path)
            else:
                files[path.stem] = path
    if not files:
        raise U2Error(f"{folder}: no image files in this folder")
    if duplicates:
        log.warning("%s: ignored %s whose stem another file has (first: %s)",
                    folder, plural(len(duplicates), "file"), duplicates[0].name)
    return files


def _subdir(root: Path, names: tuple[str, ...]) -> Path | None:
    children = {c.name.lower(): c for c in root.iterdir() if c.is_dir()}
    return next((children[n] for n in names if n in children), None)


def _suffixed_pair(root: Path) -> tuple[Path, Path] | None:
    """DUTS style: ``X-Image`` + ``X-Mask`` side by side."""
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower().endswith("-image"):
            mask_dir = _subdir(root, (child.name[:-len("-image")].lower() + "-mask",))
            if mask_dir is not None:
                return child, mask_dir
    return None


def _locate(root: Path, split: str | None) -> tuple[str, Path, Path]:
    """(name, images folder, masks folder) for a dataset root in one of the known layouts."""
    found = _suffixed_pair(root)
    if found:
        return found[0].name[:-len("-Image")], *found
    images, masks = _subdir(root, IMAGE_DIR_NAMES), _subdir(root, MASK_DIR_NAMES)
    if images and masks:
        return root.name, images, masks
    splits = {c.name.upper(): c for c in root.iterdir()
              if c.is_dir() and re.search(r"-(TR|TE)$", c.name, re.IGNORECASE)}
    if splits:
        wanted = (split or "TE").upper()
        chosen = next((c for name, c in sorted(splits.items()) if name.endswith("-" + wanted)), None)
        if chosen is None:
            raise U2Error(f"{root}: no *-{wanted} split folder (found {', '.join(sorted(splits))})")
        found = _suffixed_pair(chosen)
        if found:
            return chosen.name, *found
    raise U2Error(f"{root}: not a dataset layout this tool knows (expected images/ + masks/ or "
                  "ground_truth_mask/, or DUTS' X-Image/ + X-Mask/); pass the image and mask folders "
                  "explicitly")


def pair_folders(images_dir: str | Path, masks_dir: str | Path, name: str | None = None) -> Dataset:
    """Pairs images and masks by file stem; warns about files without a partner."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images, masks = files_by_stem(images_dir), files_by_stem(masks_dir)
    dataset = Dataset(
        name=name or images_dir.resolve().parent.name,
        pairs=tuple(Pair(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())),
        images_dir=images_dir,
        masks_dir=masks_dir,
        images_without_mask=tuple(images[s] for s in sorted(images.keys() - masks.keys())),
        masks_without_image=tuple(masks[s] for s in sorted(masks.keys() - images.keys())),
    )
    if summary := dataset.unpaired_summary():
        log.warning(summary)
    if not dataset.pairs:
        raise U2Error(f"{images_dir} and {masks_dir}: no image has a mask with the same file stem")
    return dataset


def mask_folder(masks_dir: str | Path, name: str | None = None) -> Dataset:
    """Ground truth alone (no images), for scoring predictions that were made elsewhere."""
    masks_dir = Path(masks_dir)
    masks = files_by_stem(masks_dir)
    return Dataset(name=name or _name_of_masks(masks_dir),
                   pairs=tuple(Pair(s, None, masks[s]) for s in sorted(masks)),
                   images_dir=None, masks_dir=masks_dir)


def _name_of_masks(masks_dir: Path) -> str:
    """``ECSSD/masks`` → ECSSD, ``DUTS-TE/DUTS-TE-Mask`` → DUTS-TE, ``my_gt`` → my_gt."""
    folder = masks_dir.resolve()
    if folder.name.lower() in MASK_DIR_NAMES:
        return folder.parent.name
    return re.sub(r"[-_]mask$", "", folder.name, flags=re.IGNORECASE)


def open_dataset(root: str | Path | None = None, *, images: str | Path | None = None,
                 masks: str | Path | None = None, name: str | None = None, split: str | None = None,
                 subset: str | tuple[Bound, Bound] | None = None, limit: int | None = None) -> Dataset:
    """A dataset from its root folder (known layouts) or from explicit image and mask folders.

    ``subset`` keeps a stem range (``"0801-1000"`` or ``(801, 1000)``), then ``limit`` the first N.
    """
    if images is not None or masks is not None:
        if images is None or masks is None:
            raise U2Error("give both the images folder and the masks folder")
        dataset = pair_folders(images, masks, name)
    elif root is None:
        raise U2Error("give a dataset root, or the images and masks folders")
    else:
        root = Path(root)
        if not root.is_dir():
            raise U2Error(f"{root}: no such folder")
        found_name, images_dir, masks_dir = _locate(root, split)
        dataset = pair_folders(images_dir, masks_dir, name or found_name)
    if subset is not None:
        dataset = dataset.select(*(parse_subset(subset) if isinstance(subset, str) else subset))
        if not dataset.pairs:
            raise U2Error(f"{dataset.name}: the subset {subset} holds no pairs")
    return dataset.limit(limit)


def ground_truth(path: str | Path, name: str | None = None) -> Dataset:
    """A dataset root (its masks) or a plain folder of masks: what ``u2bench eval --gt`` accepts."""
    path = Path(path)
    if not path.is_dir():
        raise U2Error(f"{path}: no such folder")
    has_images = any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return mask_folder(path, name) if has_images else open_dataset(path, name=name)
