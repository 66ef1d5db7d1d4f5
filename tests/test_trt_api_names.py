"""Every TensorRT and cuda-python name the builder and the runner use, checked against the real bindings.

The name sets under ``tests/data/trt_api/`` (TensorRT 8.6.1, 10.0.1, 10.8, 10.16, 11.0, 11.4) and
``tests/data/cuda_api/`` (cuda-python 12.2, cuda-bindings 12.9 and 13.5) were read from NVIDIA's
own wheels by ``tools/trt_api_names.py``: the compiled modules imported, ``dir()`` listed.

The fakes below have just enough behaviour to carry the real code paths through (a build writes a
JSON "plan", a run computes sigmoid(mean over channels)), but every attribute the project's code
reads or writes on them (``trt.BuilderFlag.INT8``, ``config.int8_calibrator``,
``cudart.cudaMemcpyAsync`` …) is looked up in the real name set of the release being imitated and
fails as it would there when that release lacks it. So ``build_trt_engine`` and ``TensorRTRunner``
are run, per release, for every path (FP32, FP16, Q/DQ INT8, calibrator INT8, strongly and weakly
typed networks, profiles, timing cache, portability flags, CUDA graphs, the verification of each engine
against its ONNX before it is written, the precision read by the engine inspector when the manifest is
missing, the device made current in worker threads), and the names they touched are checked. The
fake engine computes what the tiny test ONNX computes, so verification really compares maps. What the
fakes cannot check is behaviour: argument types, numerics, TensorRT's own rules. That needs a GPU
(``tests/test_trt_gpu.py``).
"""

from __future__ import annotations

import ctypes
import json
import re
import sys
import threading
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from u2deploy.engines import tensorrt as trt_runner
from u2deploy.engines.trt_compat import GpuInfo, TrtEnvironment, TrtVersion
from u2deploy.engines.trt_manifest import manifest_path, read_manifest
from u2deploy.errors import U2Error
from u2deploy.export import trt as trt_builder
from u2deploy.export.trt_plan import BatchRange, BuildRequest, SourceModel, make_plan

DATA = Path(__file__).parent / "data"
TRT_FILES = sorted((DATA / "trt_api").glob("*.txt"), key=lambda p: TrtVersion.parse(p.stem))
CUDA_FILES = sorted((DATA / "cuda_api").glob("*.txt"))
SIZE = 8  # tiny ONNX inputs: N×3×8×8


def read_names(path: Path) -> frozenset[str]:
    return frozenset(line.strip() for line in path.read_text().splitlines()
                     if line.strip() and not line.startswith("#"))


def family(path: Path) -> str:
    return TrtVersion.parse(path.stem).family


# ------------------------------------------------------------------------------------ the data itself

def test_every_claimed_release_has_real_names():
    families = {family(p) for p in TRT_FILES}
    assert families == {"8.6", "10", "11"}
    for path in TRT_FILES + CUDA_FILES:
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert any("source:" in line and "PyPI" in line for line in header), path
        assert len(read_names(path)) > 500, path


@pytest.mark.parametrize("path", TRT_FILES, ids=lambda p: p.stem)
def test_names_tell_the_releases_apart(path):
    """The sets are discriminating: what 11.x removed is there in 10.x and gone in 11.x."""
    names = read_names(path)
    weak = {"BuilderFlag.FP16", "BuilderFlag.INT8", "IBuilderConfig.int8_calibrator",
            "IBuilderConfig.set_calibration_profile", "IInt8EntropyCalibrator2"}
    if family(path) == "11":
        assert not weak & names
        assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" not in names
    else:
        assert weak <= names
        assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" in names
    assert ("NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names) == (family(path) != "8.6")
    shared = {"IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
              "IExecutionContext.set_input_shape", "ICudaEngine.num_io_tensors",
              "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_shape",
              "ICudaEngine.get_tensor_profile_shape"}
    assert shared <= names  # the name-based runtime API exists from 8.6 on


def _requests():
    for precision in ("fp32", "fp16", "int8"):
        for kind in ("fp32", "fp16", "qdq"):
            for mode in (("auto", "qdq", "calibrator") if precision == "int8" else ("auto",)):
                for portable in (False, True):
                    yield precision, kind, mode, portable


@pytest.mark.parametrize("path", TRT_FILES, ids=lambda p: p.stem)
def test_every_flag_a_plan_can_name_exists_in_that_release(path):
    names = read_names(path)
    version = TrtVersion.parse(path.stem)
    built = 0
    for precision, kind, mode, portable in _requests():
        request = BuildRequest(precision=precision, int8_mode=mode, calib_dir=Path("calib"),
                               version_compatible=portable, hardware_compatible=portable)
        source = SourceModel(kind, None, (320, 320), path=Path("m.onnx"))
        try:
            plan = make_plan(version, request, source, (8, 9))
        except U2Error:
            continue
        built += 1
        for flag in plan.network_flags:
            assert f"NetworkDefinitionCreationFlag.{flag}" in names
        for flag in plan.builder_flags + plan.cleared_flags:
            assert f"BuilderFlag.{flag}" in names
        assert f"ProfilingVerbosity.{plan.profiling_verbosity}" in names
        assert f"HardwareCompatibilityLevel.{plan.hardware_compatibility}" in names
    assert built >= 12


# ------------------------------------------------------------------------------------------- the fakes

class Api:
    """One release's real names, and the names the code under test used."""

    def __init__(self, names: frozenset[str], label: str) -> None:
        self.names, self.label, self.used = names, label, set()

    def need(self, name: str) -> None:
        self.used.add(name)
        if name not in self.names:
            raise AttributeError(f"{self.label} has no {name}")


class Checked:
    """An instance of bindings class ``_cls``: public attributes read or written must exist there."""

    _cls = "?"

    def __init__(self, api: Api) -> None:
        object.__setattr__(self, "_api", api)

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            object.__getattribute__(self, "_api").need(f"{type(self)._cls}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_"):
            self._api.need(f"{type(self)._cls}.{name}")
        object.__setattr__(self, name, value)


class EnumValue:
    def __init__(self, cls: str, member: str, value: int) -> None:
        self.cls, self.member, self.value = cls, member, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other) -> bool:
        return isinstance(other, EnumValue) and (self.cls, self.member) == (other.cls, other.member)

    def __hash__(self) -> int:
        return hash((self.cls, self.member))


