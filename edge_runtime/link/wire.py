"""The tensor link's wire format: ZeroMQ multipart ``[header, payload]``, no pickle anywhere.

Every message is one or two frames:

    frame 0  header   UTF-8 JSON object, at most `MAX_HEADER_BYTES`, versioned (`PROTOCOL_VERSION`)
    frame 1  payload  the raw tensor buffer (task and result only), sent with ``copy=False`` and
                      read back with ``np.frombuffer`` (no extra copy)

Header fields (JSON keys; absent keys take the defaults of `Header`):

| key | type | meaning |
|---|---|---|
| ``v`` | int | protocol version (must equal `PROTOCOL_VERSION`) |
| ``kind`` | str | one of `KINDS` (below) |
| ``id`` | str | task id, unique per vehicle (``<vehicle>-<n>``) |
| ``vehicle`` | str | sender vehicle id |
| ``model``, ``digest`` | str | model id and its manifest digest (sha256 hex of the canonical manifest) |
| ``cut`` | int | manifest cut index of the tensor (task: where the edge node resumes; result: n) |
| ``dtype``, ``shape`` | str, [int] | the tensor as the receiver gets it after decoding (a cut spec) |
| ``encoding`` | str | payload encoding, one of `ENCODINGS` |
| ``scale``, ``zero_point`` | float, int | int8 only: x = (q - zero_point) * scale |
| ``sent`` | float | sender's wall clock at send (s since the epoch); informational only: no duration is ever computed across two machines' clocks |
| ``server`` | object | replies: the node's own timing and backlog (`SERVER_TIMING_KEYS`) |
| ``node`` | str | replies: the node's name |
| ``code``, ``message`` | str | error/busy replies: a code from `ERROR_CODES` and a readable sentence |
| ``state`` | object | state replies: the node's snapshot (splitrt.edge_runtime.node.server `EdgeServer.snapshot`) |

Kinds: ``task`` (vehicle -> node, with payload), ``result`` (node -> vehicle, the model output
as payload), ``busy`` (queue full: the task was not accepted), ``error`` (refused or failed,
``code`` says why), ``state_request`` (anyone -> node) and ``state`` (node -> requester).

Encodings: `ENCODINGS` (fp32, fp16, int8), splitrt.edge_runtime.link.tensors.

Validation is strict: every decode names what was wrong (`WireError.code`): a header over the
size limit, not JSON, of another version, an unknown kind or field, a wrong type; a payload
whose byte count does not equal prod(shape) x the encoding's itemsize, or over `MAX_PAYLOAD_BYTES`.
Checking the tensor against a manifest's cut spec is `check_task_tensor`'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np

from splitrt.edge_runtime.formats.manifest import DTYPES, TensorSpec
from splitrt.edge_runtime.link.protocol import (  # re-exported: the wire format's names, in one place
    ENCODINGS,
    ERROR_CODES,
    KINDS,
    MAX_HEADER_BYTES,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    SERVER_TIMING_KEYS,
    WireError,
)
from splitrt.edge_runtime.link.tensors import (
    Encoded,
    _check_int8,
    _element_count,
    _wire_dtype,
    decode_tensor,
    encode_tensor,
    int8_params,
)

__all__ = [
    "ENCODINGS",
    "ERROR_CODES",
    "KINDS",
    "MAX_HEADER_BYTES",
    "MAX_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "SERVER_TIMING_KEYS",
    "Encoded",
    "Header",
    "WireError",
    "check_task_tensor",
    "decode_header",
    "decode_payload",
    "decode_tensor",
    "encode_tensor",
    "frame_buffer",
    "int8_params",
    "pack",
    "tensor_header",
    "unpack",
]


# ---- headers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """Frame 0 of every message (JSON keys in the module docstring)."""

    kind: str
    id: str = ""
    vehicle: str = ""
    model: str = ""
    digest: str = ""
    cut: int = -1
    dtype: str = ""
    shape: tuple[int, ...] = ()
    encoding: str = "fp32"
    scale: float = 1.0
    zero_point: int = 0
    sent: float = 0.0
    node: str = ""
    code: str = ""
    message: str = ""
    server: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        values = self.__dict__  # not getattr per field: this runs for every message
        data: dict[str, Any] = {"v": values["v"], "kind": values["kind"]}
        required = _REQUIRED.get(values["kind"], ())
        for name, default in _OPTIONAL_FIELDS:
            value = values[name]
            if value == default and name not in required:
                continue
            data[name] = value  # a shape tuple encodes as a JSON list
        try:
            out = _JSON.encode(data).encode()
        except ValueError as exc:
            raise WireError("bad_header", f"header cannot be encoded: {exc}") from None
        if len(out) > MAX_HEADER_BYTES:
            raise WireError("too_large", f"header is {len(out)} bytes, over the {MAX_HEADER_BYTES}-byte limit")
        return out

    @property
    def has_payload(self) -> bool:
        return self.kind in ("task", "result")


_OPTIONAL_FIELDS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
    for f in fields(Header)
    if f.name not in ("v", "kind")
)
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_JSON_DECODE = json.JSONDecoder().decode
#: Every field's default in declaration order (`_header_from` copies it, then the message's fields).
_HEADER_DEFAULTS: dict[str, Any] = {"kind": "", **dict(_OPTIONAL_FIELDS), "v": PROTOCOL_VERSION}

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "kind": (str,),
    "id": (str,),
    "vehicle": (str,),
    "model": (str,),
    "digest": (str,),
    "cut": (int,),
    "dtype": (str,),
    "shape": (list,),
    "encoding": (str,),
    "scale": (float, int),
    "zero_point": (int,),
    "sent": (float, int),
    "node": (str,),
    "code": (str,),
    "message": (str,),
    "server": (dict,),
    "state": (dict,),
}

#: Fields each kind must carry (beyond v and kind).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "task": ("id", "vehicle", "model", "digest", "cut", "dtype", "shape"),
    "result": ("id", "dtype", "shape"),
    "busy": ("id", "code"),
    "error": ("code", "message"),
    "state_request": (),
    "state": ("state",),
}


def decode_header(raw: Any) -> Header:
    """Parse and validate frame 0. Raises `WireError` naming the problem."""
    size = memoryview(raw).nbytes
    if size > MAX_HEADER_BYTES:
        raise WireError("too_large", f"header frame is {size} bytes, over the {MAX_HEADER_BYTES}-byte limit")
    try:
        data = _JSON_DECODE(str(raw, "utf-8"))  # str() reads the buffer itself: no bytes() copy
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("bad_header", f"header is not UTF-8 JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise WireError("bad_header", f"header must be a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if version != PROTOCOL_VERSION:
        raise WireError(
            "bad_version", f"protocol version {version!r} is not supported (this peer speaks {PROTOCOL_VERSION})"
        )
    kind = data.get("kind")
    if kind not in KINDS:
        raise WireError("unknown_kind", f"message kind {kind!r} is unknown (one of {', '.join(KINDS)})")
    for key, value in data.items():
        types = _FIELD_TYPES.get(key)
        if types is None:
            unknown = sorted(set(data) - set(_FIELD_TYPES))
            raise WireError("bad_header", f"unknown header field(s) {', '.join(unknown)} in a {kind} message")
        if type(value) not in types:  # exact types: a JSON true is not an int here
            raise WireError("bad_header", f"header field {key!r} must be {types[0].__name__}, got {value!r:.60}")
    missing = [k for k in _REQUIRED[kind] if k not in data]
    if missing:
        raise WireError("bad_header", f"{kind} header lacks field(s) {', '.join(missing)}")
    for key in ("id", "vehicle", "model", "node"):
        if key in data and len(data[key]) > MAX_ID_CHARS:
            raise WireError("bad_header", f"header field {key!r} is longer than {MAX_ID_CHARS} characters")
    if "shape" in data:
        shape = data["shape"]
        if any(type(d) is not int for d in shape):
            raise WireError("shape_mismatch", f"shape {shape!r:.80} must be a list of integers")
        data["shape"] = tuple(shape)
        _element_count(data["shape"])
    if "dtype" in data and data["dtype"] not in DTYPES:
        raise WireError("shape_mismatch", f"dtype {data['dtype']!r} is not one of {', '.join(DTYPES)}")
    if data.get("encoding", "fp32") not in ENCODINGS:
        raise WireError("bad_encoding", f"unknown encoding {data['encoding']!r} (one of {', '.join(ENCODINGS)})")
    if "scale" in data:
        data["scale"] = float(data["scale"])
    if "sent" in data:
        data["sent"] = float(data["sent"])
    return _header_from(data)


def _header_from(data: dict[str, Any]) -> Header:
    """``Header(**data)`` for validated ``data``, without the frozen dataclass's per-field
    ``object.__setattr__`` calls (the same instance, a few microseconds less per message)."""
    header = object.__new__(Header)
    values = header.__dict__
    values.update(_HEADER_DEFAULTS)
    values["server"] = {}
    values["state"] = {}
    values.update(data)
    return header


# ---- messages ------------------------------------------------------------------------------


def tensor_header(kind: str, encoded: Encoded, **fields_: Any) -> Header:
    """A task/result header describing ``encoded`` (the other fields as keywords)."""
    return Header(
        kind=kind,
        dtype=encoded.dtype,
        shape=encoded.shape,
        encoding=encoded.encoding,
        scale=encoded.scale,
        zero_point=encoded.zero_point,
        **fields_,
    )


def pack(header: Header, payload: np.ndarray | None = None) -> list[Any]:
    """The frames to send with ``send_multipart(frames, copy=False)``: [header] or [header, payload]."""
    head = header.to_bytes()
    if header.has_payload:
        if payload is None:
            raise WireError("bad_frames", f"a {header.kind} message needs a payload")
        if not payload.flags.c_contiguous:
            raise WireError("bad_frames", "payload must be C-contiguous (zero-copy send)")
        return [head, payload]
    if payload is not None:
        raise WireError("bad_frames", f"a {header.kind} message carries no payload")
    return [head]


def frame_buffer(frame: Any) -> memoryview:
    """The bytes of a received frame: ``zmq.Frame.buffer`` (no copy) or bytes."""
    buf = getattr(frame, "buffer", None)
    return buf if buf is not None else memoryview(frame)


def unpack(frames: list[Any]) -> tuple[Header, memoryview | None]:
    """(header, payload buffer) from received frames (zmq.Frame or bytes); validates frame count."""
    if not 1 <= len(frames) <= 2:
        raise WireError("bad_frames", f"a message has 1 or 2 frames (header[, payload]), got {len(frames)}")
    header = decode_header(frame_buffer(frames[0]))
    payload = frame_buffer(frames[1]) if len(frames) == 2 else None
    if header.has_payload and payload is None:
        raise WireError("bad_frames", f"{header.kind} message has no payload frame")
    if not header.has_payload and payload is not None:
        raise WireError("bad_frames", f"{header.kind} message must not carry a payload frame")
    if payload is not None and payload.nbytes > MAX_PAYLOAD_BYTES:
        raise WireError("too_large", f"payload is {payload.nbytes} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    return header, payload


def decode_payload(header: Header, payload: Any) -> np.ndarray:
    """The tensor a task/result message carries (see `decode_tensor`)."""
    return decode_tensor(
        payload,
        dtype=header.dtype,
        shape=header.shape,
        encoding=header.encoding,
        scale=header.scale,
        zero_point=header.zero_point,
    )


def check_task_tensor(header: Header, spec: TensorSpec, payload_bytes: int) -> None:
    """Refuse a task whose tensor is not ``spec`` (the manifest's cut spec) or whose payload
    size does not match, before any decoding work is spent on it."""
    if header.dtype != spec.dtype or tuple(header.shape) != tuple(spec.shape):
        raise WireError(
            "shape_mismatch",
            f"cut {header.cut} of {header.model} carries {spec.dtype}{list(spec.shape)}, "
            f"the task says {header.dtype}{list(header.shape)}",
        )
    wire = _wire_dtype(spec.dtype, header.encoding)
    if header.encoding == "int8":
        _check_int8(header.scale, header.zero_point)
    expected = math.prod(spec.shape) * wire.itemsize
    if payload_bytes != expected:
        raise WireError(
            "size_mismatch",
            f"payload has {payload_bytes} bytes, but {spec.dtype}{list(spec.shape)} sent as "
            f"{header.encoding} needs {expected}",
        )
