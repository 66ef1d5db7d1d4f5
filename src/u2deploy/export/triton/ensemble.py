"""``--preprocess-in-server``: an ensemble that takes encoded image bytes and answers an 8-bit mask.

Clients then need nothing of this project: decoding, resizing, normalising and resizing back happen
in two python-backend models (:mod:`.models`) that call the functions ``u2bench predict`` uses, so
the masks are its masks. The network step between them is the model directory planned for the
artifact, whichever backend runs it.
"""

from __future__ import annotations

from ...errors import U2Error
from .artifacts import ArtifactFacts
from .config import EnsembleStep, ModelConfig, Tensor
from .models import source
from .repository import ModelDir

IMAGE, MASK, ORIGINAL_SIZE = "IMAGE", "MASK", "ORIGINAL_SIZE"  # the ensemble's own tensors


def ensemble_models(name: str, facts: ArtifactFacts, step: ModelDir, instances: int) -> list[ModelDir]:
    """Preprocess → ``step`` (the network) → postprocess, and the ensemble ``name`` that clients call."""
    max_batch = step.config.max_batch_size
    if max_batch == 0 and facts.batch_range != (1, 1):
        raise U2Error(f"--preprocess-in-server: {facts.path.name} has a static batch of {facts.batch_range[0]}; "
                      "the ensemble sends one image per request (export with --dynamic-batch or --batch 1)")
    lead = () if max_batch else (1,)  # without batching, every tensor carries its batch of 1 itself
    h, w = facts.input_size
    net_in, net_out = facts.input.name, facts.outputs[0].name
    image = Tensor(IMAGE, "TYPE_STRING", (*lead, 1))
    x = Tensor(net_in, "TYPE_FP32", (*lead, 3, h, w))
    sizes = Tensor(ORIGINAL_SIZE, "TYPE_INT32", (*lead, 2))
    pred = Tensor(net_out, "TYPE_FP32", (*lead, 1, h, w))
    mask = Tensor(MASK, "TYPE_UINT8", (*lead, -1, -1))
    spec = facts.spec
    common = dict(backend="python", max_batch_size=max_batch, instance_kind="KIND_CPU", instance_count=instances)
    pre = ModelConfig(name=f"{name}_preprocess", inputs=(image,), outputs=(x, sizes),
                      parameters={"input_size": f"{h}x{w}", "mean": ",".join(map(str, spec.mean)),
                                  "std": ",".join(map(str, spec.std))},
                      comments=("encoded image bytes → the network's input, by u2deploy.data (read_image, "
                                "preprocess.fast)",), **common)
    post = ModelConfig(name=f"{name}_postprocess", inputs=(pred, sizes), outputs=(mask,),
                       comments=("the fused map → an 8-bit mask at the image's own size, by "
                                 "u2deploy.data.postprocess.fast",), **common)
    ensemble = ModelConfig(
        name=name, platform="ensemble", max_batch_size=max_batch, inputs=(image,), outputs=(mask,),
        instance_kind=None, comments=(f"clients send {IMAGE} (encoded image bytes), receive {MASK} (uint8, the "
                                      f"image's own height × width); written by u2export triton from "
                                      f"{facts.path.name}",),
        ensemble_steps=(
            EnsembleStep(pre.name, {IMAGE: IMAGE}, {net_in: "preprocessed", ORIGINAL_SIZE: "original_size"}),
            EnsembleStep(step.config.name, {net_in: "preprocessed"}, {net_out: "saliency"}),
            EnsembleStep(post.name, {net_out: "saliency", ORIGINAL_SIZE: "original_size"}, {MASK: MASK})))
    return [ModelDir(ensemble, {}, "ensemble"), ModelDir(pre, {"model.py": source("preprocess")}, "preprocess"),
            step, ModelDir(post, {"model.py": source("postprocess")}, "postprocess")]
