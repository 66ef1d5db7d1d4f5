"""The TensorRT build plan, per version (8.6 / 10.x / 11.x), GPU and flags; no TensorRT needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from u2deploy.engines.trt_compat import GpuInfo, TrtVersion, has_fast_fp16
from u2deploy.errors import U2Error
from u2deploy.export.trt import base_name, default_output, precision_from_flags
from u2deploy.export.trt_plan import BatchRange, BuildRequest, SourceModel, describe_onnx, make_plan
from u2deploy.sizes import parse_size

V86, V100, V108, V1016, V110, V114 = (TrtVersion.parse(v) for v in (
    "8.6.1", "10.0.1", "10.8.0.43", "10.16.1.11", "11.0.0.114", "11.4.0.106"))
RTX4090, GTX1080TI, T4, V100_GPU = (8, 9), (6, 1), (7, 5), (7, 0)


def fp32_onnx(batch=None, size=(320, 320)):
    return SourceModel(kind="fp32", batch=batch, size=size, input_name="input", path=Path("m.onnx"))


def plan(version, precision, source=None, gpu=RTX4090, **request):
    return make_plan(version, BuildRequest(precision=precision, **request), source or fp32_onnx(), gpu)


# ------------------------------------------------------------------------------------------ versions

@pytest.mark.parametrize(("text", "family", "release"), [
    ("8.6.1", "8.6", (8, 6, 1)), ("8.6.1.post1", "8.6", (8, 6, 1)), ("10.0.1", "10", (10, 0, 1)),
    ("10.16.1.11", "10", (10, 16, 1)), ("11.0.0.114", "11", (11, 0, 0)), ("11.4.0.106", "11", (11, 4, 0)),
])
def test_versions_parse_into_families(text, family, release):
    version = TrtVersion.parse(text)
    assert version.family == family
    assert version.release == release
    assert version.strongly_typed_only == (family == "11")


@pytest.mark.parametrize("text", ["8.5.3", "9.3.0", "7.2.1", "12.0.0", "13.1.0.5"])
def test_unsupported_versions_say_so(text):
    with pytest.raises(U2Error, match="8.6") as exc:
        _ = TrtVersion.parse(text).family
    assert "pip install -e '.[gpu]'" in str(exc.value)


def _gpu_extra_tensorrt() -> str:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    found = [r for r in pyproject["project"]["optional-dependencies"]["gpu"] if r.startswith("tensorrt")]
    assert len(found) == 1, found
    return found[0]


def test_the_gpu_extra_installs_exactly_the_releases_supported():
    """pyproject.toml's gpu extra and trt_compat name the same TensorRT releases, in words and in effect."""
    from packaging.requirements import Requirement

    from u2deploy.engines.trt_compat import TENSORRT_REQUIREMENT

    assert _gpu_extra_tensorrt() == TENSORRT_REQUIREMENT
    specifier = Requirement(TENSORRT_REQUIREMENT).specifier
    for text in ("7.2.3", "8.5.3.1", "8.6.0", "8.6.1", "8.6.1.post1", "9.0.1", "9.3.0", "10.0.1", "10.8.0.43",
                 "10.16.1.11", "11.0.0.114", "11.4.0.106", "12.0.0", "13.0"):
        try:
            _ = TrtVersion.parse(text).family
            accepted = True
        except U2Error:
            accepted = False
        assert specifier.contains(text) == accepted, text


def test_minimum_compute_capability_follows_the_release_notes():
    assert V86.min_compute_capability == (5, 0)  # Pascal (and Maxwell) still in
    assert TrtVersion.parse("10.4.0").min_compute_capability == (7, 0)
    assert TrtVersion.parse("10.5.0").min_compute_capability == (7, 5)  # Volta removed in 10.5
    assert V114.min_compute_capability == (7, 5)


def test_fast_fp16_table():
    assert not has_fast_fp16(GTX1080TI)
    assert has_fast_fp16((6, 0)) and has_fast_fp16(T4) and has_fast_fp16(RTX4090)
    assert not has_fast_fp16((5, 2))


# ------------------------------------------------------------------------------------- flags per version

