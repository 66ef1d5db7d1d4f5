"""`u2export`: turn the PyTorch network into deployable artifacts (ONNX, FP16, INT8, TensorRT)."""

from __future__ import annotations

from ._common import new_app, run

app = new_app("u2export", "Export U²-Net to ONNX, FP16/INT8 ONNX and TensorRT engines, verified.")

main = run(app, "u2export")
