"""CI runs exactly the commands the README tells a new user to run."""

from __future__ import annotations

import re

from conftest import REPO


def _commands(text: str) -> list[str]:
    """The unindented setup and test lines (CI's conditional AVX2 lane is indented: it is not a README command)."""
    return [line.strip() for line in text.splitlines() if line.startswith(("python3 -m venv", ".venv/bin/nox"))]


def test_ci_runs_the_readme_commands() -> None:
    readme = _commands((REPO / "README.md").read_text())
    ci = _commands((REPO / ".ci" / "run").read_text())
    assert len(readme) == 2 and readme == ci
    assert re.search(r"torch==2\.13\.0", readme[0])


def _readme_command_lines() -> list[str]:
    """Every `u2export …` / `u2bench …` line of the README (continuations joined, comments dropped)."""
    lines, current = [], ""
    for raw in (REPO / "README.md").read_text().splitlines():
        line = raw.split("  #")[0].rstrip()
        if current:
            current += " " + line.strip()
        elif re.match(r"^(\.venv/bin/)?u2(export|bench) ", line.strip()):
            current = line.strip()
        if current and not current.endswith("\\"):
            lines.append(current)
            current = ""
        current = current.rstrip("\\")
    for inline in re.findall(r"`((?:\.venv/bin/)?u2(?:export|bench) [^`]+)`", (REPO / "README.md").read_text()):
        lines.append(inline)
    return lines


def test_every_readme_command_uses_flags_the_command_has() -> None:
    import typer.main

    from u2deploy.cli.bench import app as bench_app
    from u2deploy.cli.export import app as export_app

    apps = {"u2export": typer.main.get_command(export_app), "u2bench": typer.main.get_command(bench_app)}
    lines = _readme_command_lines()
    assert len(lines) >= 12
    for line in lines:
        tokens = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
        prog, name = tokens[0].rsplit("/", 1)[-1], tokens[1]
        command = apps[prog].commands.get(name)
        assert command is not None, f"README: {prog} {name} is not a command ({line})"
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for flag in (t.split("=")[0] for t in tokens[2:] if t.startswith("-") and t not in ("-", "--")):
            assert flag in known, f"README: {prog} {name} has no {flag} ({line})"
