"""`u2export triton-env DIR`: the server's Python environment is an explicit step (the package's one download),
and it never removes a folder it did not make. pip and venv are replaced here by a stand-in that records its
calls; the live test (test_triton_live.py) runs the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from u2deploy.cli.export import app as export_app
from u2deploy.errors import U2Error
from u2deploy.export.triton import server
from u2deploy.export.triton.server import ENV_MARKER, ENV_READY, make_python_backend_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tools(monkeypatch) -> list[list[str]]:
    """numpy 2 here (so an environment is needed), and venv/pip stand-ins that make what they would make."""
    calls: list[list[str]] = []

    def run(args, **kwargs):
        args = [str(a) for a in args]
        calls.append(args)
        if args[1:3] == ["-m", "venv"]:
            folder = Path(args[-1])
            (folder / "bin").mkdir(parents=True)
            (folder / "bin" / "python3").write_text("")
            (folder / "lib" / "site-packages").mkdir(parents=True)
            return subprocess.CompletedProcess(args, 0, "", "")
        if args[1] == "-c":
            return subprocess.CompletedProcess(args, 0, str(Path(args[0]).parents[1] / "lib" / "site-packages"), "")
        if args[1:4] == ["-m", "pip", "install"]:
            return subprocess.CompletedProcess(args, 0, "", "")
        raise AssertionError(args)

    monkeypatch.setattr(server, "_numpy_major", lambda: 2)
    monkeypatch.setattr(server.subprocess, "run", run)
    return calls


def test_a_new_folder_becomes_the_environment_and_is_reused(tools, tmp_path):
    folder = tmp_path / "env"
    python = make_python_backend_env(folder)
    assert python == folder / "bin" / "python3"
    assert [c[1:3] for c in tools][0::2] == [["-m", "venv"], ["-m", "pip"]] and tools[1][1] == "-c"
    assert tools[2][-1] == "numpy<2"  # the download, and the only one
    assert (folder / ENV_MARKER).is_file() and (folder / ENV_READY).is_file()
    assert "site.addsitedir" in (folder / "lib" / "site-packages" / "u2deploy_parent_env.pth").read_text()
    tools.clear()
    assert make_python_backend_env(folder) == python and tools == []  # made once: nothing run again


def test_a_folder_it_did_not_make_is_refused_and_left_alone(tools, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(U2Error, match=r"not empty and not made by u2export triton-env.*left as it is") as exc:
        make_python_backend_env(folder)
    assert "\n" not in str(exc.value)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and tools == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(U2Error, match="not a folder"):
        make_python_backend_env(tmp_path / "file")
    with pytest.raises(U2Error, match="does not exist"):
        make_python_backend_env(tmp_path / "no" / "env")
    assert tools == []


def test_an_empty_folder_is_taken_and_an_unfinished_one_of_its_own_remade(tools, tmp_path):
    folder = tmp_path / "env"
    folder.mkdir()
    python = make_python_backend_env(folder)
    (folder / ENV_READY).unlink()  # interrupted before it was ready: still its own (the marker is there)
    (folder / "half-made").write_text("")
    tools.clear()
    assert make_python_backend_env(folder) == python and len(tools) == 3
    assert not (folder / "half-made").exists() and (folder / ENV_READY).is_file()


def test_with_numpy_1_nothing_is_made(tools, monkeypatch, tmp_path):
    monkeypatch.setattr(server, "_numpy_major", lambda: 1)
    assert make_python_backend_env(tmp_path / "env") == Path(sys.executable)
    assert tools == [] and not (tmp_path / "env").exists()


def test_the_command_says_where_the_servers_python_is(tools, tmp_path):
    result = CliRunner().invoke(export_app, ["triton-env", str(tmp_path / "env")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"the server's python: {tmp_path / 'env' / 'bin' / 'python3'}"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    result = CliRunner().invoke(export_app, ["triton-env", str(tmp_path / "taken")])
    assert isinstance(result.exception, U2Error) and (tmp_path / "taken" / "x").exists()


def test_starting_a_server_downloads_nothing_and_the_docs_name_the_step():
    """The download is the explicit command; LocalTriton only runs the interpreter it is given."""
    import inspect

    source = inspect.getsource(server.LocalTriton)
    assert '"pip"' not in source and "make_python_backend_env" not in source  # no pip run, only a hint
    assert "u2export triton-env" in (ROOT / "docs" / "triton.md").read_text()
    assert "u2export triton-env" in (ROOT / "tests" / "test_triton_live.py").read_text()
    assert "u2export triton-env" in (ROOT / "README.md").read_text()
