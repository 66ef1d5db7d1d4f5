"""Every metric pinned on small hand-computed cases, and cross-checked against pysodmetrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from u2deploy.bench import metrics as M
from u2deploy.errors import U2Error

ECSSD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ECSSD"


def f03(p: float, r: float) -> float:
    return 1.3 * p * r / (0.3 * p + r)


# --- PR curve, maxFβ, MAE ---------------------------------------------------------------------

def test_precision_recall_by_threshold():
    pred = np.array([[0, 255], [128, 64]], np.uint8)
    gt = np.array([[0, 255], [255, 0]], np.uint8)
    p, r = M.precision_recall(pred, gt)
    assert p.shape == r.shape == (256,)
    assert (p[0], r[0]) == (0.5, 1.0)  # t = 0: every pixel is foreground
    assert p[1:65] == pytest.approx(2 / 3) and np.all(r[1:65] == 1)  # 255, 128, 64 predicted
    assert np.all(p[65:129] == 1) and np.all(r[65:129] == 1)  # 255, 128
    assert np.all(p[129:] == 1) and np.all(r[129:] == 0.5)  # 255 alone


def test_max_f_averages_precision_and_recall_before_f():
    """The paper's maxFβ (F of mean P and R) differs from the maximum of the mean per-image F."""
    gt_a, pred_a = np.array([[255, 255, 0, 0]], np.uint8), np.array([[255, 0, 0, 0]], np.uint8)  # P=1, R=.5
    gt_b, pred_b = np.array([[255, 0, 0, 0]], np.uint8), np.array([[255, 255, 0, 0]], np.uint8)  # P=.5, R=1
    acc = M.SODAccumulator()
    acc.add(pred_a, gt_a)
    acc.add(pred_b, gt_b)
    assert acc.n == 2
    assert acc.max_f() == pytest.approx(f03(0.75, 0.75))  # = 0.75
    assert acc.mean_f_curve_max() == pytest.approx((f03(1, 0.5) + f03(0.5, 1)) / 2)  # ≈ 0.6889
    precision, recall = acc.pr_curve()
    assert precision[1] == pytest.approx(0.75) and recall[1] == pytest.approx(0.75)


