"""A model repository on disk: its model directories, and writing them so each is complete or absent.

Triton loads whatever ``config.pbtxt`` and version folder it finds, so a half-copied model directory
is a model that fails at load time, or one that loads the wrong weights. A new repository is staged
in a hidden sibling folder and renamed into place; into an existing one, each model directory is
staged beside it and renamed in, and a failed rename puts back what was there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import U2Error
from ...files import human_size
from .config import ModelConfig


@dataclass(frozen=True)
class ModelDir:
    """One model directory: its config and the files of its version directory (name → source or text)."""

    config: ModelConfig
    files: Mapping[str, Path | str]  # file name in the version directory → a file to copy, or text to write
    role: str  # "model", "preprocess", "postprocess", "ensemble"


@dataclass
class TritonRepo:
    """The planned (then written) repository: its model directories and the notes for the status line."""

    path: Path
    models: list[ModelDir]
    notes: list[str]
    version: int = 1
    replaced: list[str] = field(default_factory=list)  # model directories an --overwrite replaced

    @property
    def size_bytes(self) -> int:
        return sum(item.stat().st_size if isinstance(item, Path) else len(item.encode())
                   for model in self.models for item in model.files.values())

    def status_line(self) -> str:
        names = [m.config.name for m in self.models]
        batches = sorted({m.config.max_batch_size for m in self.models})
        batching = ("max_batch_size " + "/".join(map(str, batches))
                    + (", dynamic batching" if any(m.config.dynamic_batching for m in self.models) else ""))
        notes = "".join(f" · note: {n}" for n in self.notes)
        if any(m.config.backend == "python" for m in self.models):
            notes += " · the python models import u2deploy: install it in the server's Python (numpy<2 for Triton 2.51)"
        return (f"wrote {self.path} ({human_size(self.size_bytes)}) · {len(names)} model"
                f"{'s' if len(names) != 1 else ''}: {', '.join(names)} · {batching}{notes} · "
                f"next: tritonserver --model-repository={self.path.resolve()}")


def write_repo(repo: TritonRepo, *, overwrite: bool = False) -> TritonRepo:
    """Write the planned model directories under ``repo.path``; each appears complete or not at all.

    A model directory already there is refused unless ``overwrite`` (it is then replaced whole),
    before anything is written.
    """
    out = repo.path
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise U2Error(f"-o {out}: folder {parent} does not exist")
    if out.exists() and not out.is_dir():
        raise U2Error(f"-o {out}: exists and is not a folder (a model repository is a folder)")
    existing = [m for m in repo.models if os.path.lexists(out / m.config.name)] if out.is_dir() else []
    if existing and not overwrite:
        first = out / existing[0].config.name
        what = (f"version {repo.version} exists" if (first / str(repo.version)).exists()
                else "a model directory exists")
        more = f" (and {len(existing) - 1} more models)" if len(existing) > 1 else ""
        raise U2Error(f"{first}: {what}{more}; pass --overwrite to replace it, or choose another -o or --name")
    for model in existing:
        target = out / model.config.name
        if target.is_symlink() or not target.is_dir():
            raise U2Error(f"{target}: exists and is not a model directory; move it away")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.u2triton.", dir=parent))
    except OSError as exc:
        raise U2Error(f"-o {out}: cannot write in {parent} ({exc.strerror or exc})") from None
    try:
        fresh = not out.exists()
        root = staging / "repo"
        root.mkdir()
        try:
            for model in repo.models:
                _stage_model(model, root / model.config.name, repo.version)
        except OSError as exc:
            raise U2Error(f"-o {out}: cannot write the repository ({exc.strerror or exc}); nothing written") from None
        if fresh:
            os.rename(root, out)
            return repo
        _swap_in(root, out, staging, [m.config.name for m in repo.models])
        repo.replaced = [m.config.name for m in existing]
        return repo
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage_model(model: ModelDir, folder: Path, version: int) -> None:
    folder.mkdir()
    (folder / "config.pbtxt").write_text(model.config.to_pbtxt())
    version_dir = folder / str(version)
    version_dir.mkdir()
    for file_name, item in model.files.items():
        if isinstance(item, Path):
            shutil.copyfile(item, version_dir / file_name)
        else:
            (version_dir / file_name).write_text(item)


def _swap_in(root: Path, out: Path, staging: Path, names: Sequence[str]) -> None:
    """Rename each staged model directory into ``out``; on a failure, put back what was there."""
    trash = staging / "replaced"
    trash.mkdir()
    done: list[str] = []
    try:
        for name in names:
            if os.path.lexists(out / name):
                os.rename(out / name, trash / name)
            os.rename(root / name, out / name)
            done.append(name)
    except OSError as exc:
        for name in names:
            if name in done:
                shutil.rmtree(out / name, ignore_errors=True)
            if os.path.lexists(trash / name):
                os.rename(trash / name, out / name)
        raise U2Error(f"-o {out}: cannot move a model directory in ({exc.strerror or exc}); the repository "
                      "is as it was") from None
