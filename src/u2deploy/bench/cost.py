"""What one forward pass costs, counted from the network itself: parameters, FLOPs, and bytes moved.

The network runs once on PyTorch's ``meta`` device (shapes only, no arithmetic, well under a second)
under a dispatch mode that sees every ATen operator with its tensors. From that trace:

FLOPs
    ``conv_flops`` = 2 × multiply-accumulates of the 119 convolutions, without bias: the convention of
    the architecture page (117.2 G full, 39.5 G small at 320×320) and of papers quoting "58.8 G" MACs.
    The other operators are counted separately (``other_flops``), per output element: bias 1,
    BatchNorm 2 (a folded scale and shift), ReLU 1, 2×2 max-pool 3 comparisons, bilinear resize 7
    (four weighted taps: 4 multiplies, 3 adds), residual add 1, sigmoid 4.

Bytes (a floor, under a stated model of execution)
    Weights read once (every parameter, at the precision's width); the input read once; the output
    written once; every intermediate tensor that a layer-by-layer engine must materialise written
    once and read once. The engine is assumed to fuse each convolution with its BatchNorm and ReLU
    (as TensorRT and ONNX Runtime do), to write concatenated tensors in place (a concatenation moves
    nothing), and to run pooling, resizing and residual adds as kernels of their own. Reads by a
    second consumer, cache reuse across layers and workspace traffic are ignored, which is why this
    is a lower bound and not a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..model.deploy import DeployModel
from ..model.network import U2Net, count_parameters

BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1}
# FLOPs per output element of the operators other than convolution (see the module docstring).
_ELEMENTWISE_FLOPS = {"batchnorm": 2, "relu": 1, "maxpool": 3, "resize": 7, "add": 1, "sigmoid": 4}
_KIND = {
    "conv2d": "conv", "convolution": "conv", "_convolution": "conv",
    "batch_norm": "batchnorm", "native_batch_norm": "batchnorm",
    "_native_batch_norm_legit_no_training": "batchnorm",
    "relu": "relu", "relu_": "relu",
    "max_pool2d": "maxpool", "max_pool2d_with_indices": "maxpool",
    "upsample_bilinear2d": "resize",
    "add": "add", "add_": "add",
    "sigmoid": "sigmoid",
    "cat": "cat",
}


@dataclass
class _Op:
    kind: str
    inputs: list[int]  # ids of tensor arguments
    output: torch.Tensor
    weight: torch.Tensor | None = None
    has_bias: bool = False


class _Tracer(TorchDispatchMode):
    """Records the operators of interest; keeps the tensors alive so that their ids stay unique."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.unknown: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        kind = _KIND.get(name)
        if kind is None:
            self.unknown.add(name)
            return out
        flat, _ = tree_flatten((args, kwargs or {}))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        first_out = out[0] if isinstance(out, (tuple, list)) else out
        op = _Op(kind, [id(t) for t in tensors], first_out)
        if kind == "conv":
            op.weight = args[1]
            op.has_bias = len(args) > 2 and args[2] is not None
        self.ops.append(op)
        return out


