"""Giving freed heap back to the kernel.

glibc keeps memory that Python freed in its arenas (one per thread that allocated), so a burst
of work (boot, an image import in a worker thread) leaves the process's RSS high long after.
`release_free_memory()` asks glibc to return every free page now (malloc_trim); elsewhere
(musl, or no libc symbol) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes


def release_free_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
