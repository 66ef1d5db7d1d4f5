"""Loading checkpoints that users bring: safely (weights_only), strictly, with one-line errors."""

from __future__ import annotations

import logging
import pickle
import warnings
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


_ZIP, _PICKLE = "zip", "pickle"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
_KNOWN_HEADS = (  # what people pass as --weights by mistake
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "a gzip archive"),
    (b"version https://git-lfs", "a Git LFS pointer, not the weights: run git lfs pull"),
    (b"<!doctype html", "an HTML page: a failed download?"), (b"<html", "an HTML page: a failed download?"),
)


def _head(path: Path, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise U2Error(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _is_pickle(head: bytes) -> bool:
    """torch.save's legacy format: a pickle, protocol 2 and up (``PROTO`` opcode, then the protocol)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _what_it_is(head: bytes) -> str:
    if not head:
        return "empty file"
    for magic, what in _KNOWN_HEADS:
        if head.lower().startswith(magic.lower()):
            return what
    text = head.decode("utf-8", errors="replace")
    if "\ufffd" not in text and all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file starting {first!r}; expected a zip archive or a pickle"
    return f"starts with bytes {head[:4].hex(' ')}; expected a zip archive (50 4b 03 04) or a pickle (80 02)"


def _load_failure(exc: Exception, kind: str, head: bytes) -> str:
    """What the file is, in a few words, from torch's exception; never torch's advice to load unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        if detail.startswith("Unsupported global:"):
            name = detail.removeprefix("Unsupported global:").split(" was not", 1)[0].strip()
            return (f"not a plain state_dict but a pickle with code objects ({_clean(name) or 'a global'}), "
                    "refused: only plain state_dicts load")
        if kind == _PICKLE and head[1] > 2:  # torch.save writes protocol 2; FRAME (149) needs 4
            detail = f"pickle protocol {head[1]}, not written by torch.save: {detail}"
        return (f"not a plain state_dict but a pickle the safe loader cannot read ({_clean(detail) or 'an opcode'}), "
                "refused: only plain state_dicts load")
    if kind == _ZIP:
        reason = text.split("zip archive:", 1)[1].split(".", 1)[0].strip() if "zip archive:" in text else ""
        return f"truncated or corrupt checkpoint ({_clean(reason) or 'damaged zip archive'})"
    return f"truncated or corrupt checkpoint (damaged pickle: {type(exc).__name__})"


def _clean(text: str, limit: int = 80) -> str:
    """One short line, and nothing of torch's "weights_only set to False" advice."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return "" if "weights_only" in line else line[:limit]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state_dict with ``weights_only=True``: pickled code is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise U2Error(f"{path}: no such weights file")
    head = _head(path)
    kind = _ZIP if head.startswith(_ZIP_MAGIC) else _PICKLE if _is_pickle(head) else None
    if kind is None:
        raise U2Error(f"{path}: not a PyTorch checkpoint ({_what_it_is(head)})")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 …" and the like: said below in one line
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises IndexError, KeyError, EOFError, RuntimeError … from inside its unpickler
        raise U2Error(f"{path}: {_load_failure(exc, kind, head)}") from None
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
