"""Triton python-backend model: the fused saliency map → an 8-bit mask at the image's own size.

Inputs: the network's first output (float32 1×h×w per item) and ``ORIGINAL_SIZE`` (int32 height,
width, from the preprocess model); output ``MASK`` (uint8 H×W per item), by
``u2deploy.data.postprocess.fast``, the function ``u2bench predict`` writes its PNG masks with.
A request's items share one mask size: send images of different sizes in separate requests.
Written into the repository by ``u2export triton``.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from u2deploy.data import postprocess

        self.postprocess = postprocess
        config = json.loads(args["model_config"])
        self.pred_name = config["input"][0]["name"]
        self.sizes_name = config["input"][1]["name"]
        self.mask_name = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                pred = pb_utils.get_input_tensor_by_name(request, self.pred_name).as_numpy()
                sizes = pb_utils.get_input_tensor_by_name(request, self.sizes_name).as_numpy().reshape(-1, 2)
                masks = self.postprocess.fast(pred.astype(np.float32, copy=False),
                                              [(int(h), int(w)) for h, w in sizes])
                if len({m.shape for m in masks}) > 1:
                    raise ValueError("images of different sizes in one request: send them in separate requests")
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(self.mask_name, np.stack(masks))]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
