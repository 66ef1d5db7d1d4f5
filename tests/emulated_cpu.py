"""The AVX2 lane's engine room: ONNX Runtime and OpenVINO inference on an emulated AVX2-only CPU.

`nox -s avx2` runs the tests marked ``isa`` (whose numbers depend on the CPU's int8/fp16 kernels) with
``U2DEPLOY_EMULATE_CPU=Haswell``. The test process itself stays native (PyTorch references, data, file
checks); every ``infer`` of an ONNX Runtime or OpenVINO runner is sent to one worker process running
under ``qemu-x86_64 -cpu Haswell`` (AVX2 and FMA; no AVX-512, no VNNI), which opens the same artifact
with the same backend and returns its outputs. So a parity test, an export's verification or the
benchmark's gate judges the maps an AVX2-only CPU computes, at QEMU's cost (~60× slower) only where the
instruction set matters. A machine whose CPU has VNNI cannot see those kernels otherwise.

Run as a script, this file is the worker: length-prefixed pickles on stdin/stdout.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

CPU_ENV = "U2DEPLOY_EMULATE_CPU"
QEMU_HINT = "needs qemu-x86_64 7.2 or newer (Debian: apt-get install -y qemu-user)"


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the emulated-CPU worker closed its pipe")
    (length,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(length))


def cpu_features() -> dict[str, bool]:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return {name: bool(features.get(name)) for name in ("AVX2", "FMA3", "AVX512F", "AVX512_VNNI", "AVX512_CORE")}


class EmulatedCpu:
    """One worker under QEMU; calls are serialised (the worker runs one inference at a time)."""

    def __init__(self, cpu: str) -> None:
        qemu = shutil.which("qemu-x86_64")
        if qemu is None:
            raise RuntimeError(f"{CPU_ENV}={cpu}: {QEMU_HINT}")
        self.cpu = cpu
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"u2deploy-emulated-{cpu}-{os.getpid()}.log"
        self._lock = threading.Lock()
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen([qemu, "-cpu", cpu, sys.executable, __file__],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.features = self._call(("features",))
        if not (self.features["AVX2"] and not self.features["AVX512F"]):
            self.close()
            raise RuntimeError(f"qemu-x86_64 -cpu {cpu} is not an AVX2-only CPU ({self.features}); {QEMU_HINT}")

    def _call(self, request: tuple) -> Any:
        with self._lock:
            try:
                _send(self._process.stdin, request)
                status, value = _receive(self._process.stdout)
            except (EOFError, BrokenPipeError):
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the emulated {self.cpu} worker died:\n{tail}") from None
        if status == "error":
            raise value
        return value

    def infer(self, path: str, backend: str, batch) -> dict:
        return self._call(("infer", path, backend, os.stat(path).st_mtime_ns, batch))

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()


def patch_runners(cpu: EmulatedCpu) -> list[tuple[type, Any]]:
    """Route ``infer`` of the CPU-instruction-set-sensitive runners to ``cpu``; returns what to restore."""
    from u2deploy.engines.onnxruntime import OnnxRuntimeRunner

    classes: list[type] = [OnnxRuntimeRunner]
    try:
        from u2deploy.engines.openvino import OpenVinoRunner

        classes.append(OpenVinoRunner)
    except ImportError:
        pass
    saved = [(cls, cls.infer) for cls in classes]

    def infer(self, batch):
        if self.info.device != "cpu":
            return native[type(self)](self, batch)
        return cpu.infer(self.info.path, self.info.backend, batch)

    native = dict(saved)
    for cls in classes:
        cls.infer = infer
    return saved


def _worker() -> None:
    """Serve requests: open each artifact once (per modification time) and run it here, on this CPU."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the pipe
    runners: dict[tuple[str, str, int], Any] = {}
    while True:
        try:
            request = _receive(stdin)
        except EOFError:
            return
        try:
            if request[0] == "features":
                reply: Any = cpu_features()
            else:
                _, path, backend, mtime, batch = request
                key = (path, backend, mtime)
                if key not in runners:
                    from u2deploy.engines import open_runner

                    runners[key] = open_runner(path, backend)
                reply = runners[key].infer(batch)
            _send(stdout, ("ok", reply))
        except Exception as exc:  # returned to the test process, which raises it there
            _send(stdout, ("error", exc))


if __name__ == "__main__":
    _worker()
