"""TensorRT runner: a serialized engine, executed through NVIDIA's cuda-python, no torch and no CUDA toolkit.

Deployment needs only ``tensorrt`` and ``cuda-python`` (device memory, streams, events and graphs
come from the CUDA runtime bindings). Tensors are bound by name (``set_tensor_address``) and run
with ``execute_async_v3``, the API TensorRT 8.6, 10.x and 11.x share; dynamic batch profiles take
``set_input_shape`` per call. Buffers are sized once for the profile's largest batch, so a call
allocates nothing. With ``cuda_graphs=True`` each batch size is captured once into a CUDA graph and
replayed, which trims launch overhead for batch-1 latency.

Before TensorRT sees the file, the manifest beside it (see :mod:`.trt_manifest`) is compared with
the running TensorRT and GPU, so a mismatch is one line that says which and how to rebuild. The
manifest also gives the engine's precision (the tolerance it is held to). An engine without one (built
by ``trtexec``, or its manifest lost) is asked itself: TensorRT's engine inspector lists the data type
of every layer's tensors when the engine was built with detailed profiling verbosity (``u2export trt``
always does; ``trtexec --profilingVerbosity=detailed``), and the engine's precision is the lowest of
them. An engine that keeps only layer names is refused in one line: "unknown" would pass no tolerance.

The CUDA device is per thread in the CUDA runtime. ``--device cuda:N`` is made current in every thread
that calls the runner (``u2bench predict`` calls it from worker threads), once per thread, before the
first CUDA call there.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import PRECISIONS
from ..errors import U2Error
from .base import ArtifactInfo, BoundCall, Runner
from .trt_compat import TrtEnvironment, cuda_check, probe_environment
from .trt_manifest import check_compatible, manifest_path, read_manifest

log = logging.getLogger(__name__)

_READ_BESIDE: Any = object()  # TensorRTRunner(manifest=...): read the manifest beside the engine file
# Data types as the inspector's "Format/Datatype" strings spell them (TensorRT 8.6: "Row major linear FP32",
# 10.x: "Float", "Half", "Thirty-two wide channel vectorized row major Int8 format"), lowest precision first.
_LAYER_TYPES = (("int8", r"int8"), ("bf16", r"bf16|bfloat16"), ("fp16", r"fp16|half"), ("fp32", r"fp32|float"))
_UNSUPPORTED_TYPES = r"\b(fp8|fp4|int4|e4m3|e5m2)\b"


def _device_index(device: str | int | None) -> int:
    if device is None or device == "cuda":
        return 0
    if isinstance(device, int):
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise U2Error(f"--device {device}: TensorRT engines run on cuda (or cuda:N)")


class _Buffer:
    """One I/O tensor: device memory and page-locked host memory, both sized for the largest shape."""

    def __init__(self, cudart: Any, name: str, dtype: np.dtype, nbytes: int) -> None:
        self.name, self.dtype, self.nbytes = name, dtype, max(int(nbytes), dtype.itemsize)
        self._cudart = cudart
        self.device = int(cuda_check(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))
        self.host_ptr = int(cuda_check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.host_ptr)
        self.host = np.frombuffer(raw, dtype=np.uint8).view(dtype)

    def free(self) -> None:
        if self.device:
            self._cudart.cudaFree(self.device)
            self.device = 0
        if self.host_ptr:
            self.host = np.empty(0, self.dtype)
            self._cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = 0


class _CudaEvents:
    """Device time between ``start`` and ``stop`` on the runner's stream (a :class:`~.base.DeviceTimer`)."""

    def __init__(self, cudart: Any, stream: Any, on_device: Any) -> None:
        self._cudart, self._stream, self._on_device = cudart, stream, on_device
        self._start = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate")
        self._stop = cuda_check(cudart.cudaEventCreate(), "cudaEventCreate")

    def start(self) -> None:
        self._on_device()
        cuda_check(self._cudart.cudaEventRecord(self._start, self._stream), "cudaEventRecord")

    def stop(self) -> None:
        self._on_device()
        cuda_check(self._cudart.cudaEventRecord(self._stop, self._stream), "cudaEventRecord")

    def elapsed_ms(self) -> float:
        self._on_device()
        return float(cuda_check(self._cudart.cudaEventElapsedTime(self._start, self._stop),
                                "cudaEventElapsedTime"))

    def __del__(self) -> None:
        try:
            self._cudart.cudaEventDestroy(self._start)
            self._cudart.cudaEventDestroy(self._stop)
        except Exception:  # interpreter shutdown
            pass


