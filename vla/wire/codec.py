"""msgpack-numpy, byte-compatible with openpi-client's `msgpack_numpy`.

An array travels as a map `{b"__ndarray__": True, b"data": <bytes>, b"dtype": <dtype.str>,
b"shape": <list>}` and a numpy scalar as `{b"__npgeneric__": True, b"data": <item>,
b"dtype": <dtype.str>}`, exactly as openpi encodes them, so this codec talks to openpi
servers and clients in both directions. Object, void and complex dtypes are refused (openpi
refuses them too), and so are frames over `max_bytes`.
"""
from __future__ import annotations

import functools
from typing import Any

import msgpack
import numpy as np

from vla.wire.errors import ErrorCode, PolicyError, RequestTooLarge

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_REFUSED_KINDS = ("V", "O", "c")


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                          f"cannot encode numpy dtype {obj.dtype} (object, void and complex are refused)")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__} in msgpack-numpy")


def _dtype(raw: Any) -> np.dtype:
    if isinstance(raw, (str, bytes)):
        return _named_dtype(raw)
    return _parse_dtype(raw)


@functools.lru_cache(maxsize=64)
def _named_dtype(raw: str | bytes) -> np.dtype:
    """The dtype a frame names (`"<f8"`, `"|u1"`): parsed once, not once per array of every request
    (errors are not cached; a hostile stream of names only cycles the cache)."""
    return _parse_dtype(raw)


def _parse_dtype(raw: Any) -> np.dtype:
    try:
        dtype = np.dtype(raw.decode() if isinstance(raw, bytes) else raw)
    except TypeError as exc:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"bad dtype {raw!r} in msgpack-numpy frame: {exc}") from None
    if dtype.kind in _REFUSED_KINDS:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"refused dtype {dtype} in msgpack-numpy frame")
    return dtype


def _unpack_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        shape = obj.get(b"shape")
        data = obj.get(b"data")
        if not isinstance(data, (bytes, bytearray)) or not isinstance(shape, (list, tuple)):
            raise PolicyError(ErrorCode.INVALID_ARGUMENT, "malformed ndarray in msgpack-numpy frame")
        count = 1
        for d in shape:   # a loop, not all() over a generator: this runs for every array of every request
            if not isinstance(d, int) or d < 0:
                raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"bad ndarray shape {shape!r}")
            count *= d   # Python ints: no int64 wrap-around
        expected = count * dtype.itemsize
        if expected != len(data):
            raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                              f"ndarray of shape {tuple(shape)} and dtype {dtype} needs {expected} bytes, got {len(data)}")
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj[b"data"])
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"bad numpy scalar in msgpack-numpy frame: {exc}") from None
    return obj


def packb(obj: Any, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """Encode `obj` (dicts, lists, str, numbers, numpy arrays and scalars)."""
    data = msgpack.packb(obj, default=_pack_default, use_bin_type=True)
    if max_bytes is not None and len(data) > max_bytes:
        raise RequestTooLarge(f"encoded frame is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def unpackb(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Any:
    """Decode a frame; malformed input raises PolicyError(INVALID_ARGUMENT), oversize input
    RequestTooLarge (RESOURCE_EXHAUSTED, not retryable)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise RequestTooLarge(f"frame is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=False)
    except PolicyError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise PolicyError(ErrorCode.INVALID_ARGUMENT, f"malformed msgpack frame: {exc}") from None


# Same call shapes as openpi_client.msgpack_numpy, for code written against it.
Packer = functools.partial(msgpack.Packer, default=_pack_default, use_bin_type=True)
Unpacker = functools.partial(msgpack.Unpacker, object_hook=_unpack_hook, raw=False)
