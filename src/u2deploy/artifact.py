"""What an artifact is, as one typed record: written into every exported model's metadata, read back by
every runner and stage.

An exported ONNX carries its contract in ``metadata_props`` (string keys and values, the only form
ONNX has); this module is the one place that turns those strings into typed fields and back, so a
stage never parses ``"320x320"`` or ``"0.485,0.456,0.406"`` itself and a bad value is one line that
names the file. Keys it does not know (exporter versions, calibration details) travel along in
``extra``, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import U2Error
from .sizes import parse_size

# The normalisation every U²-Net checkpoint expects (the authors' test script), and the default of a spec.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The authors' size, for an artifact that accepts any size and records none.
DEFAULT_INPUT_SIZE = (320, 320)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
QUANT_TARGETS = ("cpu", "tensorrt")
_TYPED = ("variant", "precision", "input_size", "batch", "dynamic_hw", "mean", "std", "weights",
          "weights_sha256", "quant_target", "requires_int8_dot_product")


@dataclass(frozen=True)
class ArtifactSpec:
    """The contract of one artifact: what it computes, on which inputs, at which precision, from what."""

    variant: str | None = None  # "full" or "small"
    precision: str = "fp32"
    input_size: tuple[int, int] | None = None  # (H, W) the weights were made for (a fixed graph's own)
    batch: int | None = 1  # None: any batch (a dynamic-batch export)
    dynamic_hw: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = None
    weights_sha256: str | None = None
    quant_target: str | None = None  # INT8 only: "cpu" (ONNX Runtime) or "tensorrt"
    requires_int8_dot_product: bool = False  # INT8 cpu built with 8-bit weights (--vnni-only)
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str = "model") -> ArtifactSpec:
        """Typed fields from an artifact's metadata; absent keys take the defaults (what older exports mean)."""
        def bad(key: str, why: str) -> U2Error:
            return U2Error(f"{source}: metadata {key}={metadata[key]!r}: {why}")

        precision = metadata.get("precision") or "fp32"
        if precision not in PRECISIONS:
            raise bad("precision", f"expected one of {', '.join(PRECISIONS)}")
        target = metadata.get("quant_target") or None
        if target is not None and target not in QUANT_TARGETS:
            raise bad("quant_target", f"expected one of {', '.join(QUANT_TARGETS)}")
        raw_batch = metadata.get("batch") or "1"
        if raw_batch != "dynamic" and not (raw_batch.isdigit() and int(raw_batch) >= 1):
            raise bad("batch", "expected a positive integer or 'dynamic'")
        return cls(
            variant=metadata.get("variant") or None, precision=precision,
            input_size=parse_size(metadata.get("input_size"), f"{source}: metadata input_size", min_side=1),
            batch=None if raw_batch == "dynamic" else int(raw_batch),
            dynamic_hw=_flag(metadata, "dynamic_hw", bad), mean=_triple(metadata, "mean", IMAGENET_MEAN, bad),
            std=_triple(metadata, "std", IMAGENET_STD, bad), weights=metadata.get("weights") or None,
            weights_sha256=metadata.get("weights_sha256") or None, quant_target=target,
            requires_int8_dot_product=_flag(metadata, "requires_int8_dot_product", bad),
            extra={k: v for k, v in metadata.items() if k not in _TYPED})

    def to_metadata(self) -> dict[str, str]:
        """The metadata_props an exporter writes: typed fields as strings, then ``extra`` as it came."""
        typed: dict[str, Any] = {
            "variant": self.variant, "precision": self.precision,
            "input_size": f"{self.input_size[0]}x{self.input_size[1]}" if self.input_size else None,
            "batch": "dynamic" if self.batch is None else str(self.batch),
            "dynamic_hw": str(self.dynamic_hw).lower(), "mean": ",".join(map(str, self.mean)),
            "std": ",".join(map(str, self.std)), "weights": self.weights, "weights_sha256": self.weights_sha256,
            "quant_target": self.quant_target,
            "requires_int8_dot_product": str(self.requires_int8_dot_product).lower(),
        }
        return {**{k: v for k, v in typed.items() if v is not None}, **self.extra}

    def evolve(self, **changes: Any) -> ArtifactSpec:
        """The spec of an artifact derived from this one (FP16, INT8, an engine); ``extra`` merges."""
        extra = {**self.extra, **changes.pop("extra", {})}
        return replace(self, **changes, extra=extra)


def _flag(metadata: Mapping[str, str], key: str, bad) -> bool:
    raw = metadata.get(key) or "false"
    if raw not in ("true", "false"):
        raise bad(key, "expected true or false")
    return raw == "true"


def _triple(metadata: Mapping[str, str], key: str, default: tuple[float, float, float],
            bad) -> tuple[float, float, float]:
    raw = metadata.get(key)
    if not raw:
        return default
    try:
        values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise bad(key, "expected three comma-separated numbers") from None
    if len(values) != 3 or (key == "std" and min(values) <= 0):
        raise bad(key, "expected three comma-separated numbers" + (", all positive" if key == "std" else ""))
    return values  # type: ignore[return-value]


def resolve_input_size(fixed: tuple[int, int] | None, requested: tuple[int, int] | None,
                       recorded: tuple[int, int] | None, source: str) -> tuple[int, int]:
    """The size to run an artifact at, the one rule every stage follows: a graph's fixed size (``--size``
    must then agree), else ``--size``, else the size its weights were made for, else 320×320."""
    if fixed is not None:
        if requested is not None and tuple(requested) != tuple(fixed):
            raise U2Error(f"{source} takes {fixed[0]}x{fixed[1]} only; --size {requested[0]}x{requested[1]} "
                          "needs an export with dynamic height and width (u2export onnx --dynamic-hw)")
        return (int(fixed[0]), int(fixed[1]))
    chosen = requested or recorded or DEFAULT_INPUT_SIZE
    return (int(chosen[0]), int(chosen[1]))
