"""The format table is what the CLIs and open_runner read: its flags, backends and modules match the code."""

from __future__ import annotations

import importlib
import inspect

import pytest
import typer.main
from typer.testing import CliRunner

from u2deploy import formats
from u2deploy.cli.bench import app as bench_app
from u2deploy.cli.export import app as export_app
from u2deploy.engines import open_runner, runner_options
from u2deploy.engines.base import Runner
from u2deploy.errors import U2Error


def _long_flags(command) -> set[str]:
    return {next(o for o in p.opts if o.startswith("--")) for p in command.params
            if p.param_type_name == "option" and p.name != "help"}


@pytest.mark.parametrize("fmt", [f for f in formats.FORMATS if f.export_command], ids=lambda f: f.key)
def test_export_flags_are_exactly_the_commands_options(fmt: formats.Format) -> None:
    command = typer.main.get_command(export_app).commands[fmt.export_command]
    assert set(fmt.export_flags) == _long_flags(command)
    assert len(fmt.export_flags) == len(set(fmt.export_flags))


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
        if fmt.export_command:
            assert f"u2export {fmt.export_command}: {' '.join(fmt.export_flags)}" in listing


def test_open_runner_passes_only_declared_options() -> None:
    for entry in formats.BACKENDS:
        module = importlib.import_module(f"u2deploy.engines.{entry.name}") if entry.installed() else None
        if module is None:
            continue
        params = inspect.signature(getattr(module, entry.runner).open).parameters
        assert "artifact" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()), entry.name
