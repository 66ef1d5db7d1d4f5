"""Artifacts → the model directories of a repository (what ``u2export triton`` will write), nothing written.

One model directory per artifact: Triton's own backend for its format (``onnxruntime_onnx``,
``tensorrt_plan``, backend ``openvino``) or, with ``model_backend="python"``, a python-backend model
that runs it through this project's runner (for servers without the format's backend). Every fact
comes from :func:`~.artifacts.read_artifact`; the options only choose among what the artifact allows.

``max_batch_size`` is 0 for a static-batch artifact (with a note: export with ``--dynamic-batch``),
else the artifact's largest batch (``max_batch`` or 8 for an unbounded one); above 0 the dims leave
out the batch dimension and ``dynamic_batching`` has preferred sizes no larger than it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ... import __version__
from ...errors import U2Error
from ...formats import by_key
from .artifacts import ArtifactFacts, read_artifact
from .config import DEFAULT_QUEUE_DELAY_US, MODEL_NAME, DynamicBatching, ModelConfig, Tensor, check_config
from .ensemble import ensemble_models
from .models import source
from .repository import ModelDir, TritonRepo

DEFAULT_MAX_BATCH = 8  # for an artifact that takes any batch
MODEL_BACKENDS = ("native", "python")
KINDS = ("cpu", "gpu")
ACCELERATORS = ("none", "openvino", "tensorrt")  # ONNX Runtime execution accelerators Triton offers
# The file names Triton's backends load by default (which backend serves a format: its row's `triton`).
_NATIVE_FILES = {".onnx": "model.onnx", ".engine": "model.plan", ".xml": "model.xml", ".bin": "model.bin"}


@dataclass(frozen=True)
class RepoOptions:
    """The choices ``u2export triton`` leaves to its user (its flags)."""

    max_batch: int | None = None
    instances: int = 1
    kind: str | None = None  # "cpu" / "gpu"; None: gpu for TensorRT engines, cpu otherwise
    preprocess_in_server: bool = False
    model_backend: str = "native"
    dynamic_batching: bool = True
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    threads: int | None = None
    accelerator: str = "none"


def plan_repo(artifacts: Sequence[str | Path], output: str | Path, *, name: str | None = None,
              options: RepoOptions = RepoOptions()) -> TritonRepo:
    """Every model directory the repository will hold, from the artifacts; nothing is written."""
    if not artifacts:
        raise U2Error("give at least one artifact (.onnx, .engine or OpenVINO .xml)")
    if options.model_backend not in MODEL_BACKENDS:
        raise U2Error(f"--model-backend {options.model_backend}: expected native or python")
    if options.accelerator not in ACCELERATORS:
        raise U2Error(f"--accelerator {options.accelerator}: expected one of {', '.join(ACCELERATORS)}")
    if options.instances < 1:
        raise U2Error(f"--instances {options.instances}: must be at least 1")
    if options.queue_delay_us < 1:
        raise U2Error(f"--queue-delay-us {options.queue_delay_us}: must be at least 1")
    facts = [read_artifact(a) for a in artifacts]
    models: list[ModelDir] = []
    notes: list[str] = []
    for model_name, fact in zip(_model_names(facts, name), facts):
        max_batch, note = batching_for(fact, options.max_batch)
        if note:
            notes.append(note)
        if fact.spec.requires_int8_dot_product:
            notes.append(f"{fact.path.name} needs a CPU with VNNI, AMX or ARM dot product on the server")
        if options.preprocess_in_server:
            step = _model_step(f"{model_name}_model", fact, options, max_batch)
            models += ensemble_models(model_name, fact, step, options.instances)
        else:
            models.append(_model_step(model_name, fact, options, max_batch))
    names = [m.config.name for m in models]
    clash = next((n for i, n in enumerate(names) if names.index(n) != i), None)
    if clash:
        raise U2Error(f"two model directories would be named {clash!r}; rename an artifact")
    for model in models:
        problems = check_config(model.config)
        if problems:
            raise U2Error(problems[0])
    return TritonRepo(Path(output), models, notes)


def batching_for(facts: ArtifactFacts, max_batch: int | None) -> tuple[int, str | None]:
    """``max_batch_size`` for an artifact and, for a static batch, the one-line note saying why it is 0."""
    if facts.batch_range is None:
        if max_batch is not None and max_batch < 1:
            raise U2Error(f"--max-batch {max_batch}: must be at least 1")
        return (max_batch or DEFAULT_MAX_BATCH), None
    lo, hi = facts.batch_range
    if lo == hi:
        ignored = f" (--max-batch {max_batch} does not apply)" if max_batch else ""
        what = "one image per request" if lo == 1 else f"exactly {lo} images per request"
        return 0, (f"{facts.path.name} has a static batch of {lo}: max_batch_size 0, no dynamic batching, "
                   f"{what}{ignored}; export with --dynamic-batch to let Triton batch requests")
    if lo > 1:
        raise U2Error(f"{facts.path}: its batch range {lo}..{hi} starts above 1, and Triton sends any batch from 1 "
                      "up; rebuild it with --min-batch 1")
    if max_batch is not None and not 1 <= max_batch <= hi:
        raise U2Error(f"--max-batch {max_batch}: {facts.path.name} takes batches 1..{hi}")
    return (max_batch or hi), None


def _preferred_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, and ``max_batch`` itself."""
    sizes = {max_batch}
    s = 2
    while s < max_batch:
        sizes.add(s)
        s *= 2
    return tuple(sorted(sizes))


