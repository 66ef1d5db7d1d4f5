"""A local ``tritonserver`` (the one the ``nvidia-pytriton`` wheel bundles), for the live tests and
``tools/triton_load.py``; ``u2export triton`` itself never starts a server.

That build has the python backend only, and its stub brings two traps this module handles: it
embeds the libpython it was linked against (pointed at this interpreter's) and it was built against
numpy 1. :func:`make_python_backend_env` (``u2export triton-env DIR``) gives it a numpy<2 environment
in front of this one's packages; it is the one step of this package that downloads anything (pip
fetches ``numpy<2``), so it runs only when asked, never as a side effect of starting a server.
The server listens on 127.0.0.1 only, on free ports, and is stopped by its PID.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ...errors import U2Error
from ...files import atomic_path

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"  # the stub to use, and the libpython


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pytriton_dist() -> Path | None:
    """The tritonserver the nvidia-pytriton wheel bundles (``bin/``, ``backends/``, the stubs), or None."""
    try:
        found = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    return root / "tritonserver" if (root / "tritonserver" / "bin" / "tritonserver").is_file() else None


class LocalTriton:
    """``tritonserver`` from the nvidia-pytriton wheel (python backend only), on 127.0.0.1, as a context manager.

    The python backend's stub embeds the libpython it was linked against; it is pointed at this
    interpreter's (``LD_LIBRARY_PATH``) and finds this environment's packages through ``PATH``
    (it ignores ``PYTHONPATH``), so ``u2deploy`` must be installed in the environment of ``python``.
    The server is stopped by its PID (SIGTERM, waiting up to ``stop_s``), then SIGKILL to whatever is left
    of its process group (the stubs), and the shared-memory regions under its own prefix are removed.
    """

    def __init__(self, repo: str | Path, *, python: str | Path = sys.executable, start_s: float = 120,
                 stop_s: float = 20, log: str | Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self.repo = Path(repo).resolve()
        self.python = Path(python)
        self.start_s, self.stop_s = start_s, stop_s
        self.extra_args = tuple(extra_args)
        self.http_port = self.grpc_port = 0
        self.process: subprocess.Popen | None = None
        self._shm_prefix: str | None = None
        self._work: Path | None = None
        self._log_path = Path(log) if log else None
        self._own_log = log is None
        self._log: IO[bytes] | None = None
        self._log_kept = ""

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why no local server can start here (None: it can)."""
        dist = _pytriton_dist()
        if dist is None:
            return "no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (it bundles one)"
        if not (dist / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub").is_file():
            return f"nvidia-pytriton has no python backend stub for Python {PYTHON_VERSION}"
        if sys.platform != "linux":
            return "the bundled tritonserver runs on Linux only"
        if not _libpython_dir():
            return "this Python has no shared libpython for the python backend's stub"
        return None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> LocalTriton:
        reason = self.unavailable_reason()
        if reason:
            raise U2Error(f"cannot start a local tritonserver: {reason}")
        dist = _pytriton_dist()
        assert dist is not None
        self._work = Path(tempfile.mkdtemp(prefix="u2triton-server."))
        backends = self._work / "backends"
        shutil.copytree(dist / "backends", backends)
        stub = backends / "python" / "triton_python_backend_stub"
        shutil.copy2(dist / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub", stub)
        libs = dist.parent.parent / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(_libpython_dir()), str(libs),
                                                      env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = f"{self.python.parent}:{env.get('PATH', '')}"
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self._shm_prefix = f"u2triton{os.getpid()}x{self.http_port}"
        args = [str(dist / "bin" / "tritonserver"), f"--model-repository={self.repo}",
                f"--backend-directory={backends}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", "--allow-metrics=false",
                "--allow-gpu-metrics=false", "--disable-auto-complete-config", "--exit-timeout-secs=5",
                f"--cache-directory={dist / 'caches'}",
                f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
                "--backend-config=python,shm-default-byte-size=16777216",
                "--backend-config=python,shm-growth-byte-size=16777216", *self.extra_args]
        log_path = self._log_path or self._work / "tritonserver.log"
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self._log_path = log_path
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise U2Error(f"tritonserver exited with {self.process.returncode} while starting: {tail}")
            if self._ready():
                return self
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise U2Error(f"tritonserver not ready within {self.start_s:.0f} s: {tail}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_text(self) -> str:
        """The server's output so far (kept after :meth:`stop`)."""
        try:
            return self._log_path.read_text(errors="replace") if self._log_path else self._log_kept
        except OSError:
            return self._log_kept

    def log_tail(self, n: int = 6) -> str:
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        return " | ".join(lines[-n:])[-1500:]

    def stop(self) -> int | None:
        """SIGTERM to the server's PID, SIGKILL to its process group after ``stop_s``; its exit status."""
        process = self.process
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_s)
                except subprocess.TimeoutExpired:
                    pass
            try:  # python-backend stubs are the server's children, in its session
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            code = process.wait()
            # A stub that crashed leaves its shared-memory region; this server's prefix is its own.
            for region in Path("/dev/shm").glob(f"{self._shm_prefix}*") if self._shm_prefix else ():
                region.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._work is not None:
            if self._own_log:
                self._log_kept = self.log_text()
                self._log_path = None
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return code

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


ENV_MARKER = ".u2deploy-triton-env"  # in a folder make_python_backend_env made: the only kind it may empty
ENV_READY = ".u2deploy-ready"  # written last: the environment is complete


def _numpy_major() -> int:
    import numpy as np

    return int(np.__version__.split(".")[0])


def _claim_env_folder(folder: Path) -> None:
    """Take ``folder`` for the environment: new, empty, or one this function made before (its marker is
    there; an unfinished one is emptied and made again). Any other is refused and left as it is."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise U2Error(f"{folder}: not a folder; name a new folder for the server's Python environment")
    if folder.is_dir():
        if (folder / ENV_MARKER).is_file():
            for entry in folder.iterdir():  # ours, unfinished: its contents are ours too
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        elif any(folder.iterdir()):
            raise U2Error(f"{folder}: not empty and not made by u2export triton-env (no {ENV_MARKER} in it); "
                          "it is left as it is: name a new or empty folder")
    else:
        parent = folder.parent if str(folder.parent) else Path(".")
        if not parent.is_dir():
            raise U2Error(f"{folder}: folder {parent} does not exist")
        folder.mkdir()
    _write(folder / ENV_MARKER, "a Python environment for Triton's python backend, made by u2export triton-env; "
                                "safe to delete\n")


def make_python_backend_env(folder: str | Path, numpy: str = "numpy<2") -> Path:
    """``u2export triton-env DIR``: the interpreter of a Python environment for the bundled server's python
    backend, made in ``folder`` (pip downloads ``numpy``); an environment made before is reused as it is.

    Triton 2.51's python-backend stub (the one nvidia-pytriton 0.7.0 bundles) was built against
    numpy 1: with numpy 2 in the environment every tensor crosses garbled (FP32 arrive empty, BYTES
    with broken length prefixes). Where this environment has numpy 2, ``folder`` becomes a venv with
    only ``numpy`` (``numpy<2``) of its own, in front of this environment's packages (a ``.pth``
    adds them, with their own ``.pth`` files, so an editable u2deploy is found too). Where numpy is
    already 1.x, nothing is made and this interpreter is returned as it is. ``folder`` must be new,
    empty, or made by this function (:func:`_claim_env_folder`): nothing else is ever removed.
    """
    import site

    if _numpy_major() < 2:
        return Path(sys.executable)
    folder = Path(folder)
    python = folder / "bin" / "python3"
    if (folder / ENV_MARKER).is_file() and (folder / ENV_READY).is_file() and python.exists():
        return python
    _claim_env_folder(folder)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                       capture_output=True, timeout=120)
        site_dir = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       check=True, capture_output=True, text=True, timeout=60).stdout.strip())
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--target", str(site_dir), numpy], check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        why = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
        raise U2Error(f"{folder}: cannot make the server's Python environment ({(why or ['?'])[-1][:200]})") from None
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    _write(site_dir / "u2deploy_parent_env.pth", "".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    _write(folder / ENV_READY, f"{numpy} in front of {', '.join(parents)}\n")
    return python


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _libpython_dir() -> Path | None:
    """The folder holding this interpreter's shared libpython (what the stub must load), or None."""
    name = sysconfig.get_config_var("INSTSONAME") or f"libpython{PYTHON_VERSION}.so"
    for folder in (sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LIBPL")):
        if folder and (Path(folder) / name).is_file():
            return Path(folder)
    return None

