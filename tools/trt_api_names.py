"""Extract the real TensorRT Python API names of one version from NVIDIA's bindings wheel on PyPI.

Why: this project builds and runs TensorRT engines for 8.6, 10.x and 11.x, but no TensorRT (and no
GPU) is available where it is developed and tested. The ``tensorrt-*-bindings`` wheels are real (only
the ``-libs`` wheels are download stubs): their ``tensorrt.so`` is the pybind11 module that defines
every class, method, property and enum value of that version. Here it is *imported*, not grepped:
the few C entry points it needs from ``libnvinfer``/``libnvonnxparser``/``libnvinfer_plugin``
(``createInferBuilder_INTERNAL`` and the like) are satisfied by throw-away stub libraries compiled
on the spot, which are never called because nothing is built or run, only ``dir()`` is read. The
result is the exact, class-qualified name set (``BuilderFlag.INT8``, ``IBuilderConfig.int8_calibrator``)
that ``tests/test_trt_api_names.py`` checks the project's code paths against.

Usage (needs pip, a C compiler and binutils' ``nm``; the wheel must match this Python, e.g. cp311)::

    python tools/trt_api_names.py 8.6.1 10.0.1 10.16.1.11 11.0.0.114 11.4.0.106
    python tools/trt_api_names.py --wheel tensorrt_cu12_bindings-10.9.0.34-cp311-...whl

Writes ``tests/data/trt_api/<version>.txt``: a commented header naming the wheel and its sha256, then
one name per line: every module-level name, and ``Class.member`` for the classes in :data:`CLASSES`
(``--all`` keeps every class).

The runner's device memory goes through NVIDIA's cuda-python, whose runtime module moved
(``cuda.cudart`` up to 12.x, ``cuda.bindings.runtime`` from 12.6 on, the old name gone in 13). Its
wheels import without a GPU, so ``--cuda-python SPEC`` (e.g. ``cuda-bindings==13.5.0``) installs one
into a temporary folder and writes ``tests/data/cuda_api/<dist>-<version>.txt`` the same way.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "data" / "trt_api"

# The classes whose members the builder, the calibrator and the runner touch (and their neighbours,
# so that a reviewer can see what else a version offers). Module-level names are always kept.
CLASSES = (
    "Builder", "BuilderFlag", "CalibrationAlgoType", "DataType", "DeviceType", "Dims",
    "EngineCapability", "EngineInspector", "ExecutionContextAllocationStrategy", "HardwareCompatibilityLevel",
    "IBuilderConfig", "ICudaEngine", "IExecutionContext", "IHostMemory", "IInt8Calibrator",
    "IInt8EntropyCalibrator2", "ILogger", "INetworkDefinition", "IOptimizationProfile", "ITensor",
    "ITimingCache", "LayerInformationFormat", "Logger", "MemoryPoolType", "NetworkDefinitionCreationFlag", "OnnxParser",
    "OnnxParserFlag", "ParserError", "PreviewFeature", "ProfilingVerbosity", "QuantizationFlag",
    "Runtime", "TacticSource", "TensorFormat", "TensorIOMode", "TensorLocation",
)

# Which PyPI project carries the bindings of a TensorRT major version (8.6 has one un-suffixed wheel).
PACKAGES = {8: "tensorrt-bindings", 10: "tensorrt-cu12-bindings", 11: "tensorrt-cu13-bindings"}

# Run inside a child process whose LD_LIBRARY_PATH points at the stubs: imports the bindings package
# (so the names its __init__.py adds, such as nptype and volume, are seen too) and dumps dir() as JSON.
_DUMP = r"""
import json, sys
import tensorrt_bindings as trt
names = {}
for top in dir(trt):
    if top.startswith("_"):
        continue
    obj = getattr(trt, top)
    members = []
    if isinstance(obj, type):
        members = [m for m in dir(obj) if not m.startswith("_")]
        members += [m for m in getattr(obj, "__members__", {}) if m not in members]
    names[top] = sorted(members)
json.dump({"version": getattr(trt, "__version__", ""), "names": names}, sys.stdout)
"""


# cuda-python: the runtime module's names, and the members of the types the runner reads.
CUDA_CLASSES = ("cudaMemcpyKind", "cudaError_t", "cudaStreamCaptureMode", "cudaDeviceProp")

_CUDA_DUMP = r"""
import json, sys
CLASSES = sys.argv[1].split(",")
try:
    from cuda.bindings import runtime as rt
    where = "cuda.bindings.runtime"
except ImportError:
    from cuda import cudart as rt
    where = "cuda.cudart"
names = {}
for top in dir(rt):
    if top.startswith("_"):
        continue
    obj = getattr(rt, top)
    members = []
    if top in CLASSES:
        members = [m for m in dir(obj) if not m.startswith("_")]
    names[top] = sorted(members)
json.dump({"module": where, "names": names}, sys.stdout)
"""


def cuda_python(spec: str, out_dir: Path) -> Path:
    """Install ``spec`` (cuda-python or cuda-bindings, with cuda-pathfinder) aside and dump its names."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        # new layouts import cuda.pathfinder at load time; one pip call keeps the `cuda` namespace whole
        extra = ["cuda-pathfinder"] if "bindings" in spec or not spec.startswith("cuda-python==12.") else []
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--target", str(site), spec, *extra], check=True)
        dist = next(d for d in site.glob("cuda_*.dist-info") if "pathfinder" not in d.name)
        dist_name, dist_version = dist.name[: -len(".dist-info")].rsplit("-", 1)
        done = subprocess.run([sys.executable, "-c", _CUDA_DUMP, ",".join(CUDA_CLASSES)],
                              env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp, capture_output=True,
                              text=True)
        if done.returncode != 0:
            sys.exit(f"{spec}: importing the runtime module failed:\n{done.stderr}")
        dumped = json.loads(done.stdout)
    lines = sorted(set(dumped["names"]) | {f"{top}.{m}" for top, ms in dumped["names"].items() for m in ms})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{dist_name.replace('_', '-')}-{dist_version}.txt"
    header = [
        f"# {dist_name} {dist_version} runtime API names, generated by tools/trt_api_names.py",
        f"# source: pip install {spec} (PyPI); {dumped['module']} imported (no GPU needed), dir() read",
        f"# scope: every module-level name; members of {', '.join(CUDA_CLASSES)}",
    ]
    target.write_text("\n".join(header + lines) + "\n")
    return target


