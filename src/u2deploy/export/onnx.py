"""PyTorch → ONNX: export, check, simplify, verify against PyTorch, write atomically with metadata.

Exporter choice, on the evidence (torch 2.13, U²-Net†, 2-core CPU): the TorchScript-based exporter
(``dynamo=False``) exports the small model in ~12 s and the full one well inside the 30 s budget,
needs no extra package, and expresses the resize-to-skip-size as Shape→Resize so that dynamic
height and width stay correct. The dynamo exporter gave the same numbers (max|Δ| 2e-7) but took
~88 s for the small model and needs ``onnxscript``; onnxsim makes the two graphs equivalent anyway.
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import __version__, hardware
from ..artifact import ArtifactSpec
from ..data import preprocess
from ..errors import U2Error
from ..files import atomic_path, check_writable, human_size, write_json
from ..model.deploy import DeployModel
from ..model.weights import LoadedWeights, load_model
from ..ort_session import cpu_session, run_outputs
from ..validate import Comparison, compare_maps, tolerance_for
from ..validate.verify import Bound, Verification, VerificationImages, choose_verification_images

MIN_OPSET = 11  # opset 10's Resize has no coordinate_transformation_mode: no half-pixel bilinear
MAX_OPSET = 20  # the TorchScript exporter's ceiling in torch 2.x
INPUT_NAME = "input"
_log = logging.getLogger("u2deploy")


@dataclass
class OnnxExportResult:
    path: Path
    manifest: dict[str, str]
    seconds: float
    size_bytes: int
    nodes_exported: int
    nodes_final: int
    verification: Verification  # against PyTorch: all images, then each other batch and size checked
    simplify_check: Comparison | None
    warnings: list[str] = field(default_factory=list)

    @property
    def vs_torch(self) -> list[tuple[str, Comparison]]:
        """(what was compared, statistics), the main check first."""
        return list(self.verification.checks)

    @property
    def verify_source(self) -> str:
        return self.verification.images.description if self.verification.images else "?"

    @property
    def worst(self) -> Comparison:
        return max((c for _, c in self.vs_torch), key=lambda c: c.max_abs)

    def status_line(self) -> str:
        simplified = self.simplify_check is not None
        nodes = f"{self.nodes_exported}→{self.nodes_final} nodes" if simplified else f"{self.nodes_final} nodes"
        return (f"exported {self.path} ({human_size(self.size_bytes)}) in {self.seconds:.1f} s · {nodes} · "
                f"max|Δ| {self.worst.max_abs:.1g} vs PyTorch on {self.verify_source} · "
                f"next: u2bench latency --model {self.path}")


def default_output(variant: str) -> Path:
    return Path("u2net.onnx" if variant == "full" else "u2netp.onnx")


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise U2Error(f"--opset {opset}: below {MIN_OPSET}, whose Resize cannot express the "
                      "half-pixel bilinear sampling (align_corners=False) U²-Net needs")
    if opset > MAX_OPSET:
        raise U2Error(f"--opset {opset}: above {MAX_OPSET}, the highest this exporter writes")


def _dynamic_axes(names: Sequence[str], batch: bool, hw: bool) -> dict[str, dict[int, str]] | None:
    axes = ({0: "batch"} if batch else {}) | ({2: "height", 3: "width"} if hw else {})
    return {name: dict(axes) for name in (INPUT_NAME, *names)} if axes else None


def _torch_outputs(model: DeployModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch's outputs by the names the export gives them: d0 alone (``saliency``), or d0 … d6."""
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    maps = [out] if isinstance(out, torch.Tensor) else list(out)
    return {name: m.numpy() for name, m in zip(model.output_names, maps, strict=True)}


