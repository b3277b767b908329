"""The process's memory allocator: keep freed tensor memory for reuse instead of handing it back to the kernel.

At 1024 px ALiSNet's activations are tens of MB each. glibc's ``malloc`` serves every block above its mmap
threshold (128 KB, raised as such blocks are freed, to at most 32 MB) with a fresh ``mmap`` and ``munmap``s it
on free, so every forward pass page-faults its activations in again, and the kernel zeroes each page first.
Measured on the 2-core x86 host (torch 2.14.1, the demo MobileNetV2 model, float forward at 1024 x 1376, 4
runs): 5.6 s wall, half of it system time, 2.6 M page faults; with :func:`keep_freed_memory`, 2.2 s and no page
faults. The quantization report and the calibration passes run hundreds of such forwards.

:func:`keep_freed_memory` sets two ``mallopt`` parameters, the ones ``MALLOC_MMAP_MAX_`` and
``MALLOC_TRIM_THRESHOLD_`` set at process start:

- ``M_MMAP_MAX = 0``: every block comes from the heap, where a freed block is reused by the next allocation;
- ``M_TRIM_THRESHOLD = 2 GiB - 1``: the top of the heap is handed back only when that much of it is free.

The price: freed memory stays with the process until it exits, and the peak resident size can grow where freed
blocks do not fit later requests (``quant-report`` at 1024 px for three targets: 13.1 -> 16.1 GB, until the one
step that kept many ONNX Runtime arenas open was changed; see docs/design.md 4.11). The command line calls it at
start and the test suite in ``tests/conftest.py``; a Python caller may call it once, early.
``ALISNET_EXPORT_MALLOC=system`` leaves the allocator as it is. Where the C library is not glibc (macOS, musl)
it does nothing and says so by returning ``False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["ENV_VAR", "keep_freed_memory"]

#: set to ``system`` to leave the C library's allocator settings alone
ENV_VAR = "ALISNET_EXPORT_MALLOC"

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring). Returns whether the
    settings are in effect: ``False`` where the C library is not glibc, where ``ALISNET_EXPORT_MALLOC=system``,
    or where ``mallopt`` refused them. Calling it again does nothing more."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return _applied
