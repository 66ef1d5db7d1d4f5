"""Writing artifacts atomically: a crash or a failed check never leaves a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import U2Error


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds."""
    final = Path(final)
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.is_dir():
        raise U2Error(f"{final}: folder {folder} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise U2Error(f"{final}: cannot write there ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the artifact should read like any new file
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # atomic_path's: mkstemp(prefix=".NAME.", suffix=".tmp")


def remove_temporaries(finals: Iterable[str | Path]) -> int:
    """Remove what :func:`atomic_path` left beside ``finals`` when its process was killed mid-write
    (SIGKILL, a lost machine): ``.NAME.XXXXXXXX.tmp`` for exactly those names. Returns how many."""
    by_folder: dict[Path, set[str]] = {}
    for final in map(Path, finals):
        by_folder.setdefault(final.parent, set()).add(final.name)
    removed = 0
    for folder, names in by_folder.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry)
            if match and match.group(1) in names:
                with contextlib.suppress(FileNotFoundError):
                    (folder / entry).unlink()
                    removed += 1
    return removed


def write_json(path: str | Path, data: Any) -> Path:
    """JSON written atomically; values JSON cannot hold (paths, enums) are written as strings."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)


def check_writable(path: str | Path) -> None:
    """Fail before hours of work rather than after: the folder exists and accepts a new file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise U2Error(f"{path}: folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".probe", dir=folder):
            pass
    except OSError as exc:
        raise U2Error(f"{path}: cannot write there ({exc.strerror or exc})") from None


def check_destinations(*paths: str | Path | None) -> None:
    """Every ``--json``/``-o`` file a command will write, checked before it starts the work."""
    for path in paths:
        if path is not None:
            if Path(path).is_dir():
                raise U2Error(f"{path}: is a folder; name a file")
            check_writable(path)


def human_size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
