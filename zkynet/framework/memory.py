"""Keeping freed memory in the process (glibc), so that arrays are not page-faulted in
again and again.

Every eager operation and every compiled step allocates fresh buffers (outputs, and
a compiled program's temporaries) and frees them soon after. With glibc's defaults,
blocks from about 128 KiB up are mapped fresh from the OS and unmapped when freed,
and a heap whose free top passes 128 KiB is trimmed: each step then page-faults
its memory in again (a 256x256 float32 array is 64 pages), which costs more than
the arithmetic on it. Raising both thresholds keeps the memory for reuse, as
caching allocators (PyTorch's on GPUs, XLA's on GPUs) do. Set ZKYNET_MALLOC=default
before importing zkynet to keep glibc's defaults.
"""
import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks below this come from the reusable heap
TRIM_THRESHOLD = 256 * 2**20  # free memory a heap keeps before returning any to the OS (at most its peak)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); False where
    this is not glibc or ZKYNET_MALLOC=default."""
    if os.environ.get("ZKYNET_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differ
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
