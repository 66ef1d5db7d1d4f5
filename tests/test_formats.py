"""The format table is what the CLIs and open_runner read: its flags, backends and modules match the code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from u2deploy import formats
from u2deploy.cli.bench import app as bench_app
from u2deploy.cli.export import app as export_app
from u2deploy.engines import open_runner, runner_options
from u2deploy.engines.base import Runner
from u2deploy.errors import U2Error


def _long_flags(command, ordered: bool = False):
    flags = [next(o for o in p.opts if o.startswith("--")) for p in command.params
             if p.param_type_name == "option" and p.name != "help"]
    return flags if ordered else set(flags)


def test_every_export_command_builds_a_row_and_every_row_has_its_stage() -> None:
    """The table names each command that writes an artifact, and the stage function it runs exists."""
    from u2deploy.export import stages

    commands = typer.main.get_command(export_app).commands
    in_table = {name for f in formats.FORMATS for name in f.commands}
    assert in_table == set(commands) - {"check-qdq", "formats", "triton", "triton-env"}
    for fmt in formats.FORMATS:
        for precision, made in fmt.builds.items():
            assert callable(getattr(stages, made.stage)), f"{fmt.key}:{precision}: no stage {made.stage}"
            if made.source is not None:
                assert formats.by_name(made.source)[0].build(formats.by_name(made.source)[1]) is not None


def test_default_outputs_follow_the_rows_rule_without_repeating_a_tag() -> None:
    assert formats.default_output("openvino", "int8", "m/u2netp_int8.onnx") == Path("m/u2netp_int8_openvino.xml")
    assert formats.default_output("openvino", "fp32", "u2netp.onnx") == Path("u2netp_openvino.xml")
    assert formats.default_output("onnx", "fp16", "u2netp.onnx") == Path("u2netp_fp16.onnx")
    assert formats.default_output("web", "int8", "u2netp_int8.onnx") == Path("u2netp_int8_web")
    assert formats.default_output("trt", "fp16", "u2netp") == Path("u2netp_fp16.engine")
    from u2deploy.calibration.quantize import default_output as quantized
    from u2deploy.export.openvino import default_output as ir

    assert ir(Path("u2netp_int8.onnx"), "int8") == Path("u2netp_int8_openvino.xml")
    assert quantized(Path("u2netp.onnx"), "tensorrt") == Path("u2netp_int8_trt.onnx")


def test_an_unknown_name_gets_the_closest_one() -> None:
    with pytest.raises(U2Error, match=r"unknown format 'onnnx' \(did you mean 'onnx'\?\)"):
        formats.by_key("onnnx")
    with pytest.raises(U2Error, match=r"openvno:int8: unknown format 'openvno' \(did you mean 'openvino'\?\)"):
        formats.by_name("openvno:int8")
    with pytest.raises(U2Error, match=r"--backend openvno: unknown backend 'openvno' \(did you mean 'openvino'\?\)"):
        formats.backend("openvno")
    with pytest.raises(U2Error, match="ONNX artifacts are fp32, fp16, int8"):
        formats.by_name("onnx:int4")
    with pytest.raises(U2Error, match=r"m.onx: unknown artifact type \(did you mean m.onnx\?\)"):
        formats.for_artifact("m.onx")


def test_triton_reads_every_format_it_serves_from_the_row() -> None:
    from u2deploy.export.triton.artifacts import _READERS

    assert set(_READERS) == {f.key for f in formats.FORMATS if f.triton}
    assert formats.for_artifact("m.plan").key == "trt"


def test_every_build_command_exists_with_its_flags() -> None:
    commands = typer.main.get_command(export_app).commands
    for fmt in formats.FORMATS:
        for precision in fmt.precisions:
            built = fmt.build_command(precision)
            if built is None:
                continue
            _, name, *flags = built.split()
            assert name in commands, built
            assert set(f for f in flags if f.startswith("--")) <= _long_flags(commands[name]) | {"--target"}, built


def test_one_name_per_backend_module_runner_and_info() -> None:
    for fmt in formats.FORMATS:
        assert fmt.backends and set(fmt.backends) <= set(formats.BACKEND_NAMES)
    for entry in formats.BACKENDS:
        spec = importlib.util.find_spec(f"u2deploy.engines.{entry.name}")
        assert spec is not None, f"engines/{entry.name}.py is missing"
        source = spec.loader.get_source(spec.name)  # type: ignore[union-attr]
        assert f"class {entry.runner}(Runner)" in source
        assert f'backend="{entry.name}"' in source  # what runner.info.backend says


def test_runners_declare_their_options_and_refuse_the_rest(small_onnx) -> None:
    assert {"device", "threads"} <= runner_options(str(small_onnx))
    assert "weights" not in runner_options(str(small_onnx))
    assert {"weights", "compile", "cuda_graphs", "threads", "tf32"} <= runner_options("torch:small")
    with pytest.raises(U2Error, match="--weights does not apply to ONNX artifacts on ONNX Runtime .*own weights"):
        open_runner(str(small_onnx), weights="w.pth")
    with pytest.raises(U2Error, match="ONNX artifacts run on onnxruntime or openvino, not --backend torch"):
        open_runner(str(small_onnx), backend="torch")
    with pytest.raises(U2Error, match="TensorRT artifacts run on tensorrt, not --backend onnxruntime"):
        open_runner("m.engine", backend="onnxruntime")


def test_optional_hooks_have_defaults_on_the_interface(small_onnx) -> None:
    for hook in ("bind", "device_timer", "device_memory", "reset_device_memory", "settings", "describe"):
        assert not getattr(getattr(Runner, hook), "__isabstractmethod__", False), hook
    with open_runner(str(small_onnx), threads=1) as runner:
        bound = runner.bind(__import__("numpy").zeros((1, 3, 64, 64), "float32"))
        assert "host array in" in bound.covers and bound.call() is not None
        assert runner.device_timer() is None and runner.device_memory() is None
        assert runner.info.backend == "onnxruntime" and runner.settings()["threads"] == 1


def test_the_onnx_row_runs_on_openvino_too(small_onnx) -> None:
    pytest.importorskip("openvino", reason="needs the openvino extra: pip install -e '.[openvino]'")
    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with open_runner(str(small_onnx), "openvino", threads=1) as ov, open_runner(str(small_onnx)) as ort:
        assert ov.info.backend == "openvino" and ov.describe() == "openvino (from ONNX)"
        assert ov.info.spec == ort.info.spec  # the same metadata, read from the ONNX file
        np.testing.assert_allclose(ov.saliency(x), ort.saliency(x), atol=1e-4)


def test_backend_choices_in_the_cli_come_from_the_table() -> None:
    help_text = CliRunner().invoke(bench_app, ["latency", "--help"], terminal_width=400).output
    for name in formats.BACKEND_NAMES:
        assert name in help_text
    listing = CliRunner().invoke(export_app, ["formats"], terminal_width=400).output
    for fmt in formats.FORMATS:
        assert fmt.key in listing
    commands = typer.main.get_command(export_app).commands
    for name in {name for f in formats.FORMATS for name in f.commands}:
        flags = " ".join(_long_flags(commands[name], ordered=True))
        assert flags in " ".join(listing.split()), name  # the command's own options, wrapped at 80 columns
    assert max(map(len, CliRunner().invoke(export_app, ["formats"], terminal_width=80).output.splitlines())) <= 80


def test_open_runner_passes_only_declared_options() -> None:
    for entry in formats.BACKENDS:
        module = importlib.import_module(f"u2deploy.engines.{entry.name}") if entry.installed() else None
        if module is None:
            continue
        params = inspect.signature(getattr(module, entry.runner).open).parameters
        assert "artifact" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()), entry.name
