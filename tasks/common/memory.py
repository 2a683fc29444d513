"""Handing freed memory back to the system."""

from __future__ import annotations

import ctypes
import sys

_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def release_freed_memory() -> None:
    """Return glibc's free heap pages to the system (malloc_trim). Workers keep glibc's dynamic mmap
    threshold (infra.profiles.keep_glibc_malloc_defaults), so the large arrays of earlier stages were
    often heap blocks; freed, they still count in the RSS until trimmed. Call before a long wait, such
    as a render. No gc.collect() here: in a Dask worker's task thread it trips distributed's GC timer,
    which prints a traceback."""
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
