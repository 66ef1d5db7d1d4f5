"""The one comparator: every output an artifact exports, one-line errors where outputs do not pair."""

from __future__ import annotations

import numpy as np
import pytest

from u2deploy.engines.base import ArtifactInfo, Runner
from u2deploy.errors import U2Error
from u2deploy.validate import compare_maps
from u2deploy.validate.verify import verify

NAMES = tuple(f"d{i}" for i in range(7))


def _outputs(rng: np.random.Generator, n: int = 2) -> dict[str, np.ndarray]:
    return {name: rng.random((n, 1, 8, 8), dtype=np.float32) for name in NAMES}


def test_every_output_is_compared_and_the_worst_decides() -> None:
    reference = _outputs(np.random.default_rng(0))
    candidate = {name: maps.copy() for name, maps in reference.items()}
    candidate["d5"][1, 0, 3, 3] += 0.01  # a side output off by more than the FP32 bound
    c = compare_maps(candidate, reference, atol=1e-4)
    assert c.outputs == NAMES and c.n_maps == 2
    assert not c.passed and c.max_abs == pytest.approx(0.01, rel=1e-5)
    assert c.summary().endswith("on 2 maps (7 outputs: d0…d6): FAIL")
    assert compare_maps(reference, reference, atol=1e-4).passed
    candidate["d5"][1, 0, 3, 3] = np.nan
    assert compare_maps(candidate, reference).nonfinite == 1


def test_an_array_is_d0_and_meets_the_first_output_only() -> None:
    reference = _outputs(np.random.default_rng(1))
    c = compare_maps(reference["d0"], reference)
    assert c.outputs == ("d0",) and c.passed and c.max_abs == 0


def test_outputs_that_do_not_pair_are_one_line_u2errors() -> None:
    reference = _outputs(np.random.default_rng(2))
    with pytest.raises(U2Error, match=r"the candidate has 1 outputs \(saliency\), the reference 7 \(d0, .*d6\)"):
        compare_maps({"saliency": reference["d0"]}, reference)
    with pytest.raises(U2Error, match=r"the candidate's d0 maps are \(2, 1, 8, 9\), the reference's \(2, 1, 8, 8\)"):
        compare_maps(np.zeros((2, 1, 8, 9), np.float32), reference["d0"])


class _Seven(Runner):
    """A runner of seven outputs whose d6 is ``offset`` off: what an ``--outputs all`` artifact gives."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.info = ArtifactInfo(path="seven.onnx", backend="test", precision="fp32", device="cpu",
                                 input_size=None, batch_range=None, output_names=NAMES)

    @classmethod
    def open(cls, artifact: str, **options) -> _Seven:
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        maps = batch[:, :1] * 0.5
        return {name: maps + (self.offset if name == "d6" else 0) for name in NAMES}


def test_verification_of_two_runners_covers_every_output() -> None:
    x = np.random.default_rng(3).random((3, 3, 8, 8), dtype=np.float32)
    same = verify(_Seven(0.0), _Seven(0.0), x, "fp32")
    assert same.passed and same.worst.outputs == NAMES and "(7 outputs: d0…d6)" in same.measured()
    assert verify(_Seven(0.0), _Seven(0.0), x, "fp32").to_manifest()["outputs"] == list(NAMES)
    broken = verify(_Seven(0.01), _Seven(0.0), x, "fp32")
    assert broken.passed is False  # d0 agrees; only d6 is off
    assert verify(_Seven(0.01), lambda b: b[:, :1] * 0.5, x, "fp32").passed  # a d0-only reference: d0 only
