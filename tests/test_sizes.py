"""One size parser for every command: N or HxW, each side 32-4096, the same errors everywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from u2deploy.cli.bench import app as bench_app
from u2deploy.cli.export import app as export_app
from u2deploy.errors import U2Error
from u2deploy.sizes import parse_size


def test_accepted_forms():
    assert parse_size("320") == (320, 320) and parse_size(320) == (320, 320)
    assert parse_size("240x320") == (240, 320) == parse_size(" 240 X 320 ") == parse_size("240×320")
    assert parse_size(None) is None and parse_size("") is None
    assert parse_size("32") == (32, 32) and parse_size("4096x32") == (4096, 32)


@pytest.mark.parametrize("bad", ["0", "-5", "7", "1x2", "31x320", "4097", "a", "1x2x3", "320x", "x320", "3.5"])
def test_rejected_forms_are_one_line(bad):
    with pytest.raises(U2Error, match=r"^--size ") as info:
        parse_size(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("app, args", [
    (export_app, ["onnx", "--size", "{bad}", "-o", "{out}/m.onnx"]),
    (export_app, ["trt", "--variant", "small", "--fp16", "--size", "{bad}"]),
    (bench_app, ["latency", "--model", "torch:small", "--size", "{bad}"]),
    (bench_app, ["predict", "--model", "torch:small", "--images", "{out}", "-o", "{out}/masks", "--size", "{bad}"]),
    (bench_app, ["parity", "--data", "{out}", "--size", "{bad}"]),
    (bench_app, ["claims", "--no-measure", "--size", "{bad}"]),
])
@pytest.mark.parametrize("bad", ["0", "-5", "7", "1x2"])
def test_every_command_reads_sizes_alike(app, args, bad, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, [a.format(bad=bad, out=tmp_path) for a in args])
    assert isinstance(result.exception, U2Error), result.output
    assert str(result.exception).startswith(f"--size {bad}:")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "masks").exists()


def test_height_width_and_batch_conflicts(tmp_path):
    result = CliRunner().invoke(export_app, ["onnx", "--size", "64", "--height", "64", "--width", "64"])
    assert result.exit_code != 0 and "give --size, or --height and --width" in result.output
    result = CliRunner().invoke(export_app, ["onnx", "--batch", "2", "--dynamic-batch", "-o", str(tmp_path / "m.onnx")])
    assert isinstance(result.exception, U2Error) and "choose one" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()
