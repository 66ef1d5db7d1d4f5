"""CI runs exactly the commands the README tells a new user to run."""

from __future__ import annotations

import re

from conftest import REPO


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(("python3 -m venv", ".venv/bin/nox"))]


def test_ci_runs_the_readme_commands() -> None:
    readme = _commands((REPO / "README.md").read_text())
    ci = _commands((REPO / ".ci" / "run").read_text())
    assert len(readme) == 2 and readme == ci
    assert re.search(r"torch==2\.13\.0", readme[0])
