"""The declared tolerances, per precision: used by every stage that verifies, and by ``u2bench parity``.

Map-level ``max_abs`` bounds the raw probability maps (before min-max normalisation and 8-bit
rounding) against PyTorch FP32: the fused map d0, and d1 … d6 too where an artifact exports them
(``u2export onnx --outputs all``). Only FP32 is held to it, since reduced precision changes
individual pixels by design. ``mean_abs`` bounds the mean |Δ| of each map over all pixels of all
images at every precision; it is a chosen tolerance, set at twice the ΔMAE bound: a map that moves by that
much on average can move MAE by about as much (|MAE(p) − MAE(q)| ≤ mean|p − q| for maps compared
directly; the min–max normalisation in between can amplify it), so a looser map bound would let
the ΔMAE bound fail first and a tighter one would judge pixels no metric sees. The metric deltas
bound |maxFβ − maxFβ(PyTorch)| and |MAE − MAE(PyTorch)| on real data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import U2Error


@dataclass(frozen=True)
class Tolerance:
    precision: str
    max_abs: float | None  # None: not checked at map level
    delta_maxf: float
    delta_mae: float

    @property
    def mean_abs(self) -> float:
        return 2 * self.delta_mae


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", max_abs=1e-4, delta_maxf=0.001, delta_mae=0.0005),
    "fp16": Tolerance("fp16", max_abs=None, delta_maxf=0.002, delta_mae=0.001),
    "int8": Tolerance("int8", max_abs=None, delta_maxf=0.01, delta_mae=0.005),
}
# bf16 autocast keeps an 8-bit mantissa, coarser than fp16's 11 bits: held to the int8 bounds.
TOLERANCES["bf16"] = Tolerance("bf16", max_abs=None, delta_maxf=0.01, delta_mae=0.005)


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise U2Error(f"no declared tolerance for precision {precision!r}; "
                      f"known: {', '.join(TOLERANCES)}") from None
