"""glibc's allocator, held steady for the duration of training.

A training step allocates and frees the same large tensors over and over. By default glibc
hands blocks above a moving threshold straight back to the kernel (`munmap`, or trimming
the heap top), so the next step's tensor of the same size is fresh memory again, and every
4 KB page of it is a page fault on first touch: 500-620K faults in one benchmark fit, ~1.4
us each on the 2-core benchmark machine. Keeping freed blocks in the heap took that to about
310K (most of the rest is the first touch of the peak), and it is what makes the
batched-matmul attention backward (`hone.engine.attention`) pay off: its score-sized buffers
otherwise fault on every call (0.65 vs 0.17 ms for one product). Freed blocks are reused,
not added to: the benchmark's peak went from 1180 to 1193-1206 MB.

On exit both thresholds go back to glibc's default values (its dynamic adjustment of them
stays off) and the heap is trimmed. No effect where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 32 * 2**20  # glibc's largest mmap threshold on 64-bit: blocks up to this come from the heap
DEFAULT_THRESHOLD = 128 * 2**10  # glibc's default for both
NEVER = 2**31 - 1  # mallopt takes a C int: the largest trim threshold it can be given


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def kept_heap():
    """Until exit, freed blocks up to KEEP_BELOW stay in the heap for reuse instead of going
    back to the kernel. Yields whether it took effect (glibc only)."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER))
    try:
        yield ok
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
        give_back_free_memory()


def give_back_free_memory() -> None:
    """Return freed heap pages to the kernel now (glibc's `malloc_trim`), including those in
    holes below the heap's top. For after replacing long-lived tensors (the weights that
    `hone.engine.fused` moves): their old blocks would otherwise stay resident, since later
    allocations of other sizes do not reuse them (measured +45 MB peak on the benchmark)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
