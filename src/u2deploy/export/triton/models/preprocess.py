"""Triton python-backend model: encoded image bytes → the network's input, by u2deploy's own code.

Input ``IMAGE`` (BYTES, one encoded image per batch item); outputs the network's input tensor
(float32 3×H×W per item, ``u2deploy.data.preprocess.fast`` at the size and mean/std in this model's
parameters) and ``ORIGINAL_SIZE`` (int32 height, width), which the postprocess model resizes back to.
Decoding is ``u2deploy.data.images.read_image`` (EXIF orientation, 16-bit, grayscale, bombs refused),
exactly as ``u2bench predict`` reads files. Written into the repository by ``u2export triton``.
"""

import json
import os
import tempfile

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from u2deploy.data import preprocess
        from u2deploy.data.images import read_image
        from u2deploy.errors import U2Error

        self.preprocess, self.read_image, self.error_type = preprocess, read_image, U2Error
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        h, w = (int(v) for v in params["input_size"].split("x"))
        self.size = (h, w)
        self.mean = tuple(float(v) for v in params["mean"].split(","))
        self.std = tuple(float(v) for v in params["std"].split(","))
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_name = config["output"][0]["name"]  # the network's input, fed by this model's first output
        self.sizes_name = config["output"][1]["name"]
        self.scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None

    def _decode(self, data, index):
        # read_image takes a path: the bytes go through a scratch file, so decoding is u2bench predict's own.
        with tempfile.NamedTemporaryFile(prefix="u2triton-", dir=self.scratch) as f:
            f.write(data)
            f.flush()
            try:
                return self.read_image(f.name)
            except self.error_type as exc:
                raise ValueError(str(exc).replace(f.name, f"IMAGE[{index}]")) from None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
                images = [self._decode(bytes(item), i) for i, item in enumerate(items)]
                x = self.preprocess.fast(images, self.size, self.mean, self.std)
                sizes = np.array([image.shape[:2] for image in images], dtype=np.int32)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(self.input_name, x), pb_utils.Tensor(self.sizes_name, sizes)]))
            except Exception as exc:  # one bad image fails its own request only
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
