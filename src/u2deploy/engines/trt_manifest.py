"""The JSON manifest written beside every engine (``model.engine.json``), and what it lets a runner check.

An engine file is opaque and tied to the TensorRT release and the GPU that built it; loading it
elsewhere fails deep inside TensorRT with a message that names neither. The manifest records both,
with the precision, the input profile and the source ONNX (its sha256 and metadata_props such as
variant, input_size, mean and std), so that the runner can say in one line what differs and how
to rebuild, and fill :class:`~u2deploy.engines.base.ArtifactInfo` with what the engine cannot tell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import U2Error
from ..files import sha256_of as sha256_file
from ..files import write_json
from .trt_compat import GpuInfo, TrtVersion, parse_cc

KIND = "u2deploy.tensorrt-engine"
SCHEMA = 1


def manifest_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def build_manifest(*, engine: Path, tensorrt_version: str, gpu: GpuInfo, precision: str,
                   plan: dict[str, Any], input_name: str, output_names: list[str],
                   source_onnx: Path, onnx_metadata: dict[str, str], build_seconds: float,
                   rebuild: str, calibration: dict[str, Any] | None = None,
                   timing_cache: Path | None = None, name: str | None = None,
                   intermediates: dict[str, Any] | None = None,
                   verification: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the engine in the file ``engine`` (its sha256 is taken from the file), to be known as
    ``name`` (default: the file's own name; the builder hashes the temporary file before renaming it)."""
    from .. import __version__, hardware

    profile = plan.get("profile")
    return {
        "kind": KIND,
        "schema": SCHEMA,
        "engine": name or engine.name,
        "engine_bytes": engine.stat().st_size,
        "engine_sha256": sha256_file(engine),
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": gpu.name, "compute_capability": gpu.cc},
        "precision": precision,
        "int8_mode": plan.get("int8_mode"),
        "strongly_typed": plan.get("strongly_typed", False),
        "network_flags": list(plan.get("network_flags", ())),
        "builder_flags": list(plan.get("builder_flags", ())),
        "cleared_builder_flags": list(plan.get("cleared_flags", ())),  # on by default, turned off (TF32 for fp32)
        "version_compatible": "VERSION_COMPATIBLE" in plan.get("builder_flags", ()),
        "hardware_compatibility": plan.get("hardware_compatibility", "NONE"),
        "workspace_bytes": plan.get("workspace_bytes"),
        "inputs": {input_name: profile},
        "outputs": output_names,
        "source_onnx": {"path": str(source_onnx), "sha256": sha256_file(source_onnx),
                        "kind": plan.get("onnx_kind"), "metadata": dict(onnx_metadata)},
        "calibration": calibration,
        # the ONNX files made on the way (the build folder beside the engine), or None: see u2deploy.export.trt
        "intermediates": intermediates,
        "verification": verification,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "build_seconds": round(build_seconds, 1),
        "u2deploy_version": __version__,
        "built_on": hardware.build_host(),
        "rebuild": rebuild,
    }


def write_manifest(engine: Path, manifest: dict[str, Any]) -> Path:
    return write_json(manifest_path(engine), manifest)


def read_manifest(engine: str | Path) -> dict[str, Any] | None:
    """The manifest beside ``engine``; None when there is none; a U2Error line when it is unreadable."""
    path = manifest_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise U2Error(f"{path}: unreadable engine manifest ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise U2Error(f"{path}: not a u2deploy engine manifest")
    return data


def _rebuild_hint(manifest: dict[str, Any]) -> str:
    command = manifest.get("rebuild")
    return f"rebuild it here: {command}" if command else "rebuild it here with u2export trt"


def check_compatible(engine: str | Path, manifest: dict[str, Any], running: TrtVersion,
                     gpu: GpuInfo) -> list[str]:
    """Refuse, in one line, an engine made by another TensorRT release or for another kind of GPU.

    Version-compatible engines load in the same or a later release of the same major version;
    hardware-compatible (AMPERE_PLUS) ones on any GPU of compute capability 8.0 or newer. A GPU of
    another name but the same compute capability loads but may run slower: that is a warning.
    """
    name = Path(engine).name
    built = TrtVersion.parse(str(manifest.get("tensorrt_version", "0.0")))
    if built.release != running.release:
        portable = (manifest.get("version_compatible") and built.major == running.major
                    and running.release >= built.release)
        if not portable:
            raise U2Error(f"{name} was built by TensorRT {built}, this is TensorRT {running}: engines "
                          f"only load in the release that built them; {_rebuild_hint(manifest)}")
    warnings: list[str] = []
    built_gpu = manifest.get("gpu") or {}
    try:
        built_cc = parse_cc(built_gpu.get("compute_capability", ""))
    except ValueError:
        return warnings
    level = manifest.get("hardware_compatibility", "NONE")
    if built_cc != gpu.compute_capability:
        if not (level == "AMPERE_PLUS" and gpu.compute_capability >= (8, 0)):
            raise U2Error(f"{name} was built for {built_gpu.get('name', '?')} (compute capability "
                          f"{built_cc[0]}.{built_cc[1]}), this GPU is {gpu}: engines only load on the "
                          f"kind of GPU that built them; {_rebuild_hint(manifest)}")
    elif built_gpu.get("name") and built_gpu.get("name") != gpu.name and level == "NONE":
        warnings.append(f"{name} was built on {built_gpu['name']}, running on {gpu.name} "
                        f"(same compute capability {gpu.cc}): it loads, but tactics were timed elsewhere")
    return warnings
