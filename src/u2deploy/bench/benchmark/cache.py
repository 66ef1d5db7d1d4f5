"""``OUT/benchmark-cache.json``: which artifacts in ``--out`` a rerun may reuse.

An artifact is reused only when the key it was built from (stage, source and weights sha256, size,
calibration image list, options, u2deploy version) is the same and its files still hash to what was
built; anything else rebuilds it, so a stale file is never benchmarked as if it were new.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ...files import sha256_of, write_json

log = logging.getLogger(__name__)

CACHE_FILE = "benchmark-cache.json"
CACHE_VERSION = 1


def artifact_files(path: Path) -> list[Path]:
    """The files of an artifact: an OpenVINO IR is its .xml and its .bin, a site every file in its folder."""
    if path.is_dir():
        return sorted(f for f in path.rglob("*") if f.is_file())
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def files_sha256(path: Path) -> str | None:
    """sha256 of an artifact's files (with their names, for a folder); None if one is missing."""
    files = artifact_files(path)
    if not files or not all(f.is_file() for f in files):
        return None
    if files == [path]:
        return sha256_of(path)
    named = path.is_dir()  # a site: a renamed file is another site
    return hashlib.sha256("".join((f"{f.relative_to(path)}:" if named else "") + sha256_of(f) for f in files)
                          .encode()).hexdigest()


class ArtifactCache:
    """For each artifact file in ``out``, the key it was built from, its sha256 and its build time."""

    def __init__(self, out: Path) -> None:
        self.path = out / CACHE_FILE
        self.entries: dict[str, Any] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                log.warning("%s: unreadable; every artifact is rebuilt", self.path)
            else:
                if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
                    self.entries = dict(data.get("artifacts") or {})

    def hit(self, artifact: Path, key: dict[str, Any]) -> bool:
        entry = self.entries.get(artifact.name)
        if not entry or entry.get("key") != key:
            return False
        return files_sha256(artifact) == entry.get("sha256")

    def store(self, artifact: Path, key: dict[str, Any], seconds: float) -> None:
        self.entries[artifact.name] = {"key": key, "sha256": files_sha256(artifact), "seconds": round(seconds, 1)}
        write_json(self.path, {"version": CACHE_VERSION, "artifacts": self.entries})

    def seconds(self, artifact: Path) -> float | None:
        return (self.entries.get(artifact.name) or {}).get("seconds")