class Namespace:
    """A bindings class or enum object: member reads are checked; calling it constructs."""

    def __init__(self, api: Api, cls: str, factory=None) -> None:
        self._api, self._cls, self._factory = api, cls, factory
        prefix = f"{cls}."
        self._members = sorted(n[len(prefix):] for n in api.names if n.startswith(prefix))

    def __getattr__(self, member: str) -> EnumValue:
        if member.startswith("_"):
            raise AttributeError(member)
        self._api.need(f"{self._cls}.{member}")
        return EnumValue(self._cls, member, self._members.index(member))

    def __call__(self, *args, **kwargs):
        assert self._factory is not None, f"{self._cls} is not constructible in the fake"
        return self._factory(*args, **kwargs)

    def decode(self, bits: int) -> set[str]:
        return {m for i, m in enumerate(self._members) if bits & (1 << i)}


_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_}


class FakeTensorRT:
    """The ``tensorrt`` module of one release, as far as this project uses it."""

    def __init__(self, api: Api, version: str, cudart: FakeCudart) -> None:
        self.__version__ = version
        self._api, self._cudart = api, cudart
        self._skew = 0.0  # added to every map the engines compute: an engine that breaks its bound
        ns = {name: Namespace(api, name) for name in (
            "BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "HardwareCompatibilityLevel",
            "TensorIOMode", "DataType", "ProfilingVerbosity", "LayerInformationFormat")}
        ns["Logger"] = Namespace(api, "Logger", lambda severity: FakeLogger(api))
        ns["Builder"] = Namespace(api, "Builder", lambda logger: FakeBuilder(api, self))
        ns["OnnxParser"] = Namespace(api, "OnnxParser", lambda network, logger: FakeParser(api, network))
        ns["Runtime"] = Namespace(api, "Runtime", lambda logger: FakeRuntime(api, self))
        ns["IInt8EntropyCalibrator2"] = FakeEntropyCalibrator2
        ns["nptype"] = lambda dtype: _NP[dtype.member]
        self._ns = ns

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        self._api.need(name)
        assert name in self._ns, f"the fake tensorrt lacks {name}: extend it"
        return self._ns[name]


class FakeLogger(Checked):
    _cls = "Logger"


class FakeEntropyCalibrator2:
    """Base class the project's calibrator subclasses (a real class, as pybind11 trampolines are)."""

    def __init__(self) -> None:
        self._base_initialised = True


class FakeTensor(Checked):
    _cls = "ITensor"

    def __init__(self, api, name, shape, dtype) -> None:
        super().__init__(api)
        object.__setattr__(self, "_data", (name, tuple(shape), dtype))

    @property
    def name(self):
        return self._data[0]


class FakeNetwork(Checked):
    _cls = "INetworkDefinition"

    def __init__(self, api, flags: set[str]) -> None:
        super().__init__(api)
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_inputs", [])
        object.__setattr__(self, "_outputs", [])

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, i):
        return self._outputs[i]


class FakeParserError(Checked):
    _cls = "ParserError"

    def __init__(self, api, text) -> None:
        super().__init__(api)
        object.__setattr__(self, "_text", text)

    def desc(self):
        return self._text


class FakeParser(Checked):
    _cls = "OnnxParser"

    def __init__(self, api, network: FakeNetwork) -> None:
        super().__init__(api)
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_errors", [])

    def parse_from_file(self, path: str) -> bool:
        model = onnx.load(path)
        if any(n.op_type == "Unsupported" for n in model.graph.node):
            self._errors.append(FakeParserError(self._api, "No importer registered for op: Unsupported"))
            return False
        api, net = self._api, self._network
        ops = {n.op_type for n in model.graph.node}
        half = any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
        object.__setattr__(net, "_kind", "qdq" if "QuantizeLinear" in ops else "fp16" if half else "fp32")
        pairs = [(model.graph.input[0], net._inputs)] + [(o, net._outputs) for o in model.graph.output]
        for vi, target in pairs:
            t = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
            dtype = "HALF" if t.elem_type == TensorProto.FLOAT16 else "FLOAT"
            target.append(FakeTensor(api, vi.name, dims, dtype))
        return True

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, i):
        return self._errors[i]


class FakeProfile(Checked):
    _cls = "IOptimizationProfile"

    def __init__(self, api) -> None:
        super().__init__(api)
        object.__setattr__(self, "_shapes", {})

    def set_shape(self, name, low, opt, high):
        assert all(len(s) == 4 for s in (low, opt, high))
        self._shapes[name] = [list(low), list(opt), list(high)]


class FakeTimingCache(Checked):
    _cls = "ITimingCache"

    def __init__(self, api, data: bytes) -> None:
        super().__init__(api)
        object.__setattr__(self, "_data", bytes(data))

    def serialize(self):
        return memoryview(b"timing-cache:" + str(len(self._data)).encode())


class FakeConfig(Checked):
    _cls = "IBuilderConfig"

    def __init__(self, api) -> None:
        super().__init__(api)
        for key, value in (("_flags", set()), ("_cleared", set()), ("_pools", {}), ("_profiles", []), ("_cache", None),
                           ("_calib_profile", None)):
            object.__setattr__(self, key, value)

    def set_flag(self, flag: EnumValue):
        assert flag.cls == "BuilderFlag"
        self._flags.add(flag.member)

    def clear_flag(self, flag: EnumValue):
        assert flag.cls == "BuilderFlag"
        self._cleared.add(flag.member)

    def set_memory_pool_limit(self, pool: EnumValue, size: int):
        assert pool.cls == "MemoryPoolType" and isinstance(size, int)
        self._pools[pool.member] = size

    def add_optimization_profile(self, profile: FakeProfile):
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, data: bytes):
        return FakeTimingCache(self._api, data)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        if cache._data == b"from another GPU":
            return False
        object.__setattr__(self, "_cache", cache)
        return True

    def get_timing_cache(self):
        return self._cache

    def set_calibration_profile(self, profile: FakeProfile):
        object.__setattr__(self, "_calib_profile", profile)


