"""Request bodies read without holding the event loop: one buffer, filled chunk by chunk.

A body with a Content-Length is read into one buffer allocated up front (no list of chunks joined
at the end: that join is a single copy of the whole body on the event loop, ~0.2 s for 50 MB on a
busy machine). A large JSON body's buffer is shared memory, so the worker process that parses it
reads it in place: handing it over as a pickled argument would copy it again, on a thread that
holds the GIL throughout (as long as the join). A body without a Content-Length (chunked) grows a
bytearray, which the parser gets pickled.

    body = RequestBody.open(length, max_bytes, shared=use_json and length > OFFLOAD_BYTES)
    for chunk in ...: body.add(chunk)        # raises the caller's error past max_bytes
    data = body.data()                       # bytes-like, for small bodies and msgpack
    parse_shared_json(body.name, len(body))  # in the parse process, for a shared one
    body.close()                             # always (unlinks the shared memory)
"""
from __future__ import annotations

from multiprocessing import shared_memory
from typing import Any, Callable


class BodyTooLong(Exception):
    """More bytes than the limit (or than the Content-Length said)."""


class RequestBody:
    def __init__(self, buffer: Any, length: int | None, max_bytes: int, shm: shared_memory.SharedMemory | None):
        self._buffer = buffer
        self._view = memoryview(buffer) if length is not None else None
        self._length = length
        self._max = max_bytes
        self._shm = shm
        self._size = 0

    @classmethod
    def open(cls, length: int | None, max_bytes: int, *, shared: bool = False) -> "RequestBody":
        """A body of `length` bytes (None: unknown), refused past `max_bytes`; `shared` (a known
        length only) puts it in shared memory for another process to read."""
        if length is None:
            return cls(bytearray(), None, max_bytes, None)
        if shared and length:
            shm = shared_memory.SharedMemory(create=True, size=length)
            return cls(shm.buf, length, max_bytes, shm)
        return cls(bytearray(length), length, max_bytes, None)

    def add(self, chunk: bytes) -> None:
        end = self._size + len(chunk)
        if end > self._max or (self._length is not None and end > self._length):
            raise BodyTooLong(end)
        if self._view is not None:
            self._view[self._size:end] = chunk
        else:
            self._buffer += chunk
        self._size = end

    def __len__(self) -> int:
        return self._size

    @property
    def shared(self) -> bool:
        return self._shm is not None

    @property
    def name(self) -> str:
        return self._shm.name

    def data(self) -> Any:
        """The bytes read so far, bytes-like (a bytearray, without a copy when the body was complete)."""
        if self._shm is not None:
            return bytes(self._view[:self._size])
        if self._size == len(self._buffer):
            return self._buffer
        return self._buffer[:self._size]

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None


def read_shared(name: str, size: int, parse: Callable[[bytes], Any]) -> Any:
    """In the parse process: `parse` the `size` bytes of the shared memory `name` (the parent owns
    and unlinks it; this process only borrows it)."""
    # Attaching registers the segment with the resource tracker this process shares with the
    # parent (spawned children do), where it already is; the parent's unlink unregisters it once.
    shm = shared_memory.SharedMemory(name=name)
    try:
        data = bytes(shm.buf[:size])
    finally:
        shm.close()
    return parse(data)
