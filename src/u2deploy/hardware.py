"""What a timing was measured on: a number without its CPU, GPU, driver and library versions is not a result.

Everything here is read cheaply (``/proc``, ``importlib.metadata``, one ``nvidia-smi`` query), so it can
be attached to every result. Library versions come from package metadata, so describing the machine
never imports TensorRT or ONNX Runtime.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .plural import plural

# The instruction sets inference kernels dispatch on (x86 /proc/cpuinfo "flags", ARM "Features").
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "bf16")
# u8×s8 dot products that accumulate in 32 bits. Without one of them x86 kernels (ONNX Runtime's MLAS,
# oneDNN) multiply with VPMADDUBSW, whose int16 sum of two adjacent products saturates.
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
_PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "numpy")


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty off Linux)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs: what BLAS libraries size their thread pools by."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        fields = dict((k.strip(), v.strip()) for k, v in
                      (line.split(":", 1) for line in block.splitlines() if ":" in line))
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields.get("processor"))))
    return len(cores) or None


def _mem_total_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return round(int(match.group(1)) / 2**20, 1) if match else None


def _amd_core(family: int, model: int) -> str | None:
    """AMD's core generation from the CPUID family and model (what "AMD EPYC" alone does not say)."""
    if family == 23:
        return "Zen 2" if model >= 0x30 else "Zen / Zen+"
    if family == 25:
        return "Zen 4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF else "Zen 3"
    if family == 26:
        return "Zen 5"
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask on Linux): every default thread count's source."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@cache
def cpu() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    usable = usable_cpus()
    family, model = (int(info[k]) if info.get(k, "").isdigit() else None for k in ("cpu family", "model"))
    core = (_amd_core(family, model) if info.get("vendor_id") == "AuthenticAMD" and family is not None
            and model is not None else None)
    name = info.get("model name") or platform.processor() or platform.machine()
    return {
        "model": f"{name} ({core})" if core and core not in name else name,
        "family": family,
        "model_number": model,
        "x86": platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "physical_cores": _physical_cores(),
        "isa": [f for f in _ISA_FLAGS if f in flags],
        "virtualised": "hypervisor" in flags,
        "memory_gib": _mem_total_gib(),
    }


def has_int8_dot_product(isa: list[str] | None = None) -> bool:
    """Whether the CPU reports an int8 dot product that accumulates in 32 bits (``INT8_DOT_PRODUCT``)."""
    return any(f in INT8_DOT_PRODUCT for f in (cpu()["isa"] if isa is None else isa))


def int8_saturates(info: dict[str, Any] | None = None) -> bool | None:
    """True on x86 without an int8 dot product (VPMADDUBSW's int16 pair sums saturate); False where
    int8 sums are exact (VNNI, AMX, ARM); None when the instruction sets could not be read."""
    c = info or cpu()
    if not c.get("x86", True):
        return False  # ARM's kernels widen before they add, dot product or not
    if not c["isa"]:
        return None
    return not has_int8_dot_product(c["isa"])


def isa_line(info: dict[str, Any] | None = None) -> str:
    """The CPU and the instruction sets that decide int8 speed and accuracy, for captions and manifests."""
    c = info or cpu()
    saturates = int8_saturates(c)
    dot = {True: "no int8 dot product: u8×s8 saturates", False: "int8 sums exact",
           None: "int8 dot product unknown"}[saturates]
    return f"{c['model']} [{' '.join(c['isa']) or 'instruction sets not read'}; {dot}]"


def build_host() -> dict[str, Any]:
    """What an artifact manifest records of the machine that built and verified it."""
    c = cpu()
    return {"cpu": c["model"], "isa": c["isa"], "int8_saturates": int8_saturates(c),
            "gpu": _nvidia_smi().get("name") or None}


def _nvidia_smi() -> dict[str, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, driver = first.partition(",")
    return {"name": name.strip(), "driver": driver.strip()} if first else {}


@cache
def gpu() -> dict[str, Any] | None:
    """The CUDA device PyTorch sees (None without one), with its driver and CUDA/cuDNN versions."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    smi = _nvidia_smi()
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": smi.get("driver"),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "devices_visible": torch.cuda.device_count(),
    }


def tf32_capable() -> bool:
    """TF32 exists from Ampere (compute capability 8.0) on; before that the flag changes nothing."""
    info = gpu()
    return info is not None and int(info["compute_capability"].split(".")[0]) >= 8


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def software() -> dict[str, Any]:
    versions = {name: _version(name) for name in _PACKAGES}
    return {
        "python": platform.python_version(),
        **{k: v for k, v in versions.items() if v is not None},
        "os": f"{platform.system()} {platform.release()}",
    }


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages, where the OS reports them: how contended the CPU was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def describe(threads: int | None = None) -> dict[str, Any]:
    """Hardware and software of this run, with the load average at the time."""
    return {"cpu": cpu(), "threads_used": threads, "gpu": gpu(), "load_average": load_average(),
            "software": software()}


def one_line(hw: dict[str, Any]) -> str:
    """A caption for tables and plots."""
    c = hw["cpu"]
    threads = plural(hw["threads_used"], "thread") if hw.get("threads_used") else "? threads"
    parts = [f"{isa_line(c)} ({plural(c['usable_cpus'], 'CPU')}, {threads} used)"]
    if hw.get("gpu"):
        g = hw["gpu"]
        parts.append(f"{g['name']} (driver {g.get('driver') or '?'}, CUDA {g.get('cuda_runtime')})")
    sw = hw["software"]
    libs = ", ".join(f"{k} {sw[k]}" for k in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy")
                     if k in sw)
    parts.append(f"Python {sw['python']}, {libs}")
    if hw.get("load_average"):
        parts.append(f"load average {hw['load_average'][0]}")
    return "; ".join(parts)