class FakeBuilder(Checked):
    _cls = "Builder"

    def __init__(self, api, trt: FakeTensorRT) -> None:
        super().__init__(api)
        object.__setattr__(self, "_trt", trt)

    def create_network(self, flags: int):
        return FakeNetwork(self._api, self._trt._ns["NetworkDefinitionCreationFlag"].decode(flags))

    def create_builder_config(self):
        return FakeConfig(self._api)

    def create_optimization_profile(self):
        return FakeProfile(self._api)

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig):
        inp = network._inputs[0]
        dynamic = any(d < 0 for d in inp._data[1])
        assert bool(config._profiles) == dynamic, "a dynamic input needs exactly one profile"
        calibrator = vars(config).get("int8_calibrator")
        calibrated = 0
        if calibrator is not None:
            assert "INT8" in config._flags
            assert getattr(calibrator, "_base_initialised", False), "base class __init__ not called"
            profile = config._calib_profile
            shape = profile._shapes[inp.name][1] if profile else list(inp._data[1])
            assert calibrator.get_batch_size() == 1  # explicit batch: N lives in the shape
            assert shape[0] >= 1
            if not calibrator.read_calibration_cache():
                while (ptrs := calibrator.get_batch([inp.name])) is not None:
                    assert len(ptrs) == 1 and ptrs[0] in self._trt._cudart._device
                    calibrated += 1
                calibrator.write_calibration_cache(memoryview(b"calibration table"))
        # what the layers compute in, as TensorRT decides it: a strongly typed network keeps the ONNX's types;
        # a weakly typed one may lower any layer to what the precision flags allow
        kind = network._kind
        if "STRONGLY_TYPED" not in network._flags:
            kind = "qdq" if "INT8" in config._flags else "fp16" if "FP16" in config._flags else kind
        datatype = {"qdq": "Thirty-two wide channel vectorized row major Int8 format", "fp16": "Half",
                    "fp32": "Row major linear FP32"}[kind]
        verbosity = getattr(vars(config).get("profiling_verbosity"), "member", "LAYER_NAMES_ONLY")
        layers = ["conv0", "sigmoid0"] if verbosity != "DETAILED" else [
            {"Name": "conv0", "LayerType": "CaskConvolution", "Inputs": [{"Name": inp.name, "Format/Datatype":
             "Row major linear FP32"}], "Outputs": [{"Name": "c0", "Format/Datatype": datatype}]},
            {"Name": "sigmoid0", "LayerType": "PointWise", "Inputs": [{"Name": "c0", "Format/Datatype": datatype}],
             "Outputs": [{"Name": "d0", "Format/Datatype": "Row major linear FP32"}]}]
        plan = {
            "layers": layers,
            "network_flags": sorted(network._flags), "builder_flags": sorted(config._flags),
            "cleared_flags": sorted(config._cleared),
            "pools": config._pools, "calibrated_batches": calibrated,
            "hardware": getattr(vars(config).get("hardware_compatibility_level"), "member", "NONE"),
            "profile": config._profiles[0]._shapes[inp.name] if config._profiles else None,
            # outputs in reverse: the runner must restore the ONNX order from the manifest
            "io": [[t._data[0], "INPUT", t._data[1], t._data[2]] for t in network._inputs]
            + [[t._data[0], "OUTPUT", t._data[1], t._data[2]] for t in reversed(network._outputs)],
        }
        return b"FAKEPLAN" + json.dumps(plan).encode()


class FakeRuntime(Checked):
    _cls = "Runtime"

    def __init__(self, api, trt) -> None:
        super().__init__(api)
        object.__setattr__(self, "_trt", trt)

    def deserialize_cuda_engine(self, data: bytes):
        if not data.startswith(b"FAKEPLAN"):
            return None
        return FakeEngine(self._api, self._trt, json.loads(data[len(b"FAKEPLAN"):]))


class FakeEngine(Checked):
    _cls = "ICudaEngine"

    def __init__(self, api, trt, plan) -> None:
        super().__init__(api)
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_io", {name: (mode, dims, dtype) for name, mode, dims, dtype in plan["io"]})

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, i):
        return list(self._io)[i]

    def get_tensor_mode(self, name):
        return EnumValue("TensorIOMode", self._io[name][0], 0)

    def get_tensor_dtype(self, name):
        return EnumValue("DataType", self._io[name][2], 0)

    def get_tensor_shape(self, name):
        return tuple(self._io[name][1])

    def get_tensor_profile_shape(self, name, index):
        assert index == 0 and self._plan["profile"] is not None
        return tuple(tuple(s) for s in self._plan["profile"])

    def create_execution_context(self):
        return FakeContext(self._api, self)

    def create_engine_inspector(self):
        return FakeInspector(self._api, self)


class FakeInspector(Checked):
    _cls = "EngineInspector"

    def __init__(self, api, engine: FakeEngine) -> None:
        super().__init__(api)
        object.__setattr__(self, "_engine", engine)

    def get_engine_information(self, fmt: EnumValue) -> str:
        assert (fmt.cls, fmt.member) == ("LayerInformationFormat", "JSON")
        assert isinstance(vars(self).get("execution_context"), FakeContext), "dynamic shapes need the context"
        return json.dumps({"Layers": self._engine._plan["layers"], "Bindings": list(self._engine._io)})


def _host_view(ptr: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * count).from_address(ptr), np.uint8).view(dtype).reshape(shape)


class FakeContext(Checked):
    _cls = "IExecutionContext"

    def __init__(self, api, engine: FakeEngine) -> None:
        super().__init__(api)
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_addresses", {})
        object.__setattr__(self, "_input_shape", None)
        object.__setattr__(self, "_runs", 0)

    def _input(self):
        return next(n for n, (mode, _, _) in self._engine._io.items() if mode == "INPUT")

    def set_input_shape(self, name, shape) -> bool:
        profile = self._engine._plan["profile"]
        if profile and not all(lo <= d <= hi
                               for d, lo, hi in zip(shape, profile[0], profile[2], strict=True)):
            return False
        object.__setattr__(self, "_input_shape", tuple(shape))
        return True

    def get_tensor_shape(self, name):
        n, _, h, w = self._input_shape or self._engine._io[self._input()][1]
        return (n, 3, h, w) if name == self._input() else (n, 1, h, w)

    def set_tensor_address(self, name, ptr) -> bool:
        assert isinstance(ptr, int) and ptr in self._engine._trt._cudart._device
        self._addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle) -> bool:
        assert isinstance(stream_handle, int)
        cudart = self._engine._trt._cudart
        if cudart._capturing is not None:
            cudart._capturing.append(self._compute)
        else:
            self._compute()
        return True

    def _compute(self) -> None:
        object.__setattr__(self, "_runs", self._runs + 1)
        io, name = self._engine._io, self._input()
        x = _host_view(self._addresses[name], _NP[io[name][2]], self.get_tensor_shape(name))
        x = x.astype(np.float32)
        d0 = 1 / (1 + np.exp(-x.mean(axis=1, keepdims=True))) + self._engine._trt._skew
        for out, scale in (("d0", 1.0), ("d1", 0.5)):
            target = _host_view(self._addresses[out], _NP[io[out][2]], self.get_tensor_shape(out))
            target[...] = d0 * scale


