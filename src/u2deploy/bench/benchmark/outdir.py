"""``--out``: the benchmark deletes or replaces only what it wrote there itself.

OUT holds what the stages build (artifacts, their manifests, the quantize stage's ranges cache, the
TensorRT build folders), the links of ``--calib-subset`` and the artifact cache; a rerun rebuilds or
reuses them. Anything else there (the user's own ``u2netp_320x320.onnx``, a checkpoint, the very images
``--calib`` names) could be written over by a stage or unlinked with the links, so OUT keeps a ledger,
:data:`LEDGER`, of every file, link and folder the benchmark made, with each file's sha256.

Before any work, :meth:`OutFolder.open` refuses, in one line, an OUT that holds anything the ledger does
not account for: an entry it never wrote, or a file changed since (the run's own ``--json``/``--report``
files, which the user named, excepted). So every file a stage may replace is one the benchmark wrote.
``--data``, ``--calib`` and ``--weights`` inside OUT are refused first, with their own message. After each
stage, :meth:`OutFolder.record` adds what appeared to the ledger (in a ``finally``: an interrupted
stage's leftovers, such as a ``.calib.json.partial``, are the benchmark's too).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import U2Error
from ...files import sha256_of, write_json

log = logging.getLogger(__name__)

LEDGER = "benchmark-files.json"
LEDGER_VERSION = 1


@dataclass(frozen=True)
class _Seen:
    """One entry of OUT as it is on disk now."""

    kind: str  # "file", "dir" or "link"
    size: int = 0
    mtime_ns: int = 0
    target: str | None = None  # a link's


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every entry under ``root`` (relative POSIX path, path), folders before their contents; links not followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            path = base / name
            yield path.relative_to(root).as_posix(), path


def _seen(path: Path) -> _Seen:
    if path.is_symlink():
        return _Seen("link", target=os.readlink(path))
    if path.is_dir():
        return _Seen("dir")
    st = path.stat()
    return _Seen("file", st.st_size, st.st_mtime_ns)


class OutFolder:
    """``--out`` and its ledger: open (check), then record after every stage that writes."""

    def __init__(self, path: Path, entries: dict[str, dict[str, Any]], user_outputs: Iterable[Path]) -> None:
        self.path = path
        self.entries = entries
        self._user = {p.resolve() for p in user_outputs}

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, out: Path, *, user_outputs: Iterable[Path | None] = (),
             inputs: Iterable[tuple[str, Path | None]] = ()) -> OutFolder:
        """OUT made (its parent must exist) or checked; ``inputs`` are ``("--calib", path)`` pairs that must
        lie outside it. A one-line :class:`U2Error` names the first thing in the way."""
        out = Path(out)
        for flag, given in inputs:
            if given is not None and _inside(Path(given), out):
                raise U2Error(f"{flag} {given} lies inside --out {out}, the folder the benchmark writes and "
                              "cleans: move it out or choose another --out")
        users = [Path(p) for p in user_outputs if p is not None]
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise U2Error(f"--out {out}: not a folder")
        if not out.exists():
            parent = out.parent if str(out.parent) else Path(".")
            if not parent.is_dir():
                raise U2Error(f"--out {out}: folder {parent} does not exist")
            try:
                out.mkdir()
            except OSError as exc:
                raise U2Error(f"--out {out}: cannot make it ({exc.strerror or exc})") from None
            folder = cls(out, {}, users)
            folder._save()
            return folder
        ledger = out / LEDGER
        entries: dict[str, dict[str, Any]] = {}
        if ledger.is_file():
            try:
                data = json.loads(ledger.read_text())
                if data.get("version") != LEDGER_VERSION or not isinstance(data.get("entries"), dict):
                    raise ValueError("version")
                entries = data["entries"]
            except (OSError, ValueError, AttributeError):
                raise U2Error(f"--out {out}: {LEDGER} is unreadable, so what in it the benchmark wrote is "
                              "unknown: choose another --out") from None
        folder = cls(out, entries, users)
        folder._check()
        if not ledger.is_file():  # an empty folder: the benchmark's from now on
            folder._save()
        return folder

    def _check(self) -> None:
        """Refuse anything in OUT the ledger does not account for (the module docstring says why)."""
        for rel, path in _walk(self.path):
            if rel == LEDGER or path.resolve() in self._user:
                continue
            entry = self.entries.get(rel)
            if entry is None:
                raise U2Error(f"--out {self.path}: {rel} was not written by u2bench benchmark, and a stage could "
                              f"replace or delete it: move it out of {self.path} or choose another --out")
            if not self._unchanged(entry, path):
                raise U2Error(f"--out {self.path}: {rel} changed since u2bench benchmark wrote it (a file of yours "
                              f"now?); move it out of {self.path} or choose another --out")

    @staticmethod
    def _unchanged(entry: dict[str, Any], path: Path) -> bool:
        now = _seen(path)
        if now.kind != entry.get("kind"):
            return False
        if now.kind == "link":
            return now.target == entry.get("target")
        if now.kind == "dir":
            return True
        if (now.size, now.mtime_ns) == (entry.get("size"), entry.get("mtime_ns")):
            return True
        return now.size == entry.get("size") and sha256_of(path) == entry.get("sha256")

    # ---------------------------------------------------------------------------------------- recording

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is in OUT's ledger and unchanged since it was recorded (a link is not followed)."""
        path = Path(path)
        try:
            rel = path.relative_to(self.path).as_posix()
        except ValueError:
            return False
        entry = self.entries.get(rel)
        return entry is not None and (path.exists() or path.is_symlink()) and self._unchanged(entry, path)

    def record(self) -> None:
        """Add to the ledger everything in OUT that is new or changed (what the benchmark just wrote), and
        drop what is gone."""
        found: dict[str, dict[str, Any]] = {}
        for rel, path in _walk(self.path):
            if rel == LEDGER or path.resolve() in self._user:
                continue
            old = self.entries.get(rel)
            if old is not None and self._unchanged(old, path):
                found[rel] = old
                continue
            now = _seen(path)
            entry: dict[str, Any] = {"kind": now.kind}
            if now.kind == "file":
                entry |= {"size": now.size, "mtime_ns": now.mtime_ns, "sha256": sha256_of(path)}
            elif now.kind == "link":
                entry["target"] = now.target
            found[rel] = entry
        self.entries = found
        self._save()

    def _save(self) -> None:
        write_json(self.path / LEDGER, {"version": LEDGER_VERSION,
                                        "what": "every file, link and folder u2bench benchmark wrote here",
                                        "entries": self.entries})


def _inside(path: Path, *folders: Path) -> bool:
    """Whether ``path`` is one of ``folders`` or lies under one (links resolved)."""
    resolved = path.resolve()
    for folder in folders:
        top = folder.resolve()
        if resolved == top or top in resolved.parents:
            return True
    return False