class TensorRTRunner(Runner):
    """Runs one ``.engine`` on one GPU; see the module docstring for what it checks and binds."""

    def __init__(self, path: Path, env: TrtEnvironment, cuda_graph: bool = False,
                 manifest: dict[str, Any] | None = _READ_BESIDE) -> None:
        self.path, self.env, self.cuda_graph = path, env, cuda_graph
        trt = env.trt
        self._buffers: dict[str, _Buffer] = {}
        self._graphs: dict[tuple[int, ...], Any] = {}
        self._stream: Any = None
        self._thread = threading.local()  # .on_device: this thread has made the runner's GPU current
        self.context: Any = None
        self.engine: Any = None

        if manifest is _READ_BESIDE:
            manifest = read_manifest(path)
        if manifest is not None:
            for warning in check_compatible(path, manifest, env.version, env.gpu):
                log.warning("warning: %s", warning)
        self._on_device()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        if manifest is not None and manifest.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True  # the lean runtime embedded in the plan
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            why = ("the manifest matches, so the file may be damaged" if manifest else
                   "no manifest beside it says which TensorRT and GPU built it")
            raise U2Error(f"{path}: TensorRT {env.version} cannot load this engine ({why}); "
                          "rebuild it on this machine with u2export trt")
        try:
            self._bind(manifest)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, artifact: str, device: str | int | None = "cuda", cuda_graphs: bool = False) -> TensorRTRunner:
        path = Path(artifact)
        index = _device_index(device)
        if not path.is_file():
            raise U2Error(f"{path}: no such engine file")
        env = probe_environment(index, "TensorRT engines")
        return cls(path, env, cuda_graphs)

    @classmethod
    def from_file(cls, path: Path, env: TrtEnvironment, manifest: dict[str, Any]) -> TensorRTRunner:
        """An engine not yet in its place (the builder's temporary file), described by ``manifest``."""
        return cls(Path(path), env, manifest=manifest)

    def _on_device(self) -> None:
        """Make the runner's GPU current in the calling thread (the CUDA runtime's device is per thread)."""
        if not getattr(self._thread, "on_device", False):
            cuda_check(self.env.cudart.cudaSetDevice(self.env.gpu.index), "cudaSetDevice")
            self._thread.on_device = True

    def _bind(self, manifest: dict[str, Any] | None) -> None:
        """Read the engine's I/O, size and bind buffers, fill ``info``."""
        trt, cudart, engine = self.env.trt, self.env.cudart, self.engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise U2Error(f"{self.path}: expected one input and some outputs, found inputs {inputs}")
        self.input_name = inputs[0]
        if manifest and sorted(manifest.get("outputs") or []) == sorted(outputs):
            outputs = list(manifest["outputs"])  # the ONNX's order: d0 (the fused map) first
        self.output_names = outputs
        self.dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in inputs + outputs}

        shape = tuple(engine.get_tensor_shape(self.input_name))
        if len(shape) != 4:
            raise U2Error(f"{self.path}: expected an N×3×H×W input, the engine has {shape}")
        if any(d < 0 for d in shape):
            low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
            self.min_shape, self.max_shape = low, high
        else:
            self.min_shape = self.max_shape = shape
        self.context = engine.create_execution_context()
        self._stream = cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags")
        self._set_shape(self.max_shape)  # output buffers are sized for the largest input
        for name in [self.input_name, *self.output_names]:
            dims = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(dims)) * self.dtypes[name].itemsize
            self._buffers[name] = _Buffer(cudart, name, self.dtypes[name], nbytes)
            if not self.context.set_tensor_address(name, self._buffers[name].device):
                raise U2Error(f"{self.path}: TensorRT refused the buffer of {name}")

        precision = (manifest or {}).get("precision")
        if precision not in PRECISIONS:
            precision = self._layer_precision()
        manifest = manifest or {}
        metadata = {k: str(v) for k, v in ((manifest.get("source_onnx") or {}).get("metadata") or {}).items()}
        metadata.update({"tensorrt_version": str(self.env.version), "gpu": str(self.env.gpu),
                         "precision": precision})  # the engine's, not its source ONNX's
        static_hw = self.min_shape[2:] == self.max_shape[2:]
        self.info = ArtifactInfo(
            path=str(self.path), backend="tensorrt", precision=precision,
            device="cuda", input_size=tuple(self.max_shape[2:]) if static_hw else None,  # type: ignore[arg-type]
            batch_range=(self.min_shape[0], self.max_shape[0]), output_names=tuple(self.output_names),
            size_bytes=self.path.stat().st_size, metadata=metadata)

    def _layer_precision(self) -> str:
        """The lowest precision any layer computes in, from the engine's own detailed layer information."""
        trt = self.env.trt
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context  # with the shapes set, dynamic layers have formats too
        try:
            info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        except ValueError:
            info = {}
        texts = [str(tensor.get("Format/Datatype", "")).lower()
                 for layer in (info.get("Layers") or []) if isinstance(layer, dict)
                 for tensor in [*(layer.get("Inputs") or []), *(layer.get("Outputs") or [])]
                 if isinstance(tensor, dict)]
        beside = manifest_path(self.path).name
        unsupported = next((m.group(1) for t in texts if (m := re.search(_UNSUPPORTED_TYPES, t))), None)
        if unsupported:
            raise U2Error(f"{self.path}: its layers compute in {unsupported.upper()}, a precision this project "
                          "declares no tolerance for (fp32, fp16, int8)")
        for precision, pattern in _LAYER_TYPES:
            if any(re.search(rf"\b({pattern})\b", t) for t in texts):
                log.info("%s: no %s; precision %s read from the engine's layers", self.path, beside, precision)
                return precision
        raise U2Error(f"{self.path}: no manifest beside it ({beside}) says its precision, and the engine keeps "
                      "only its layer names; rebuild it with u2export trt (or trtexec --profilingVerbosity=detailed)")

    # ------------------------------------------------------------------------------ running

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if getattr(self, "_shape", None) == shape:
            return
        if not self.context.set_input_shape(self.input_name, shape):
            raise U2Error(f"{self.path}: TensorRT refused input shape {shape}")
        self._shape = shape

    def _check(self, batch: np.ndarray) -> tuple[int, ...]:
        shape = tuple(batch.shape)
        ok = len(shape) == 4 and all(lo <= d <= hi for d, lo, hi
                                     in zip(shape, self.min_shape, self.max_shape, strict=True))
        if not ok:
            raise U2Error(f"{self.path}: input {shape} is outside what the engine was built for "
                          f"({self.min_shape} to {self.max_shape})")
        return shape

    def upload(self, batch: np.ndarray) -> None:
        """Copy ``batch`` to the device input (converted to the engine's input type) and set its shape."""
        shape = self._check(batch)
        self._on_device()
        buf = self._buffers[self.input_name]
        count = int(np.prod(shape))
        np.copyto(buf.host[:count].reshape(shape), batch, casting="unsafe")
        self._set_shape(shape)
        cuda_check(self.env.cudart.cudaMemcpyAsync(
            buf.device, buf.host_ptr, count * buf.dtype.itemsize,
            self.env.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "cudaMemcpyAsync")

    def enqueue(self) -> None:
        """Queue one inference on the bound buffers (a graph replay when ``cuda_graph`` is on)."""
        self._on_device()
        if self.cuda_graph:
            graph = self._graphs.get(self._shape) or self._capture()
            if graph is not None:
                cuda_check(self.env.cudart.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")
                return
        if not self.context.execute_async_v3(int(self._stream)):
            raise U2Error(f"{self.path}: TensorRT failed to enqueue the inference")

    def _capture(self) -> Any:
        """Record one enqueue for the current shape in a CUDA graph; None (graphs off) if it can't be."""
        cudart = self.env.cudart
        if not self.context.execute_async_v3(int(self._stream)):  # TensorRT's shape work happens outside
            raise U2Error(f"{self.path}: TensorRT failed to enqueue the inference")
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        enqueued = self.context.execute_async_v3(int(self._stream))
        result = cudart.cudaStreamEndCapture(self._stream)
        if not enqueued or int(result[0]) != 0:
            log.warning("warning: %s cannot be captured in a CUDA graph; running without", self.path.name)
            self.cuda_graph = False
            return None
        graph = result[1]
        executable = cuda_check(cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
        cudart.cudaGraphDestroy(graph)
        self._graphs[self._shape] = executable
        return executable

    def download(self) -> dict[str, np.ndarray]:
        """Copy the outputs to the host, wait for them, and return float32 copies by name."""
        cudart = self.env.cudart
        self._on_device()
        shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}
        for name, shape in shapes.items():
            buf = self._buffers[name]
            cuda_check(cudart.cudaMemcpyAsync(
                buf.host_ptr, buf.device, int(np.prod(shape)) * buf.dtype.itemsize,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync")
        self.synchronize()
        return {name: self._buffers[name].host[:int(np.prod(shape))].reshape(shape).astype(np.float32)
                for name, shape in shapes.items()}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.upload(batch)
        self.enqueue()
        return self.download()

    def bind(self, batch: np.ndarray) -> BoundCall:
        """Stage ``batch`` on the device once; the returned call only enqueues (what u2bench times)."""
        self.upload(batch)
        self.synchronize()
        how = "CUDA graph replay" if self.cuda_graph else "execute_async_v3"
        return BoundCall(self.enqueue, f"bound inference, {how} (input staged on the device once)")

    def settings(self) -> dict[str, Any]:
        return {"cuda_graphs": self.cuda_graph}

    def device_timer(self) -> _CudaEvents:
        self._on_device()
        return _CudaEvents(self.env.cudart, self._stream, self._on_device)

    def synchronize(self) -> None:
        if self._stream is not None:
            self._on_device()
            cuda_check(self.env.cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        cudart = getattr(getattr(self, "env", None), "cudart", None)
        if cudart is None:
            return
        if getattr(self, "_thread", None) is not None:
            with contextlib.suppress(U2Error):  # freeing goes on: a failed switch must not leak the rest
                self._on_device()
        if self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        for graph in self._graphs.values():
            cudart.cudaGraphExecDestroy(graph)
        self._graphs.clear()
        self.context = None  # the context goes before the engine, the engine before the runtime
        self.engine = None
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
