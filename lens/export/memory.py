"""Giving freed memory back to the system between export stages. glibc's malloc keeps the blocks
freed by one stage for later use: after its first free of a large block it raises the size above
which blocks are mmapped (up to 32 MB), so a checkpoint's tensors land on its heap and their memory
stays counted in the process after they are freed (SmolLM2's dequantised model: 0.4 GB kept
after `del`). Both calls do nothing outside glibc."""
from __future__ import annotations

import ctypes
import gc
import sys

_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20  # bytes: a block this size or larger is mmapped, and unmapped when freed


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def unmap_large_blocks() -> None:
    """Large blocks are mmapped from now on, whatever was freed before: freed tensors go back at once."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def release_freed() -> None:
    """Collect garbage and return the heap's free pages to the system."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
