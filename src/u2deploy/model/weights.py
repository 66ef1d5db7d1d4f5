"""Loading checkpoints that users bring: safely (weights_only), strictly, with one-line errors."""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import U2Error
from ..files import sha256_of
from .network import VARIANTS, U2Net
from .registry import WeightsInfo, default_weights, official_for, registry

_log = logging.getLogger("u2deploy")
_announced: set[str] = set()
_PREFIX = "module."
_VARIANT_NAMES = {"full": "the full model (u2net)", "small": "the small model (u2netp)"}
# Stage 6's input convolution has 512 output channels in the full model and 64 in the small one.
_PROBE_KEY = "stage6.rebnconvin.conv_s1.weight"
_PROBE_CHANNELS = {512: "full", 64: "small"}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state_dict with ``weights_only=True``: pickled code is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise U2Error(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise U2Error(f"{path}: not a plain state_dict; refusing to unpickle it ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise U2Error(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise U2Error(f"{path}: not a state_dict (expected a mapping of names to tensors, "
                      f"got {type(obj).__name__})")
    if all(k.startswith(_PREFIX) for k in obj):
        obj = {k[len(_PREFIX):]: v for k, v in obj.items()}
    return obj


def detect_variant(state_dict: dict[str, torch.Tensor], source: str = "weights") -> str:
    probe = state_dict.get(_PROBE_KEY)
    variant = _PROBE_CHANNELS.get(probe.shape[0]) if probe is not None and probe.ndim == 4 else None
    if variant is None:
        raise U2Error(f"{source}: not a U²-Net checkpoint (no {_PROBE_KEY} of a known shape)")
    return variant


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_layout(net: U2Net, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Match keys and shapes exactly; fill absent ``num_batches_tracked`` (old checkpoints lack them)."""
    expected = net.state_dict()
    state_dict = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = ([f"missing keys: {_listing(missing)}"] if missing else []) + (
            [f"unexpected keys: {_listing(unexpected)}"] if unexpected else [])
        raise U2Error(f"{source}: does not match the U²-Net layout; " + "; ".join(parts))
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if state_dict[k].shape != v.shape]
    if wrong:
        raise U2Error(f"{source}: wrong tensor shapes: {_listing(wrong, 2)}")
    return state_dict


@dataclass(frozen=True)
class LoadedWeights:
    """A network with its weights loaded, and what is known of those weights."""

    net: U2Net
    info: WeightsInfo
    path: Path | None
    sha256: str | None


def load_model(variant: str | None = None, weights: str | Path | None = None) -> LoadedWeights:
    """Build the network and load ``weights`` (or the embedded default of ``variant``), in eval mode.

    With a file, the variant is read from the tensor shapes; a ``variant`` that disagrees is refused.
    """
    if variant is not None and variant not in VARIANTS:
        raise U2Error(f"--variant {variant}: unknown; expected one of {', '.join(VARIANTS)}")
    if weights is None:
        if variant is None:
            raise U2Error("no weights given: pass --weights PATH or --variant")
        info = default_weights(variant)
        if info is None or info.path is None:
            raise U2Error(f"--variant {variant} has no embedded weights; pass --weights PATH "
                          f"(e.g. the authors' {official_for(variant).filename})")
        path = info.path
        if info.name not in _announced:
            _announced.add(info.name)
            _log.info(f"using {info.description} ({info.name}, {info.input_size[0]}×{info.input_size[1]}); "
                      "pass --weights for real weights")
    else:
        path = Path(weights)
        info = None
    state_dict = load_state_dict(path)
    found = detect_variant(state_dict, str(path))
    if variant is not None and found != variant:
        raise U2Error(f"{path}: weights are {_VARIANT_NAMES[found]}; --variant {variant} was given")
    net = U2Net(found)
    net.load_state_dict(check_layout(net, state_dict, str(path)), strict=True)
    net.eval()
    digest = sha256_of(path)
    if info is None:
        # A file we know by its hash (e.g. the demo weights passed by path) keeps its own contract.
        known = [w for w in registry().values() if w.sha256 == digest]
        info = known[0] if known else official_for(found)
    return LoadedWeights(net=net, info=info, path=path, sha256=digest)
