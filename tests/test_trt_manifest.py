"""The engine manifest: what it records, atomic writing, and the version/GPU checks a runner makes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from u2deploy.engines.trt_compat import GpuInfo, TrtVersion
from u2deploy.engines.trt_manifest import (
    build_manifest,
    check_compatible,
    manifest_path,
    read_manifest,
    write_manifest,
)
from u2deploy.errors import U2Error
from u2deploy.export.trt_plan import BatchRange, BuildRequest, SourceModel, make_plan

RTX4090 = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9))
METADATA = {"variant": "small", "input_size": "320x320", "mean": "0.485,0.456,0.406",
            "std": "0.229,0.224,0.225"}


def _manifest(tmp_path: Path, version="10.9.0.34", gpu=RTX4090, **request) -> tuple[Path, dict]:
    engine = tmp_path / "u2netp_fp16.engine"
    engine.write_bytes(b"engine bytes")
    onnx = tmp_path / "u2netp_fp16.onnx"
    onnx.write_bytes(b"onnx bytes")
    request = {"precision": "fp16", "batch": BatchRange(1, 4, 8), **request}
    source = SourceModel("fp16", None, (320, 320), path=onnx, metadata=METADATA)
    plan = make_plan(TrtVersion.parse(version), BuildRequest(**request), source, gpu.compute_capability)
    manifest = build_manifest(engine=engine, tensorrt_version=version, gpu=gpu, precision="fp16",
                              plan=plan.as_dict(), input_name="input", output_names=["d0"], source_onnx=onnx,
                              onnx_metadata=METADATA, build_seconds=41.26,
                              rebuild=f"u2export trt --onnx {onnx} --fp16 -o {engine}")
    write_manifest(engine, manifest)
    return engine, manifest


def test_manifest_records_what_the_brief_asks(tmp_path):
    engine, _ = _manifest(tmp_path)
    path = manifest_path(engine)
    assert path.name == "u2netp_fp16.engine.json"
    m = json.loads(path.read_text())
    assert m["tensorrt_version"] == "10.9.0.34"
    assert m["gpu"] == {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    assert m["precision"] == "fp16"
    assert m["inputs"] == {"input": {"min": [1, 3, 320, 320], "opt": [4, 3, 320, 320],
                                     "max": [8, 3, 320, 320]}}
    assert m["source_onnx"]["sha256"] == hashlib.sha256(b"onnx bytes").hexdigest()
    assert m["source_onnx"]["metadata"] == METADATA
    assert m["engine_sha256"] == hashlib.sha256(b"engine bytes").hexdigest()
    assert m["builder_flags"] == [] and m["network_flags"] == ["STRONGLY_TYPED"]  # 10.x: strongly typed
    assert m["strongly_typed"] is True and m["intermediates"] is None and m["verification"] is None
    assert m["version_compatible"] is False and m["hardware_compatibility"] == "NONE"
    assert m["build_seconds"] == 41.3 and m["rebuild"].startswith("u2export trt --onnx")
    assert read_manifest(engine) == m


def test_no_manifest_and_bad_manifest(tmp_path):
    engine = tmp_path / "x.engine"
    assert read_manifest(engine) is None
    manifest_path(engine).write_text("{not json")
    with pytest.raises(U2Error, match="unreadable engine manifest"):
        read_manifest(engine)
    manifest_path(engine).write_text('{"kind": "something else"}')
    with pytest.raises(U2Error, match="not a u2deploy engine manifest"):
        read_manifest(engine)


def test_the_manifest_is_written_like_every_other_file(tmp_path):
    """Through u2deploy.files (one atomic writer): the user's file mode, no temporary file, one-line errors."""
    import os
    import stat

    from u2deploy.engines import trt_manifest

    assert not hasattr(trt_manifest, "write_atomic")  # no second atomic writer
    engine, manifest = _manifest(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(manifest_path(engine).stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u2netp_fp16.engine", "u2netp_fp16.engine.json",
                                                          "u2netp_fp16.onnx"]
    with pytest.raises(U2Error, match=r"folder .*gone does not exist") as exc:
        write_manifest(tmp_path / "gone" / "x.engine", manifest)
    assert "\n" not in str(exc.value) and not (tmp_path / "gone").exists()


def test_the_manifest_names_the_file_it_will_have(tmp_path):
    """The builder hashes the engine in its temporary file; the manifest names the final one."""
    engine, manifest = _manifest(tmp_path)
    again = build_manifest(engine=engine, name="final.engine", tensorrt_version="10.9.0.34", gpu=RTX4090,
                           precision="fp16", plan={}, input_name="input", output_names=["d0"],
                           source_onnx=tmp_path / "u2netp_fp16.onnx", onnx_metadata=METADATA, build_seconds=1,
                           rebuild="u2export trt", verification={"passed": True},
                           intermediates={"folder": "x.build", "files": []})
    assert again["engine"] == "final.engine" and again["engine_sha256"] == manifest["engine_sha256"]
    assert again["verification"] == {"passed": True} and again["intermediates"]["folder"] == "x.build"


def test_same_release_and_gpu_loads(tmp_path):
    engine, m = _manifest(tmp_path)
    assert check_compatible(engine, m, TrtVersion.parse("10.9.0.34"), RTX4090) == []
    assert check_compatible(engine, m, TrtVersion.parse("10.9.0.34.post1"), RTX4090) == []


def test_other_release_is_one_line_with_the_rebuild_command(tmp_path):
    engine, m = _manifest(tmp_path)
    with pytest.raises(U2Error) as exc:
        check_compatible(engine, m, TrtVersion.parse("10.13.3.9"), RTX4090)
    message = str(exc.value)
    assert "\n" not in message
    assert "built by TensorRT 10.9.0.34, this is TensorRT 10.13.3.9" in message
    assert "rebuild it here: u2export trt --onnx" in message


def test_version_compatible_engines_load_in_later_releases_of_the_same_major(tmp_path):
    engine, m = _manifest(tmp_path, version_compatible=True)
    assert m["version_compatible"] is True
    assert check_compatible(engine, m, TrtVersion.parse("10.13.3.9"), RTX4090) == []
    with pytest.raises(U2Error, match="built by TensorRT"):
        check_compatible(engine, m, TrtVersion.parse("10.8.0.43"), RTX4090)  # older
    with pytest.raises(U2Error, match="built by TensorRT"):
        check_compatible(engine, m, TrtVersion.parse("11.0.0.114"), RTX4090)  # another major


def test_other_gpu_is_one_line(tmp_path):
    engine, m = _manifest(tmp_path)
    a100 = GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0))
    with pytest.raises(U2Error) as exc:
        check_compatible(engine, m, TrtVersion.parse("10.9.0.34"), a100)
    assert ("built for NVIDIA GeForce RTX 4090 (compute capability 8.9), this GPU is NVIDIA A100"
            in str(exc.value))
    assert "\n" not in str(exc.value)


def test_hardware_compatible_engines_load_on_any_ampere_or_newer(tmp_path):
    engine, m = _manifest(tmp_path, hardware_compatible=True)
    assert m["hardware_compatibility"] == "AMPERE_PLUS"
    check_compatible(engine, m, TrtVersion.parse("10.9.0.34"), GpuInfo("NVIDIA A100", (8, 0)))
    with pytest.raises(U2Error, match="built for"):
        check_compatible(engine, m, TrtVersion.parse("10.9.0.34"), GpuInfo("Tesla T4", (7, 5)))


def test_same_compute_capability_other_name_warns(tmp_path):
    engine, m = _manifest(tmp_path)
    warnings = check_compatible(engine, m, TrtVersion.parse("10.9.0.34"), GpuInfo("NVIDIA L40S", (8, 9)))
    assert len(warnings) == 1 and "NVIDIA L40S" in warnings[0]
