"""Return the C heap's free pages to the operating system between the phases of a codec.

PyTorch's CPU allocator is plain `malloc`. glibc serves blocks below its mmap threshold
(which it raises on its own up to 32 MB once larger blocks are freed) from heap arenas and
keeps freed pages there. GLC's float64 entropy-parameter path at H/16 allocates dozens of
such 5–30 MB tensors, and fragmentation left ≈ 450 MB of free pages in the heap at
768×512 — resident while the VQ-VAE generator then allocates its full-resolution maps from
fresh mappings (measured: generator starts at 1 473 MB instead of ≈ 1 000 MB). `malloc_trim`
hands those pages back; on other C libraries (no `malloc_trim`) this is a no-op. GLC and
Control-GIC call it before their encoder and their decoder networks, and a decoder's
`Upsample` before it writes a large map (Control-GIC at 1080p: ≈ 100 MB returned before its
2.1 GB full-resolution map).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():  # noqa: ANN202  (a ctypes function or None)
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_heap() -> None:
    """Give free heap pages back to the OS (glibc `malloc_trim(0)`): a few milliseconds."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
