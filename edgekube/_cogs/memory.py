"""Keeping the heap small: fewer malloc arenas, and freed pages given back to the kernel.

glibc gives each thread that allocates an arena of its own (up to 8 per CPU) and keeps what was
freed in it: the server's worker threads (image imports, volume and bundle set-up) left ~7 MiB
of half-used arenas behind at idle. The server runs Python code under one lock, so one arena
costs no contention worth having: `single_arena()` says so to glibc before any thread starts.
`release_free_memory()` asks glibc to return every free page now (malloc_trim). Elsewhere
(musl, or no such libc symbol) both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

M_ARENA_MAX = -8  # glibc's mallopt parameter


def single_arena() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)


def release_free_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
