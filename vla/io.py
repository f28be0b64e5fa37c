"""Files on disk: atomic writes and JSON / JSON-lines reads whose errors name file and line.

Standard library only (no torch, no numpy), so every process can use it, the sim client included.

Every write goes to a temp file beside its target (`.name.xxx.tmp`), is fsynced, renamed into
place and the directory is fsynced: a reader sees the old file or the new one, never half of
one, and a crash leaves at most a stale temp file.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from vla.errors import OS_ERROR_HINTS, VLAError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "JSONFileError",
    "WriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "read_json",
    "read_jsonl",
    "write_json",
    "write_jsonl",
]


class JSONFileError(VLAError, ValueError):
    """A JSON or JSON-lines file that is missing or does not parse; the message says file:line."""


class WriteError(VLAError, OSError):
    """A file could not be written (no space, read-only, permission); the message names the file,
    the reason and what to do. The previous version of the file, if any, is untouched."""




def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`: itself, or one it was raised from or while handling (torch.save
    reports a failed write as 'unexpected pos ...' with the real OSError as its context)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """One clear message for an OSError met while writing `path`."""
    reason = exc.strerror or str(exc)
    where = Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(where.parent if where.parent.exists() else ".").free
            reason += f" ({free / 2**20:.1f} MiB free in {where.parent})"
        except OSError:
            pass
    hint = OS_ERROR_HINTS.get(exc.errno, "check the path and the file system")
    err = WriteError(exc.errno, f"cannot write {where}: {reason}; {hint}")
    err.filename = str(where)
    return err


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# mkstemp/mkdtemp create 0600/0700; what the atomic writers leave (configs, dataset metadata,
# statistics, checkpoints, tokenizers) is read by other processes, possibly another uid in a
# container, so it gets the mode a plain open()/mkdir() would have given it.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside `directory` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> int:
    """`write(tmp)` fills a temp file beside `path`; it is fsynced and renamed into place.

    Returns the size of the new file in bytes. Use it for writers that want a file name
    (`torch.save`, safetensors' `save_file`); text and bytes have their own helpers below.
    A failed write (no space, read-only, permission) raises `WriteError` naming `path`; the old
    file stays as it was and no temp file is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = None if isinstance(exc, WriteError) else os_error_in(exc)
        if cause is not None:
            raise write_error(path, cause) from exc
        raise
    fsync_dir(path.parent)
    return path.stat().st_size


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> int:
    """Replace `path` with `data` atomically; returns the size in bytes."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> int:
    """Replace `path` with `text` (UTF-8) atomically; returns the size in bytes."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> int:
    """`data` as one JSON document (with a trailing newline), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """One JSON object per line, written atomically."""
    return atomic_write_text(path, "".join(json.dumps(dict(r)) + "\n" for r in rows))


def read_json(path: str | os.PathLike, *, error: type[Exception] = JSONFileError) -> Any:
    """The parsed contents of a JSON file; a missing file or bad JSON raises `error("file:line: ...")`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def read_jsonl(path: str | os.PathLike, *, error: type[Exception] = JSONFileError,
               torn_tail_ok: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped).

    A line that is not a JSON object raises `error("file:line: ...")`. With `torn_tail_ok`, a last
    line without its newline that does not parse is dropped: an append-only log killed mid-write.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if torn_tail_ok and lineno == len(lines):   # the last piece has no newline after it
                break
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise error(f"{path}:{lineno}: invalid JSON line: {msg}") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
