"""glibc's malloc, tuned for a server that handles the same large buffers request after request
(`policy_server --malloc-arenas`, `--malloc-keep-mb`; benchmark clients use the same call). Every
function returns False where the C library is not glibc, or refused the value."""
from __future__ import annotations

# glibc mallopt parameters (malloc.h) and the largest M_MMAP_THRESHOLD it takes on 64-bit.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
KEEP_FREED_MB = 32   # policy_server --malloc-keep-mb's default


def _mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(param, value); False where that is not glibc (or it refused the value)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, int(value)))
    except (OSError, AttributeError):
        return False


def limit_malloc_arenas(arenas: int) -> bool:
    """mallopt(M_ARENA_MAX, arenas) before the server starts its threads; False where that is not
    glibc (the flag then has nothing to set, and says so in the log)."""
    return _mallopt(M_ARENA_MAX, arenas)


def keep_freed_memory(megabytes: int) -> bool:
    """Keep up to `megabytes` of freed heap memory for reuse (M_TRIM_THRESHOLD) and take allocations
    up to that size (at most glibc's cap of 32 MiB) from the heap rather than fresh mmaps
    (M_MMAP_THRESHOLD). A request's buffers (a ~0.4 MB frame, its decoded images) are then reused
    from one request to the next; with glibc's defaults each was handed back to the OS when freed
    and page-faulted in again on the next request (perf stat: ~110 page faults and ~0.3 ms of CPU
    per websocket request of the no-op server). False where that is not glibc."""
    nbytes = megabytes * 1024 * 1024
    return _mallopt(M_MMAP_THRESHOLD, min(nbytes, MMAP_THRESHOLD_MAX)) and _mallopt(M_TRIM_THRESHOLD, nbytes)
