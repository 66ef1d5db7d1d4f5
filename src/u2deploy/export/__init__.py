"""Export stages: PyTorch → ONNX (``onnx``), ONNX → FP16 ONNX (``fp16``), ONNX → TensorRT (``trt``)."""