def _metadata(loaded: LoadedWeights, size: tuple[int, int], opset: int, outputs: str,
              dynamic_batch: bool, dynamic_hw: bool, batch: int) -> dict[str, str]:
    info = loaded.info
    spec = ArtifactSpec(variant=info.variant, precision="fp32", input_size=size,
                        batch=None if dynamic_batch else batch, dynamic_hw=dynamic_hw, mean=info.mean,
                        std=info.std, weights=info.name, weights_sha256=loaded.sha256 or None)
    return {
        "producer": "u2deploy", "u2deploy_version": __version__, **spec.to_metadata(),
        "preprocessing": "u2deploy fast (see u2deploy.data.preprocess)", "opset": str(opset), "outputs": outputs,
        "exporter": "torch.onnx TorchScript", "torch_version": torch.__version__,
        "onnx_version": onnx.__version__, "python": platform.python_version(),
    }


def export_onnx(variant: str | None = "small", weights: str | Path | None = None,
                output: str | Path | None = None, *, size: tuple[int, int] | None = None,
                batch: int = 1, dynamic_batch: bool = False, dynamic_hw: bool = False,
                opset: int = 17, outputs: str = "fused", simplify: bool = True,
                verify_images_dir: str | Path | None = None, n_verify: int = 8) -> OnnxExportResult:
    """Run the whole ONNX stage; raise :class:`U2Error` (and leave no file) if any step fails."""
    started = time.perf_counter()
    _check_options(opset, batch, dynamic_batch, outputs)
    loaded = load_model(variant, weights)
    size = _checked_size(size or loaded.info.input_size)
    output = Path(output) if output is not None else default_output(loaded.info.variant)
    check_writable(output)
    model = DeployModel(loaded.net, outputs).eval()
    chosen = choose_verification_images(Path(verify_images_dir) if verify_images_dir else None, n=n_verify)
    x = chosen.inputs(size, loaded.info.mean, loaded.info.std)
    with atomic_path(output) as tmp:
        graph = _export(model, tmp, output, batch, size, opset, dynamic_batch, dynamic_hw)
        nodes_exported = len(graph.graph.node)
        simplify_check = None
        if simplify:
            # Two images suffice to show the rewrite kept the function; PyTorch parity below uses all.
            graph, simplify_check = _simplify(graph, tmp, x[:max(2, batch)], None if dynamic_batch else batch,
                                              tolerance_for("fp32").max_abs)
        graph = _finish(graph, tmp, _metadata(loaded, size, opset, outputs, dynamic_batch, dynamic_hw, batch))
        verification = _verify_against_torch(model, tmp, output, chosen, x, loaded, size,
                                              None if dynamic_batch else batch, dynamic_hw)
        verification.raise_if_failed(output)
    manifest = {p.key: p.value for p in graph.metadata_props}
    size_bytes = _write_manifest(output, manifest, nodes_exported, len(graph.graph.node), verification)
    return OnnxExportResult(path=output, manifest=manifest, seconds=time.perf_counter() - started,
                            size_bytes=size_bytes, nodes_exported=nodes_exported,
                            nodes_final=len(graph.graph.node), verification=verification,
                            simplify_check=simplify_check)


def _check_options(opset: int, batch: int, dynamic_batch: bool, outputs: str) -> None:
    check_opset(opset)
    if batch < 1:
        raise U2Error(f"--batch {batch}: must be at least 1")
    if dynamic_batch and batch != 1:
        raise U2Error(f"--batch {batch} with --dynamic-batch: choose one (a dynamic-batch export takes any batch)")
    if outputs not in ("fused", "all"):
        raise U2Error(f"--outputs {outputs}: expected fused or all")


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    if min(size) < 32:
        raise U2Error(f"--size {size[0]}x{size[1]}: U²-Net pools five times; use at least 32 pixels")
    return size


def _export(model: DeployModel, tmp: Path, output: Path, batch: int, size: tuple[int, int], opset: int,
            dynamic_batch: bool, dynamic_hw: bool) -> onnx.ModelProto:
    """The TorchScript exporter's graph, written to ``tmp`` and passed through ``onnx.checker``."""
    names = model.output_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings are about Python-side shape math
        torch.onnx.export(model, (torch.zeros(batch, 3, *size),), str(tmp), input_names=[INPUT_NAME],
                          output_names=list(names), opset_version=opset, do_constant_folding=True, dynamo=False,
                          dynamic_axes=_dynamic_axes(names, dynamic_batch, dynamic_hw))
    graph = onnx.load(str(tmp))
    _check(graph, output)
    return graph