class FakeDeviceProp(Checked):
    _cls = "cudaDeviceProp"

    def __init__(self, api, name: bytes, cc) -> None:
        super().__init__(api)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "major", cc[0])
        object.__setattr__(self, "minor", cc[1])


class FakeStream:
    def __init__(self, device: int) -> None:
        self.device = device  # a stream belongs to the device current where it was made

    def __int__(self) -> int:
        return 0x5EED


class FakeCudart:
    """cuda-python's runtime module: memory is host memory, copies are memmove, graphs are closures."""

    def __init__(self, api: Api, cc=(8, 9), devices: int = 1) -> None:
        self._api, self._cc, self._devices = api, cc, devices
        self._thread = threading.local()  # the CUDA runtime's current device is per thread (0 until set)
        self._set_in: set[tuple[int, int]] = set()  # (thread id, device) of every cudaSetDevice
        self._device: dict[int, np.ndarray] = {}
        self._host: dict[int, np.ndarray] = {}
        self._capturing: list | None = None
        self._launches = 0
        self._enums = {name: Namespace(api, name) for name in ("cudaMemcpyKind", "cudaStreamCaptureMode")}

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            object.__getattribute__(self, "_api").need(name)
            enums = object.__getattribute__(self, "_enums")
            if name in enums:
                return enums[name]
        return object.__getattribute__(self, name)

    cudaStreamNonBlocking = 1

    def cudaGetDeviceCount(self):
        return 0, self._devices

    def _current(self) -> int:
        return getattr(self._thread, "device", 0)

    def _on(self, stream) -> None:
        assert stream.device == self._current(), (
            f"a call on device {self._current()} with a stream of device {stream.device} (cudaSetDevice missing "
            "in this thread)")

    def cudaGetDeviceProperties(self, index):
        return 0, FakeDeviceProp(self._api, b"Fake GPU\0\0", self._cc)

    def cudaSetDevice(self, index):
        assert 0 <= index < self._devices
        self._thread.device = index
        self._set_in.add((threading.get_ident(), index))
        return (0,)

    def _alloc(self, table, nbytes):
        arr = np.zeros(nbytes, np.uint8)
        table[arr.ctypes.data] = arr
        return 0, arr.ctypes.data

    def cudaMalloc(self, nbytes):
        return self._alloc(self._device, nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc(self._host, nbytes)

    def cudaFree(self, ptr):
        del self._device[ptr]
        return (0,)

    def cudaFreeHost(self, ptr):
        del self._host[ptr]
        return (0,)

    def _copy(self, dst, src, count, kind):
        assert isinstance(dst, int) and isinstance(src, int) and count > 0
        to_device = kind == self._enums["cudaMemcpyKind"].cudaMemcpyHostToDevice
        assert (dst in self._device) == to_device and (src in self._device) != to_device, "copy direction"
        ctypes.memmove(dst, src, count)
        return (0,)

    def cudaMemcpy(self, dst, src, count, kind):
        return self._copy(dst, src, count, kind)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        assert isinstance(stream, FakeStream)
        self._on(stream)
        return self._copy(dst, src, count, kind)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, FakeStream(self._current())

    def cudaStreamSynchronize(self, stream):
        self._on(stream)
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        assert mode.member == "cudaStreamCaptureModeThreadLocal"
        self._capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        graph, self._capturing = self._capturing, None
        return 0, graph

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return 0, ("executable", graph)

    def cudaGraphLaunch(self, executable, stream):
        self._on(stream)
        self._launches += 1
        for step in executable[1]:
            step()
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, executable):
        return (0,)

    def cudaEventCreate(self):
        return 0, object()

    def cudaEventRecord(self, event, stream):
        self._on(stream)
        return (0,)

    def cudaEventElapsedTime(self, start, stop):
        return 0, 0.25

    def cudaEventDestroy(self, event):
        return (0,)


# --------------------------------------------------------------------------------------------- wiring