def download(version: str, dest: Path) -> Path:
    """The bindings wheel of ``version`` for this interpreter, fetched with pip (no dependencies)."""
    major = int(version.split(".")[0])
    if major not in PACKAGES:
        sys.exit(f"no known bindings package for TensorRT {version}")
    spec = f"{PACKAGES[major]}=={version}"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", str(dest), spec], check=True)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        sys.exit(f"pip found no wheel for {spec}")
    return wheels[-1]


def _undefined_symbols(so: Path) -> list[str]:
    """Strong undefined dynamic symbols of ``so`` that this process cannot already resolve."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], check=True, capture_output=True,
                         text=True).stdout
    # What this process (libc, libpython) and the system libraries ``so`` links against (libstdc++,
    # libgcc_s, libm) define is not ours to stub: only TensorRT's own entry points are.
    resolvers = [ctypes.CDLL(None)]
    for lib in _needed(so, pattern=r"lib(?!nv)[^\]]+"):
        try:
            resolvers.append(ctypes.CDLL(lib))
        except OSError:
            pass
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] != "U":
            continue  # weak ("w") symbols may stay unresolved
        name = parts[1].split("@")[0]
        if not any(hasattr(lib, name) for lib in resolvers):
            symbols.append(name)
    return sorted(set(symbols))


def _needed(so: Path, pattern: str = r"libnv[^\]]+") -> list[str]:
    """The DT_NEEDED entries of ``so`` that match ``pattern`` (by default TensorRT's own libraries)."""
    out = subprocess.run(["readelf", "-d", str(so)], check=True, capture_output=True, text=True).stdout
    return re.findall(rf"Shared library: \[({pattern})\]", out)


def build_stubs(so: Path, workdir: Path) -> Path:
    """Compile do-nothing libraries under the names ``so`` links against, defining what it needs."""
    symbols = _undefined_symbols(so)
    for name in symbols:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            sys.exit(f"cannot stub symbol {name!r}")
    stub_dir = workdir / "stubs"
    stub_dir.mkdir()
    source = stub_dir / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in symbols))
    for soname in _needed(so):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(stub_dir / soname), f"-Wl,-soname,{soname}",
                        str(source)], check=True)
    return stub_dir


def extract(wheel: Path) -> tuple[str, dict[str, list[str]]]:
    """(version, {module-level name: members}) read from the compiled module inside ``wheel``."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(work / "site")
        modules = list((work / "site").glob("tensorrt_bindings/tensorrt*.so"))
        if len(modules) != 1:
            sys.exit(f"{wheel.name}: expected one tensorrt_bindings/tensorrt*.so, found {modules}")
        stub_dir = build_stubs(modules[0], work)
        env = dict(os.environ, LD_LIBRARY_PATH=str(stub_dir), PYTHONPATH=str(work / "site"))
        done = subprocess.run([sys.executable, "-c", _DUMP], env=env, cwd=work, capture_output=True,
                              text=True)
        if done.returncode != 0:
            sys.exit(f"{wheel.name}: importing the bindings failed:\n{done.stderr}")
        dumped = json.loads(done.stdout)
    return dumped["version"], dumped["names"]


def name_lines(names: dict[str, list[str]], keep_all: bool) -> list[str]:
    lines = set(names)
    for top, members in names.items():
        if keep_all or top in CLASSES:
            lines.update(f"{top}.{member}" for member in members)
    return sorted(lines)


def write(wheel: Path, out_dir: Path, keep_all: bool) -> Path:
    version, names = extract(wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{version}.txt"
    header = [
        f"# TensorRT {version} Python API names, generated by tools/trt_api_names.py",
        f"# source: {wheel.name} (PyPI) sha256 {digest}",
        "# method: the wheel's compiled tensorrt module imported against stub libnv* libraries, dir() read",
        "# scope: every module-level name; members of "
        + ("every class" if keep_all else "the classes in CLASSES"),
    ]
    target.write_text("\n".join(header + name_lines(names, keep_all)) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", help="TensorRT versions to fetch from PyPI, e.g. 10.16.1.11")
    parser.add_argument("--wheel", type=Path, action="append", default=[], help="an already downloaded wheel")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--all", action="store_true", help="keep the members of every class")
    parser.add_argument("--cuda-python", action="append", default=[], metavar="SPEC",
                        help="also dump a cuda-python runtime, e.g. cuda-bindings==13.5.0")
    args = parser.parse_args()
    if not args.versions and not args.wheel and not args.cuda_python:
        parser.error("name at least one version, --wheel or --cuda-python")
    for spec in args.cuda_python:
        target = cuda_python(spec, ROOT / "tests" / "data" / "cuda_api")
        print(f"{target.relative_to(ROOT)}: written")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = list(args.wheel)
        for version in args.versions:
            dest = Path(tmp) / version
            dest.mkdir()
            wheels.append(download(version, dest))
        for wheel in wheels:
            target = write(wheel, args.out_dir, args.all)
            count = sum(1 for line in target.read_text().splitlines() if not line.startswith("#"))
            print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: {count} names")


if __name__ == "__main__":
    main()