def _finish(graph: onnx.ModelProto, tmp: Path, metadata: dict[str, str]) -> onnx.ModelProto:
    """Shapes inferred, our metadata in place of onnxsim's bookkeeping, saved to ``tmp``."""
    graph = onnx.shape_inference.infer_shapes(graph, check_type=True)
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name, graph.producer_version = "u2deploy", __version__
    onnx.save(graph, str(tmp))
    return graph


def _verify_against_torch(model: DeployModel, tmp: Path, output: Path, chosen: VerificationImages, x: np.ndarray,
                          loaded: LoadedWeights, size: tuple[int, int], static_batch: int | None,
                          dynamic_hw: bool) -> Verification:
    """Every output of the written graph in ONNX Runtime against PyTorch's: on all images, then at the
    other batch sizes and input sizes the graph was made dynamic for."""
    session = cpu_session(tmp)
    reference = _torch_outputs(model, x)
    atol = tolerance_for("fp32").max_abs
    checks = [(f"{len(x)} images at {size[0]}×{size[1]}",
               compare_maps(run_outputs(session, x, static_batch), reference, atol))]
    if static_batch is None:
        for b in (1, min(16, len(x))):
            got = dict(zip(reference, session.run(None, {INPUT_NAME: x[:b]}), strict=True))
            checks.append((f"batch {b}", compare_maps(got, {k: v[:b] for k, v in reference.items()}, atol)))
    if dynamic_hw:
        for other in ((size[0] * 3 // 4 + 5, size[1] * 5 // 4 + 3), (size[0] + 13, size[1] - 7)):
            xo = preprocess.fast(chosen.images[:2], other, loaded.info.mean, loaded.info.std)
            checks.append((f"{other[0]}×{other[1]}",
                           compare_maps(run_outputs(session, xo, static_batch), _torch_outputs(model, xo), atol)))
    return Verification(f"{output.name} (onnxruntime cpu)", "PyTorch (fp32)", Bound.for_precision("fp32"),
                        chosen, tuple(checks))


def _write_manifest(output: Path, manifest: dict[str, str], nodes_exported: int, nodes_final: int,
                    verification: Verification) -> int:
    """``OUTPUT.json`` beside the written model; returns the model's size in bytes."""
    size_bytes = output.stat().st_size
    write_json(Path(f"{output}.json"), {
        **manifest, "file": output.name, "size_bytes": size_bytes,
        "nodes": {"exported": nodes_exported, "final": nodes_final},
        "verification": verification.to_manifest(),
        "built_on": hardware.build_host(),
    })
    return size_bytes


def _check(graph: onnx.ModelProto, output: Path) -> None:
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise U2Error(f"{output}: exported graph fails onnx.checker ({str(exc).splitlines()[0]})") from None


def _simplify(graph: onnx.ModelProto, tmp: Path, x: np.ndarray, batch: int | None,
              atol: float | None) -> tuple[onnx.ModelProto, Comparison]:
    """onnxsim, then the simplified graph checked against the exported one on the same inputs."""
    import onnxsim

    before = run_outputs(cpu_session(tmp), x, batch)
    simplified, ok = onnxsim.simplify(graph)
    if not ok:
        raise U2Error(f"{tmp.name}: onnxsim could not validate the simplified graph; try --no-simplify")
    _check(simplified, tmp)
    onnx.save(simplified, str(tmp))
    check = compare_maps(run_outputs(cpu_session(tmp), x, batch), before, atol)
    if not check.passed:
        raise U2Error(f"simplified graph disagrees with the exported one: {check.summary()}; try --no-simplify")
    return simplified, check