def tiny_onnx(path: Path, kind: str = "fp32", batch: int | str = "N") -> Path:
    """input N×3×8×8 → d0 = sigmoid(mean over channels), d1 = d0 / 2 (in FP16, or behind Q/DQ)."""
    elem = TensorProto.FLOAT16 if kind == "fp16" else TensorProto.FLOAT
    np_type = np.float16 if kind == "fp16" else np.float32
    nodes, inits, src = [], [numpy_helper.from_array(np.array(0.5, np_type), "half")], "input"
    if kind == "qdq":
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        src = "dq"
    nodes += [helper.make_node("ReduceMean", [src], ["r"], axes=[1], keepdims=1),
              helper.make_node("Sigmoid", ["r"], ["d0"]), helper.make_node("Mul", ["d0", "half"], ["d1"])]
    io = [helper.make_tensor_value_info(name, elem, [batch, c, SIZE, SIZE]) for name, c in
          (("input", 3), ("d0", 1), ("d1", 1))]
    model = helper.make_model(helper.make_graph(nodes, "tiny", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"variant": "small", "input_size": f"{SIZE}x{SIZE}", "mean": "0.485,0.456,0.406",
                       "std": "0.229,0.224,0.225", "precision": "fp16" if kind == "fp16" else "fp32"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


class Machine:
    """One imitated deployment machine: a TensorRT release and a cuda-python release, names recorded."""

    def __init__(self, trt_file: Path, cuda_file: Path, cc=(8, 9), devices: int = 1) -> None:
        self.trt_api = Api(read_names(trt_file), f"TensorRT {trt_file.stem}")
        self.cuda_api = Api(read_names(cuda_file), cuda_file.stem)
        self.cudart = FakeCudart(self.cuda_api, cc, devices)
        self.trt = FakeTensorRT(self.trt_api, trt_file.stem, self.cudart)
        self.env = TrtEnvironment(self.trt, self.cudart, TrtVersion.parse(trt_file.stem),
                                  GpuInfo("Fake GPU", cc))

    def install(self, monkeypatch) -> Machine:
        def probe(device_index=0, purpose=""):
            if device_index >= self.cudart._devices:
                raise U2Error(f"no CUDA device {device_index}")
            gpu = GpuInfo("Fake GPU", self.env.gpu.compute_capability, device_index)
            return TrtEnvironment(self.trt, self.cudart, self.env.version, gpu)

        monkeypatch.setattr(trt_builder, "probe_environment", probe)
        monkeypatch.setattr(trt_runner, "probe_environment", probe)
        return self


@pytest.fixture
def calib_images(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    return folder


def expected_d0(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.mean(axis=1, keepdims=True)))


def run_engine(machine: Machine, engine: Path, cuda_graph: bool = False, batches=(1, 3)) -> None:
    """Open ``engine`` with the runner, infer at several batch sizes, compare, close, check memory."""
    rng = np.random.default_rng(0)
    with trt_runner.TensorRTRunner.open(str(engine), device="cuda", cuda_graphs=cuda_graph) as runner:
        info = runner.info
        assert info.backend == "tensorrt" and info.device == "cuda"
        assert info.output_names == ("d0", "d1")  # the ONNX order, restored from the manifest
        assert info.input_size == (SIZE, SIZE) and info.native_size == (SIZE, SIZE)
        assert info.metadata["variant"] == "small"
        for n in batches:
            x = rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)
            out = runner.infer(x)
            tol = 2e-3 if runner.dtypes["input"] == np.float16 else 1e-6
            np.testing.assert_allclose(out["d0"], expected_d0(x), atol=tol)
            np.testing.assert_allclose(out["d1"], expected_d0(x) / 2, atol=tol)
            assert out["d0"].dtype == np.float32 and out["d0"].shape == (n, 1, SIZE, SIZE)
            np.testing.assert_array_equal(runner.saliency(x), out["d0"])
        step = runner.bind(np.zeros((batches[0], 3, SIZE, SIZE), np.float32))
        timer = runner.device_timer()
        timer.start()
        step.call()
        timer.stop()
        runner.synchronize()
        assert timer.elapsed_ms() == 0.25
        with pytest.raises(U2Error, match="outside what the engine was built for"):
            runner.infer(np.zeros((info.batch_range[1] + 1, 3, SIZE, SIZE), np.float32))
    assert machine.cudart._device == {} and machine.cudart._host == {}  # close() freed everything


def assert_names_checked(machine: Machine) -> None:
    """Belt and braces: what was used is a subset of the real names (a miss would have raised already)."""
    assert machine.trt_api.used <= machine.trt_api.names
    assert machine.cuda_api.used <= machine.cuda_api.names


# ---------------------------------------------------------------------------- builder and runner, per release

LATEST_CUDA = max(CUDA_FILES, key=lambda p: TrtVersion.parse(p.stem.rsplit("-", 1)[1]))


@pytest.mark.parametrize("trt_file", TRT_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-qdq"])
def test_build_and_run_each_precision(trt_file, precision, tmp_path, monkeypatch):
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    kind = {"fp32": "fp32", "fp16": "fp16", "int8-qdq": "qdq"}[precision]
    onnx_path = tiny_onnx(tmp_path / f"tiny_{kind}.onnx", kind)
    result = trt_builder.build_trt_engine(onnx=onnx_path, precision=precision[:4],
                                          batch=BatchRange(1, 2, 4), output=tmp_path / "tiny.engine")
    plan = json.loads(result.engine.read_bytes()[len(b"FAKEPLAN"):])
    strongly_typed = family(trt_file) != "8.6"  # 10.x too, as NVIDIA documents it: no precision flags then
    assert plan["network_flags"] == (["STRONGLY_TYPED"] if strongly_typed else ["EXPLICIT_BATCH"])
    expected_flags = {"fp32": [], "fp16": ["FP16"], "int8-qdq": ["FP16", "INT8"]}[precision]
    assert plan["builder_flags"] == ([] if strongly_typed else expected_flags)
    assert all(isinstance(layer, dict) for layer in plan["layers"])  # ProfilingVerbosity.DETAILED
    assert plan["cleared_flags"] == (["TF32"] if precision == "fp32" else [])  # an FP32 engine computes in FP32
    assert plan["profile"] == [[n, 3, SIZE, SIZE] for n in (1, 2, 4)]
    manifest = read_manifest(result.engine)
    assert manifest["tensorrt_version"] == trt_file.stem and manifest["precision"] == precision[:4]
    verification = manifest["verification"]  # run against its ONNX before it was written
    assert verification["passed"] is True and verification["bound"]["precision"] == precision[:4]
    assert verification["images"]["count"] == 8 and verification["mean_abs"] <= verification["bound"]["mean_abs"]
    assert f"{onnx_path.name} ({kind}, onnxruntime cpu)" == verification["reference"]
    assert manifest["gpu"] == {"name": "Fake GPU", "compute_capability": "8.9"}
    assert manifest["source_onnx"]["path"] == str(onnx_path) and manifest["outputs"] == ["d0", "d1"]
    short = ".".join(trt_file.stem.split(".")[:2])
    assert re.fullmatch(rf"built {re.escape(str(result.engine))} \(0\.0 MB\) in \d+ s · TensorRT {short} · "
                        rf"Fake GPU \(8\.9\) · tiny\.engine \(TensorRT {re.escape(trt_file.stem)}\) vs .*: pass · "
                        rf"next: u2bench latency --model {re.escape(str(result.engine))}", result.status_line())
    run_engine(machine, result.engine)
    assert_names_checked(machine)


@pytest.mark.parametrize("trt_file", [p for p in TRT_FILES if family(p) != "11"], ids=lambda p: p.stem)
def test_build_with_the_implicit_calibrator(trt_file, tmp_path, calib_images, monkeypatch):
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx")
    build = dict(onnx=onnx_path, precision="int8", int8_mode="calibrator", calib_dir=calib_images,
                 calib_batch=2, calib_images=5, batch=BatchRange(1, 1, 4),
                 output=tmp_path / "tiny_int8.engine")
    result = trt_builder.build_trt_engine(**build)
    plan = json.loads(result.engine.read_bytes()[len(b"FAKEPLAN"):])
    assert plan["builder_flags"] == ["FP16", "INT8"]
    assert plan["calibrated_batches"] == 2  # 5 sampled images, batches of 2: the partial one left out
    cache = tmp_path / "tiny_int8.calib.cache"
    assert cache.read_bytes() == b"calibration table"
    manifest = read_manifest(result.engine)
    assert manifest["calibration"]["images"] == 5
    assert manifest["calibration"]["batch_shape"] == [2, 3, SIZE, SIZE]
    assert "--int8-mode calibrator" in manifest["rebuild"]
    # a second build reads the cache and asks for no batches
    again = trt_builder.build_trt_engine(**build)
    assert json.loads(again.engine.read_bytes()[len(b"FAKEPLAN"):])["calibrated_batches"] == 0
    # the calibrator subclass overrides only methods the real IInt8EntropyCalibrator2 has
    from u2deploy.export.trt_calib import make_entropy_calibrator

    calibrator = make_entropy_calibrator(machine.trt, machine.cudart, lambda: iter(()), (2, 3, SIZE, SIZE),
                                         None)
    overrides = {m for m in vars(type(calibrator)) if not m.startswith("_")} - {"free", "discard_cache"}
    assert overrides == {"get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"}
    assert {f"IInt8EntropyCalibrator2.{m}" for m in overrides} <= machine.trt_api.names
    run_engine(machine, result.engine)
    assert_names_checked(machine)


def test_calibration_errors_come_back_as_one_line(tmp_path, monkeypatch):
    machine = Machine(TRT_FILES[0], LATEST_CUDA).install(monkeypatch)
    bad = tmp_path / "calib"
    bad.mkdir()
    for i in range(2):
        (bad / f"broken{i}.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(U2Error, match="corrupt or truncated image|not a readable image"):
        trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t.onnx", batch=1), precision="int8",
                                     int8_mode="calibrator", calib_dir=bad, output=tmp_path / "t.engine")
    assert not (tmp_path / "t.engine").exists()
    assert not (tmp_path / "t.calib.cache").exists()  # no scales kept from a failed calibration
    assert_names_checked(machine)


@pytest.mark.parametrize("trt_file", [p for p in TRT_FILES if family(p) == "11"], ids=lambda p: p.stem)
def test_tensorrt_11_never_touches_weak_typing(trt_file, tmp_path, calib_images, monkeypatch):
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    with pytest.raises(U2Error, match="no implicit INT8 calibration"):
        trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t.onnx"), precision="int8",
                                     int8_mode="calibrator", calib_dir=calib_images)
    assert machine.trt_api.used == set()  # refused by the plan, before TensorRT was asked anything
    with pytest.raises(AttributeError, match="has no BuilderFlag.FP16"):
        _ = machine.trt.BuilderFlag.FP16  # and the fake really refuses what 11.x lacks


@pytest.mark.parametrize("trt_file", TRT_FILES, ids=lambda p: p.stem)
def test_static_batch_timing_cache_workspace_and_portability(trt_file, tmp_path, monkeypatch):
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    cache = tmp_path / "timing.cache"
    result = trt_builder.build_trt_engine(
        onnx=tiny_onnx(tmp_path / "static.onnx", batch=1), precision="fp32", workspace_gib=0.5,
        timing_cache=cache, version_compatible=True, hardware_compatible=True, output=tmp_path / "s.engine")
    plan = json.loads(result.engine.read_bytes()[len(b"FAKEPLAN"):])
    assert plan["profile"] is None and plan["pools"] == {"WORKSPACE": 1 << 29}
    assert "VERSION_COMPATIBLE" in plan["builder_flags"] and plan["hardware"] == "AMPERE_PLUS"
    assert cache.read_bytes() == b"timing-cache:0"  # written after the first build …
    manifest = read_manifest(result.engine)
    assert manifest["version_compatible"] and manifest["inputs"]["input"] is None
    run_engine(machine, result.engine, batches=(1,))
    trt_builder.build_trt_engine(onnx=tmp_path / "static.onnx", precision="fp32", timing_cache=cache,
                                 output=tmp_path / "s.engine")
    assert cache.read_bytes() == b"timing-cache:14"  # … and read by the next one
    cache.write_bytes(b"from another GPU")
    trt_builder.build_trt_engine(onnx=tmp_path / "static.onnx", precision="fp32", timing_cache=cache,
                                 output=tmp_path / "s.engine")
    assert cache.read_bytes() == b"timing-cache:0"  # a foreign cache is set aside, not fatal
    assert machine.trt_api.used >= {"Runtime.engine_host_code_allowed", "IBuilderConfig.set_timing_cache",
                                    "IBuilderConfig.hardware_compatibility_level"}
    assert_names_checked(machine)


@pytest.mark.parametrize("trt_file", TRT_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("cuda_file", CUDA_FILES, ids=lambda p: p.stem)
def test_runner_with_each_cuda_python_and_cuda_graphs(trt_file, cuda_file, tmp_path, monkeypatch):
    machine = Machine(trt_file, cuda_file).install(monkeypatch)
    result = trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t_fp16.onnx", "fp16"), precision="fp16",
                                          batch=BatchRange(1, 1, 4), output=tmp_path / "t.engine")
    run_engine(machine, result.engine, cuda_graph=True, batches=(1, 1, 2))
    assert machine.cudart._launches >= 3  # replays, after one capture per batch size
    assert "cudaGraphInstantiateWithFlags" in machine.cuda_api.used
    assert_names_checked(machine)


def test_runner_refuses_an_engine_from_another_release(tmp_path, monkeypatch):
    machine = Machine(TRT_FILES[-1], LATEST_CUDA).install(monkeypatch)
    result = trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t.onnx"), precision="fp32",
                                          output=tmp_path / "t.engine")
    manifest = json.loads(manifest_path(result.engine).read_text())
    manifest["tensorrt_version"] = "10.9.0.34"
    manifest_path(result.engine).write_text(json.dumps(manifest))
    used_before = set(machine.trt_api.used)
    with pytest.raises(U2Error, match=r"built by TensorRT 10\.9\.0\.34, this is TensorRT 11") as exc:
        trt_runner.TensorRTRunner.open(str(result.engine))
    assert "rebuild it here: u2export trt --onnx" in str(exc.value)
    assert machine.trt_api.used == used_before  # refused before TensorRT saw the file
    manifest_path(result.engine).unlink()
    result.engine.write_bytes(b"garbage")
    with pytest.raises(U2Error, match="cannot load this engine .no manifest"):
        trt_runner.TensorRTRunner.open(str(result.engine))


