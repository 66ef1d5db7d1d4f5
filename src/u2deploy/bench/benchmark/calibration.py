"""The INT8 calibration images: ``--calib`` (optionally one stem range of it), what the cache keys on,
and a warning when they overlap the images the gate evaluates on (that would flatter every INT8 row)."""

from __future__ import annotations

import logging
from pathlib import Path

from ...data.datasets import Dataset
from ...errors import U2Error
from .outdir import OutFolder

log = logging.getLogger(__name__)


def links_folder(out: Path, subset: str) -> Path:
    """Where ``--calib-subset`` links its images: ``OUT/calib_<range>``."""
    return out / f"calib_{subset.replace(':', '-').replace('/', '-')}"


def calibration_folder(calib: Path | None, subset: str | None, out: OutFolder) -> Path:
    """``--calib`` itself, or with ``--calib-subset`` a folder in OUT of links to that stem range of it
    (the calibration stages take a folder, and ECSSD keeps its training and held-out images in one).

    The links folder is the benchmark's own: made here, and only ever holding links it made. A folder of
    that name that is not in OUT's ledger (the user's images, say) is refused, never emptied, and so is
    a ``--calib`` that lies inside OUT (:meth:`OutFolder.open` has refused it already).
    """
    from ...calibration import DEFAULT_CALIB_DIR
    from ...data.datasets import files_by_stem, in_range, parse_subset

    folder = calib if calib is not None else DEFAULT_CALIB_DIR
    if subset is None:
        return folder
    links = links_folder(out.path, subset)
    if folder.resolve() == links.resolve() or links.resolve() in folder.resolve().parents:
        raise U2Error(f"--calib {folder} is the folder --calib-subset {subset} writes its links into; "
                      "name the folder the images are in")
    if not folder.is_dir():
        raise U2Error(f"--calib {folder}: no such folder (--calib-subset {subset} selects images from it)")
    lo, hi = parse_subset(subset)
    chosen = {stem: path for stem, path in files_by_stem(folder).items() if in_range(stem, lo, hi)}
    if not chosen:
        raise U2Error(f"--calib {folder}: --calib-subset {subset} holds no images")
    if links.exists() or links.is_symlink():
        if links.is_symlink() or not links.is_dir() or not out.owns(links):
            raise U2Error(f"{links}: not the links folder u2bench benchmark made (it is left as it is): move it "
                          "out of --out or choose another --out")
    else:
        links.mkdir()
    wanted = {path.name: path.resolve() for path in chosen.values()}
    for entry in links.iterdir():
        if not entry.is_symlink() or not out.owns(entry):
            raise U2Error(f"{entry}: not a link u2bench benchmark made (it is left as it is): move it out of "
                          f"{links}")
        if entry.name not in wanted or entry.resolve() != wanted[entry.name]:
            entry.unlink()  # a link of ours to an image no longer in the range
    for name, target in wanted.items():
        link = links / name
        if not link.is_symlink():
            link.symlink_to(target)
    out.record()
    return links


def calibration_digests(calib_dir: Path | None, num: int, seed: int) -> tuple[str | None, str | None]:
    """Digests of the images the INT8 stages sample and of the whole folder (the FP16 stage draws from it):
    the cache keys on them, so other images rebuild the calibrated artifacts."""
    if calib_dir is None or not calib_dir.is_dir():
        return None, None
    from ...calibration.dataset import list_digest, sample_images

    try:
        return list_digest(sample_images(calib_dir, num, seed)), list_digest(sample_images(calib_dir, None))
    except U2Error:
        return None, None


def warn_overlap(calib_dir: Path | None, dataset: Dataset) -> None:
    """Calibrating on the images the gate evaluates on would flatter every INT8 artifact: say so."""
    if calib_dir is None or not calib_dir.is_dir():
        return
    evaluated = {p.image.resolve() for p in dataset if p.image is not None}
    shared = [p for p in calib_dir.iterdir() if p.resolve() in evaluated]
    if shared:
        log.warning("--calib %s holds %d of the %d images the gate evaluates on (first: %s); calibrate on others",
                    calib_dir, len(shared), len(evaluated), shared[0].name)