def _kind(facts: ArtifactFacts, options: RepoOptions) -> str:
    kind = options.kind or ("gpu" if facts.format == "trt" else "cpu")
    if kind not in KINDS:
        raise U2Error(f"--kind {kind}: expected cpu or gpu")
    if facts.format == "trt" and kind != "gpu":
        raise U2Error(f"--kind {kind}: {facts.path.name} is a TensorRT engine, which runs on a GPU only")
    if facts.format == "openvino" and kind != "cpu":
        raise U2Error(f"--kind {kind}: {facts.path.name} is an OpenVINO IR; Triton's OpenVINO backend runs on the CPU")
    return kind


def _model_step(name: str, facts: ArtifactFacts, options: RepoOptions, max_batch: int) -> ModelDir:
    """The network itself: Triton's backend for the format, or a python-backend model around the runner."""
    kind = _kind(facts, options)
    if options.accelerator != "none" and (options.model_backend == "python" or facts.format != "onnx"):
        raise U2Error(f"--accelerator {options.accelerator}: applies to ONNX models on Triton's onnxruntime backend")
    batching = max_batch > 0

    def config_tensor(tensor: Tensor) -> Tensor:  # with batching, Triton's dims leave out the batch
        return replace(tensor, dims=tensor.dims[1:]) if batching else tensor

    h, w = facts.input_size
    base = ModelConfig(
        name=name, max_batch_size=max_batch, inputs=(config_tensor(facts.input),),
        outputs=tuple(config_tensor(o) for o in facts.outputs), instance_kind=f"KIND_{kind.upper()}",
        instance_count=options.instances,
        dynamic_batching=(DynamicBatching(_preferred_sizes(max_batch), options.queue_delay_us)
                          if batching and options.dynamic_batching else None),
        comments=(f"written by u2export triton (u2deploy {__version__}) from {facts.path.name}: "
                  f"{facts.spec.variant or 'unknown variant'}, {facts.spec.precision}, input {h}x{w}",))
    if options.model_backend == "python":
        return _python_step(base, facts, options, kind)
    return _native_step(base, facts, options, kind)