def test_parser_errors_are_one_line(tmp_path, monkeypatch):
    Machine(TRT_FILES[-1], LATEST_CUDA).install(monkeypatch)
    path = tiny_onnx(tmp_path / "t.onnx")
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Unsupported", ["d1"], ["junk"]))
    onnx.save(model, path)
    with pytest.raises(U2Error, match="cannot parse it: No importer registered for op: Unsupported"):
        trt_builder.build_trt_engine(onnx=path, precision="fp32", output=tmp_path / "t.engine")


def fake_stages(monkeypatch) -> list[tuple]:
    """The ONNX, FP16 and Q/DQ stages, each checking its call against the real function's signature and
    writing a tiny model (with its manifest, as the real stages do) where it was told to."""
    import inspect

    from u2deploy.calibration.quantize import quantize_model as real_quantize
    from u2deploy.export.fp16 import convert_fp16_model as real_fp16
    from u2deploy.export.onnx import export_onnx as real_export

    calls: list[tuple] = []

    def stage(real, make):
        def fake(*args, **kwargs):
            bound = inspect.signature(real).bind(*args, **kwargs)  # a TypeError if the call would not fit
            calls.append((real.__name__, {k: v for k, v in bound.arguments.items()}))
            path = make(bound.arguments)
            Path(f"{path}.json").write_text("{}")
            return types.SimpleNamespace(path=path)
        fake.__name__ = real.__name__
        return fake

    def batch_of(onnx_path):
        dim = onnx.load(onnx_path).graph.input[0].type.tensor_type.shape.dim[0]
        return dim.dim_value or "N"

    fakes = (("u2deploy.export.onnx", stage(real_export, lambda a: tiny_onnx(
                 Path(a["output"]), batch="N" if a.get("dynamic_batch") else a.get("batch", 1)))),
             ("u2deploy.export.fp16", stage(real_fp16, lambda a: tiny_onnx(Path(a["output"]), "fp16"))),
             ("u2deploy.calibration.quantize", stage(real_quantize, lambda a: tiny_onnx(
                 Path(a["output"]), "qdq", batch=batch_of(a["onnx_path"])))))
    for module, func in fakes:
        fake = types.ModuleType(module)
        setattr(fake, func.__name__, func)
        monkeypatch.setitem(sys.modules, module, fake)
    return calls


