"""Which TensorRT, which CUDA binding, which GPU: the facts the builder and the runner branch on.

Shared by :mod:`u2deploy.export.trt` (builder) and :mod:`u2deploy.engines.tensorrt` (runner) so that
neither imports the other. Nothing here imports ``tensorrt`` or ``cuda`` at module import: the probe
does, inside a function, and turns every way of their absence into one :class:`U2Error` line.

Versions handled: TensorRT 8.6 (the last with Pascal, e.g. the GTX 1080 Ti of the U²-Net paper),
10.x and 11.x (strongly typed networks only): :data:`TENSORRT_REQUIREMENT`, which the ``gpu`` extra of
``pyproject.toml`` states word for word (a test holds them equal). Any other release is refused in one
line: a release this code was never checked against would fail deep inside TensorRT instead. The API
names each of them has were checked against the real bindings wheels: see ``tools/trt_api_names.py``
and ``tests/test_trt_api_names.py``.
"""

from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import U2Error

log = logging.getLogger(__name__)

# The releases supported, as a pip requirement: 8.6, every 10.x and every 11.x, not 9.x.
# TrtVersion.family accepts exactly these; pyproject.toml's gpu extra says the same.
TENSORRT_REQUIREMENT = "tensorrt>=8.6,!=9.*,<12"
INSTALL_HINT = ("on a CUDA machine: pip install -e '.[gpu]' (tensorrt 8.6, 10.x or 11.x and cuda-python; "
                "and onnxruntime-gpu in place of onnxruntime)")
PASCAL_HINT = "TensorRT 8.6 is the last release for Pascal GPUs: pip install tensorrt==8.6.1 cuda-python"


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT release as ``tensorrt.__version__`` spells it (``10.9.0.34``, ``8.6.1.post1``)."""

    major: int
    minor: int
    patch: int = 0
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
        if not match:
            raise U2Error(f"cannot read the TensorRT version {text!r}")
        return cls(*(int(g) if g else 0 for g in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f".{self.build}" if self.build else "")

    @property
    def short(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def release(self) -> tuple[int, int, int]:
        """What must match for an engine to load without version compatibility."""
        return self.major, self.minor, self.patch

    @property
    def family(self) -> str:
        """``"8.6"``, ``"10"`` or ``"11"``: the API generation the builder follows."""
        if self.major == 8 and self.minor >= 6:
            return "8.6"
        if self.major == 10:
            return "10"
        if self.major == 11:
            return "11"
        if self.major < 8 or (self.major == 8 and self.minor < 6):
            raise U2Error(f"TensorRT {self} is too old: the name-based tensor API (set_tensor_address, "
                          "execute_async_v3) needs 8.6 or later; pip install -e '.[gpu]'")
        raise U2Error(f"TensorRT {self} is not supported: this code was checked against 8.6, 10.x and 11.x "
                      f"({TENSORRT_REQUIREMENT}); pip install -e '.[gpu]'")

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 removed weak typing: precision lives in the ONNX, not in builder flags."""
        return self.family == "11"

    @property
    def min_compute_capability(self) -> tuple[int, int]:
        """Oldest GPU the release runs on (Maxwell left in 9.0, Volta in 10.5; Pascal after 8.6)."""
        if self.family == "8.6":
            return (5, 0)
        if self.family == "10" and self.minor < 5:
            return (7, 0)
        return (7, 5)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]
    index: int = 0

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def __str__(self) -> str:
        return f"{self.name} ({self.cc})"


def has_fast_fp16(cc: tuple[int, int]) -> bool:
    """Whether FP16 math runs at least at FP32 rate; consumer Pascal (6.1) runs it at 1/64."""
    return cc >= (7, 0) or cc in ((5, 3), (6, 0), (6, 2))


def parse_cc(text: str) -> tuple[int, int]:
    major, minor = (int(v) for v in str(text).split("."))
    return major, minor


def import_cudart() -> ModuleType | None:
    """The cuda-python runtime module under its new name, or its old one; None when neither imports."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (cuda-bindings)

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[no-redef]  # cuda-python < 12.6

        return cudart
    except ImportError:
        return None


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple; a failed call becomes one U2Error line."""
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:  # cudaSuccess is 0 in every cuda-python release
        name = getattr(err, "name", str(err))
        raise U2Error(f"CUDA {what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_info(cudart: ModuleType, index: int = 0) -> GpuInfo:
    props = cuda_check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes | bytearray):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(str(name).strip(), (int(props.major), int(props.minor)), index)


def _driver_device_count() -> int | None:
    """CUDA devices the driver sees, via libcuda directly; None when there is no NVIDIA driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None
    if lib.cuInit(0) != 0:
        return 0
    count = ctypes.c_int(0)
    return count.value if lib.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0


def _probe_gpu(cudart: ModuleType | None, index: int) -> tuple[GpuInfo | None, str | None]:
    if cudart is None:
        count = _driver_device_count()
        if count is None:
            return None, "no CUDA device (no NVIDIA driver)"
        return None, ("no CUDA device" if count == 0 else None)
    try:
        result = cudart.cudaGetDeviceCount()
    except Exception as exc:  # old cuda-python raises RuntimeError when libcuda.so.1 is missing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"no CUDA device ({first[:80]})"
    err, count = result[0], (result[1] if len(result) > 1 else 0)
    if int(err) != 0:
        return None, f"no CUDA device ({getattr(err, 'name', err)})"
    if not count:
        return None, "no CUDA device"
    if index >= count:
        return None, f"no CUDA device {index} (this machine has {count})"
    return gpu_info(cudart, index), None


@dataclass(frozen=True)
class TrtEnvironment:
    """The imported modules and the GPU a build or a run will use."""

    trt: Any
    cudart: Any
    version: TrtVersion
    gpu: GpuInfo


def probe_environment(device_index: int = 0, purpose: str = "TensorRT engines") -> TrtEnvironment:
    """Import TensorRT and cuda-python and find the GPU, or raise one line naming all that is missing."""
    problems: list[str] = []
    trt = None
    try:
        import tensorrt as trt  # noqa: F811
    except ImportError:
        problems.append("no `tensorrt` module")
    except Exception as exc:  # a wheel whose libraries do not load raises OSError and the like
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(f"a `tensorrt` that does not load ({first[:100]})")
    else:
        if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
            problems.append("a `tensorrt` stub without its libraries")
            trt = None
    cudart = import_cudart()
    if cudart is None:
        problems.append("no `cuda-python` module")
    gpu, gpu_problem = _probe_gpu(cudart, device_index)
    if gpu_problem:
        problems.append(gpu_problem)
    if problems:
        raise U2Error(f"{purpose} need TensorRT and a CUDA GPU; this machine has {', '.join(problems)}; "
                      f"{INSTALL_HINT}")
    assert trt is not None and cudart is not None and gpu is not None
    version = TrtVersion.parse(trt.__version__)
    version.family  # noqa: B018  # unsupported versions stop here, with their own message
    return TrtEnvironment(trt, cudart, version, gpu)


def check_gpu_supported(version: TrtVersion, gpu_cc: tuple[int, int], gpu_name: str = "this GPU") -> None:
    """TensorRT 10 and later refuse Pascal; say so before a build fails deep inside TensorRT."""
    low = version.min_compute_capability
    if gpu_cc < low:
        hint = PASCAL_HINT if gpu_cc >= (5, 0) else "no TensorRT release supported here runs on it"
        raise U2Error(f"TensorRT {version.short} needs compute capability {low[0]}.{low[1]} or newer, "
                      f"{gpu_name} has {gpu_cc[0]}.{gpu_cc[1]}; {hint}")
