"""`u2export triton`: the model repository's layout, the config rules, Triton's own schema, atomic writing.

The live server tests are in test_triton_live.py; nothing here needs a server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from u2deploy.cli.export import app as export_app
from u2deploy.errors import U2Error
from u2deploy.export.triton import ModelConfig, RepoOptions, check_config, export_triton, plan_repo, repository
from u2deploy.export.triton import models as model_sources
from u2deploy.export.triton.config import DynamicBatching, Tensor

TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


def _parse(path: Path):
    """A config.pbtxt through Triton's own ModelConfig schema (tritonclient's protobuf)."""
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs the triton extra (tritonclient[grpc])")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _cli(*args: str):
    return CliRunner().invoke(export_app, ["triton", *args])


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory, small_onnx) -> Path:
    """An engine file and the manifest `u2export trt` writes beside it (no TensorRT needed to read it)."""
    folder = tmp_path_factory.mktemp("engine")
    engine = folder / "small64_fp16.engine"
    engine.write_bytes(b"not really a plan")
    metadata = {p.key: p.value for p in onnx.load(str(small_onnx), load_external_data=False).metadata_props}
    manifest = {"kind": "u2deploy.tensorrt-engine", "schema": 1, "engine": engine.name, "tensorrt_version": "10.3.0",
                "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"}, "precision": "fp16",
                "version_compatible": False, "hardware_compatibility": "NONE",
                "inputs": {"input": {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [16, 3, 64, 64]}},
                "outputs": ["saliency"], "source_onnx": {"path": str(small_onnx), "metadata": metadata},
                "rebuild": "u2export trt --onnx small64.onnx --fp16 --max-batch 16"}
    Path(f"{engine}.json").write_text(json.dumps(manifest))
    return engine


def _engine_with(folder: Path, name: str, profile, batch: str = "dynamic") -> Path:
    engine = folder / f"{name}.engine"
    engine.write_bytes(b"plan")
    Path(f"{engine}.json").write_text(json.dumps({
        "kind": "u2deploy.tensorrt-engine", "inputs": {"input": profile}, "outputs": ["saliency"],
        "tensorrt_version": "8.6.1", "gpu": {"name": "T4", "compute_capability": "7.5"},
        "source_onnx": {"metadata": {"variant": "small", "input_size": "64x64", "batch": batch}}}))
    return engine


def _onnx_io(path: Path):
    graph = onnx.load(str(path), load_external_data=False).graph
    return graph.input[0], list(graph.output)


def test_dynamic_batch_onnx_rules(small_onnx, tmp_path):
    """max_batch_size 8 by default, dims without the batch, preferred sizes within it; names, types from the graph."""
    result = _cli(str(small_onnx), "-o", str(tmp_path / "repo"), "--instances", "2")
    assert result.exit_code == 0, result.output
    assert "1 model: u2netp" in result.output and "next: tritonserver --model-repository=" in result.output
    config_path = tmp_path / "repo" / "u2netp" / "config.pbtxt"
    text = config_path.read_text()
    inp, outs = _onnx_io(small_onnx)
    assert inp.type.tensor_type.shape.dim[0].dim_param  # the fixture really is a dynamic-batch export
    assert "max_batch_size: 8" in text and 'platform: "onnxruntime_onnx"' in text
    parsed = _parse(config_path)
    assert parsed.max_batch_size == 8 and parsed.name == "u2netp"
    assert [(t.name, list(t.dims)) for t in parsed.input] == [(inp.name, [3, 64, 64])]
    assert [t.name for t in parsed.output] == [o.name for o in outs]
    assert all(list(t.dims) == [1, 64, 64] for t in parsed.output)
    from tritonclient.grpc import model_config_pb2 as pb

    assert pb.DataType.Name(parsed.input[0].data_type) == TRITON_TYPES[inp.type.tensor_type.elem_type]
    assert pb.DataType.Name(parsed.output[0].data_type) == TRITON_TYPES[outs[0].type.tensor_type.elem_type]
    sizes = list(parsed.dynamic_batching.preferred_batch_size)
    assert sizes and all(1 <= s <= parsed.max_batch_size for s in sizes) and max(sizes) == 8
    assert parsed.dynamic_batching.max_queue_delay_microseconds > 0
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind)) for g in parsed.instance_group] == [(2, "KIND_CPU")]
    version = tmp_path / "repo" / "u2netp" / "1"
    assert (version / "model.onnx").read_bytes() == small_onnx.read_bytes()
    assert (version / "model.onnx.json").read_text() == Path(f"{small_onnx}.json").read_text()


@pytest.mark.parametrize("max_batch, preferred", [(4, [2, 4]), (6, [2, 4, 6]), (1, [1]), (32, [2, 4, 8, 16, 32])])
def test_max_batch_sets_the_batch_and_the_preferred_sizes(small_onnx, tmp_path, max_batch, preferred):
    repo = plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(max_batch=max_batch))
    config = repo.models[0].config
    assert config.max_batch_size == max_batch and list(config.dynamic_batching.preferred_batch_size) == preferred
    assert config.inputs[0].dims == (3, 64, 64) and check_config(config) == []


def test_static_batch_one_gets_zero_no_batching_and_a_note(random_small_onnx, tmp_path):
    result = _cli(str(random_small_onnx), "-o", str(tmp_path / "repo"), "--max-batch", "4")
    assert result.exit_code == 0, result.output
    notes = [part for part in result.output.split(" · ") if part.startswith("note:")]
    assert len(notes) == 1 and "--dynamic-batch" in notes[0] and "static batch of 1" in notes[0]
    config = tmp_path / "repo" / "u2netp" / "config.pbtxt"
    assert "dynamic_batching" not in config.read_text()
    parsed = _parse(config)
    assert parsed.max_batch_size == 0 and not parsed.HasField("dynamic_batching")
    assert list(parsed.input[0].dims) == [1, 3, 64, 64] and list(parsed.output[0].dims) == [1, 1, 64, 64]


def test_every_platform_parses_with_tritons_schema(small_onnx, fake_engine, tmp_path):
    """onnxruntime_onnx, tensorrt_plan, openvino, python and ensemble configs, through ModelConfig."""
    seen = {}
    repo = export_triton([small_onnx], tmp_path / "onnx", name="net")
    seen["onnxruntime_onnx"] = repo.path / "net"
    export_triton([fake_engine], tmp_path / "trt", name="net")
    seen["tensorrt_plan"] = tmp_path / "trt" / "net"
    export_triton([small_onnx], tmp_path / "py", name="net", model_backend="python", threads=1)
    seen["python"] = tmp_path / "py" / "net"
    export_triton([small_onnx], tmp_path / "ens", name="net", preprocess_in_server=True)
    seen["ensemble"] = tmp_path / "ens" / "net"
    for kind, folder in seen.items():
        parsed = _parse(folder / "config.pbtxt")
        assert (parsed.platform or parsed.backend) == kind and parsed.name == folder.name
    trt = _parse(seen["tensorrt_plan"] / "config.pbtxt")
    params = {k: v.string_value for k, v in trt.parameters.items()}
    assert params["tensorrt_version"] == "10.3.0" and params["gpu"] == "NVIDIA L4"
    assert params["gpu_compute_capability"] == "8.9" and trt.default_model_filename == "model.plan"
    assert trt.max_batch_size == 16 and list(trt.input[0].dims) == [3, 64, 64]  # the profile's max
    from tritonclient.grpc import model_config_pb2 as pb

    assert pb.ModelInstanceGroup.Kind.Name(trt.instance_group[0].kind) == "KIND_GPU"
    assert sorted(p.name for p in (seen["tensorrt_plan"] / "1").iterdir()) == ["model.plan", "model.plan.json"]
    assert "built by TensorRT 10.3.0 for NVIDIA L4" in (seen["tensorrt_plan"] / "config.pbtxt").read_text()
    python = _parse(seen["python"] / "config.pbtxt")
    assert {k: v.string_value for k, v in python.parameters.items()} == {"artifact": "model.onnx", "device": "cpu",
                                                                         "threads": "1"}
    assert sorted(p.name for p in (seen["python"] / "1").iterdir()) == ["model.onnx", "model.onnx.json", "model.py"]


def test_openvino_ir_gets_the_openvino_backend(small_onnx, tmp_path):
    pytest.importorskip("openvino", reason="needs the openvino extra")
    from u2deploy.export.openvino import export_openvino

    ir = export_openvino(small_onnx, tmp_path / "m.xml").path
    repo = export_triton([ir], tmp_path / "repo", threads=2)
    folder = repo.path / "u2netp"
    parsed = _parse(folder / "config.pbtxt")
    assert parsed.backend == "openvino" and parsed.default_model_filename == "model.xml"
    assert parsed.max_batch_size == 8 and list(parsed.input[0].dims) == [3, 64, 64]
    assert {k: v.string_value for k, v in parsed.parameters.items()}["INFERENCE_NUM_THREADS"] == "2"
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.bin", "model.xml", "model.xml.json"]
    with pytest.raises(U2Error, match="OpenVINO backend runs on the CPU"):
        plan_repo([ir], tmp_path / "x", options=RepoOptions(kind="gpu"))


def test_engine_batch_ranges(fake_engine, tmp_path):
    four = plan_repo([fake_engine], tmp_path / "r", options=RepoOptions(max_batch=4))
    assert four.models[0].config.max_batch_size == 4
    with pytest.raises(U2Error, match="takes batches 1..16"):
        plan_repo([fake_engine], tmp_path / "r", options=RepoOptions(max_batch=32))
    with pytest.raises(U2Error, match="runs on a GPU only"):
        plan_repo([fake_engine], tmp_path / "r", options=RepoOptions(kind="cpu"))
    shape = [3, 64, 64]
    from_two = _engine_with(tmp_path, "from_two", {"min": [2, *shape], "opt": [4, *shape], "max": [8, *shape]})
    with pytest.raises(U2Error, match="starts above 1.*--min-batch 1"):
        plan_repo([from_two], tmp_path / "r")
    static = _engine_with(tmp_path, "static", None, batch="1")
    repo = plan_repo([static], tmp_path / "r")
    config = repo.models[0].config
    assert config.max_batch_size == 0 and config.dynamic_batching is None and config.inputs[0].dims == (1, 3, 64, 64)
    assert repo.notes and "--dynamic-batch" in repo.notes[0]
    (tmp_path / "bare.engine").write_bytes(b"plan")
    with pytest.raises(U2Error, match="no manifest bare.engine.json"):
        plan_repo([tmp_path / "bare.engine"], tmp_path / "r")


def _step_models(folder: Path) -> dict:
    return {d.name: _parse(d / "config.pbtxt") for d in folder.iterdir() if (d / "config.pbtxt").is_file()}


def test_preprocess_in_server_ensemble_layout(small_onnx, tmp_path):
    result = _cli(str(small_onnx), "-o", str(tmp_path / "repo"), "--preprocess-in-server", "--name", "sal",
                  "--model-backend", "python")
    assert result.exit_code == 0, result.output
    assert "4 models: sal, sal_preprocess, sal_model, sal_postprocess" in result.output
    models = _step_models(tmp_path / "repo")
    assert sorted(models) == ["sal", "sal_model", "sal_postprocess", "sal_preprocess"]
    ensemble = models["sal"]
    assert ensemble.platform == "ensemble" and [t.name for t in ensemble.input] == ["IMAGE"]
    assert [t.name for t in ensemble.output] == ["MASK"] and list(ensemble.output[0].dims) == [-1, -1]
    assert list((tmp_path / "repo" / "sal" / "1").iterdir()) == []  # Triton wants the version folder, empty
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:  # every tensor a step reads was made before it
        model = models[step.model_name]
        assert model.max_batch_size == ensemble.max_batch_size == 8
        assert set(step.input_map) == {t.name for t in model.input} and set(step.input_map.values()) <= available
        assert set(step.output_map) <= {t.name for t in model.output}
        available |= set(step.output_map.values())
    assert "MASK" in available
    pre = models["sal_preprocess"]
    inp, outs = _onnx_io(small_onnx)
    assert [(t.name, list(t.dims)) for t in pre.output] == [(inp.name, [3, 64, 64]), ("ORIGINAL_SIZE", [2])]
    params = {k: v.string_value for k, v in pre.parameters.items()}
    assert params == {"input_size": "64x64", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    assert [t.name for t in models["sal_postprocess"].input] == [outs[0].name, "ORIGINAL_SIZE"]
    assert models["sal_model"].backend == "python" and models["sal_model"].HasField("dynamic_batching")
    sources = Path(model_sources.__file__).parent
    for model, source in (("sal_preprocess", "preprocess"), ("sal_postprocess", "postprocess"),
                          ("sal_model", "runner")):
        assert (tmp_path / "repo" / model / "1" / "model.py").read_text() == (sources / f"{source}.py").read_text()


def test_static_batch_ensemble_keeps_the_batch_of_one_in_its_dims(random_small_onnx, tmp_path):
    repo = export_triton([random_small_onnx], tmp_path / "repo", preprocess_in_server=True)
    models = _step_models(repo.path)
    assert {m.max_batch_size for m in models.values()} == {0}
    assert list(models["u2netp"].input[0].dims) == [1, 1] and list(models["u2netp"].output[0].dims) == [1, -1, -1]
    assert list(models["u2netp_preprocess"].output[0].dims) == [1, 3, 64, 64]
    assert models["u2netp_model"].platform == "onnxruntime_onnx"


def test_existing_versions_are_kept_unless_overwrite(small_onnx, random_small_onnx, tmp_path):
    out = tmp_path / "repo"
    export_triton([small_onnx], out)
    config = out / "u2netp" / "config.pbtxt"
    before = config.read_text()
    result = _cli(str(random_small_onnx), "-o", str(out))
    assert result.exit_code != 0 and isinstance(result.exception, U2Error)
    assert "version 1 exists" in str(result.exception) and "--overwrite" in str(result.exception)
    assert config.read_text() == before
    # another model beside it is added; the first stays as it was
    export_triton([random_small_onnx], out, name="other")
    assert sorted(p.name for p in out.iterdir()) == ["other", "u2netp"] and config.read_text() == before
    replaced = export_triton([random_small_onnx], out, overwrite=True)
    assert replaced.replaced == ["u2netp"] and "max_batch_size: 0" in config.read_text()
    assert (out / "u2netp" / "1" / "model.onnx").read_bytes() == random_small_onnx.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_failure_while_writing_leaves_no_repository(small_onnx, tmp_path, monkeypatch):
    calls = []

    def failing_copy(src, dst, *args, **kwargs):
        calls.append(dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository.shutil, "copyfile", failing_copy)
    with pytest.raises(U2Error, match="No space left on device.*nothing written"):
        export_triton([small_onnx], tmp_path / "repo", preprocess_in_server=True)
    assert calls and list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_exit_1_and_no_repository(random_small_onnx, tmp_path, capsys, monkeypatch):
    from u2deploy.cli.export import main

    junk = tmp_path / "notes.onnx"
    junk.write_bytes(os.urandom(64))
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    add = tmp_path / "add.onnx"
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph), str(add))
    cases = [(junk, "not a readable ONNX model"), (text, "not an artifact Triton serves"),
             (add, "not a U²-Net artifact"), (tmp_path / "missing.onnx", "no such file")]
    for artifact, words in cases:
        monkeypatch.setattr("sys.argv", ["u2export", "triton", str(artifact), "-o", str(tmp_path / "repo")])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 1 and len(err) == 1 and words in err[0], err
        assert not (tmp_path / "repo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(U2Error, match="exists and is not a folder"):
        export_triton([random_small_onnx], tmp_path / "file")
    with pytest.raises(U2Error, match="folder .*absent does not exist"):
        export_triton([random_small_onnx], tmp_path / "absent" / "repo")


def test_names_options_and_several_artifacts(small_onnx, random_small_onnx, tmp_path):
    other = tmp_path / "other 64.onnx"
    other.write_bytes(random_small_onnx.read_bytes())
    repo = plan_repo([small_onnx, other], tmp_path / "r")
    assert [m.config.name for m in repo.models] == ["small64", "other_64"]
    with pytest.raises(U2Error, match="--name net: names one model"):
        plan_repo([small_onnx, other], tmp_path / "r", name="net")
    with pytest.raises(U2Error, match="both would be model 'small64'"):
        plan_repo([small_onnx, random_small_onnx], tmp_path / "r")
    with pytest.raises(U2Error, match="--name a/b"):
        plan_repo([small_onnx], tmp_path / "r", name="a/b")
    with pytest.raises(U2Error, match="--model-backend tf"):
        plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(model_backend="tf"))
    with pytest.raises(U2Error, match="--accelerator tensorrt.*--kind gpu"):
        plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(accelerator="tensorrt"))
    accelerated = plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(accelerator="openvino"))
    assert 'cpu_execution_accelerator: [ { name: "openvino" } ]' in accelerated.models[0].config.to_pbtxt()
    gpu = plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(kind="gpu", accelerator="tensorrt"))
    assert "KIND_GPU" in gpu.models[0].config.to_pbtxt()
    unbatched = plan_repo([small_onnx], tmp_path / "r", options=RepoOptions(dynamic_batching=False))
    assert unbatched.models[0].config.dynamic_batching is None and unbatched.models[0].config.max_batch_size == 8


def test_check_config_names_each_broken_rule():
    good = ModelConfig(name="m", platform="onnxruntime_onnx", max_batch_size=4,
                       inputs=(Tensor("x", "TYPE_FP32", (3, 8, 8)),),
                       outputs=(Tensor("y", "TYPE_FP32", (1, 8, 8)),),
                       dynamic_batching=DynamicBatching((2, 4), 100))
    assert check_config(good) == []
    from dataclasses import replace

    assert "not within 1..4" in check_config(replace(good, dynamic_batching=DynamicBatching((8,), 100)))[0]
    assert "without batching" in check_config(replace(good, max_batch_size=0,
                                                      dynamic_batching=DynamicBatching((1,), 100)))[0]
    assert "queue_delay" in check_config(replace(good, dynamic_batching=DynamicBatching((2,), 0)))[0]
    assert "dims [0]" in check_config(replace(good, inputs=(Tensor("x", "TYPE_FP32", (0,)),)))[0]
    assert "ensemble needs steps" in check_config(replace(good, platform="ensemble", dynamic_batching=None))[0]


def test_renderer_escapes_and_round_trips(tmp_path):
    config = ModelConfig(name="m", backend="python", parameters={"path": 'a "quoted"\\path'},
                         inputs=(Tensor("x", "TYPE_FP32", (-1,)),),
                         outputs=(Tensor("y", "TYPE_UINT8", (-1, -1)),), comments=("a comment",))
    (tmp_path / "config.pbtxt").write_text(config.to_pbtxt())
    parsed = _parse(tmp_path / "config.pbtxt")
    assert parsed.parameters["path"].string_value == 'a "quoted"\\path' and list(parsed.output[0].dims) == [-1, -1]
    assert np.array_equal(list(parsed.input[0].dims), [-1])


@pytest.mark.parametrize("kind, accelerator, field", [("cpu", "openvino", "cpu_execution_accelerator"),
                                                      ("gpu", "tensorrt", "gpu_execution_accelerator")])
def test_onnx_runtime_accelerators_parse(small_onnx, tmp_path, kind, accelerator, field):
    repo = export_triton([small_onnx], tmp_path / "repo", kind=kind, accelerator=accelerator, threads=2)
    parsed = _parse(repo.path / "u2netp" / "config.pbtxt")
    assert [a.name for a in getattr(parsed.optimization.execution_accelerators, field)] == [accelerator]
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"
