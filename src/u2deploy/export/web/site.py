"""``u2export web``: an ONNX artifact → a static folder that removes backgrounds in the browser.

The folder holds the model, ``u2deploy.json`` (the artifact's :class:`~u2deploy.artifact.ArtifactSpec`
and the file names, so the JavaScript hard-codes nothing), the page and the ES module
(``assets/``: ``u2deploy.mjs``, its exact port of the ``fast`` processing, ``index.html``), the
onnxruntime-web files it imports (:mod:`.runtime`), and ``_headers`` with the COOP/COEP headers for
hosts that read that file. It is staged in a hidden sibling folder and renamed into place, so a failed
export leaves nothing; an existing site is replaced only with ``overwrite``, and a folder that is not
one of these sites never.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ...artifact import ArtifactSpec
from ...data.images import MAX_PIXELS
from ...errors import U2Error
from ...files import human_size, sha256_of
from ...formats import by_key, default_output
from .resize_order import pillow_resize_order
from .runtime import FILES, Runtime, find_runtime

GENERATOR = "u2export web"
SPEC_FILE = "u2deploy.json"
# The page refuses images with a side under this: nothing to find in them, and the map would be a blur.
MIN_SIDE = 8
ASSETS = ("index.html", "app.mjs", "u2deploy.mjs", "processing.mjs", "pillow.mjs")
HEADERS = ("Cross-Origin-Opener-Policy: same-origin", "Cross-Origin-Embedder-Policy: require-corp")
RUNTIME_FOLDER = "ort"


@dataclass
class WebSite:
    """What ``u2export web`` wrote (for the status line and the tests)."""

    path: Path
    artifact: Path
    spec: ArtifactSpec
    input_size: tuple[int, int]
    runtime: Runtime
    backends: tuple[str, ...]
    first_load_bytes: int  # what a visitor downloads before the first mask (WASM): page, module, runtime, model
    size_bytes: int
    notes: list[str] = field(default_factory=list)
    replaced: bool = False

    def status_line(self) -> str:
        h, w = self.input_size
        notes = "".join(f" · note: {n}" for n in self.notes)
        return (f"wrote {self.path} ({human_size(self.size_bytes)}; first load {human_size(self.first_load_bytes)}) · "
                f"{self.artifact.name} {self.spec.precision} at {h}×{w} on {' and '.join(self.backends)} · "
                f"onnxruntime-web {self.runtime.version or '?'}{notes} · "
                f"next: python -m u2deploy.export.web.serve {self.path}")


def export_web(artifact: str | Path, output: str | Path | None = None, *, ort_web: str | Path | None = None,
               overwrite: bool = False, webgpu: bool = False) -> WebSite:
    """Write the site for ``artifact`` (an ``.onnx`` from ``u2export onnx``, ``fp16`` or ``quantize``) into
    ``output`` (default: the format table's name beside it, ``u2netp_int8_web/``)."""
    from ..triton.artifacts import read_artifact  # the one reader of an artifact's I/O contract and spec

    artifact = Path(artifact)
    if artifact.suffix.lower() != ".onnx":
        raise U2Error(f"{artifact}: u2export web takes an ONNX artifact (.onnx, from u2export onnx, fp16 or quantize)")
    facts = read_artifact(artifact)
    spec, size = facts.spec, facts.input_size
    runs = by_key("web").precisions
    if output is None and spec.precision not in runs:
        raise U2Error(f"{artifact}: a {spec.precision} artifact; the browser runs {', '.join(runs)}")
    output = Path(output) if output is not None else default_output("web", spec.precision, artifact)
    if facts.batch_range is not None and facts.batch_range[0] > 1:
        raise U2Error(f"{artifact}: takes batches of {facts.batch_range[0]}; the browser runs one image at a time "
                      "(export with --batch 1 or --dynamic-batch)")
    if spec.quant_target == "tensorrt":
        raise U2Error(f"{artifact}: its Q/DQ is for TensorRT (symmetric int8, exact only emulated in float); "
                      "quantize for the browser with u2export quantize --target cpu")
    backends = ("wasm", "webgpu") if webgpu else ("wasm",)
    runtime = find_runtime(ort_web, backends)
    existing = _check_output(output, overwrite)
    notes = [n for n in (runtime.note(),) if n]

    import onnx

    model = onnx.load(str(artifact), load_external_data=False)
    files: dict[str, Path | bytes] = {artifact.name: artifact}
    entry = {"model": _model_entry(artifact.name, model, size, facts)}
    if webgpu:
        entry["webgpu"] = _webgpu_entry(artifact, model, size, facts, files, notes)
    for name in ASSETS:
        files[name] = resources.files(__package__).joinpath("assets", name).read_bytes()
    for path in runtime.files(backends):
        files[f"{RUNTIME_FOLDER}/{path.name}"] = path
    description = {
        "generator": GENERATOR, "artifact": artifact.name,
        "spec": {"variant": spec.variant, "precision": spec.precision, "input_size": list(size),
                 "mean": list(spec.mean), "std": list(spec.std), "weights": spec.weights,
                 "weights_sha256": spec.weights_sha256, "quant_target": spec.quant_target},
        "metadata": spec.to_metadata(),
        **entry,
        "runtime": {"onnxruntime_web": runtime.version,
                    **{b: {"module": f"{RUNTIME_FOLDER}/{FILES[b][0]}", "folder": f"{RUNTIME_FOLDER}/"}
                       for b in backends},
                    "sha256": {f"{RUNTIME_FOLDER}/{p.name}": sha256_of(p) for p in runtime.files(backends)}},
        "resize_order": pillow_resize_order(),  # so that the JS resizes as u2bench predict does here
        "limits": {"max_pixels": MAX_PIXELS, "min_side": MIN_SIDE},
        "headers": list(HEADERS),
    }
    if not webgpu:
        description["webgpu"] = None
    files[SPEC_FILE] = (json.dumps(description, indent=2) + "\n").encode()
    files["_headers"] = ("/*\n" + "".join(f"  {h}\n" for h in HEADERS)).encode()
    _write(output, files, existing)
    first_load = sum(_size(files[n]) for n in files if n not in _webgpu_only(description, backends))
    return WebSite(output, artifact, spec, size, runtime, backends, first_load, sum(map(_size, files.values())),
                   notes, replaced=existing)


def _model_entry(name: str, model, size: tuple[int, int], facts) -> dict:
    """The model's file, tensor names and the values of its free dimensions (batch 1, the site's H×W)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    free = {d.dim_param: v for d, v in zip(dims, (1, 3, *size)) if d.dim_param}
    return {"file": name, "input": facts.input.name, "output": facts.outputs[0].name, "free_dimensions": free}


def _webgpu_entry(artifact: Path, model, size: tuple[int, int], facts, files: dict, notes: list[str]) -> dict:
    from .webgpu import check_same, floor_pools

    rewritten, changed = floor_pools(model, size, str(artifact))
    name = artifact.name
    if changed:
        check_same(model, rewritten, size, str(artifact))
        name = f"{artifact.stem}_webgpu.onnx"
        files[name] = rewritten.SerializeToString()
    if facts.spec.precision == "int8":
        notes.append("INT8 on WebGPU: DequantizeLinear has open correctness reports there; FP16 is the WebGPU "
                     "precision that pays (u2export fp16)")
    return {**_model_entry(name, rewritten, size, facts), "floor_pools": changed}


def _webgpu_only(description: dict, backends: tuple[str, ...]) -> set[str]:
    """Files only the WebGPU backend loads (not part of the first load on WASM)."""
    if "webgpu" not in backends:
        return set()
    only = {f"{RUNTIME_FOLDER}/{n}" for n in FILES["webgpu"]}
    if description["webgpu"]["file"] != description["model"]["file"]:
        only.add(description["webgpu"]["file"])
    return only


def _size(item: Path | bytes) -> int:
    return len(item) if isinstance(item, bytes) else item.stat().st_size


def _check_output(output: Path, overwrite: bool) -> bool:
    """Whether ``output`` is a site to replace; refuses anything else that is there, before any work."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise U2Error(f"-o {output}: folder {parent} does not exist")
    if not os.path.lexists(output):
        return False
    if output.is_symlink() or not output.is_dir():
        raise U2Error(f"-o {output}: exists and is not a folder (a site is a folder)")
    if not any(output.iterdir()):
        return False
    try:
        ours = json.loads((output / SPEC_FILE).read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise U2Error(f"-o {output}: a folder that is not a site u2export web wrote; choose another -o "
                      "(nothing in it is replaced)")
    if not overwrite:
        raise U2Error(f"-o {output}: a site is already there; pass --overwrite to replace it")
    return True


def _write(output: Path, files: dict[str, Path | bytes], replace: bool) -> None:
    """Stage every file in a hidden sibling folder, then rename it into place (swapping out an old site)."""
    parent = output.parent if str(output.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.u2web.", dir=parent))
    except OSError as exc:
        raise U2Error(f"-o {output}: cannot write in {parent} ({exc.strerror or exc})") from None
    try:
        site = staging / "site"
        try:
            for name, item in files.items():
                target = site / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(item, bytes):
                    target.write_bytes(item)
                else:
                    shutil.copyfile(item, target)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(site, 0o777 & ~umask)
        except OSError as exc:
            raise U2Error(f"-o {output}: cannot write the site ({exc.strerror or exc}); nothing written") from None
        try:
            if replace:
                os.rename(output, staging / "replaced")
            elif os.path.lexists(output):
                output.rmdir()  # an empty folder
            os.rename(site, output)
        except OSError as exc:
            if replace and not os.path.lexists(output) and (staging / "replaced").exists():
                os.rename(staging / "replaced", output)
            raise U2Error(f"-o {output}: cannot move the site into place ({exc.strerror or exc}); "
                          "what was there is unchanged") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
