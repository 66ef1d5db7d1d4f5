"""The input/output contract every U²-Net ONNX artifact keeps, checked when one is opened.

One float32 input ``N×3×H×W`` (an RGB batch) and a first output ``N×1×H×W`` (the saliency map);
dims may be symbolic (``batch``), but a static channel dim must be 3 in and 1 out. FP16 graphs keep
it too: :mod:`u2deploy.export.fp16` leaves the inputs and outputs FP32, and the runners feed float32.

:func:`check_contract` reads either an ``onnx.ModelProto`` or what ONNX Runtime reports of a session
(the session itself, or its ``(get_inputs(), get_outputs())``), so a loader can check a graph before
handing it to native code and a runner can check what it actually opened. Any other ONNX, say a
one-node Add model, is refused in one line instead of failing deep inside a benchmark.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import U2Error

if TYPE_CHECKING:  # imported only where a ModelProto is read: a runner's check of its session needs no onnx
    import onnx

Dim = int | str | None  # static size, symbolic name, or unknown
FLOAT_MAPS = ("float", "float16", "double")  # what the first output may hold: a floating-point map


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, element type (ONNX's lower-case names), and shape."""

    name: str
    dtype: str  # "float" (float32), "float16", "int64", …; a non-tensor type names its kind ("sequence")
    shape: tuple[Dim, ...] | None  # None: the rank is not declared

    def describe(self) -> str:
        if self.shape is None:
            return "of undeclared shape"
        return "×".join("?" if d is None else str(d) for d in self.shape) if self.shape else "a scalar"


def _dtype_name(elem_type: int) -> str:
    try:
        import onnx

        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def _from_value_info(vi: onnx.ValueInfoProto) -> TensorSpec:
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSpec(vi.name, (kind or "untyped").replace("_type", ""), None)
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return TensorSpec(vi.name, _dtype_name(t.elem_type), None)
    dims: list[Dim] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value if d.dim_value > 0 else None)
        else:
            dims.append(d.dim_param or None)
    return TensorSpec(vi.name, _dtype_name(t.elem_type), tuple(dims))


def _from_node_arg(arg: Any) -> TensorSpec:
    """An ``onnxruntime.NodeArg``: ``type`` reads ``tensor(float)``, ``shape`` holds ints, names or None."""
    text = str(arg.type)
    if not (text.startswith("tensor(") and text.endswith(")")):
        return TensorSpec(arg.name, text.split("(", 1)[0] or "untyped", None)
    shape = arg.shape
    dims = None if shape is None else tuple(
        (d if d > 0 else None) if isinstance(d, int) else (d or None) for d in shape)
    return TensorSpec(arg.name, text[len("tensor("):-1], dims)


def non_text_field(message: Any, where: str = "model") -> str | None:
    """The first string field of an ONNX message that is not UTF-8 (protobuf then hands back bytes), or None.

    ONNX's proto2 strings are not validated on parse; ONNX Runtime's Python API raises a bare
    UnicodeDecodeError on them later, when the runner reads a name or a metadata value.
    """
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        try:  # protobuf >= 5 has the is_repeated property and deprecates label, which older ones only have
            repeated = bool(field.is_repeated)
        except AttributeError:
            repeated = field.label == FieldDescriptor.LABEL_REPEATED
        items = value if repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            if any(not isinstance(v, str) for v in items):
                return f"{where}.{field.name}"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for i, item in enumerate(items):
                found = non_text_field(item, f"{where}.{field.name}[{i}]" if repeated else f"{where}.{field.name}")
                if found is not None:
                    return found
    return None


def io_specs(io: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a ModelProto, an InferenceSession, or a ``(get_inputs(), get_outputs())`` pair.

    A ModelProto's initializers that are also listed as graph inputs (IR < 4) are not inputs.
    """
    onnx = sys.modules.get("onnx")  # a ModelProto exists only once onnx is imported
    if onnx is not None and isinstance(io, onnx.ModelProto):
        g = io.graph
        inits = {i.name for i in g.initializer}
        return ([_from_value_info(v) for v in g.input if v.name not in inits],
                [_from_value_info(v) for v in g.output])
    if hasattr(io, "get_inputs") and hasattr(io, "get_outputs"):
        io = (io.get_inputs(), io.get_outputs())
    inputs, outputs = io
    return [_from_node_arg(a) for a in inputs], [_from_node_arg(a) for a in outputs]


def _names(specs: Sequence[TensorSpec]) -> str:
    shown = ", ".join(s.name or "?" for s in specs[:4])
    return shown + (f" and {len(specs) - 4} more" if len(specs) > 4 else "")


def _rank4_with_channels(spec: TensorSpec, channels: int) -> bool:
    """Rank 4, and dim 1 is ``channels`` where it is static (a symbolic or unknown dim passes)."""
    return spec.shape is not None and len(spec.shape) == 4 and (
        not isinstance(spec.shape[1], int) or spec.shape[1] == channels)


def check_contract(io: Any, source: str) -> tuple[TensorSpec, TensorSpec]:
    """The input and first output, or a one-line :class:`U2Error` naming ``source`` and what breaks the contract.

    ``io``: an ``onnx.ModelProto``, an ``onnxruntime.InferenceSession``, or ``(inputs, outputs)`` as
    the session's ``get_inputs()`` / ``get_outputs()`` return them.
    """
    try:
        inputs, outputs = io_specs(io)
        if hasattr(io, "get_modelmeta"):  # what the runner reads next; bytes that are not UTF-8 raise there
            dict(io.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError:
        raise U2Error(f"{source}: not a valid ONNX model (a name or metadata value is not UTF-8 text)") from None

    def refuse(problem: str) -> U2Error:
        return U2Error(f"{source}: not a U²-Net artifact: {problem}".replace("\n", " "))

    if len(inputs) != 1:
        have = f"{len(inputs)} inputs ({_names(inputs)})" if inputs else "no input"
        raise refuse(f"has {have}, expected one N×3×H×W image batch")
    inp = inputs[0]
    if inp.dtype != "float":
        hint = " (u2export fp16 keeps FP32 inputs and outputs)" if inp.dtype == "float16" else ""
        raise refuse(f"input {inp.name} is {inp.dtype}, expected float32{hint}")
    if not _rank4_with_channels(inp, 3):
        raise refuse(f"input {inp.name} is {inp.describe()}, expected N×3×H×W")
    if not outputs:
        raise refuse("has no output, expected an N×1×H×W map")
    out = outputs[0]
    if out.dtype not in FLOAT_MAPS:
        raise refuse(f"first output {out.name} is {out.dtype}, expected a float N×1×H×W map")
    if not _rank4_with_channels(out, 1):
        raise refuse(f"first output is {out.describe()}, expected N×1×H×W")
    return inp, out
