"""What both CLIs share: one-line errors instead of tracebacks, and plain logging to stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import typer

from ..errors import Interrupted, U2Error


class _Command(typer.core.TyperCommand):
    """Help that shows an on/off switch as a switch, without a ``<bool>`` value placeholder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


def new_app(name: str, help: str) -> typer.Typer:
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_subcommands)
    register = app.command
    app.command = lambda *args, **kwargs: register(*args, **{"cls": _Command, **kwargs})  # type: ignore[method-assign]
    return app


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"u2deploy {__version__}")
        raise typer.Exit()


def _subcommands(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """Keeps `u2export trt …` a subcommand even while an app has only one."""


def run(app: typer.Typer, prog: str) -> Callable[[], None]:
    """The console-script entry point: U2Error (and Ctrl-C) become one line and a non-zero exit."""

    def main() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        try:
            app(prog_name=prog, standalone_mode=True)
        except U2Error as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            print(interrupted_line(prog, exc), file=sys.stderr)
            sys.exit(130)
        except SystemExit as exc:
            # Typer turns Ctrl-C into a silent exit 130, chained to the KeyboardInterrupt it caught.
            stop = exc.__context__.__cause__ if exc.code == 130 and exc.__context__ is not None else None
            if isinstance(stop, KeyboardInterrupt):
                print(interrupted_line(prog, stop), file=sys.stderr)
            raise

    return main


def interrupted_line(prog: str, stop: KeyboardInterrupt) -> str:
    """What Ctrl-C kept: an :class:`~u2deploy.errors.Interrupted` says; artifacts are atomic, so else nothing."""
    if isinstance(stop, Interrupted) and str(stop):
        return f"{prog}: interrupted: {stop}"
    return f"{prog}: interrupted; no partial file written (outputs appear only when complete)"
