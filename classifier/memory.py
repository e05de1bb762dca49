"""Give memory that the process no longer uses back to the system (glibc's malloc; elsewhere, nothing).

A worker's memory after a request should be what it was before: the platform counts what
the process holds, not what it uses, and a dyno that goes over its quota is slowed down and
then restarted. glibc keeps freed memory for reuse by default: the figures are in
docs/memory.md.
"""

from __future__ import annotations

import ctypes

# Blocks at least this large are mapped from the system and unmapped when freed. By default
# glibc raises this limit with every large block freed (up to 32 MB), and then a large
# image's bitmap or a large batch's buffers stay in the heap for good, idle. Held fixed, it
# must stay above what one request's forward pass allocates at once (ONNX Runtime plans all
# of a pass's buffers as one block): mapped and unmapped on every request, that block's
# pages would be zeroed again each time, a CPU cost docs/memory.md measured.
LARGE_BLOCK_BYTES = 16 * 1024 * 1024
# The heap's free end is given back by free() only beyond this (fixing the limit above also
# stops glibc from adjusting this one): the blocks every request reuses stay; trim_heap()
# gives back the rest after a batch.
KEPT_FREE_HEAP_BYTES = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): their own defaults
        return None


_LIBC = _libc()


def return_large_blocks_to_the_system() -> None:
    """From now on, large blocks go back to the system as soon as they are freed."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_HEAP_BYTES)


def trim_heap() -> None:
    """Return the free memory at the heap's end and in its free pages."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
