"""The export stage of each row of the format table (:attr:`u2deploy.formats.Build.stage` names a
function here): the library call its ``u2export`` command makes, from one request every stage takes.

A stage returns a :class:`StagePlan` and builds nothing yet: the key a rerun compares (what the
artifact is built from and with), the options that make its command line rebuild the same file, and
the call that builds it. ``u2bench benchmark`` builds every row through these, so a benchmarked
artifact is the one its printed command makes; a new format adds its function here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import formats, hardware
from ..files import sha256_of


class Built(Protocol):
    """What every export returns: the file, and the one status line ``u2export`` prints."""

    path: Path

    def status_line(self) -> str: ...


@dataclass(frozen=True)
class StageRequest:
    """One artifact to build, as the benchmark asks for it."""

    name: str  # FORMAT:PRECISION
    output: Path
    source: Path | None  # the artifact of the row's Build.source; None for the one built from the network
    variant: str
    weights: Path | None  # None: the variant's embedded weights
    weights_sha256: str
    size: tuple[int, int]
    calib_dir: Path | None
    calib_digest: str | None  # the images INT8 calibration samples (names and sizes)
    calib_all_digest: str | None  # every image of the folder (the FP16 stage draws its 8 from these)
    calib_num: int
    seed: int

    @property
    def precision(self) -> str:
        return self.name.partition(":")[2]

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    def source_key(self) -> dict[str, Any]:
        assert self.source is not None, f"{self.name} is built from another artifact"
        return {"stage": self.name, "source_sha256": sha256_of(self.source)}

    def sampled(self) -> dict[str, Any]:
        """INT8: the calibration sample, in the key."""
        return {"calib_images": self.calib_digest, "num": self.calib_num, "seed": self.seed} if self.int8 else {}

    def sample_flags(self, num: str = "--num", seed: str = "--seed") -> list[str]:
        calib = ["--calib", str(self.calib_dir)] if self.calib_dir is not None else []
        return [*calib, num, str(self.calib_num), seed, str(self.seed)] if self.int8 else []


@dataclass(frozen=True)
class StagePlan:
    key: dict[str, Any]  # what a rerun compares before it reuses the file
    source: list[str]  # the command's source argument(s), right after its name
    options: list[str]  # this build's options, after the row's own, ending with -o OUTPUT
    build: Callable[[], Built]

    def command(self, request: StageRequest) -> str:
        """The row's ``u2export`` command for this build: what rebuilds the same artifact."""
        import shlex

        fmt, precision = formats.by_name(request.name)
        tokens = shlex.split(fmt.build_command(precision) or "")
        return shlex.join([*tokens[:2], *self.source, *tokens[2:], *self.options])


def onnx_fp32(request: StageRequest) -> StagePlan:
    from .onnx import export_onnx

    return StagePlan(
        {"stage": request.name, "variant": request.variant, "weights_sha256": request.weights_sha256,
         "size": list(request.size), "batch": 1, "opset": 17}, [],
        ["--variant", request.variant, *(["--weights", str(request.weights)] if request.weights else []),
         "--size", f"{request.size[0]}x{request.size[1]}", "-o", str(request.output)],
        lambda: export_onnx(request.variant, request.weights, request.output, size=request.size))


def onnx_fp16(request: StageRequest) -> StagePlan:
    from .fp16 import convert_fp16_model

    source = request.source
    assert source is not None
    calib = ["--calib", str(request.calib_dir)] if request.calib_dir is not None else []
    return StagePlan({**request.source_key(), "calib_images": request.calib_all_digest},
                     [str(source)], [*calib, "-o", str(request.output)],
                     lambda: convert_fp16_model(source, request.output, calib_dir=request.calib_dir))


def onnx_int8(request: StageRequest) -> StagePlan:
    from ..calibration.quantize import quantize_model

    source = request.source
    assert source is not None
    return StagePlan({**request.source_key(), **request.sampled(), "method": "minmax"},
                     [str(source)], [*request.sample_flags(), "-o", str(request.output)],
                     lambda: quantize_model(source, request.calib_dir, request.output, target="cpu",
                                            num=request.calib_num, seed=request.seed))


def openvino_ir(request: StageRequest) -> StagePlan:
    from .openvino import export_openvino

    source = request.source
    assert source is not None
    # NNCF calibrates like u2export quantize (min-max ranges, no bias correction) since its fix: an IR
    # calibrated before it carries no such key and is rebuilt
    method = {"calibration": "nncf minmax, no bias correction"} if request.int8 else {}
    return StagePlan({**request.source_key(), **request.sampled(), **method},
                     [str(source)], [*request.sample_flags(), "-o", str(request.output)],
                     lambda: export_openvino(source, request.output, int8=request.int8,
                                             fp16=request.precision == "fp16",
                                             calib_dir=request.calib_dir if request.int8 else None,
                                             num=request.calib_num, seed=request.seed))


def trt_engine(request: StageRequest) -> StagePlan:
    from .trt import build_trt_engine

    source = request.source
    assert source is not None
    return StagePlan(
        {**request.source_key(), **request.sampled(), "gpu": (hardware.gpu() or {}).get("name"),
         "tensorrt": hardware.software().get("tensorrt")},
        ["--onnx", str(source)], [*request.sample_flags("--calib-images", "--calib-seed"), "-o", str(request.output)],
        lambda: build_trt_engine(onnx=source, precision=request.precision, output=request.output,
                                 calib_dir=request.calib_dir if request.int8 else None,
                                 calib_images=request.calib_num if request.int8 else None,
                                 calib_seed=request.seed))


def web_site(request: StageRequest) -> StagePlan:
    from .web import export_web, pinned_version

    source = request.source
    assert source is not None
    # the site is the benchmark's own output folder (its ledger owns it), so a rebuild replaces it
    return StagePlan({**request.source_key(), "onnxruntime_web": pinned_version()},
                     [str(source)], ["-o", str(request.output), "--overwrite"],
                     lambda: export_web(source, request.output, overwrite=True))
