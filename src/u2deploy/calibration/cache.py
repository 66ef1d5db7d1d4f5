"""Calibration ranges on disk, reused only for the calibration they came from.

Calibrating 300 images takes minutes; quantizing again with other ``--exclude`` nodes or another
target should not. The cache is keyed by everything that decides the ranges: the model (sha256 of
the ONNX file), the preprocessing (size, mean, std, resize), the image list (names and sizes), the
method and its options. A cache whose key differs is refused with the first field that differs,
never silently reused or overwritten.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import U2Error
from ..files import write_json

FORMAT = "u2deploy-calibration-cache/1"
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


def load_ranges(path: Path, key: CacheKey) -> Ranges | None:
    """The cached ranges when ``path`` holds a cache for ``key``; None when there is no file.

    Raises :class:`U2Error` when the file is not a cache or was made for another calibration.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        stored_key, ranges = data["key"], data["ranges"]
        if data.get("format") != FORMAT:
            raise KeyError("format")
    except (OSError, ValueError, KeyError, TypeError):
        raise U2Error(f"calibration cache {path}: not a u2deploy calibration cache; delete it or "
                      "pass --recalibrate") from None
    difference = _first_difference(stored_key, key.as_dict())
    if difference:
        raise U2Error(f"calibration cache {path} was made for {difference}; pass --recalibrate to "
                      "overwrite it, or --cache with another file")
    return {name: (float(lo), float(hi)) for name, (lo, hi) in ranges.items()}


def partial_path(path: Path) -> Path:
    """Where an interrupted min-max calibration keeps the ranges of the images it finished."""
    return path.with_name(f"{path.name}.partial")


def load_partial(path: Path, key: CacheKey) -> tuple[int, Ranges] | None:
    """(images done, their ranges) of an interrupted run of this very calibration, else None."""
    partial = partial_path(path)
    try:
        data = json.loads(partial.read_text())
        if data.get("format") != FORMAT or _first_difference(data["key"], key.as_dict()):
            return None
        return int(data["images_done"]), {n: (float(lo), float(hi)) for n, (lo, hi) in data["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_partial(path: Path, key: CacheKey, images_done: int, ranges: Ranges) -> Path:
    """Keep an interrupted min-max calibration's ranges beside the cache (``load_partial`` reads them)."""
    save_ranges(partial_path(path), key, ranges, {"images_done": images_done})
    return partial_path(path)


def save_ranges(path: Path, key: CacheKey, ranges: Ranges, extra: dict[str, Any] | None = None) -> None:
    write_json(path, {"format": FORMAT, "key": key.as_dict(), **(extra or {}),
                      "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())}})
