"""The typed artifact contract: one reader and one writer of every exported model's metadata."""

from __future__ import annotations

import onnx
import pytest

from u2deploy.artifact import IMAGENET_MEAN, IMAGENET_STD, ArtifactSpec
from u2deploy.errors import U2Error


def test_round_trip_keeps_typed_fields_and_extra_keys():
    spec = ArtifactSpec(variant="small", precision="int8", input_size=(240, 320), batch=None, dynamic_hw=True,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), weights="u2netp", weights_sha256="ab",
                        quant_target="cpu", requires_int8_dot_product=True, extra={"opset": "17"})
    meta = spec.to_metadata()
    assert meta["input_size"] == "240x320" and meta["batch"] == "dynamic" and meta["opset"] == "17"
    assert ArtifactSpec.from_metadata(meta) == spec


def test_defaults_are_what_an_older_export_means():
    spec = ArtifactSpec.from_metadata({})
    assert (spec.precision, spec.batch, spec.input_size, spec.mean, spec.std) == ("fp32", 1, None, IMAGENET_MEAN,
                                                                                IMAGENET_STD)
    assert spec.evolve(precision="fp16", extra={"a": "b"}).to_metadata()["precision"] == "fp16"


@pytest.mark.parametrize("key, value, words", [
    ("precision", "unknown", "expected one of fp32"), ("input_size", "320×", "expected N or HxW"),
    ("input_size", "0", "each side must be"), ("batch", "0", "positive integer"), ("mean", "0.1,0.2", "three"),
    ("std", "0.2,0,0.2", "all positive"), ("dynamic_hw", "yes", "true or false"), ("quant_target", "gpu", "cpu"),
])
def test_a_bad_value_is_one_line_naming_the_file(key, value, words):
    with pytest.raises(U2Error, match=words) as info:
        ArtifactSpec.from_metadata({key: value}, "m.onnx")
    assert str(info.value).startswith(f"m.onnx: metadata {key}")
    assert "\n" not in str(info.value)


def test_every_stage_writes_it_and_every_runner_reads_it(small_onnx, calib_dir, tmp_path):
    from u2deploy.calibration.quantize import quantize_model
    from u2deploy.engines import open_runner
    from u2deploy.export.fp16 import convert_fp16_model

    def spec_of(path):
        return ArtifactSpec.from_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props})

    fp32 = spec_of(small_onnx)
    assert (fp32.variant, fp32.precision, fp32.input_size, fp32.batch) == ("small", "fp32", (64, 64), None)
    half = spec_of(convert_fp16_model(small_onnx, tmp_path / "h.onnx").path)
    assert half.precision == "fp16" and half.evolve(precision="fp32") == fp32.evolve(extra=half.extra)
    int8 = spec_of(quantize_model(small_onnx, calib_dir, tmp_path / "q.onnx", target="cpu", num=6,
                                  progress=False).path)
    assert (int8.precision, int8.quant_target, int8.requires_int8_dot_product) == ("int8", "cpu", False)
    for artifact, expected in ((str(small_onnx), fp32), ("torch:small", None)):
        with open_runner(artifact) as runner:
            assert runner.info.spec.variant == "small" and runner.info.native_size is not None
            if expected is not None:
                assert runner.info.spec == expected
