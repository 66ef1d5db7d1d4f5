"""The one exception type that the CLIs turn into a one-line message (never a traceback)."""

from __future__ import annotations


class U2Error(Exception):
    """A problem the user can fix: bad file, wrong flag, missing dependency.

    The message is a single line that names the file or flag and the problem.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with one line saying what was kept (the CLIs print it and exit 130)."""
