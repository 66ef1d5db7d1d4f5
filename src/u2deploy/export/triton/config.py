"""One ``config.pbtxt``: a typed record, its protobuf text form, and the rules a generated one keeps.

The renderer is this project's own, so ``u2export triton`` needs no tritonclient; the tests parse
its output with Triton's ``ModelConfig`` schema. Parsing alone accepts configs Triton then serves
badly (preferred batch sizes above ``max_batch_size``, dynamic batching without batching), so
:func:`check_config` holds every generated config to the rules in ``docs/triton.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_QUEUE_DELAY_US = 2000
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a model directory name Triton accepts


@dataclass(frozen=True)
class Tensor:
    """One input or output: in a config ``dims`` leaves out the batch dimension when batching; -1 is any size."""

    name: str
    data_type: str  # TYPE_FP32, TYPE_STRING, …
    dims: tuple[int, ...]


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: int = DEFAULT_QUEUE_DELAY_US


@dataclass(frozen=True)
class EnsembleStep:
    model_name: str
    input_map: Mapping[str, str]  # the step model's input → the ensemble's tensor
    output_map: Mapping[str, str]  # the step model's output → the ensemble's tensor


@dataclass(frozen=True)
class ModelConfig:
    """What one ``config.pbtxt`` says, in the fields this project uses (names as in Triton's schema)."""

    name: str
    platform: str | None = None
    backend: str | None = None
    max_batch_size: int = 0
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    instance_kind: str | None = "KIND_CPU"  # None: no instance_group (ensembles)
    instance_count: int = 1
    dynamic_batching: DynamicBatching | None = None
    default_model_filename: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    cpu_accelerators: tuple[str, ...] = ()
    gpu_accelerators: tuple[str, ...] = ()
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    comments: tuple[str, ...] = ()

    def to_pbtxt(self) -> str:
        return render_pbtxt(self)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _tensor_block(tensor: Tensor) -> list[str]:
    dims = ", ".join(str(d) for d in tensor.dims)
    return ["  {", f"    name: {_quote(tensor.name)}", f"    data_type: {tensor.data_type}",
            f"    dims: [ {dims} ]", "  }"]


def _list(key: str, blocks: Sequence[list[str]]) -> list[str]:
    lines = [f"{key} ["]
    for i, block in enumerate(blocks):
        lines += block[:-1] + [block[-1] + ("," if i < len(blocks) - 1 else "")]
    return lines + ["]"]


def render_pbtxt(config: ModelConfig) -> str:
    """The protobuf text form of ``config``, as Triton's ``ModelConfig`` parses it."""
    lines = [f"# {c}" for c in config.comments]
    lines.append(f"name: {_quote(config.name)}")
    if config.platform:
        lines.append(f"platform: {_quote(config.platform)}")
    if config.backend:
        lines.append(f"backend: {_quote(config.backend)}")
    lines.append(f"max_batch_size: {config.max_batch_size}")
    if config.default_model_filename:
        lines.append(f"default_model_filename: {_quote(config.default_model_filename)}")
    if config.inputs:
        lines += _list("input", [_tensor_block(t) for t in config.inputs])
    if config.outputs:
        lines += _list("output", [_tensor_block(t) for t in config.outputs])
    if config.instance_kind:
        lines += _list("instance_group", [["  {", f"    count: {config.instance_count}",
                                           f"    kind: {config.instance_kind}", "  }"]])
    if config.dynamic_batching is not None:
        sizes = ", ".join(str(s) for s in config.dynamic_batching.preferred_batch_size)
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {sizes} ]",
                  f"  max_queue_delay_microseconds: {config.dynamic_batching.max_queue_delay_microseconds}", "}"]
    if config.cpu_accelerators or config.gpu_accelerators:
        lines += ["optimization {", "  execution_accelerators {"]
        for key, names in (("cpu_execution_accelerator", config.cpu_accelerators),
                           ("gpu_execution_accelerator", config.gpu_accelerators)):
            if names:
                lines.append(f"    {key}: [ " + ", ".join(f"{{ name: {_quote(n)} }}" for n in names) + " ]")
        lines += ["  }", "}"]
    for key, value in config.parameters.items():
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value: {{ string_value: {_quote(value)} }}", "}"]
    if config.ensemble_steps:
        lines += ["ensemble_scheduling {", "  step ["]
        for i, step in enumerate(config.ensemble_steps):
            lines += ["    {", f"      model_name: {_quote(step.model_name)}", "      model_version: -1"]
            lines += [f"      input_map {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in step.input_map.items()]
            lines += [f"      output_map {{ key: {_quote(k)} value: {_quote(v)} }}"
                      for k, v in step.output_map.items()]
            lines.append("    }" + ("," if i < len(config.ensemble_steps) - 1 else ""))
        lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def check_config(config: ModelConfig) -> list[str]:
    """The rules a generated config keeps that parsing alone does not check; one line per broken rule."""
    problems = []
    where = f"{config.name}/config.pbtxt"
    if not MODEL_NAME.match(config.name):
        problems.append(f"{where}: model name {config.name!r} is not a plain directory name")
    if config.max_batch_size < 0:
        problems.append(f"{where}: max_batch_size {config.max_batch_size} is negative")
    batching = config.dynamic_batching
    if batching is not None:
        if config.max_batch_size == 0:
            problems.append(f"{where}: dynamic_batching without batching (max_batch_size 0)")
        bad = [s for s in batching.preferred_batch_size if not 1 <= s <= config.max_batch_size]
        if bad or not batching.preferred_batch_size:
            problems.append(f"{where}: preferred_batch_size {list(batching.preferred_batch_size)} "
                            f"not within 1..{config.max_batch_size}")
        if batching.max_queue_delay_microseconds <= 0:
            problems.append(f"{where}: dynamic_batching needs a positive max_queue_delay_microseconds")
    for tensor in (*config.inputs, *config.outputs):
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"{where}: {tensor.name} has dims {list(tensor.dims)}")
    names = [t.name for t in (*config.inputs, *config.outputs)]
    if len(set(names)) != len(names):
        problems.append(f"{where}: tensor names repeat ({', '.join(names)})")
    if config.instance_kind is not None and config.instance_count < 1:
        problems.append(f"{where}: instance count {config.instance_count} is below 1")
    if (config.platform == "ensemble") != bool(config.ensemble_steps):
        problems.append(f"{where}: an ensemble needs steps, and only an ensemble has them")
    return problems
