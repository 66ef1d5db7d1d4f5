"""Triton python-backend model: one u2deploy artifact run by the project's own runner.

For servers without the artifact's own backend (onnxruntime, tensorrt, openvino): the artifact
beside this file (``parameters.artifact``) is opened with ``u2deploy.engines.open_runner``, and the
requests the dynamic batcher hands over together are run as one batch, then split back. Written
into the repository by ``u2export triton --model-backend python``.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from u2deploy.engines import open_runner

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        artifact = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        options = {}
        if params.get("threads"):
            options["threads"] = int(params["threads"])
        if params.get("device", "cpu") != "cpu":
            options["device"] = params["device"]
        self.runner = open_runner(str(artifact), **options)
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def _run(self, x):
        outputs = self.runner.infer(x)
        return [np.ascontiguousarray(outputs[name], dtype=np.float32) for name in self.output_names]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        responses = [None] * len(requests)
        groups = {}  # requests of one shape run together (all of them, unless H and W are dynamic)
        for i, x in enumerate(arrays):
            groups.setdefault(x.shape[1:] if self.batching else (i,), []).append(i)
        for members in groups.values():
            try:
                batch = np.concatenate([arrays[i] for i in members]) if len(members) > 1 else arrays[members[0]]
                outputs = self._run(np.ascontiguousarray(batch, dtype=np.float32))
                start = 0
                for i in members:
                    n = len(arrays[i])
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor(name, out[start:start + n]) for name, out in zip(self.output_names, outputs)])
                    start += n
            except Exception as exc:
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        return responses

    def finalize(self):
        self.runner.close()