@pytest.mark.parametrize(("version", "network", "fp16_flags", "int8_flags"), [
    (V86, ("EXPLICIT_BATCH",), ("FP16",), ("INT8", "FP16")),
    (V100, ("STRONGLY_TYPED",), (), ()),  # strongly typed from 10.0 on: precision flags are not allowed with it
    (V108, ("STRONGLY_TYPED",), (), ()),
    (V1016, ("STRONGLY_TYPED",), (), ()),
    (V110, ("STRONGLY_TYPED",), (), ()),
    (V114, ("STRONGLY_TYPED",), (), ()),
])
def test_network_and_builder_flags(version, network, fp16_flags, int8_flags):
    fp32 = plan(version, "fp32")
    fp16 = plan(version, "fp16")
    int8 = plan(version, "int8", calib_dir=Path("calib"), int8_mode="qdq")
    for p in (fp32, fp16, int8):
        assert p.network_flags == network
        assert p.strongly_typed == (version.family != "8.6")
        assert p.profiling_verbosity == "DETAILED"  # the engine keeps its layers' types (read without a manifest)
        assert not p.warnings
    assert fp32.builder_flags == () and fp32.cleared_flags == ("TF32",)  # FP32, held to the FP32 bound
    assert fp16.cleared_flags == () and int8.cleared_flags == ()
    assert fp16.builder_flags == fp16_flags
    assert int8.builder_flags == int8_flags


@pytest.mark.parametrize("version", [V100, V108, V1016])
def test_only_the_calibrator_builds_weakly_typed_on_10(version):
    p = plan(version, "int8", calib_dir=Path("calib"), int8_mode="calibrator")
    assert (p.strongly_typed, p.network_flags, p.builder_flags) == (False, (), ("INT8", "FP16"))
    deprecated = [w for w in p.warnings if "deprecated since TensorRT 10.12" in w]
    assert bool(deprecated) == (version.minor >= 12)


@pytest.mark.parametrize("version", [V86, V100, V1016, V110, V114])
def test_which_onnx_is_parsed(version):
    """FP16 parses the FP16 ONNX and INT8 the Q/DQ ONNX on every release (one artifact chain)."""
    fp16 = plan(version, "fp16")
    assert (fp16.stages, fp16.onnx_kind) == (("convert_fp16",), "fp16")
    already = plan(version, "fp16", SourceModel("fp16", None, (320, 320), path=Path("m_fp16.onnx")))
    assert (already.stages, already.onnx_kind) == ((), "fp16")
    qdq = plan(version, "int8", calib_dir=Path("calib"), int8_mode="qdq")
    assert (qdq.stages, qdq.onnx_kind, qdq.int8_mode) == (("quantize",), "qdq", "qdq")
    given = plan(version, "int8", SourceModel("qdq", None, (320, 320), path=Path("m_qdq.onnx")))
    assert (given.stages, given.onnx_kind, given.int8_mode) == ((), "qdq", "qdq")


def test_variant_runs_the_onnx_stage_first():
    variant = SourceModel(kind="fp32", batch=1, size=None)
    p = plan(V1016, "fp16", variant)
    assert p.stages == ("export_onnx", "convert_fp16")
    p = plan(V114, "int8", variant, calib_dir=Path("calib"))
    assert p.stages == ("export_onnx", "quantize")
    assert plan(V86, "fp32", variant).stages == ("export_onnx",)


def test_int8_auto_mode_is_the_calibrator_on_86_only():
    p86 = plan(V86, "int8", calib_dir=Path("calib"))
    assert (p86.int8_mode, p86.onnx_kind, p86.stages) == ("calibrator", "fp32", ())
    assert p86.builder_flags == ("INT8", "FP16")
    p10 = plan(V1016, "int8", calib_dir=Path("calib"))
    assert (p10.int8_mode, p10.onnx_kind) == ("qdq", "qdq")
    assert (p10.strongly_typed, p10.builder_flags) == (True, ())
    p10c = plan(V1016, "int8", calib_dir=Path("calib"), int8_mode="calibrator")
    assert (p10c.int8_mode, p10c.onnx_kind, p10c.builder_flags) == ("calibrator", "fp32", ("INT8", "FP16"))


@pytest.mark.parametrize("version", [V110, V114])
def test_tensorrt_11_refuses_the_implicit_calibrator(version):
    with pytest.raises(U2Error, match="TensorRT 11 has no implicit INT8 calibration"):
        plan(version, "int8", calib_dir=Path("calib"), int8_mode="calibrator")


@pytest.mark.parametrize("version", [V86, V1016, V114])
def test_int8_from_fp32_needs_calibration_images(version):
    with pytest.raises(U2Error, match="--int8 needs --calib DIR"):
        plan(version, "int8")


@pytest.mark.parametrize(("kind", "precision", "message"), [
    ("qdq", "fp16", "Q/DQ"), ("fp16", "int8", "FP16"), ("fp16", "fp32", "--fp32 builds from the FP32"),
    ("qdq", "fp32", "--fp32"),
])
def test_onnx_of_the_wrong_kind_is_refused(kind, precision, message):
    with pytest.raises(U2Error, match=message):
        plan(V1016, precision, SourceModel(kind, 1, (320, 320), path=Path("x.onnx")), calib_dir=Path("c"))


