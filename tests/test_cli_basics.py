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


@pytest.mark.parametrize("app, args, line", [
    (bench_app, ["predict", "--thresh", "0.5"],
     "u2bench predict: no such option --thresh (did you mean --threshold, --threads or --streams?)"),
    (bench_app, ["predict", "--images", "x", "-o", "y"], "u2bench predict: missing option '--model'"),
    (bench_app, ["predict", "--model", "m", "--images", "x", "-o", "y", "--batch", "0"],
     "u2bench predict: invalid value for '--batch': "),
    (bench_app, ["pred"], "u2bench: no such command 'pred' (did you mean 'predict'?)"),
    (bench_app, ["--thresh"], "u2bench: no such option --thresh"),
    (export_app, ["quantize"], "u2export quantize: missing argument 'model'"),
    (export_app, ["onnx", "--opset", "seventeen"], "u2export onnx: invalid value for '--opset': "),
])
def test_a_usage_error_is_one_line_and_exit_1(app, args, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever that would be
    result = CliRunner().invoke(app, args, prog_name=app.info.name)
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line), result.stderr
    assert not list(tmp_path.iterdir())


def test_the_console_script_keeps_usage_errors_to_one_line(capsys, monkeypatch):
    from u2deploy.cli._common import run

    monkeypatch.setattr("sys.argv", ["u2bench", "predict", "--thresh", "0.5"])
    with pytest.raises(SystemExit) as info:
        run(bench_app, "u2bench")()
    captured = capsys.readouterr()
    assert info.value.code == 1 and captured.out == ""
    assert captured.err == ("u2bench predict: no such option --thresh "
                            "(did you mean --threshold, --threads or --streams?)\n")


def _help_pages(app):
    import typer.main

    yield []
    for name in typer.main.get_command(app).commands:
        yield [name]


@pytest.mark.parametrize("app", [bench_app, export_app])
def test_help_exits_0_and_shows_plain_metavars(app):
    for page in _help_pages(app):
        for flag in ("--help", "-h"):
            result = CliRunner().invoke(app, [*page, flag], terminal_width=80)
            assert result.exit_code == 0 and "Usage:" in result.stdout, (page, result.output)
            for typer_style in ("<bool>", "<list[", " range>"):
                assert typer_style not in result.stdout, (page, typer_style)
    latency = CliRunner().invoke(bench_app, ["latency", "--help"], terminal_width=200).stdout
    assert "<str>..." in latency and "<int> [x>=1]" in latency  # --model repeats; --threads is bounded


def test_counts_agree_with_their_nouns(tmp_path):
    from u2deploy.bench.predict import PredictReport
    from u2deploy.plural import plural

    assert [plural(n, "mask") for n in (0, 1, 2)] == ["0 masks", "1 mask", "2 masks"]
    assert plural(1, "folder entry", "folder entries") == "1 folder entry"
    assert plural(3, "folder entry", "folder entries") == "3 folder entries"
    one_each = PredictReport(written=[tmp_path / "a.png"], failed=[(tmp_path / "b.png", "corrupt")],
                             skipped=[tmp_path / "c.png"], cutouts=[tmp_path / "a_cutout.png"])
    line = one_each.summary(tmp_path, entries_skipped=1)
    assert line.startswith(f"wrote 1 mask and 1 cut-out to {tmp_path}")
    assert "1 image skipped" in line and "1 folder entry skipped" in line and "1 image failed" in line
