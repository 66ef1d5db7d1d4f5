"""What every command line shares: --version, and help that documents every option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from u2deploy import __version__
from u2deploy.cli.bench import app as bench_app
from u2deploy.cli.export import app as export_app


@pytest.mark.parametrize("app", [bench_app, export_app])
def test_version(app):
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"u2deploy {__version__}"


@pytest.mark.parametrize("app", [bench_app, export_app])
def test_every_option_has_help(app):
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts[0]} has no help text"


@pytest.mark.parametrize("stop, said", [
    (KeyboardInterrupt(), "demo: interrupted; no partial file written"),
    (None, "demo: interrupted: ranges of 3 of 6 images kept in x.partial"),
])
def test_ctrl_c_exits_130_with_one_line_saying_what_was_kept(stop, said, capsys, monkeypatch):
    from u2deploy.cli._common import new_app, run
    from u2deploy.errors import Interrupted

    demo = new_app("demo", "demo")

    @demo.command("go")
    def go() -> None:
        raise stop if stop is not None else Interrupted("ranges of 3 of 6 images kept in x.partial")

    monkeypatch.setattr("sys.argv", ["demo", "go"])
    with pytest.raises(SystemExit) as info:
        run(demo, "demo")()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 130 and len(err) == 1 and err[0].startswith(said)


@pytest.mark.parametrize("app", [bench_app, export_app])
def test_switches_show_no_value_placeholder(app):
    import typer.main

    for name in typer.main.get_command(app).commands:
        result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0 and "<bool>" not in result.output, name


def test_an_option_the_artifact_cannot_take_is_an_error_not_ignored(small_onnx, small_weights, tmp_path):
    from PIL import Image

    from u2deploy.engines import open_runner
    from u2deploy.errors import U2Error

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    result = CliRunner().invoke(bench_app, ["predict", "--model", str(small_onnx), "--weights", str(small_weights),
                                            "--images", str(tmp_path), "-o", str(tmp_path / "out")])
    assert isinstance(result.exception, U2Error), result.output
    assert "--weights does not apply to" in str(result.exception) and "carries its own weights" in str(result.exception)
    assert not (tmp_path / "out").exists()
    with pytest.raises(U2Error, match="--channels-last does not apply"):
        open_runner(str(small_onnx), channels_last=True)
    with open_runner(str(small_onnx), weights=None, threads=1) as runner:  # None: not given
        assert runner.info.backend == "onnxruntime"