def test_calibrator_on_a_qdq_onnx_is_refused():
    with pytest.raises(U2Error, match="calibrator needs the FP32 ONNX"):
        plan(V86, "int8", SourceModel("qdq", 1, (320, 320), path=Path("x.onnx")), int8_mode="calibrator")


def test_int8_mode_only_with_int8():
    with pytest.raises(U2Error, match="--int8-mode"):
        plan(V1016, "fp16", int8_mode="qdq")


# ------------------------------------------------------------------------------------------------- GPUs

def test_fp16_on_pascal_warns_and_int8_drops_fp16():
    p = plan(V86, "fp16", gpu=GTX1080TI)
    assert p.builder_flags == ("FP16",)
    assert any("--int8 or --fp32 will be faster" in w for w in p.warnings)
    p = plan(V86, "int8", gpu=GTX1080TI, calib_dir=Path("calib"))
    assert p.builder_flags == ("INT8",)
    assert not p.warnings
    assert not plan(V86, "fp16", gpu=RTX4090).warnings


@pytest.mark.parametrize("version", [V100, V1016, V114])
def test_pascal_needs_tensorrt_86(version):
    with pytest.raises(U2Error, match="pip install tensorrt==8.6.1"):
        plan(version, "fp32", gpu=GTX1080TI)


def test_volta_left_in_10_5():
    plan(V100, "fp32", gpu=V100_GPU)
    with pytest.raises(U2Error, match="7.5 or newer"):
        plan(V108, "fp32", gpu=V100_GPU)


def test_portability_flags():
    p = plan(V1016, "fp16", version_compatible=True, hardware_compatible=True)
    assert p.builder_flags == ("VERSION_COMPATIBLE",)
    assert plan(V86, "fp16", version_compatible=True).builder_flags == ("FP16", "VERSION_COMPATIBLE")
    assert p.hardware_compatibility == "AMPERE_PLUS"
    assert plan(V114, "fp16", version_compatible=True).builder_flags == ("VERSION_COMPATIBLE",)
    assert plan(V86, "fp32").hardware_compatibility == "NONE"
    with pytest.raises(U2Error, match="Ampere"):
        plan(V1016, "fp16", gpu=T4, hardware_compatible=True)


def test_a_release_newer_than_11_is_refused_not_guessed():
    with pytest.raises(U2Error, match="TensorRT 12.0.0 is not supported"):
        plan(TrtVersion.parse("12.0.0"), "fp16")


# ----------------------------------------------------------------------------------------------- shapes

def test_dynamic_batch_gets_a_profile():
    p = plan(V1016, "fp16", batch=BatchRange(1, 4, 16))
    assert p.profile == {"min": [1, 3, 320, 320], "opt": [4, 3, 320, 320], "max": [16, 3, 320, 320]}
    assert p.input_shape == (4, 3, 320, 320)
    assert p.batch_range == (1, 16)


def test_dynamic_batch_defaults_to_one():
    assert plan(V1016, "fp32").profile == {k: [1, 3, 320, 320] for k in ("min", "opt", "max")}


def test_static_onnx_has_no_profile_and_refuses_other_batches():
    static = fp32_onnx(batch=2)
    p = plan(V86, "fp32", static)
    assert p.profile is None and p.input_shape == (2, 3, 320, 320) and p.batch_range == (2, 2)
    plan(V86, "fp32", static, batch=BatchRange(2, 2, 2))
    with pytest.raises(U2Error, match="fixed batch of 2"):
        plan(V86, "fp32", static, batch=BatchRange(1, 1, 8))


def test_dynamic_hw_uses_size_then_metadata_then_320():
    dyn = SourceModel("fp32", None, None, metadata={"input_size": "288x256"}, path=Path("m.onnx"))
    assert plan(V1016, "fp32", dyn).input_shape == (1, 3, 288, 256)
    assert plan(V1016, "fp32", dyn, size=(192, 192)).input_shape == (1, 3, 192, 192)
    bare = SourceModel("fp32", 1, None, path=Path("m.onnx"))
    p = plan(V1016, "fp32", bare)
    assert p.input_shape == (1, 3, 320, 320) and p.profile is not None  # H, W dynamic: a profile
    with pytest.raises(U2Error, match="takes 320x320 only"):
        plan(V1016, "fp32", fp32_onnx(), size=(256, 256))


def test_calibration_shape():
    p = plan(V86, "int8", calib_dir=Path("c"), calib_batch=4, batch=BatchRange(1, 1, 8))
    assert p.calibration_shape == (4, 3, 320, 320)
    p = plan(V86, "int8", fp32_onnx(batch=2), calib_dir=Path("c"), calib_batch=4)
    assert p.calibration_shape == (2, 3, 320, 320)  # a fixed batch wins
    assert plan(V1016, "int8", calib_dir=Path("c")).calibration_shape is None  # Q/DQ: no calibrator


