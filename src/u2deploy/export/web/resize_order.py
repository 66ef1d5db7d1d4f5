"""Which pass Pillow's resize runs first here: the one fact about Pillow the JavaScript port cannot know.

Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the
width (``horizontal_first`` in ``ImagingResampleInner``); earlier releases always run the horizontal
pass first. The two orders round the intermediate 8-bit image differently, so a mask can differ by a
gray level. The site must do what ``u2bench predict`` does on the machine that exported it, so the
order is measured on that machine's Pillow (not inferred from its version) and written into
``u2deploy.json``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import U2Error

ORDERS = ("horizontal-first", "pillow13")  # what pillow.mjs's verticalFirst() reads


def pillow_resize_order() -> str:
    """``pillow13`` or ``horizontal-first``, from two resizes whose passes round differently in either order."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 7), dtype=np.uint8))
    size = (320, 13)  # width grows, height shrinks: Pillow 13 runs the vertical pass first
    direct = np.asarray(image.resize(size, Image.BILINEAR))
    horizontal_first = np.asarray(image.resize((320, 1000), Image.BILINEAR).resize(size, Image.BILINEAR))
    vertical_first = np.asarray(image.resize((7, 13), Image.BILINEAR).resize(size, Image.BILINEAR))
    if np.array_equal(direct, vertical_first) and not np.array_equal(direct, horizontal_first):
        return "pillow13"
    if np.array_equal(direct, horizontal_first):
        return "horizontal-first"
    raise U2Error(f"Pillow {Image.__version__} resizes in an order the site's port does not reproduce; "
                  "install Pillow 10-13 to export a site")
