"""Saliency masks (and cut-outs) for a folder of images from any artifact: the step before ``u2bench eval``.

Every artifact goes through the same runner interface, so ``u2bench predict`` followed by
``u2bench eval`` evaluates PyTorch, ONNX and TensorRT alike. A bad image is reported in one line
and skipped; the caller decides the exit status from :attr:`PredictReport.failed`.

The work is a pipeline (:mod:`u2deploy.bench.pipeline`): decoding and preprocessing, the network,
and postprocessing and encoding run in their own threads, overlapped, with bounded queues; ONNX
Runtime on the CPU runs ``streams`` concurrent calls on the one session (:func:`inference_split`).
Nothing on the path of an exported artifact imports PyTorch.

Users' files are safe: :func:`plan_outputs` refuses, before any work, an output that is one of
the input images, two inputs that would write the same file, an output folder that cannot be
written, and outputs that already exist (unless ``overwrite``; ``skip_existing`` keeps them and
skips their images). Outputs are written in input order, each atomically: after Ctrl-C
(:class:`PredictInterrupted`, which says how many masks were kept) or a failed write, the masks
on disk are those of every image before the first unfinished one.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor
from tqdm import tqdm

from .. import hardware
from ..data import postprocess, preprocess
from ..data.images import read_image
from ..engines import Runner
from ..errors import U2Error
from ..files import atomic_path, check_writable
from ..formats import backend_for
from ..plural import plural
from . import pipeline

# Masks are mostly runs of 0 and 255: zlib's run-length strategy encodes an ECSSD mask in 1.4 ms (28 kB),
# against 5.9 ms (29 kB) at Pillow's default level 6; the encode is the dearest step around the network.
# Cut-outs (photographs) keep zlib's default strategy, at level 1.
PNG_LEVEL = 1
MASK_PNG = {"compress_level": PNG_LEVEL, "compress_type": zlib.Z_RLE}
JPEG_QUALITY = 90
WEBP_QUALITY = 90
CUTOUT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # inputs whose outputs were already there
    cutouts: list[Path] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the pipeline (model loaded), for images/s

    def record(self, target: Path, cutout_targets: Container[Path]) -> None:
        """One output written: a cut-out when the plan says so, else a mask."""
        (self.cutouts if target in cutout_targets else self.written).append(target)

    @property
    def images_per_s(self) -> float | None:
        done = len(self.written) + len(self.failed)
        return done / self.seconds if done and self.seconds > 0 else None

    def summary(self, out_dir: Path, entries_skipped: int = 0) -> str:
        """One line: what was written, skipped and failed, the speed, and the next command when there is one."""
        cutouts = f" and {plural(len(self.cutouts), 'cut-out')}" if self.cutouts else ""
        wrote = bool(self.written or not self.failed)
        parts = [f"wrote {plural(len(self.written), 'mask')}{cutouts} to {out_dir}" if wrote
                 else f"wrote no masks: {plural(len(self.failed), 'image')} failed"]
        if self.skipped:
            parts.append(f"{plural(len(self.skipped), 'image')} skipped (outputs already there)")
        if entries_skipped:
            parts.append(f"{plural(entries_skipped, 'folder entry', 'folder entries')} skipped")
        if self.failed and self.written:
            parts.append(f"{plural(len(self.failed), 'image')} failed")
        if self.images_per_s is not None:
            parts.append(f"{self.images_per_s:.1f} images/s")
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
    folders: list[Path] = field(default_factory=list)  # every folder the jobs write into, outermost first
    cutout_targets: frozenset[Path] = frozenset()  # which of the jobs' outputs are cut-outs


def outputs_for(path: Path, out_dir: Path, cutout: bool = False, sub: Path = Path("."),
                cutout_suffix: str = ".png") -> list[Path]:
    """``OUT/SUB/<stem>.png`` and, with ``cutout``, ``OUT/cutouts/SUB/<stem>.png`` (or .jpg, .webp):
    the stem is what ``u2bench eval`` pairs with the ground truth, so it is never renamed; ``sub`` is
    the image's folder below the input folder (``--recursive``)."""
    return [out_dir / sub / f"{path.stem}.png"] + (
        [out_dir / "cutouts" / sub / f"{path.stem}{cutout_suffix}"] if cutout else [])


