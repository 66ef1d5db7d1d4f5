"""Calibration ranges on disk, reused only for the calibration they came from, and only intact.

Calibrating 300 images takes minutes; quantizing again with other ``--exclude`` nodes or another
target should not. The cache is keyed by everything that decides the ranges: the model (sha256 of
the ONNX file), the preprocessing (size, mean, std, resize), the image list (names and sizes), the
method and its options. Before any range is used, :func:`load_ranges` refuses, in one line naming the
file and what differs:

- a file that is not a cache, or one from before the ranges carried a digest (format 1);
- a *foreign* cache: its key differs from this calibration's (the first field that differs is named);
- a *damaged* one: the sha256 of its ranges (canonical JSON, written beside them) does not match
  them, or a range is not finite or has its low end above its high end.

An edit that also rewrites the digest cannot be told from a calibration; it is caught after
quantizing, by the INT8 stage's verification against the FP32 model. The cache is never deleted or
overwritten here: the user deletes it, passes ``--recalibrate`` (which overwrites it) or another ``--cache``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import U2Error
from ..files import write_json

FORMAT = "u2deploy-calibration-cache/2"  # /2: the ranges carry their sha256
_WHAT_TO_DO = "delete it, pass --recalibrate to overwrite it, or --cache with another file"
Ranges = dict[str, tuple[float, float]]  # tensor name -> (lowest, highest)


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    preprocessing: dict[str, Any]
    images: str  # list_sha256 of the sampled files
    n_images: int
    method: str
    options: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples → lists, as they come back from disk


def _first_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    names = {"model_sha256": "another model", "preprocessing": "other preprocessing",
             "images": "other images", "n_images": "another number of images",
             "method": "another method", "options": "other calibration options"}
    for field, what in names.items():
        if stored.get(field) != wanted.get(field):
            return f"{what} ({field} {_short(stored.get(field))} ≠ {_short(wanted.get(field))})"
    return None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:12] + "…" if isinstance(value, str) and len(text) == 64 else text


def ranges_digest(ranges: Ranges) -> str:
    """sha256 of the ranges as the cache writes them (sorted names, floats as JSON numbers)."""
    canonical = json.dumps({name: [float(lo), float(hi)] for name, (lo, hi) in ranges.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read(path: Path) -> tuple[dict[str, Any], Ranges, str | None]:
    """(key, ranges, why the ranges cannot be trusted or None) of a cache file; U2Error when it is none."""
    try:
        data = json.loads(path.read_text())
        fmt, stored_key = data.get("format"), data["key"]
        ranges = {str(name): (float(lo), float(hi)) for name, (lo, hi) in data["ranges"].items()}
        if fmt not in (FORMAT, "u2deploy-calibration-cache/1") or not isinstance(stored_key, dict):
            raise KeyError("format")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise U2Error(f"calibration cache {path}: not a u2deploy calibration cache; {_WHAT_TO_DO}") from None
    if fmt != FORMAT:
        return stored_key, ranges, "written by an older u2deploy, without a digest of its ranges"
    bad = next((name for name, (lo, hi) in ranges.items()
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi)), None)
    if bad is not None:
        return stored_key, ranges, f"damaged: the range of {bad} is {list(ranges[bad])}"
    if data.get("ranges_sha256") != ranges_digest(ranges):
        return stored_key, ranges, "damaged or edited: its ranges do not match their recorded sha256"
    return stored_key, ranges, None


def load_ranges(path: Path, key: CacheKey) -> Ranges | None:
    """The cached ranges when ``path`` holds an intact cache for ``key``; None when there is no file.

    Raises :class:`U2Error` (one line: the file, what differs, what to do) when the file is not a cache,
    was made for another calibration, or its ranges are damaged (module docstring).
    """
    if not path.is_file():
        return None
    stored_key, ranges, untrusted = _read(path)
    difference = _first_difference(stored_key, key.as_dict())
    if difference:
        raise U2Error(f"calibration cache {path} was made for {difference}; {_WHAT_TO_DO}")
    if untrusted:
        raise U2Error(f"calibration cache {path}: {untrusted}; {_WHAT_TO_DO}")
    return ranges


def partial_path(path: Path) -> Path:
    """Where an interrupted min-max calibration keeps the ranges of the images it finished."""
    return path.with_name(f"{path.name}.partial")


def load_partial(path: Path, key: CacheKey) -> tuple[int, Ranges] | None:
    """(images done, their ranges) of an interrupted run of this very calibration, else None."""
    partial = partial_path(path)
    try:
        stored_key, ranges, untrusted = _read(partial)
        if untrusted or _first_difference(stored_key, key.as_dict()):
            return None
        return int(json.loads(partial.read_text())["images_done"]), ranges
    except (U2Error, OSError, ValueError, KeyError, TypeError):
        return None


def save_partial(path: Path, key: CacheKey, images_done: int, ranges: Ranges) -> Path:
    """Keep an interrupted min-max calibration's ranges beside the cache (``load_partial`` reads them)."""
    save_ranges(partial_path(path), key, ranges, {"images_done": images_done})
    return partial_path(path)


def save_ranges(path: Path, key: CacheKey, ranges: Ranges, extra: dict[str, Any] | None = None) -> None:
    write_json(path, {"format": FORMAT, "key": key.as_dict(), **(extra or {}), "ranges_sha256": ranges_digest(ranges),
                      "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())}})