@pytest.mark.parametrize("trt_file", [TRT_FILES[0], TRT_FILES[-1]], ids=lambda p: p.stem)
def test_variant_runs_the_stages_in_order(trt_file, tmp_path, calib_images, monkeypatch):
    """--variant: the ONNX stage (and the FP16 / Q/DQ one), called through their real signatures, writing
    into the engine's build folder only; a u2netp.onnx of the user's beside the engine is never touched."""
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    calls = fake_stages(monkeypatch)
    out = tmp_path / "out" / "u2netp_fp16.engine"
    out.parent.mkdir()
    users = out.parent / "u2netp.onnx"
    users.write_bytes(b"the authors' checkpoint, exported")
    result = trt_builder.build_trt_engine(variant="small", weights="w.pth", precision="fp16",
                                          batch=BatchRange(1, 2, 4), output=out)
    build = out.parent / "u2netp_fp16.build"
    assert [(name, Path(args["output"])) for name, args in calls] == [
        ("export_onnx", build / "u2netp.onnx"), ("convert_fp16_model", build / "u2netp_fp16.onnx")]
    assert calls[0][1]["variant"] == "small" and calls[0][1]["weights"] == "w.pth" and calls[0][1]["dynamic_batch"]
    assert result.intermediates == (build / "u2netp.onnx", build / "u2netp_fp16.onnx")
    assert users.read_bytes() == b"the authors' checkpoint, exported"
    manifest = read_manifest(out)
    assert manifest["source_onnx"]["path"] == str(build / "u2netp_fp16.onnx")
    assert manifest["intermediates"] == {"folder": str(build), "files": [str(p) for p in result.intermediates]}
    assert manifest["verification"]["reference"] == "u2netp.onnx (fp32, onnxruntime cpu)"  # the exported FP32
    assert (build / trt_builder.BUILD_MARKER).is_file()
    calls.clear()
    result = trt_builder.build_trt_engine(variant="small", precision="int8", int8_mode="qdq",
                                          calib_dir=calib_images, calib_images=5, calib_seed=3,
                                          batch=BatchRange(2, 2, 2), output=tmp_path / "u2netp_int8.engine")
    build = tmp_path / "u2netp_int8.build"
    assert [name for name, _ in calls] == ["export_onnx", "quantize_model"]
    assert calls[0][1]["batch"] == 2 and not calls[0][1]["dynamic_batch"]
    quantize = calls[1][1]
    assert (Path(quantize["onnx_path"]), Path(quantize["output"])) == (build / "u2netp.onnx",
                                                                       build / "u2netp_int8_trt.onnx")
    assert quantize["target"] == "tensorrt" and (quantize["num"], quantize["seed"]) == (5, 3)  # --calib-images/-seed
    assert Path(quantize["cache"]).parent == build  # the ranges cache too: nothing beside a user's ONNX
    assert read_manifest(result.engine)["calibration"] == {
        "mode": "qdq", "dir": str(calib_images), "images": 5, "seed": 3, "method": "minmax",
        "quantized_onnx": str(build / "u2netp_int8_trt.onnx")}
    run_engine(machine, result.engine, batches=(2,))
    assert_names_checked(machine)


def test_a_build_folder_that_is_not_ours_is_refused(tmp_path, monkeypatch):
    Machine(TRT_FILES[-1], LATEST_CUDA).install(monkeypatch)
    calls = fake_stages(monkeypatch)
    theirs = tmp_path / "u2netp_fp16.build"
    theirs.mkdir()
    (theirs / "u2netp.onnx").write_bytes(b"mine")
    with pytest.raises(U2Error, match=r"u2netp_fp16\.build: exists and was not made by u2export trt"):
        trt_builder.build_trt_engine(variant="small", precision="fp16", output=tmp_path / "u2netp_fp16.engine")
    assert calls == [] and (theirs / "u2netp.onnx").read_bytes() == b"mine"
    assert not (tmp_path / "u2netp_fp16.engine").exists()


def test_the_output_folder_is_checked_not_created(tmp_path, monkeypatch):
    machine = Machine(TRT_FILES[-1], LATEST_CUDA).install(monkeypatch)
    onnx_path = tiny_onnx(tmp_path / "t.onnx")
    with pytest.raises(U2Error, match=r"folder .*missing does not exist") as exc:
        trt_builder.build_trt_engine(onnx=onnx_path, precision="fp32", output=tmp_path / "missing" / "t.engine")
    assert "\n" not in str(exc.value) and not (tmp_path / "missing").exists()
    assert machine.trt_api.used == set()  # refused before TensorRT was asked anything
    with pytest.raises(U2Error, match="--timing-cache|folder .*nowhere does not exist"):
        trt_builder.build_trt_engine(onnx=onnx_path, precision="fp32", output=tmp_path / "t.engine",
                                     timing_cache=tmp_path / "nowhere" / "t.cache")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("trt_file", [TRT_FILES[0], TRT_FILES[-1]], ids=lambda p: p.stem)
