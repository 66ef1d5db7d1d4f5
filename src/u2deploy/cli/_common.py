"""What both CLIs share: one-line errors (usage errors included) instead of tracebacks or boxes, plain help
placeholders, and plain logging to stderr."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from typer._click.core import Parameter  # typer vendors click from 0.29
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError

from ..errors import Interrupted, U2Error


def _plain(label: str) -> str:
    """typer's ``<list[Path]>`` → ``<path>...``; ``<int range>`` → ``<int>`` (the bounds are printed beside it)."""
    listed = re.fullmatch(r"<list\[(\w+)\]>", label)
    return f"<{listed[1].lower()}>..." if listed else label.replace(" range>", ">")


class _Option(typer.core.TyperOption):
    def display_type(self, ctx) -> str:
        return "" if self.is_flag else _plain(super().display_type(ctx))  # a switch takes no value


class _Argument(typer.core.TyperArgument):
    def display_type(self, ctx) -> str:
        return _plain(super().display_type(ctx)).removesuffix("...")  # the name is already "artifacts..."


def _with_plain_type(param: Parameter) -> Parameter:
    """The same parameter, its help showing plain value placeholders (typer builds exactly these two classes)."""
    for typer_class, plain in ((typer.core.TyperOption, _Option), (typer.core.TyperArgument, _Argument)):
        if type(param) is typer_class:
            param.__class__ = plain
    return param


class _PlainHelp:
    """Help with plain value placeholders; usage errors in one line (exit 1) instead of a boxed usage message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _with_plain_type(param)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        return _with_plain_type(option) if option is not None else None

    def make_context(self, *args, **kwargs):
        with _usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_in_one_line():
            return super().invoke(ctx)


class _Command(_PlainHelp, typer.core.TyperCommand):
    pass


class _Group(_PlainHelp, typer.core.TyperGroup):
    pass


@contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise  # the help, printed as click does
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "error"
        typer.echo(f"{where}: {_usage_line(exc)}", err=True)
        raise typer.Exit(1) from None


def _usage_line(exc: UsageError) -> str:
    """Click's message on one line, lower-cased like the CLIs' other errors; its suggestions kept."""
    if isinstance(exc, NoSuchOption):
        line = f"no such option {exc.option_name}"
        if exc.possibilities:
            *most, last = exc.possibilities
            line += f" (did you mean {', '.join(most) + ' or ' if most else ''}{last}?)"
        return line
    line = " ".join(exc.format_message().split()).rstrip(".")
    line = re.sub(r"\. Did you mean (.+)\?$", r" (did you mean \1?)", line)  # typer's hint on a command name
    return line[:1].lower() + line[1:] if line[1:2].islower() else line


def new_app(name: str, help: str) -> typer.Typer:
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False, cls=_Group,
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
    """The console-script entry point: U2Error (and Ctrl-C) become one line and a non-zero exit (usage errors
    already did, in the command classes above)."""

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
