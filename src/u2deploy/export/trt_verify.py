"""An engine, verified before it is written: run on the GPU against its ONNX on the CPU, on real images.

What TensorRT builds is not what the ONNX says bit for bit: it fuses layers, picks kernels by timing
and, in a weakly typed build, may run in FP16 what the ONNX keeps in FP32. So the builder runs the
serialized engine (from its temporary file, before the rename) on the verification images and compares
its d0 maps with ONNX Runtime's on the ONNX the chain started from: the user's ``--onnx``, or the FP32
ONNX a ``--variant`` build exported. A Q/DQ reference runs with its Q/DQ pairs in float (TensorRT's
arithmetic, :func:`~u2deploy.ort_session.cpu_session`). The bound is the engine precision's
map bound from the one table; the comparison is :func:`u2deploy.validate.verify.verify`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import ArtifactSpec
from ..engines.trt_compat import TrtEnvironment
from ..validate.verify import Verification, VerificationImages, verify


def verify_engine(env: TrtEnvironment, engine_file: Path, manifest: dict[str, Any], *, name: str,
                  reference: Path, reference_kind: str, precision: str, size: tuple[int, int],
                  images: VerificationImages) -> Verification:
    """``engine_file`` (described by ``manifest``, to be known as ``name``) against ``reference`` at
    ``precision``'s bound, both fed ``images`` at ``size`` with the source ONNX's mean and std;
    ``reference_kind`` is :func:`~u2deploy.export.trt_plan.describe_onnx`'s ("fp32", "fp16" or "qdq")."""
    from ..engines.tensorrt import TensorRTRunner
    from ..ort_session import cpu_session, run_first_output

    spec = ArtifactSpec.from_metadata((manifest.get("source_onnx") or {}).get("metadata") or {}, str(reference))
    x = images.inputs(size, spec.mean, spec.std)
    session = cpu_session(reference, qdq_in_float=reference_kind == "qdq")
    half = session.get_inputs()[0].type == "tensor(float16)"  # an FP16 ONNX with FP16 inputs (not this project's)

    def reference_maps(batch: np.ndarray) -> np.ndarray:
        return run_first_output(session, batch.astype(np.float16) if half else batch).astype(np.float32)

    with TensorRTRunner.from_file(engine_file, env, manifest) as engine:
        return verify(engine, reference_maps, x, precision, images=images,
                      candidate_name=f"{name} (TensorRT {env.version})",
                      reference_name=f"{reference.name} ({reference_kind}, onnxruntime cpu)")