def cutout_suffix(fmt: str | None = None, background: tuple[int, int, int] | None = None) -> str:
    """The cut-outs' file suffix: PNG (RGBA) by default, JPEG on a ``background``, or WebP."""
    fmt = (fmt or ("jpg" if background is not None else "png")).lower()
    if fmt not in CUTOUT_SUFFIXES:
        raise U2Error(f"--cutout-format {fmt}: expected png, jpg or webp")
    if CUTOUT_SUFFIXES[fmt] == ".jpg" and background is None:
        raise U2Error(f"--cutout-format {fmt}: JPEG has no transparency; give --background COLOR "
                      "(e.g. white or '#00ff00'), or use png or webp")
    return CUTOUT_SUFFIXES[fmt]


def parse_color(text: str | None) -> tuple[int, int, int] | None:
    """``white``, ``#00ff00``, ``rgb(0,255,0)`` … as an (r, g, b) triple; None stays None."""
    if text is None:
        return None
    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        raise U2Error(f"--background {text}: not a colour; give a name (white, black …) or #rrggbb") from None
    return tuple(rgb[:3])  # type: ignore[return-value]


def check_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not 0 < threshold <= 1:
        raise U2Error(f"--threshold {threshold:g}: expected a saliency between 0 and 1 (e.g. 0.5); "
                      "pixels at or above it become 255, the rest 0")
    return threshold


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
                 skip_existing: bool = False, subdirs: Sequence[Path] | None = None,
                 cutout_suffix: str = ".png") -> OutputPlan:
    """Every check on the outputs that can be made before any work; each failure is one line.

    ``subdirs`` (one per path, from :func:`u2deploy.data.images.image_tree`) mirrors the input
    folders below OUT; by default every output goes straight into OUT.
    """
    if overwrite and skip_existing:
        raise U2Error("--overwrite and --skip-existing cannot be used together: "
                      "replace the existing outputs, or keep them and skip their images")
    out_dir = Path(out_dir)
    subs = list(subdirs) if subdirs is not None else [Path(".")] * len(paths)
    if len(subs) != len(paths):
        raise ValueError("plan_outputs: one subdir per path")
    _check_folder(out_dir, ".u2bench-probe.png")
    if cutout:
        _check_folder(out_dir / "cutouts", ".u2bench-probe.png")
    ids = _input_ids(paths)
    dirs, targets_of = _targets(paths, subs, out_dir, cutout, cutout_suffix)
    _check_one_writer_each(paths, targets_of)
    all_folders = _output_folders(out_dir, {f for folders in dirs.values() for f in folders})
    plan = OutputPlan(out_dir, cutout, jobs=[], skipped=[])
    needed, existing = _fill_jobs(plan, paths, subs, targets_of, dirs, ids, overwrite)
    if existing and not skip_existing:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise U2Error(f"{existing[0]}: already exists{more}; pass --overwrite to replace, "
                      "or --skip-existing to keep them and skip their images")
    plan.folders = [f for f in all_folders if f in needed]
    return plan


def _input_ids(paths: Sequence[Path]) -> dict[tuple[int, int], Path]:
    """What each input *is* (device, inode): the same path, symlinks, hard links and bind mounts agree."""
    ids: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            st = path.stat()
            ids.setdefault((st.st_dev, st.st_ino), path)
        except OSError:
            pass  # unreadable inputs fail later, one line each
    return ids


