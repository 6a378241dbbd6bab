"""Keeping freed memory in the process (glibc), so that arrays are not page-faulted in
again and again.

Every eager operation and every compiled step allocates fresh buffers (outputs, and
a compiled program's temporaries) and frees them soon after. With glibc's defaults,
blocks from about 128 KiB up are mapped fresh from the OS and unmapped when freed,
and a heap whose free top passes 128 KiB is trimmed: each step then page-faults
its memory in again (a 256x256 float32 array is 64 pages), which costs more than
the arithmetic on it. Raising both thresholds keeps the memory for reuse, as
caching allocators (PyTorch's on GPUs, XLA's on GPUs) do. The mmap threshold stops
at 32 MiB (glibc's largest), and a compiled step's temporaries are one block that
can be larger (the benchmark transformer's are 61 MB: 15,000 page faults, a quarter
of its step time): so mmap is turned off too, and every block comes from the heap
(glibc still maps one fresh when its heap cannot grow: a block over 64 MB allocated
off the main thread, whose heaps are 64 MB each). XLA runs compiled steps on its
own threads, whose arenas get a fresh 64 MB heap for a large block and, with glibc's
default top pad, delete it again when the block is freed (heap_trim deletes a heap
left empty unless the pad asks to keep room): with a 64 MB pad they keep it (a step
with a 50 MB temporary faulted it in again on 0-190 of 190 calls, 0-2 now).

Importing zkynet changes nothing: training does this as it starts (a TrainStep or
EvalStep being built, an eager graph's first back()), once per process; call
`zkynet.keep_freed_memory()` yourself to have it earlier (e.g. before timing eager
code that never calls back()). Set ZKYNET_MALLOC=default to keep glibc's defaults.
"""

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks below this come from the reusable heap
TRIM_THRESHOLD = 256 * 2**20  # free memory a heap keeps before returning any to the OS (at most its peak)
TOP_PAD = 64 * 2**20  # room kept at a heap's top: a thread's heap left empty is kept, not deleted


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds and its top pad, and turn mmap off (see
    the module docstring); False where this is not glibc or ZKYNET_MALLOC=default."""
    if os.environ.get("ZKYNET_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        _ = libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differ
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(option, value)
        for option, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
            (_M_MMAP_MAX, 0),
        )
    )


@functools.cache
def keep_freed_memory_once() -> bool:
    """keep_freed_memory(), the first time only: what training calls as it starts."""
    return keep_freed_memory()