def test_an_engine_that_breaks_its_bound_is_not_written(trt_file, tmp_path, monkeypatch):
    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    onnx_path = tiny_onnx(tmp_path / "t.onnx")
    engine = tmp_path / "t.engine"
    engine.write_bytes(b"the previous engine")
    machine.trt._skew = 0.05  # every map off by 0.05: far past the FP32 bound (max|Δ| 1e-4)
    with pytest.raises(U2Error, match=r"t\.engine: breaks its bound, nothing written: .*max\|Δ\| 0\.05.*"
                                      r"the fp32 bound \(max\|Δ\| ≤ 0\.0001") as exc:
        trt_builder.build_trt_engine(onnx=onnx_path, precision="fp32", output=engine)
    assert "\n" not in str(exc.value)
    assert engine.read_bytes() == b"the previous engine" and not manifest_path(engine).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    result = trt_builder.build_trt_engine(onnx=onnx_path, precision="fp32", output=engine, no_verify=True)
    verification = read_manifest(result.engine)["verification"]
    assert verification["passed"] is None and verification["skipped"] and verification["reason"] == "--no-verify"
    assert "not verified" in result.status_line()
    machine.trt._skew = 0.0
    images = tmp_path / "mine"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(images / f"m{i}.png")
    result = trt_builder.build_trt_engine(onnx=onnx_path, precision="fp32", output=engine, verify_images=images)
    verification = read_manifest(result.engine)["verification"]
    assert verification["passed"] is True and verification["images"]["source"] == "verify-images"
    assert verification["images"]["count"] == 3 and verification["max_abs"] <= 1e-4


@pytest.mark.parametrize("trt_file", TRT_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", ["fp32", "fp16", "qdq"])
def test_an_engine_without_manifest_reads_its_precision_from_its_layers(trt_file, kind, tmp_path, monkeypatch):
    """The precision a tolerance is looked up by, never "unknown": from the engine inspector's layer types."""
    from u2deploy.validate.tolerances import tolerance_for

    machine = Machine(trt_file, LATEST_CUDA).install(monkeypatch)
    precision = {"fp32": "fp32", "fp16": "fp16", "qdq": "int8"}[kind]
    result = trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / f"t_{kind}.onnx", kind), precision=precision,
                                          batch=BatchRange(1, 2, 4), output=tmp_path / "t.engine")
    manifest_path(result.engine).unlink()
    with trt_runner.TensorRTRunner.open(str(result.engine)) as runner:
        assert runner.info.precision == precision
        tolerance_for(runner.info.precision)
    assert {"ICudaEngine.create_engine_inspector", "EngineInspector.execution_context",
            "EngineInspector.get_engine_information", "LayerInformationFormat.JSON"} <= machine.trt_api.used
    assert_names_checked(machine)


def test_an_engine_with_layer_names_only_and_no_manifest_is_refused(tmp_path, monkeypatch):
    machine = Machine(TRT_FILES[-1], LATEST_CUDA).install(monkeypatch)
    result = trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t.onnx"), precision="fp32",
                                          output=tmp_path / "t.engine")
    plan = json.loads(result.engine.read_bytes()[len(b"FAKEPLAN"):])
    plan["layers"] = ["conv0", "sigmoid0"]  # what trtexec writes by default (--profilingVerbosity=layer_names_only)
    result.engine.write_bytes(b"FAKEPLAN" + json.dumps(plan).encode())
    manifest_path(result.engine).unlink()
    with pytest.raises(U2Error, match=r"no manifest beside it \(t\.engine\.json\) says its precision.*"
                                      r"--profilingVerbosity=detailed") as exc:
        trt_runner.TensorRTRunner.open(str(result.engine))
    assert "\n" not in str(exc.value)
    assert machine.cudart._device == {} and machine.cudart._host == {}  # what it had allocated is freed


def test_the_device_is_made_current_in_every_thread_that_calls_the_runner(tmp_path, monkeypatch):
    """--device cuda:1: a worker thread (as u2bench predict's) runs on device 1 too, not on its default 0."""
    machine = Machine(TRT_FILES[-1], LATEST_CUDA, devices=2).install(monkeypatch)
    result = trt_builder.build_trt_engine(onnx=tiny_onnx(tmp_path / "t.onnx"), precision="fp32",
                                          batch=BatchRange(1, 1, 2), output=tmp_path / "t.engine", device=1)
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    outcome: dict[str, object] = {}
    with trt_runner.TensorRTRunner.open(str(result.engine), device="cuda:1") as runner:
        def work():
            try:
                outcome["d0"] = runner.infer(x)["d0"]
                step = runner.bind(x)
                step.call()
                runner.synchronize()
            except BaseException as exc:  # noqa: B036 (reported below)
                outcome["error"] = exc
            outcome["thread"] = threading.get_ident()

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        assert "error" not in outcome, outcome.get("error")
        np.testing.assert_allclose(outcome["d0"], expected_d0(x), atol=1e-6)
    assert (outcome["thread"], 1) in machine.cudart._set_in
    assert machine.cudart._device == {} and machine.cudart._host == {}


@pytest.mark.parametrize("cuda_file", CUDA_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("layout", ["cuda.bindings.runtime", "cuda.cudart"])
def test_probe_finds_tensorrt_cuda_python_and_the_gpu(cuda_file, layout, monkeypatch):
    """The probe itself, through either cuda-python module layout, on the names of each release."""
    from u2deploy.engines.trt_compat import probe_environment

    machine = Machine(TRT_FILES[-1], cuda_file, cc=(7, 5))
    cuda = types.ModuleType("cuda")
    monkeypatch.setitem(sys.modules, "tensorrt", machine.trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    if layout == "cuda.bindings.runtime":
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = machine.cudart
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", machine.cudart)
    else:  # cuda-python before 12.6
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        cuda.cudart = machine.cudart
        monkeypatch.setitem(sys.modules, "cuda.cudart", machine.cudart)
    env = probe_environment(0)
    assert env.trt is machine.trt and env.cudart is machine.cudart
    assert env.version == TrtVersion.parse(TRT_FILES[-1].stem)
    assert env.gpu == GpuInfo("Fake GPU", (7, 5), 0)
    with pytest.raises(U2Error, match="no CUDA device 3 .this machine has 1"):
        probe_environment(3)
    assert {"cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaDeviceProp.name"} <= machine.cuda_api.used
    assert_names_checked(machine)
