"""An ONNX file, read two ways: whole and checked (:func:`load_onnx`), or only its metadata (:func:`read_metadata`).

The stages and graph checks need the graph, parsed and passed through ``onnx.checker``. A runner needs
only the ``metadata_props`` before it builds its session (Polygraphy's loader/runner split: what the
artifact is decides how to load it), and reads them without importing onnx or parsing the graph: the
top-level fields of the ``ModelProto`` are walked on the protobuf wire format and the graph, which
holds the weights, is skipped by its length.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import U2Error

if TYPE_CHECKING:  # onnx takes ~0.3 s to import; read_metadata never needs it
    import onnx

# onnx.proto: ModelProto.metadata_props = 14, each a StringStringEntryProto {key = 1; value = 2}.
_METADATA_PROPS, _KEY, _VALUE = 14, 1, 2
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # the protobuf wire types a ModelProto uses
NOT_UTF8 = "not a valid ONNX model (a name or metadata value is not UTF-8 text)"


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """The model, parsed and passed through ``onnx.checker`` (full check): one-line errors otherwise."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise U2Error(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise U2Error(f"{path}: not an ONNX model (empty file)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx its own types
        raise U2Error(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise U2Error(f"{path}: not an ONNX model (no graph)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, or protobuf's on a damaged message
        lines = str(exc).strip().splitlines()
        first = next((ln.strip() for ln in lines if ln.strip() and not ln.startswith("[")), "") or (
            lines[0].strip() if lines else type(exc).__name__)
        raise U2Error(f"{path}: not a valid ONNX model ({first[:160]})") from None
    from .engines.contract import non_text_field

    if (field := non_text_field(model)) is not None:
        raise U2Error(f"{path}: not a valid ONNX model ({field} is not UTF-8 text)")
    return model


class _Damaged(Exception):
    """The bytes are not a protobuf message (what ONNX Runtime would fail to parse too)."""


def _varint(data: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Damaged(f"a number runs past byte {pos}")


def _fields(data: mmap.mmap | bytes, start: int, end: int):
    """(field number, wire type, payload start, payload end) of each field of the message in ``data[start:end]``."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            _, after = _varint(data, pos, end)
        elif wire in (_I64, _I32):
            after = pos + (8 if wire == _I64 else 4)
        elif wire == _LEN:
            length, pos = _varint(data, pos, end)
            after = pos + length
        else:
            raise _Damaged(f"wire type {wire} at byte {pos}")
        if number == 0 or after > end:
            raise _Damaged(f"a field runs past the end at byte {pos}" if after > end else f"field 0 at byte {pos}")
        yield number, wire, pos, after
        pos = after


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model's ``metadata_props`` as ONNX Runtime reports them (a repeated key: the last value wins).

    Reads the file's top-level fields only, memory-mapped: the graph is skipped, never parsed.
    One-line :class:`U2Error` on an empty or damaged file, or on a key or value that is not UTF-8.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                raise U2Error(f"{path}: not an ONNX model (empty file)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _metadata_props(data)
    except FileNotFoundError:
        raise U2Error(f"{path}: no such file") from None
    except OSError as exc:
        raise U2Error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except _Damaged as exc:
        raise U2Error(f"{path}: not an ONNX model (damaged protobuf: {exc})") from None
    except UnicodeDecodeError:
        raise U2Error(f"{path}: {NOT_UTF8}") from None


def _metadata_props(data: mmap.mmap) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for number, wire, start, end in _fields(data, 0, len(data)):
        if number != _METADATA_PROPS:
            continue
        if wire != _LEN:
            raise _Damaged(f"metadata_props is not a message at byte {start}")
        entry = {n: bytes(data[s:e]).decode("utf-8") for n, w, s, e in _fields(data, start, end)
                 if n in (_KEY, _VALUE) and w == _LEN}
        metadata[entry.get(_KEY, "")] = entry.get(_VALUE, "")
    return metadata