@dataclass(frozen=True)
class Cost:
    """Cost of one forward pass of ``batch`` images at ``size`` (H, W), in ``precision``."""

    variant: str
    size: tuple[int, int]
    batch: int
    precision: str
    params: int
    conv_layers: int
    conv_flops: int  # 2 × MACs, no bias: the figure the architecture page and papers quote
    other_flops: dict[str, int] = field(default_factory=dict)
    weight_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    activation_bytes: int = 0  # intermediates, written once and read once
    materialised_tensors: int = 0

    @property
    def flops(self) -> int:
        return self.conv_flops

    @property
    def total_flops(self) -> int:
        return self.conv_flops + sum(self.other_flops.values())

    @property
    def min_bytes(self) -> int:
        return self.weight_bytes + self.input_bytes + self.output_bytes + self.activation_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved: compared with a device's FLOP/s ÷ B/s, it says which ceiling binds."""
        return self.total_flops / self.min_bytes

    def at_precision(self, precision: str) -> Cost:
        """The same pass with every tensor stored at another width (FLOPs unchanged)."""
        old, new = BYTES_PER_ELEMENT[self.precision], BYTES_PER_ELEMENT[precision]

        def scale(n: int) -> int:  # exact: every byte count is a multiple of ``old``
            return n * new // old

        return replace(self, precision=precision, weight_bytes=scale(self.weight_bytes),
                       input_bytes=scale(self.input_bytes), output_bytes=scale(self.output_bytes),
                       activation_bytes=scale(self.activation_bytes))

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "size": list(self.size), "batch": self.batch,
            "precision": self.precision, "params": self.params, "conv_layers": self.conv_layers,
            "flops": self.conv_flops, "other_flops": dict(self.other_flops), "total_flops": self.total_flops,
            "bytes": {"weights": self.weight_bytes, "input": self.input_bytes, "output": self.output_bytes,
                      "activations": self.activation_bytes, "total": self.min_bytes},
            "intensity_flop_per_byte": round(self.intensity, 2),
        }


def _materialised(ops: list[_Op], outputs: set[int]) -> list[torch.Tensor]:
    """Intermediate tensors a fusing, layer-by-layer engine writes to memory (see the module docstring)."""
    consumers: dict[int, list[str]] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op.kind)
    fused_into_next = {"conv": "batchnorm", "batchnorm": "relu"}
    kept: dict[int, torch.Tensor] = {}
    for op in ops:
        key = id(op.output)
        if op.kind == "cat" or key in outputs:
            continue
        if op.kind == "sigmoid":  # only the returned map is computed by a pruned graph
            continue
        follower = fused_into_next.get(op.kind)
        if follower is not None and consumers.get(key) == [follower]:
            continue
        kept[key] = op.output
    return list(kept.values())


@cache
def count_cost(variant: str, size: tuple[int, int] = (320, 320), batch: int = 1,
               precision: str = "fp32") -> Cost:
    """Count parameters, FLOPs and the byte floor of ``variant`` ("full" or "small") at ``size``."""
    if precision not in BYTES_PER_ELEMENT:
        raise ValueError(f"precision must be one of {', '.join(BYTES_PER_ELEMENT)}, got {precision!r}")
    width = BYTES_PER_ELEMENT[precision]
    with torch.device("meta"):
        model = DeployModel(U2Net(variant)).eval()
        x = torch.empty(batch, 3, *size)
    with torch.inference_mode(), _Tracer() as tracer:
        out = model(x)
    if tracer.unknown - {"detach", "empty", "t"}:
        # A new operator in the network would otherwise be silently left out of the count.
        raise RuntimeError(f"cost: uncounted operators {sorted(tracer.unknown)}")
    ops = tracer.ops
    convs = [op for op in ops if op.kind == "conv"]
    conv_flops = sum(2 * op.output.numel() * op.weight[0].numel() for op in convs)  # type: ignore[index]
    other = {"bias": sum(op.output.numel() for op in convs if op.has_bias)}
    for kind, per_element in _ELEMENTWISE_FLOPS.items():
        counted = [op for op in ops if op.kind == kind]
        if kind == "sigmoid":
            counted = [op for op in counted if op.output is out]
        other[kind] = per_element * sum(op.output.numel() for op in counted)
    intermediates = _materialised(ops, {id(out)})
    return Cost(
        variant=variant, size=tuple(size), batch=batch, precision=precision,  # type: ignore[arg-type]
        params=count_parameters(model), conv_layers=len(convs), conv_flops=conv_flops, other_flops=other,
        weight_bytes=count_parameters(model) * width, input_bytes=x.numel() * width,
        output_bytes=out.numel() * width,
        activation_bytes=2 * width * sum(t.numel() for t in intermediates),
        materialised_tensors=len(intermediates),
    )
