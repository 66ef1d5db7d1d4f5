"""`u2bench`: predict, evaluate, compare with PyTorch, and time artifacts."""

from __future__ import annotations

from ._common import new_app, run

app = new_app("u2bench", "Run, evaluate and time U²-Net artifacts (PyTorch, ONNX, TensorRT).")

main = run(app, "u2bench")