def _python_step(base: ModelConfig, facts: ArtifactFacts, options: RepoOptions, kind: str) -> ModelDir:
    """The artifact under its own suffix beside a ``model.py`` that opens it with ``open_runner``."""
    artifact, files = _artifact_files(facts, lambda suffix: "model" + suffix)
    parameters = {"artifact": artifact, "device": "cuda" if kind == "gpu" else "cpu"}
    if options.threads and facts.format != "trt":
        parameters["threads"] = str(options.threads)
    config = replace(base, backend="python", parameters=parameters,
                     comments=(*base.comments, "the network through u2deploy's runner (python backend): "
                                               "needs u2deploy installed in the server's Python"))
    return ModelDir(config, {"model.py": source("runner"), **files}, "model")


def _native_step(base: ModelConfig, facts: ArtifactFacts, options: RepoOptions, kind: str) -> ModelDir:
    """Triton's own backend for the format, with the settings that backend reads."""
    served = by_key(facts.format).triton
    assert served is not None, f"{facts.format}: read_artifact admits only formats Triton serves"
    platform, backend = served
    filename, files = _artifact_files(facts, _NATIVE_FILES.__getitem__)
    parameters: dict[str, str] = {}
    comments = base.comments
    cpu_acc: tuple[str, ...] = ()
    gpu_acc: tuple[str, ...] = ()
    if facts.format == "onnx":
        if options.threads:
            parameters["intra_op_thread_count"] = str(options.threads)
        if options.accelerator == "openvino":
            if kind != "cpu":
                raise U2Error("--accelerator openvino: an ONNX Runtime CPU accelerator; use it with --kind cpu")
            cpu_acc = ("openvino",)
        elif options.accelerator == "tensorrt":
            if kind != "gpu":
                raise U2Error("--accelerator tensorrt: an ONNX Runtime GPU accelerator; use it with --kind gpu")
            gpu_acc = ("tensorrt",)
    elif facts.format == "trt":
        build = facts.build
        parameters.update({k: v for k, v in build.items() if k != "rebuild"})
        comments += (f"built by TensorRT {build['tensorrt_version']} for {build['gpu']} (compute capability "
                     f"{build['gpu_compute_capability']}): it loads only with that release on that kind of GPU"
                     + (f"; elsewhere rebuild: {build['rebuild']}" if build.get("rebuild") else ""),)
    else:
        parameters["PERFORMANCE_HINT"] = "LATENCY"
        if options.threads:
            parameters["INFERENCE_NUM_THREADS"] = str(options.threads)
    config = replace(base, platform=platform, backend=backend, default_model_filename=filename,
                     parameters=parameters, cpu_accelerators=cpu_acc, gpu_accelerators=gpu_acc, comments=comments)
    return ModelDir(config, files, "model")


def _artifact_files(facts: ArtifactFacts, rename: Callable[[str], str]) -> tuple[str, dict[str, Path]]:
    """The artifact's files under the names its loader expects (``rename`` of each suffix), the main one
    first, and the exporter's JSON beside the main one; (main name, name → source)."""
    files = {rename(suffix): path for path, suffix in facts.files}
    main = next(iter(files))
    if facts.manifest is not None:
        files[main + ".json"] = facts.manifest
    return main, files


def _model_names(artifacts: Sequence[ArtifactFacts], name: str | None) -> list[str]:
    """``--name``; else u2netp / u2net for one artifact of a known variant; else each file's stem."""
    if name is not None:
        if len(artifacts) > 1:
            raise U2Error(f"--name {name}: names one model; with {len(artifacts)} artifacts each model is named "
                          "after its file's stem")
        if not MODEL_NAME.match(name):
            raise U2Error(f"--name {name}: use letters, digits, '_', '-' and '.' (a Triton model directory name)")
        return [name]
    if len(artifacts) == 1:
        variant = artifacts[0].spec.variant
        if variant in ("small", "full"):
            return ["u2netp" if variant == "small" else "u2net"]
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", a.path.stem).lstrip(".-") or "model" for a in artifacts]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise U2Error(f"{artifacts[names.index(n)].path} and {artifacts[i].path}: both would be model {n!r}; "
                          "rename one")
    return names
