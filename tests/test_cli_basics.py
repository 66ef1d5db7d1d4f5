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