def test_f_beta_is_zero_where_undefined():
    assert M.f_beta(np.array([0.0, 1.0]), np.array([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_mae():
    pred = np.array([[0, 255], [51, 255]], np.uint8)
    gt = np.array([[0, 255], [0, 0]], np.uint8)
    assert M.mae(pred, gt) == pytest.approx((0 + 0 + 0.2 + 1) / 4)


def test_float_and_16_bit_maps_mean_the_same_as_8_bit():
    rng = np.random.default_rng(1)
    pred8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    gt = (rng.random((20, 30)) > 0.6).astype(np.uint8) * 255
    want = M.score_image(pred8, gt)
    for pred in (pred8 / 255.0, pred8.astype(np.uint16) * 257):
        got = M.score_image(pred, gt.astype(np.uint16) * 257)
        assert got.mae == pytest.approx(want.mae) and got.Sm == pytest.approx(want.Sm)
        np.testing.assert_allclose(got.precision, want.precision)


def test_binarise_gt_at_half_range():
    assert M.binarise_gt(np.array([127, 128], np.uint8)).tolist() == [False, True]
    assert M.binarise_gt(np.array([32767, 32768], np.uint16)).tolist() == [False, True]
    assert M.binarise_gt(np.array([0.5, 0.51])).tolist() == [False, True]


# --- weighted Fβ ------------------------------------------------------------------------------

def _square(size: int = 20, lo: int = 5, hi: int = 11) -> np.ndarray:
    gt = np.zeros((size, size), np.uint8)
    gt[lo:hi, lo:hi] = 255
    return gt


def test_weighted_f_perfect_and_empty():
    gt = _square()
    assert M.weighted_f(gt, gt) == pytest.approx(1.0)
    assert M.weighted_f(np.zeros_like(gt), gt) == 0.0
    assert M.weighted_f(gt, np.zeros_like(gt)) == 0.0  # no object: defined as 0, as pysodmetrics does


def test_weighted_f_uniform_under_confidence():
    """0.6 on the whole object, 0 elsewhere: every object pixel errs by 0.4, the background not at all
    (its dependency-smoothed error is not used), so R = 0.6, P = 1, F1 = 2·0.6/1.6."""
    gt = _square(30, 10, 20)
    pred = np.where(gt > 0, 153, 0).astype(np.uint8)  # 153/255 = 0.6
    assert M.weighted_f(pred, gt) == pytest.approx(2 * 0.6 / 1.6)


def test_weighted_f_far_false_positive_weighs_more():
    """One false positive 5 px from a perfect 6×6 object: weight 2 − 0.5^(5/5) = 1.5, so R = 1,
    P = 36 / (36 + 1.5)."""
    gt = _square()
    pred = gt.copy()
    pred[8, 15] = 255  # nearest object pixel (8, 10) is 5 px away
    p = 36 / 37.5
    assert M.weighted_f(pred, gt) == pytest.approx(2 * p / (p + 1))


# --- S-measure --------------------------------------------------------------------------------

def test_s_measure_degenerate_ground_truths():
    assert M.s_measure(np.full((4, 4), 51, np.uint8), np.zeros((4, 4), np.uint8)) == pytest.approx(0.8)
    assert M.s_measure(np.full((4, 4), 51, np.uint8), np.full((4, 4), 255, np.uint8)) == pytest.approx(0.2)


def test_s_measure_perfect_is_one():
    gt = _square()
    assert M.s_measure(gt, gt) == pytest.approx(1.0)


def test_s_measure_hand_computed():
    """An L-shaped object of 3 pixels in a 4×4 image, found exactly, plus one false positive.

    Centroid (1/3, 1/3) splits after row 1 and column 1. Blocks: top-left (1 px, exact) = 1,
    top-right and bottom-left (1 object + 2 background, exact) = 1, bottom-right (all background,
    one false positive) = 0; region = (1 + 3 + 3) / 16. Object: foreground scores 1; background
    (1 − pred) holds twelve 1s and one 0: mean 12/13, std √(1/13).
    """
    gt = np.zeros((4, 4), np.uint8)
    gt[0, 0] = gt[1, 0] = gt[0, 1] = 255
    pred = gt.copy()
    pred[1, 1] = 255
    mean, std = 12 / 13, math.sqrt(1 / 13)
    bg = 2 * mean / (mean**2 + 1 + std)
    obj = 3 / 16 * 1.0 + 13 / 16 * bg
    region = 7 / 16
    assert M.s_measure(pred, gt) == pytest.approx(0.5 * obj + 0.5 * region, abs=1e-12)


def test_s_measure_centroid_rounds_like_matlab():
    """Object = columns 0–1 of a 4×4 image, centroid column 0.5 (1-based 1.5): MATLAB's round gives
    2, so the split is after column 2 (numpy's round-half-to-even, as in pysodmetrics, would give
    column 1). A false positive at (0, 2) then spoils only the top-right block (6 px, score 0);
    the other three blocks are exact: region = 10/16. Object: foreground 1; background (1 − pred)
    holds seven 1s and one 0: mean 7/8, std √(1/8).
    """
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 255
    pred = gt.copy()
    pred[0, 2] = 255
    mean, std = 7 / 8, math.sqrt(1 / 8)
    obj = 0.5 * 1.0 + 0.5 * 2 * mean / (mean**2 + 1 + std)
    assert M.s_measure(pred, gt) == pytest.approx(0.5 * obj + 0.5 * 10 / 16, abs=1e-12)


# --- relaxed boundary Fβ ----------------------------------------------------------------------

def _box(size: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[r0:r1 + 1, c0:c1 + 1] = 255
    return m


def test_relax_boundary_f_within_and_beyond_rho():
    gt = _box(30, 5, 24, 5, 24)
    assert M.relax_boundary_f(_box(30, 7, 22, 7, 22), gt) == pytest.approx(1.0)  # 2 px in, corners 2.8
    assert M.relax_boundary_f(_box(30, 9, 20, 9, 20), gt) == 0.0  # 4 px inside


def test_relax_boundary_f_hand_computed():
    """A 10×10 prediction in the top-left corner of a 20×20 object: 25 of its 36 boundary pixels lie
    within 3 px of the object's boundary, and 25 of the object's 76 boundary pixels within 3 px of
    the prediction's."""
    gt = _box(30, 5, 24, 5, 24)
    pred = _box(30, 5, 14, 5, 14)
    assert M.relax_boundary_f(pred, gt) == pytest.approx(f03(25 / 36, 25 / 76))


def test_relax_boundary_f_thresholds_at_half_and_ignores_the_frame():
    gt = _box(30, 5, 24, 5, 24)
    assert M.relax_boundary_f(np.where(gt > 0, 128, 127).astype(np.uint8), gt) == pytest.approx(1.0)
    assert M.relax_boundary_f(np.where(gt > 0, 127, 0).astype(np.uint8), gt) == 0.0  # nothing predicted
    full = np.full((8, 8), 255, np.uint8)
    assert M.relax_boundary_f(full, full) == 1.0  # the image frame is not an object boundary
    assert M.relax_boundary_f(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)) == 1.0


# --- accumulator ------------------------------------------------------------------------------

def test_accumulator_result_has_every_metric():
    acc = M.SODAccumulator()
    gt = _square()
    acc.add(gt, gt)
    acc.add(gt[:, :, None], np.repeat(gt[:, :, None], 3, axis=2))  # H×W×C: first channel
    res = acc.result()
    assert res["n"] == 2
    for key in ("maxF", "mae", "wF", "Sm", "relaxFb", "meanF_curve_max"):
        assert res[key] == pytest.approx(0.0 if key == "mae" else 1.0), key
    assert len(res["pr_precision"]) == len(res["pr_recall"]) == M.THRESHOLDS
    assert acc.mean_mae() == 0.0


def test_accumulator_refuses_size_mismatch_naming_the_file():
    with pytest.raises(M.SizeMismatch, match=r"^maps/0001\.png: prediction is 20×10 but .* 20×20"):
        M.SODAccumulator().add(np.zeros((10, 20), np.uint8), _square(), name="maps/0001.png")
    assert issubclass(M.SizeMismatch, ValueError) and issubclass(M.SizeMismatch, U2Error)


def test_empty_accumulator_says_so():
    with pytest.raises(U2Error, match="no maps"):
        M.SODAccumulator().result()


# --- cross-check against pysodmetrics ---------------------------------------------------------

def _blobs(seed: int, shape: tuple[int, int] = (90, 120)) -> tuple[np.ndarray, np.ndarray]:
    """A blobby mask and a noisy, blurred prediction of it."""
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random(shape), 8) > 0.5
    if not gt.any() or gt.all():
        gt[20:40, 30:70] = True
    pred = ndimage.gaussian_filter(gt.astype(float), 3) + rng.normal(0, 0.15, shape)
    return np.clip(np.round(pred * 255), 0, 255).astype(np.uint8), gt.astype(np.uint8) * 255


def _ecssd_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from u2deploy.data.images import read_image

    pairs = []
    rng = np.random.default_rng(0)
    for i in range(1, 1 + 50 * n, 50):
        gt = read_image(ECSSD / "masks" / f"{i:04d}.png")[:, :, 0]
        pred = ndimage.gaussian_filter(gt.astype(float), 4) + rng.normal(0, 25, gt.shape)
        pairs.append((np.clip(pred, 0, 255).astype(np.uint8), gt))
    return pairs


def _cross_check(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    psm = pytest.importorskip("py_sod_metrics")
    wfm, sm, mae_, fm = psm.WeightedFmeasure(), psm.Smeasure(), psm.MAE(), psm.Fmeasure()
    acc = M.SODAccumulator()
    for pred, gt in pairs:
        acc.add(pred, gt)
        for m in (wfm, sm, mae_, fm):
            # normalize=False: pysodmetrics would otherwise min-max stretch each map, which the
            # paper's evaluation does not do
            m.step(pred / 255.0, gt >= 128, normalize=False)
    res = acc.result()
    np.testing.assert_allclose(acc.wfs, wfm.weighted_fms, rtol=0, atol=1e-9)
    np.testing.assert_allclose(acc.sms, sm.sms, rtol=0, atol=1e-9)
    assert res["mae"] == pytest.approx(mae_.get_results()["mae"], abs=1e-12)
    pr = fm.get_results()["pr"]  # pysodmetrics orders thresholds 255 … 0
    np.testing.assert_allclose(res["pr_precision"], pr["p"][::-1], atol=1e-12)
    np.testing.assert_allclose(res["pr_recall"], pr["r"][::-1], atol=1e-12)
    assert res["maxF"] == pytest.approx(float(M.f_beta(pr["p"], pr["r"]).max()), abs=1e-12)
    assert res["meanF_curve_max"] == pytest.approx(float(fm.get_results()["fm"]["curve"].max()), abs=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pysodmetrics' Fmeasure deprecation notice
def test_matches_pysodmetrics_on_synthetic_maps():
    _cross_check([_blobs(seed) for seed in range(8)])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.skipif(not (ECSSD / "masks").is_dir(), reason=f"ECSSD not found at {ECSSD}")
def test_matches_pysodmetrics_on_ecssd_masks():
    _cross_check(_ecssd_pairs(12))
