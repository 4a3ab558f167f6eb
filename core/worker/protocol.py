"""The worker's wire format: versioned, typed messages with binary array attachments.

One WebSocket binary frame is one message::

    b"LCW" + version byte | header length (uint32, big-endian) | JSON header | array bytes ...

The JSON header holds the message; arrays (images, masks, latents, previews) travel as raw bytes
after it, each described in ``header["arrays"]`` (dtype, shape) and referenced as ``{"$nd": i}``.
Dataclasses travel as ``{"$dc": name, "fields": {...}}`` and are rebuilt only from the allowlist in
:data:`TYPES` (their ``__post_init__`` validation runs again on the receiving side); enums, tuples
and ErrorKind/MsgKind likewise. Nothing is ever unpickled: a message can name no code to run.
Raw arrays, not PNG, for previews: at 64-512 px an uncompressed frame costs less to make and read
than to compress (measured in bench/worker_speed.py), and the loopback or LAN link is not the limit.

Framing and transport are the ``websockets`` library's (RFC 6455, the permessage limits, the HTTP
handshake where the bearer token is checked); this module only encodes the payloads.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import struct
from typing import Any

import numpy as np

from core.errors import LatentCanvasError
from core.jobs.events import Progress
from core.jobs.invert import InvertResult
from core.jobs.params import InvertParams, ProjectionParams, SDEditParams
from core.jobs.projection import ProjectionResult
from core.jobs.sdedit import SDEditResult
from core.types import LatentSpace
from core.worker.messages import (
    ErrorKind,
    InterpolateFrameRequest,
    JobRequest,
    LoadModelRequest,
    MsgKind,
    SDEditRequest,
    UnloadModelRequest,
    WorkerMessage,
)

VERSION = 1
MAGIC = b"LCW"
MAX_MESSAGE_BYTES = 256 * 2**20  # a 4-sample 1024 px SDEdit result with its latents fits many times
MAX_ARRAYS = 64
MAX_NDIM = 6
MAX_DEPTH = 16
DTYPES = ("uint8", "float32", "float64", "int64", "int32", "bool")

TYPES: dict[str, type] = {
    t.__name__: t
    for t in (
        InvertParams, ProjectionParams, SDEditParams, LoadModelRequest, UnloadModelRequest, SDEditRequest,
        InterpolateFrameRequest, JobRequest, Progress, InvertResult, ProjectionResult, SDEditResult,
    )
}  # fmt: skip
ENUMS: dict[str, type[enum.Enum]] = {e.__name__: e for e in (LatentSpace, MsgKind, ErrorKind)}

# Message types. Client -> worker: submit {request}, cancel {}. Worker -> client: hello {version,
# capabilities: devices, jobs, torch, models (the loaded generator and resources, the generator files
# on the worker's machine)}, event {message}, protocol_error {error}. Loading and unloading models are
# requests like the jobs (load_model, unload_model), answered MODEL_LOADED / MODEL_UNLOADED.
CLIENT_TYPES = ("submit", "cancel")
WORKER_TYPES = ("hello", "event", "protocol_error")


class ProtocolError(LatentCanvasError):
    """A message that is not a valid message of this protocol version."""


# --- encoding -------------------------------------------------------------------------------------


def encode(msg_type: str, **body: Any) -> bytes:
    arrays: list[np.ndarray] = []
    header = {"v": VERSION, "type": msg_type, "body": _to_json(body, arrays, 0)}
    header["arrays"] = [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays]
    head = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    parts = [MAGIC, bytes([VERSION]), struct.pack(">I", len(head)), head]
    parts += [np.ascontiguousarray(a).tobytes() for a in arrays]
    return b"".join(parts)


def _to_json(x: Any, arrays: list[np.ndarray], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError("message nests too deep")
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        if x.dtype.name not in DTYPES:
            raise ProtocolError(f"arrays of {x.dtype} cannot be sent")
        arrays.append(x)
        return {"$nd": len(arrays) - 1}
    if isinstance(x, enum.Enum):
        return {"$enum": type(x).__name__, "value": x.value}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        name = type(x).__name__
        if TYPES.get(name) is not type(x):
            raise ProtocolError(f"{name} is not a protocol type")
        fields = {f.name: _to_json(getattr(x, f.name), arrays, depth + 1) for f in dataclasses.fields(x)}
        return {"$dc": name, "fields": fields}
    if isinstance(x, tuple):
        return {"$tuple": [_to_json(v, arrays, depth + 1) for v in x]}
    if isinstance(x, list):
        return [_to_json(v, arrays, depth + 1) for v in x]
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise ProtocolError("dict keys must be strings")
        if any(k.startswith("$") for k in x):
            raise ProtocolError("dict keys may not start with '$'")
        return {k: _to_json(v, arrays, depth + 1) for k, v in x.items()}
    raise ProtocolError(f"a {type(x).__name__} cannot be sent")


# --- decoding -------------------------------------------------------------------------------------


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """``(message type, body)`` of one frame; any malformed frame raises ProtocolError."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise ProtocolError("messages are binary frames")
    frame = bytes(frame)
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(frame)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    if len(frame) < 8 or frame[:3] != MAGIC:
        raise ProtocolError("not a Latent Canvas worker message")
    if frame[3] != VERSION:
        raise ProtocolError(f"protocol version {frame[3]}; this side speaks version {VERSION}")
    (n,) = struct.unpack(">I", frame[4:8])
    if 8 + n > len(frame):
        raise ProtocolError("truncated header")
    try:
        header = json.loads(frame[8 : 8 + n].decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"unreadable header: {e}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION or not isinstance(header.get("type"), str):
        raise ProtocolError("header needs v (the version) and type")
    arrays = _read_arrays(header.get("arrays"), memoryview(frame)[8 + n :])
    try:
        body = _from_json(header.get("body"), arrays, 0)
    except ProtocolError:
        raise
    except (TypeError, ValueError, LatentCanvasError, KeyError) as e:  # a dataclass refused its fields
        raise ProtocolError(f"invalid message: {e}") from None
    if not isinstance(body, dict):
        raise ProtocolError("message body must be an object")
    return header["type"], body


def _read_arrays(specs: Any, data: memoryview) -> list[np.ndarray]:
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError("header needs an array list (at most 64)")
    out, offset = [], 0
    for s in specs:
        if not isinstance(s, dict) or s.get("dtype") not in DTYPES:
            raise ProtocolError(f"array dtype must be one of {', '.join(DTYPES)}")
        shape = s.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d <= MAX_MESSAGE_BYTES for d in shape)
        ):
            raise ProtocolError(f"bad array shape {shape!r}")
        dtype = np.dtype(s["dtype"])
        if math.prod(max(d, 1) for d in shape) * dtype.itemsize > MAX_MESSAGE_BYTES:  # a 0 dim hides none
            raise ProtocolError(f"array shape {shape} is over the size limit")
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if offset + nbytes > len(data):
            raise ProtocolError("truncated array data")
        out.append(np.frombuffer(data[offset : offset + nbytes], dtype=dtype).reshape(shape).copy())
        offset += nbytes
    if offset != len(data):
        raise ProtocolError(f"{len(data) - offset} bytes after the last array")
    return out