def _targets(paths: Sequence[Path], subs: Sequence[Path], out_dir: Path, cutout: bool,
             cutout_suffix: str) -> tuple[dict[Path, list[Path]], list[list[Path]]]:
    """Each subfolder's output folders ([masks] or [masks, cut-outs]), and each input's outputs as
    :func:`outputs_for` names them, each folder joined once (100,000 images)."""
    dirs: dict[Path, list[Path]] = {}
    targets_of: list[list[Path]] = []
    for path, sub in zip(paths, subs):
        folders = dirs.get(sub)
        if folders is None:
            folders = dirs[sub] = [out_dir / sub] + ([out_dir / "cutouts" / sub] if cutout else [])
        targets_of.append([folders[0] / f"{path.stem}.png"]
                          + ([folders[1] / f"{path.stem}{cutout_suffix}"] if cutout else []))
    return dirs, targets_of


def _check_one_writer_each(paths: Sequence[Path], targets_of: Sequence[list[Path]]) -> None:
    writers: dict[str, Path] = {}
    for path, targets in zip(paths, targets_of):
        for target in targets:
            other = writers.setdefault(os.fspath(target), path)
            if other is not path:
                same = " (the same file given twice)" if other.resolve() == path.resolve() else ""
                raise U2Error(f"{other} and {path} would both write {target}{same}: outputs are named by stem, "
                              "so rename one or predict them into separate folders")


def _fill_jobs(plan: OutputPlan, paths: Sequence[Path], subs: Sequence[Path], targets_of: Sequence[list[Path]],
               dirs: dict[Path, list[Path]], ids: dict[tuple[int, int], Path],
               overwrite: bool) -> tuple[set[Path], list[Path]]:
    """The plan's jobs, skipped inputs and cut-outs; returns the folders the jobs write into and the
    outputs that exist and are kept."""
    needed: set[Path] = set()
    existing: list[Path] = []
    cutouts: set[Path] = set()
    for path, sub, targets in zip(paths, subs, targets_of):
        todo = []
        for role, target in enumerate(targets):
            if _to_write(target, ids, overwrite):
                todo.append(target)
                needed.add(dirs[sub][role])
                if role:
                    cutouts.add(target)
            else:
                existing.append(target)
        if todo:
            plan.jobs.append((path, todo))
        else:
            plan.skipped.append(path)
    plan.cutout_targets = frozenset(cutouts)
    return needed, existing


def _to_write(target: Path, ids: dict[tuple[int, int], Path], overwrite: bool) -> bool:
    """Whether to write ``target``: absent, or there and ``overwrite``. An input or a folder there is refused."""
    if not os.path.lexists(target):
        return True
    source = None
    try:  # an output that does not exist yet cannot be an input
        st = target.stat()
        source = ids.get((st.st_dev, st.st_ino))
    except OSError:
        pass
    if source is not None:
        which = "one of the input images" if source == target else f"the input image {source}"
        raise U2Error(f"{target}: is {which}; refusing to overwrite an input (choose another -o)")
    if target.is_dir() or (target.exists() and not target.is_file()):
        raise U2Error(f"{target}: exists and is not a file; move it away")
    return overwrite


def _output_folders(out_dir: Path, parents: set[Path]) -> list[Path]:
    """The folders outputs go into, outermost first; one below OUT that exists as a file is refused."""
    seen: set[Path] = set()
    for parent in sorted(parents, key=lambda p: len(p.parts)):
        folder = parent
        while folder not in seen and folder != out_dir and out_dir in folder.parents:
            if folder.exists() and not folder.is_dir():
                raise U2Error(f"{folder}: exists and is not a folder; move it away")
            seen.add(folder)
            folder = folder.parent
    return sorted(seen | {p for p in parents}, key=lambda p: (len(p.parts), str(p)))


def _make_folders(plan: OutputPlan) -> list[Path]:
    """Create OUT (and OUT/cutouts, and the mirrored subfolders); the folders created, outermost first,
    to remove again if they are left empty."""
    wanted = [plan.out_dir] + ([plan.out_dir / "cutouts"] if plan.cutout else []) + plan.folders
    created: list[Path] = []
    for target in wanted:
        for folder in (*reversed(target.parents), target):
            if folder.exists():
                if not folder.is_dir():
                    _remove_empty(created)
                    raise U2Error(f"{folder}: exists and is not a folder")
                continue
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    _remove_empty(created)
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


