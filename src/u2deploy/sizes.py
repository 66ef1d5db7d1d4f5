"""The one parser of input sizes: every ``--size`` of every command reads ``N`` or ``HxW`` the same way."""

from __future__ import annotations

import re

from .errors import U2Error

MIN_SIDE, MAX_SIDE = 32, 4096  # U²-Net halves the map five times; beyond 4096² a batch of one is > 200 MB
_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*")


def parse_size(text: str | int | None, option: str = "--size", min_side: int = MIN_SIDE) -> tuple[int, int] | None:
    """``320`` → (320, 320), ``240x320`` → (240, 320) (height × width); None stays None.

    ``min_side`` is lowered only to read what a graph already records (a test graph may be 8×8).
    """
    if text is None or text == "":
        return None
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise U2Error(f"{option} {text}: expected N or HxW, e.g. 320 or 240x320")
    h = int(match.group(1))
    size = (h, int(match.group(2) or h))
    if not all(min_side <= side <= MAX_SIDE for side in size):
        raise U2Error(f"{option} {text}: each side must be {min_side} to {MAX_SIDE} pixels")
    return size