def _from_json(x: Any, arrays: list[np.ndarray], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError("message nests too deep")
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, list):
        return [_from_json(v, arrays, depth + 1) for v in x]
    if not isinstance(x, dict):
        raise ProtocolError(f"unexpected {type(x).__name__}")
    if "$nd" in x:
        i = x["$nd"]
        if type(i) is not int or not 0 <= i < len(arrays):
            raise ProtocolError(f"array reference {i!r} out of range")
        return arrays[i]
    if "$enum" in x:
        cls = ENUMS.get(x["$enum"]) if isinstance(x["$enum"], str) else None
        if cls is None:
            raise ProtocolError(f"unknown enum {x['$enum']!r}")
        return cls(x.get("value"))
    if "$tuple" in x:
        if not isinstance(x["$tuple"], list):
            raise ProtocolError("a tuple is a list")
        return tuple(_from_json(v, arrays, depth + 1) for v in x["$tuple"])
    if "$dc" in x:
        return _dataclass(x, arrays, depth)
    if any(k.startswith("$") for k in x):
        raise ProtocolError(f"unknown tag in {sorted(x)}")
    return {k: _from_json(v, arrays, depth + 1) for k, v in x.items()}


def _dataclass(x: dict, arrays: list[np.ndarray], depth: int) -> Any:
    cls = TYPES.get(x["$dc"]) if isinstance(x["$dc"], str) else None
    if cls is None:
        raise ProtocolError(f"unknown type {x['$dc']!r}")
    fields = x.get("fields")
    if not isinstance(fields, dict):
        raise ProtocolError(f"{cls.__name__} needs its fields")
    known = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(fields) - known)
    if extra:
        raise ProtocolError(f"{cls.__name__} has no fields {extra}")
    return cls(**{k: _from_json(v, arrays, depth + 1) for k, v in fields.items()})


# --- the messages ---------------------------------------------------------------------------------


def submit(req: JobRequest) -> bytes:
    return encode("submit", request=req)


def cancel() -> bytes:
    return encode("cancel")


def hello(capabilities: dict[str, Any]) -> bytes:
    return encode("hello", version=VERSION, capabilities=capabilities)


def event(msg: WorkerMessage) -> bytes:
    return encode(
        "event",
        kind=msg.kind,
        job_id=msg.job_id,
        payload=msg.payload,
        error_kind=msg.error_kind,
    )


def protocol_error(message: str) -> bytes:
    return encode("protocol_error", error=message)


def read_request(frame: bytes) -> JobRequest | None:
    """A client frame: the JobRequest of a submit, None for a cancel; ProtocolError otherwise."""
    kind, body = decode(frame)
    if kind == "cancel":
        return None
    if kind != "submit" or not isinstance(body.get("request"), JobRequest):
        raise ProtocolError(f"expected submit or cancel, got {kind!r}")
    return body["request"]


def read_event(frame: bytes) -> WorkerMessage:
    kind, body = decode(frame)
    if kind == "protocol_error":
        return WorkerMessage(MsgKind.ERROR, -1, str(body.get("error")), ErrorKind.PROTOCOL)
    if kind != "event" or not isinstance(body.get("kind"), MsgKind) or type(body.get("job_id")) is not int:
        raise ProtocolError(f"expected an event, got {kind!r}")
    error_kind = body.get("error_kind")
    if error_kind is not None and not isinstance(error_kind, ErrorKind):
        raise ProtocolError("error_kind must be an ErrorKind")
    return WorkerMessage(body["kind"], body["job_id"], body.get("payload"), error_kind)


def read_hello(frame: bytes) -> dict[str, Any]:
    kind, body = decode(frame)
    if kind != "hello" or body.get("version") != VERSION or not isinstance(body.get("capabilities"), dict):
        raise ProtocolError(f"expected hello for version {VERSION}, got {kind!r}")
    return body["capabilities"]