def inference_split(model: str, device: str = "cpu", *, threads: int | None = None, streams: int | None = None,
                    backend: str = "auto") -> tuple[int, int | None]:
    """(concurrent inference calls, threads per call) for ``model``.

    ONNX Runtime on the CPU takes concurrent ``run`` calls on one session; for a U²-Net at batch 1
    two single-threaded calls at once keep two cores busier than one call on two threads, whose
    threads wait for each other after every layer (docs/predict_speed.md). ``threads`` is the total;
    the default is every core this process may use. Other runners get one call at a time, with
    their own threading (``threads`` passes through to them as given).
    """
    concurrent = device == "cpu" and backend_for(model, backend).name == "onnxruntime"
    if not concurrent:
        if streams not in (None, 1):
            raise U2Error(f"--streams {streams}: only ONNX Runtime on the CPU runs concurrent calls; "
                          f"{model} runs one call at a time")
        return 1, threads
    total = threads or hardware.usable_cpus()
    count = min(streams or DEFAULT_STREAMS, total)
    return count, max(1, total // count)


DEFAULT_STREAMS = 2
DEFAULT_BATCH = 8  # images per call on a dynamic-batch artifact, where streams do not run concurrently


def input_geometry(runner: Runner, size: tuple[int, int] | None = None) -> tuple[tuple[int, int], int | None]:
    """Input size (the rule every stage follows: ``ArtifactInfo.size_for``) and the fixed batch, if any."""
    info = runner.info
    fixed_batch = info.batch_range[0] if info.batch_range and info.batch_range[0] == info.batch_range[1] else None
    return info.size_for(size), fixed_batch


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


def _save(array: np.ndarray, path: Path, fmt: str, **params) -> None:
    with atomic_path(path) as tmp:
        try:
            Image.fromarray(array).save(tmp, format=fmt, **params)
        except OSError as exc:
            raise U2Error(f"{path}: cannot write ({exc.strerror or exc})") from None


def _save_png(array: np.ndarray, path: Path, **params) -> None:
    _save(array, path, "PNG", **(params or {"compress_level": PNG_LEVEL}))


def _save_cutout(image: np.ndarray, mask: np.ndarray, path: Path, background: tuple[int, int, int] | None) -> None:
    pixels = (postprocess.cutout(image, mask) if background is None
              else postprocess.on_background(image, mask, background))
    suffix = path.suffix.lower()
    if suffix == ".png":
        _save_png(pixels, path)
    elif suffix == ".jpg":
        _save(pixels, path, "JPEG", quality=JPEG_QUALITY)
    else:
        _save(pixels, path, "WEBP", quality=WEBP_QUALITY)


@dataclass(frozen=True)
class Processing:
    """How one image becomes the network input, and its map the files: one record (small, picklable)
    that local predict and predict on a Ray cluster (:mod:`u2deploy.distributed`) both run, so that
    they write the same bytes."""

    size: tuple[int, int]  # the network input, H×W
    mode: str  # fast or reference (u2deploy.data.preprocess.MODES)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float | None = None
    background: tuple[int, int, int] | None = None

    def load(self, path: Path, keep_image: bool) -> tuple[np.ndarray, object]:
        """(network input C×H×W, what :meth:`write` needs of the image: the image itself for a
        cut-out, else its H×W); a U2Error naming the file if it cannot be read."""
        image = read_image(path)
        x = preprocess.preprocess_one(image, self.size, self.mode, self.mean, self.std)
        return x, (image if keep_image else image.shape[:2])

    def write(self, targets: Sequence[Path], cutout_targets: Container[Path], kept: object,
              pred: np.ndarray) -> Iterator[Path]:
        """Write ``targets`` (each atomically) from the map ``pred``, yielding each once it is on disk."""
        image = kept if isinstance(kept, np.ndarray) else None
        hw = image.shape[:2] if image is not None else kept
        mask = postprocess.postprocess_one(pred, hw, self.mode)  # type: ignore[arg-type]
        if self.threshold is not None:
            mask = postprocess.binary(mask, self.threshold)
        for target in targets:
            if target in cutout_targets:
                _save_cutout(image, mask, target, self.background)  # type: ignore[arg-type]
            else:
                _save_png(mask, target, **MASK_PNG)
            yield target


def predict(runner: Runner, paths: Sequence[Path], out_dir: Path, *, mode: str = "fast",
            size: tuple[int, int] | None = None, batch: int | None = None, cutout: bool = False,
            overwrite: bool = False, skip_existing: bool = False, plan: OutputPlan | None = None,
            progress: bool = True, on_error: Callable[[str], None] | None = None,
            threshold: float | None = None, background: tuple[int, int, int] | None = None,
            streams: int = 1, loaders: int = 2) -> PredictReport:
    """Write ``OUT/<stem>.png`` (8-bit mask at the original size; 0/255 with ``threshold``) and, with
    ``cutout``, ``OUT/cutouts/<stem>.png`` (RGBA; on ``background`` as the plan's suffix says) for
    every readable image.

    ``plan`` (from :func:`plan_outputs` on the same arguments) lets a caller run the output checks
    before it loads the model. Folders this call creates are removed again if they end up empty.
    ``streams`` concurrent inference calls (ONNX Runtime sessions allow them; see
    :func:`inference_split`), ``loaders`` decoding threads. ``batch``: images per call where the
    artifact takes any batch; by default 1 with concurrent streams (on the CPU, batching adds
    memory, not speed: docs/predict_speed.md), else 8.
    """
    if mode not in preprocess.MODES:
        raise U2Error(f"--preprocess {mode}: expected one of {', '.join(preprocess.MODES)}")
    check_threshold(threshold)
    if plan is None:
        plan = plan_outputs(paths, out_dir, cutout=cutout or background is not None, overwrite=overwrite,
                            skip_existing=skip_existing, cutout_suffix=cutout_suffix(None, background))
    in_size, fixed_batch = input_geometry(runner, size)
    mean, std = normalisation(runner)
    processing = Processing(in_size, mode, mean, std, threshold, background)
    if not runner.info.backend.startswith("onnxruntime") or runner.info.device != "cpu":
        streams = 1  # only ONNX Runtime CPU sessions are known to take concurrent calls
    report = PredictReport(skipped=list(plan.skipped))
    jobs = plan.jobs
    if batch is None:
        batch = 1 if streams > 1 else DEFAULT_BATCH
    step = fixed_batch or (1 if mode == "reference" else batch)
    keep_image = plan.cutout

    def load(job: tuple[Path, list[Path]]) -> tuple[np.ndarray, object]:
        return processing.load(job[0], keep_image)

    def infer(x: np.ndarray) -> np.ndarray:
        return run_batched(runner, x, fixed_batch, step)  # looked up at call time (tests replace it)

    def write(job: tuple[Path, list[Path]], kept: object, pred: np.ndarray) -> None:
        for target in processing.write(job[1], plan.cutout_targets, kept, pred):
            report.record(target, plan.cutout_targets)
        bar.update(1)

    def failed(job: tuple[Path, list[Path]], exc: U2Error) -> None:
        report.failed.append((job[0], str(exc)))
        if on_error:
            on_error(str(exc))
        bar.update(1)

    created = _make_folders(plan) if jobs else []
    bar = tqdm(total=len(jobs), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    try:
        pipeline.run(jobs, load, infer, write, failed, batch=step, streams=streams, loaders=loaders)
    except KeyboardInterrupt:  # atomic_path has removed the temporary of any file being written
        raise PredictInterrupted(report) from None
    except U2Error as exc:
        if not report.written:
            raise
        raise U2Error(f"{exc}; kept the {plural(len(report.written), 'mask')} written before it") from None
    finally:
        report.seconds = time.perf_counter() - started
        bar.close()
        _remove_empty(created)
    return report
