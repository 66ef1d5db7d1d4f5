"""Dataset layouts (built in tmp_path), pairing by stem, unpaired reporting, subsets, errors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2deploy.data.datasets import (
    Dataset,
    files_by_stem,
    ground_truth,
    mask_folder,
    open_dataset,
    pair_folders,
    parse_subset,
)
from u2deploy.errors import U2Error

ECSSD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ECSSD"


def _write(folder: Path, stems: list[str], suffix: str, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.new(mode, (8, 6), 255 if mode == "L" else (10, 20, 30)).save(folder / f"{stem}{suffix}")


def _layout(root: Path, images: str, masks: str, stems: list[str], mask_stems: list[str] | None = None):
    _write(root / images, stems, ".jpg")
    _write(root / masks, stems if mask_stems is None else mask_stems, ".png", "L")
    return root


def test_ecssd_as_in_shared_folder(tmp_path):
    root = _layout(tmp_path / "ECSSD", "images", "masks", ["0002", "0001", "0003"])
    ds = open_dataset(root)
    assert ds.name == "ECSSD" and len(ds) == 3
    assert ds.stems == ["0001", "0002", "0003"]
    first = ds.pairs[0]
    assert first.image == root / "images" / "0001.jpg" and first.mask == root / "masks" / "0001.png"


def test_ecssd_as_distributed(tmp_path):
    root = _layout(tmp_path / "ECSSD", "images", "ground_truth_mask", ["0001", "0002"])
    ds = open_dataset(root)
    assert ds.masks_dir == root / "ground_truth_mask" and len(ds) == 2


def _duts(tmp_path: Path) -> Path:
    root = tmp_path / "DUTS"
    _layout(root / "DUTS-TR", "DUTS-TR-Image", "DUTS-TR-Mask", ["tr_1", "tr_2", "tr_3"])
    _layout(root / "DUTS-TE", "DUTS-TE-Image", "DUTS-TE-Mask", ["te_1", "te_2"])
    return root


def test_duts_root_split_and_split_folder(tmp_path):
    root = _duts(tmp_path)
    test = open_dataset(root)  # the test split by default: what benchmarks report
    assert test.name == "DUTS-TE" and test.stems == ["te_1", "te_2"]
    train = open_dataset(root, split="TR")
    assert train.name == "DUTS-TR" and len(train) == 3
    assert open_dataset(root / "DUTS-TR").stems == train.stems
    with pytest.raises(U2Error, match="no \\*-VAL split"):
        open_dataset(root, split="VAL")


def test_generic_folders_pair_by_stem(tmp_path):
    _write(tmp_path / "HKU-IS" / "imgs", ["a", "b"], ".png")
    _write(tmp_path / "HKU-IS" / "gt", ["a", "b"], ".png", "L")
    ds = open_dataset(images=tmp_path / "HKU-IS" / "imgs", masks=tmp_path / "HKU-IS" / "gt")
    assert ds.name == "HKU-IS" and ds.stems == ["a", "b"]
    assert pair_folders(tmp_path / "HKU-IS" / "imgs", tmp_path / "HKU-IS" / "gt", "X").name == "X"


def test_unpaired_files_are_reported_with_counts(tmp_path, caplog):
    root = _layout(tmp_path / "ECSSD", "images", "masks", ["1", "2", "3", "4", "5"],
                   mask_stems=["1", "2", "9"])
    with caplog.at_level(logging.WARNING):
        ds = open_dataset(root)
    assert ds.stems == ["1", "2"]
    line = f"ECSSD: 3 images without a mask, 1 mask without an image (first: {root / 'images' / '3.jpg'}, " \
           f"{root / 'masks' / '9.png'})"
    assert caplog.messages == [line]
    assert len(ds.images_without_mask) == 3 and len(ds.masks_without_image) == 1


def test_non_image_files_are_ignored(tmp_path):
    root = _layout(tmp_path / "ECSSD", "images", "masks", ["1"])
    (root / "images" / "notes.txt").write_text("x")
    (root / "masks" / ".DS_Store").write_bytes(b"x")
    assert open_dataset(root).stems == ["1"]


def test_subset_limit_and_select(tmp_path):
    stems = [f"{i:04d}" for i in range(795, 806)]
    ds = open_dataset(_layout(tmp_path / "ECSSD", "images", "masks", stems), subset="0801-1000")
    assert ds.stems == ["0801", "0802", "0803", "0804", "0805"]
    assert ds.name == "ECSSD 0801–0805"
    assert open_dataset(tmp_path / "ECSSD", subset=(None, 797)).stems == ["0795", "0796", "0797"]
    assert open_dataset(tmp_path / "ECSSD", subset="0801-1000", limit=2).stems == ["0801", "0802"]
    assert ds.select("0802", "0803").stems == ["0802", "0803"]  # text comparison
    with pytest.raises(U2Error, match="holds no pairs"):
        open_dataset(tmp_path / "ECSSD", subset="2000-3000")
    with pytest.raises(U2Error, match="at least 1"):
        ds.limit(0)


def test_numeric_range_on_text_stems_is_refused(tmp_path):
    root = _layout(tmp_path / "D", "images", "masks", ["abc"])
    with pytest.raises(U2Error, match="'abc' is not a number"):
        open_dataset(root, subset="1-5")


def test_parse_subset():
    assert parse_subset("0801-1000") == (801, 1000)
    assert parse_subset("0801:1000") == (801, 1000)
    assert parse_subset(":200") == (None, 200)
    assert parse_subset("a-m") == ("a", "m")
    with pytest.raises(U2Error, match="START-STOP"):
        parse_subset("801")


def test_missing_and_empty_folders_name_the_folder(tmp_path):
    with pytest.raises(U2Error, match=f"^{re.escape(str(tmp_path / 'nope'))}: no such folder$"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "D" / "images").mkdir(parents=True)
    _write(tmp_path / "D" / "masks", ["1"], ".png", "L")
    empty = re.escape(str(tmp_path / "D" / "images"))
    with pytest.raises(U2Error, match=f"^{empty}: no image files in this folder$"):
        open_dataset(tmp_path / "D")
    with pytest.raises(U2Error, match="no such folder"):
        files_by_stem(tmp_path / "missing")


def test_unknown_layout_and_no_pairs(tmp_path):
    (tmp_path / "weird" / "stuff").mkdir(parents=True)
    with pytest.raises(U2Error, match="not a dataset layout"):
        open_dataset(tmp_path / "weird")
    root = _layout(tmp_path / "D", "images", "masks", ["1"], mask_stems=["2"])
    with pytest.raises(U2Error, match="no image has a mask with the same file stem"):
        open_dataset(root)
    with pytest.raises(U2Error, match="both"):
        open_dataset(images=root / "images")


def test_ground_truth_accepts_a_mask_folder_or_a_root(tmp_path):
    root = _layout(tmp_path / "ECSSD", "images", "masks", ["1", "2"])
    from_root = ground_truth(root)
    from_masks = ground_truth(root / "masks")
    assert from_root.name == from_masks.name == "ECSSD"
    assert [p.mask for p in from_root] == [p.mask for p in from_masks]
    assert all(p.image is None for p in from_masks)
    _write(tmp_path / "DUTS-TE-Mask", ["x"], ".png", "L")
    assert mask_folder(tmp_path / "DUTS-TE-Mask").name == "DUTS-TE"


def test_dataset_is_a_plain_sequence_of_pairs(tmp_path):
    ds = open_dataset(_layout(tmp_path / "E", "images", "masks", ["1", "2"]))
    assert isinstance(ds, Dataset)
    assert [(p.stem, p.image.name, p.mask.name) for p in ds] == [("1", "1.jpg", "1.png"),
                                                                  ("2", "2.jpg", "2.png")]


@pytest.mark.skipif(not (ECSSD / "images").is_dir(), reason=f"ECSSD not found at {ECSSD}")
def test_real_ecssd_split():
    full = open_dataset(ECSSD)
    assert full.name == "ECSSD" and len(full) == 1000
    held_out = open_dataset(ECSSD, subset="0801-1000")
    assert len(held_out) == 200 and held_out.stems[0] == "0801" and held_out.stems[-1] == "1000"
    image = np.asarray(Image.open(held_out.pairs[0].image))
    mask = np.asarray(Image.open(held_out.pairs[0].mask))
    assert image.shape[:2] == mask.shape[:2]
