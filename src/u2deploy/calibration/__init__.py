"""INT8: the calibration set, its range cache, the quantizer, TensorRT's Q/DQ rules, per-layer errors.

Modules: :mod:`.dataset` (seeded sample, inference preprocessing), :mod:`.calibrate` (streamed
ranges), :mod:`.cache` (ranges keyed by model, preprocessing and images), :mod:`.quantize` (the
stage), :mod:`.rewrites` (exact graph rewrites for ONNX Runtime's fast x86 kernels), :mod:`.qdq_rules`
(TensorRT explicit-quantization checker) and :mod:`.saturation` (x86's int16 pair sums), both over
:mod:`.qdq_graph`, and :mod:`.sensitivity`.
"""

from .dataset import DEFAULT_CALIB_DIR, DEFAULT_NUM, sample_images

__all__ = ["DEFAULT_CALIB_DIR", "DEFAULT_NUM", "sample_images"]