def test_workspace():
    assert plan(V1016, "fp32", workspace_gib=2).workspace_bytes == 2 << 30
    assert plan(V1016, "fp32").workspace_bytes is None
    with pytest.raises(U2Error, match="--workspace"):
        plan(V1016, "fp32", workspace_gib=0)


def test_plan_is_plain_data():
    d = plan(V114, "int8", calib_dir=Path("c"), batch=BatchRange(1, 2, 4)).as_dict()
    assert d["network_flags"] == ("STRONGLY_TYPED",) and d["builder_flags"] == ()
    assert d["stages"] == ("quantize",) and d["profile"]["max"] == [4, 3, 320, 320]


# ------------------------------------------------------------------------------------------ flag parsing

def test_batch_flags():
    assert BatchRange.from_flags() is None
    assert BatchRange.from_flags(batch=4) == BatchRange(4, 4, 4)
    assert BatchRange.from_flags(max_batch=8) == BatchRange(1, 1, 8)
    assert BatchRange.from_flags(min_batch=2, opt_batch=4) == BatchRange(2, 4, 4)
    with pytest.raises(U2Error, match="min <= opt <= max"):
        BatchRange.from_flags(min_batch=4, max_batch=2)
    with pytest.raises(U2Error, match="--batch fixes"):
        BatchRange.from_flags(batch=2, max_batch=4)


def test_precision_size_and_names():
    assert precision_from_flags(True, False, False) == "fp16"
    with pytest.raises(U2Error, match="choose one precision"):
        precision_from_flags(True, True, False)
    with pytest.raises(U2Error, match="choose one precision"):
        precision_from_flags(False, False, False)
    assert parse_size("288x256") == (288, 256) and parse_size("320") == (320, 320)
    assert parse_size(None) is None
    with pytest.raises(U2Error, match="--size"):
        parse_size("big")
    assert base_name(None, "small") == "u2netp" and base_name(None, "full") == "u2net"
    assert base_name(Path("out/u2netp_fp16.onnx"), None) == "u2netp"
    assert base_name(Path("u2netp_int8_trt.onnx"), None) == "u2netp"
    assert default_output(Path("out/u2netp.onnx"), None, "fp16") == Path("out/u2netp_fp16.engine")
    assert default_output(None, "full", "int8") == Path("u2net_int8.engine")


def test_gpu_info_str():
    assert str(GpuInfo("NVIDIA GeForce RTX 4090", (8, 9))) == "NVIDIA GeForce RTX 4090 (8.9)"


# ------------------------------------------------------------------------------------------ ONNX reading

def _onnx_file(path: Path, *, elem=TensorProto.FLOAT, dims=("N", 3, 32, 32), qdq=False,
               metadata=None) -> Path:
    x = helper.make_tensor_value_info("input", elem, list(dims))
    y = helper.make_tensor_value_info("d0", elem, [dims[0], 1, dims[2], dims[3]])
    nodes, inits, src = [], [], "input"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        src = "dq"
    np_type = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    inits.append(numpy_helper.from_array(np.ones((1, 3, 1, 1), np_type), "w"))
    nodes += [helper.make_node("Mul", [src, "w"], ["m"]),
              helper.make_node("ReduceMean", ["m"], ["r"], axes=[1], keepdims=1),
              helper.make_node("Sigmoid", ["r"], ["d0"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def test_describe_onnx_kinds_and_dims(tmp_path):
    s = describe_onnx(_onnx_file(tmp_path / "a.onnx", metadata={"variant": "small", "input_size": "32x32"}))
    assert (s.kind, s.batch, s.size, s.input_name, s.outputs) == ("fp32", None, (32, 32), "input", ("d0",))
    assert s.metadata["variant"] == "small"
    s = describe_onnx(_onnx_file(tmp_path / "b.onnx", elem=TensorProto.FLOAT16, dims=(2, 3, "H", "W")))
    assert (s.kind, s.batch, s.size) == ("fp16", 2, None)
    assert describe_onnx(_onnx_file(tmp_path / "c.onnx", qdq=True)).kind == "qdq"


def test_describe_onnx_errors(tmp_path):
    with pytest.raises(U2Error, match="no such ONNX file"):
        describe_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(U2Error, match="not a readable ONNX model"):
        describe_onnx(tmp_path / "junk.onnx")
    with pytest.raises(U2Error, match="N×3×H×W"):
        describe_onnx(_onnx_file(tmp_path / "d.onnx", dims=("N", 1, 32, 32)))
