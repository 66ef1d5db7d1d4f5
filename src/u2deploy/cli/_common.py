"""What both CLIs share: one-line errors instead of tracebacks, and plain logging to stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import typer

from ..errors import U2Error


def new_app(name: str, help: str) -> typer.Typer:
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_subcommands)
    return app


def _subcommands() -> None:
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
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            sys.exit(130)

    return main
