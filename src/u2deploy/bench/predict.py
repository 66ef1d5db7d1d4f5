"""Saliency masks for a set of images from any artifact: the step before ``u2bench eval``.

Every artifact goes through the same runner interface, so ``u2bench predict`` followed by
``u2bench eval`` evaluates PyTorch, ONNX and TensorRT alike. A bad image is reported in one line
and skipped; the caller decides the exit status from :attr:`PredictReport.failed`.

Users' files are safe: :func:`plan_outputs` refuses, before any work, an output that is one of
the input images, two inputs that would write the same ``<stem>.png``, an output folder that cannot
be written, and outputs that already exist (unless ``overwrite``; ``skip_existing`` keeps them and
skips their images). Ctrl-C raises :class:`PredictInterrupted`, which says how many masks were kept.
"""

from __future__ import annotations

import os
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
from ..files import atomic_path, check_writable

DEFAULT_SIZE = (320, 320)


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # inputs whose outputs were already there
    cutouts: list[Path] = field(default_factory=list)

    def summary(self, out_dir: Path, entries_skipped: int = 0) -> str:
        """One line: what was written, skipped and failed, and the next command when there is one."""
        cutouts = f" and {len(self.cutouts)} cut-outs" if self.cutouts else ""
        wrote = bool(self.written or not self.failed)
        parts = [f"wrote {len(self.written)} masks{cutouts} to {out_dir}" if wrote
                 else f"wrote no masks: all {len(self.failed)} images failed"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} images skipped (outputs already there)")
        if entries_skipped:
            parts.append(f"{entries_skipped} folder entries skipped")
        if self.failed and self.written:
            parts.append(f"{len(self.failed)} images failed")
        if wrote:
            parts.append(f"next: u2bench eval --pred {out_dir} --gt MASKS_DIR")
        return " · ".join(parts)


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`predict`: ``report`` holds the masks written (and kept) before it."""

    def __init__(self, report: PredictReport) -> None:
        super().__init__()
        self.report = report


@dataclass
class OutputPlan:
    """What :func:`predict` will write: each input with its outputs still to write (mask first)."""

    out_dir: Path
    cutout: bool
    jobs: list[tuple[Path, list[Path]]]
    skipped: list[Path]  # inputs whose outputs all exist (``skip_existing``)


def outputs_for(path: Path, out_dir: Path, cutout: bool = False) -> list[Path]:
    """``OUT/<stem>.png`` and, with ``cutout``, ``OUT/cutouts/<stem>.png``: the stem is what
    ``u2bench eval`` pairs with the ground truth, so it is never renamed."""
    return [out_dir / f"{path.stem}.png"] + ([out_dir / "cutouts" / f"{path.stem}.png"] if cutout else [])


def _check_folder(folder: Path, probe_name: str) -> None:
    """``folder`` is (or can be made) a folder that accepts new files; a one-line U2Error if not."""
    if folder.exists():
        if not folder.is_dir():
            raise U2Error(f"{folder}: exists and is not a folder")
        check_writable(folder / probe_name)
        return
    if folder.is_symlink():
        raise U2Error(f"{folder}: a dangling symlink, not a folder")
    ancestor = folder.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():
            raise U2Error(f"{folder}: cannot create the folder: {ancestor} is a dangling symlink")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise U2Error(f"{folder}: cannot create the folder: {ancestor} is not a folder")
    try:
        check_writable(ancestor / folder.name)
    except U2Error as exc:
        raise U2Error(f"{folder}: cannot create the folder: {exc}") from None


def plan_outputs(paths: Sequence[Path], out_dir: Path, *, cutout: bool = False, overwrite: bool = False,
                 skip_existing: bool = False) -> OutputPlan:
    """Every check on the outputs that can be made before any work; each failure is one line."""
    if overwrite and skip_existing:
        raise U2Error("--overwrite and --skip-existing cannot be used together: "
                      "replace the existing outputs, or keep them and skip their images")
    out_dir = Path(out_dir)
    _check_folder(out_dir, ".u2bench-probe.png")
    if cutout:
        _check_folder(out_dir / "cutouts", ".u2bench-probe.png")
    inputs: dict[Path, Path] = {}
    ids: dict[tuple[int, int], Path] = {}
    for path in paths:
        inputs.setdefault(path.resolve(), path)
        try:
            st = path.stat()
            ids.setdefault((st.st_dev, st.st_ino), path)  # hard links, bind mounts
        except OSError:
            pass  # unreadable inputs fail later, one line each
    writers: dict[Path, Path] = {}
    for path in paths:
        target = outputs_for(path, out_dir)[0]
        other = writers.setdefault(target, path)
        if other is not path:
            same = " (the same file given twice)" if other.resolve() == path.resolve() else ""
            raise U2Error(f"{other} and {path} would both write {target}{same}: masks are named by stem, "
                          "so rename one or predict them into separate folders")
    jobs: list[tuple[Path, list[Path]]] = []
    skipped: list[Path] = []
    existing: list[Path] = []
    for path in paths:
        todo = []
        for target in outputs_for(path, out_dir, cutout):
            source = inputs.get(target.resolve())
            if source is None and os.path.lexists(target):
                try:
                    st = target.stat()
                    source = ids.get((st.st_dev, st.st_ino))
                except OSError:
                    pass
            if source is not None:
                which = "one of the input images" if source == target else f"the input image {source}"
                raise U2Error(f"{target}: is {which}; refusing to overwrite an input (choose another -o)")
            if not os.path.lexists(target):
                todo.append(target)
            elif target.is_dir() or (target.exists() and not target.is_file()):
                raise U2Error(f"{target}: exists and is not a file; move it away")
            elif overwrite:
                todo.append(target)
            else:
                existing.append(target)
        if todo:
            jobs.append((path, todo))
        else:
            skipped.append(path)
    if existing and not skip_existing:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise U2Error(f"{existing[0]}: already exists{more}; pass --overwrite to replace, "
                      "or --skip-existing to keep them and skip their images")
    return OutputPlan(out_dir, cutout, jobs, skipped)


def _make_folders(plan: OutputPlan) -> list[Path]:
    """Create OUT (and OUT/cutouts); the folders created, outermost first, to remove if left empty."""
    wanted = [plan.out_dir] + ([plan.out_dir / "cutouts"] if plan.cutout else [])
    missing = [p for p in (*reversed(plan.out_dir.parents), *wanted) if not p.exists()]
    created: list[Path] = []
    for folder in missing:
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise U2Error(f"{folder}: exists and is not a folder") from None
            continue
        except OSError as exc:
            _remove_empty(created)
            raise U2Error(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
        created.append(folder)
    return created


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


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
    """The mean and std the artifact's weights expect (its spec's)."""
    spec = runner.info.spec
    return spec.mean, spec.std


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
        try:
            Image.fromarray(array).save(tmp, format="PNG")
        except OSError as exc:
            raise U2Error(f"{path}: cannot write ({exc.strerror or exc})") from None


def predict(runner: Runner, paths: Sequence[Path], out_dir: Path, *, mode: str = "fast",
            size: tuple[int, int] | None = None, batch: int = 8, cutout: bool = False,
            overwrite: bool = False, skip_existing: bool = False, plan: OutputPlan | None = None,
            progress: bool = True, on_error: Callable[[str], None] | None = None) -> PredictReport:
    """Write ``OUT/<stem>.png`` (8-bit mask at the original size) and, with ``cutout``,
    ``OUT/cutouts/<stem>.png`` (RGBA) for every readable image.

    ``plan`` (from :func:`plan_outputs` on the same arguments) lets a caller run the output checks
    before it loads the model. Folders this call creates are removed again if they end up empty.
    """
    if mode not in preprocess.MODES:
        raise U2Error(f"--preprocess {mode}: expected one of {', '.join(preprocess.MODES)}")
    if plan is None:
        plan = plan_outputs(paths, out_dir, cutout=cutout, overwrite=overwrite, skip_existing=skip_existing)
    in_size, fixed_batch = input_geometry(runner, size)
    mean, std = normalisation(runner)
    report = PredictReport(skipped=list(plan.skipped))
    jobs = plan.jobs
    step = fixed_batch or (1 if mode == "reference" else batch)
    created = _make_folders(plan) if jobs else []
    bar = tqdm(total=len(jobs), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(jobs), step):
            images, todo = [], []
            for path, targets in jobs[start:start + step]:
                try:
                    images.append(read_image(path))
                    todo.append(targets)
                except U2Error as exc:
                    report.failed.append((path, str(exc)))
                    if on_error:
                        on_error(str(exc))
            if images:
                x = preprocess.preprocess(images, in_size, mode, mean, std)
                d0 = run_batched(runner, x, fixed_batch, step)
                masks = postprocess.postprocess(d0, [im.shape[:2] for im in images], mode)
                for targets, image, mask in zip(todo, images, masks):
                    for target in targets:
                        if target.parent == plan.out_dir:
                            _save_png(mask, target)
                            report.written.append(target)
                        else:
                            _save_png(postprocess.cutout(image, mask), target)
                            report.cutouts.append(target)
            bar.update(len(jobs[start:start + step]))
    except KeyboardInterrupt:  # atomic_path has removed the temporary of the file being written
        raise PredictInterrupted(report) from None
    except U2Error as exc:
        if not report.written:
            raise
        raise U2Error(f"{exc}; the {len(report.written)} masks written before it are kept") from None
    finally:
        bar.close()
        _remove_empty(created)
    return report
