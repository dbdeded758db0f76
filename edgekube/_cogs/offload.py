"""CPU work that must not hold the event loop: a worker thread for big jobs, a budget for loops.

One process serves every client from one event loop, so a request that computes for a second
(a write of a 1 MB object walks it in Python a dozen times: defaults, validation, managedFields)
stops every other request, `/readyz` included, for that second. Two tools keep each stretch of
loop time short:

- `Offload.run(cost, fn, ...)`: a pure function of values the caller owns, called inline when
  `cost` (the caller's size estimate, in bytes) is below `threshold`, else on the one worker
  thread. While the worker computes in Python the interpreter hands the GIL back to the loop
  every switch interval (`sys.setswitchinterval`, set low at startup), so the loop keeps
  serving; one C call (a JSON or msgpack decode of a whole object) still holds the GIL for its
  length, whichever thread makes it. Small jobs never hop: a thread round trip costs tens of
  microseconds, more than a small object's whole write. One worker, not several: jobs share
  one interpreter lock, so more workers add no throughput, only more contenders that the loop
  must wait behind; big jobs queue in arrival order instead.
  What runs there must touch nothing the loop owns (the store, caches, informers, allocators):
  only its arguments, immutable tables and thread-safe caches.
- `Offload.collector_paused(cost)`: Python's cyclic garbage collector off while a large job's
  objects are alive. A 1.5 MiB object is some 100,000 containers per copy, and a write holds
  several copies for a second or more: the collector's young passes promote them, which soon
  triggers full passes over the whole heap, and each traverses every one of them (100-400 ms
  seen, each one a stall of the loop too). JSON trees hold no cycles, so reference counting frees
  them all the same; the collector comes back when the last large job is done, and only finds
  what was made meanwhile.
- `Budget`: for long loops on the loop itself (filtering a list, encoding its items, fanning an
  event out), `if budget.spent(): await budget.pause()` hands the loop over once `slice_s` of
  work went by since the last pause, so other ready tasks run in between.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# Work estimated at this many bytes of input or more goes to the worker thread; below it a job is
# done inline. A request's CPU grows with its object (about 1.5 us per byte on a slow core for a
# write's Python walks), so this keeps an inline job near a couple of milliseconds.
DEFAULT_THRESHOLD = 16 * 1024
# The longest a `Budget` lets a loop run before it pauses.
DEFAULT_SLICE_S = 0.002


class Offload:
    def __init__(self, *, threshold: int = DEFAULT_THRESHOLD, name: str = "cpu") -> None:
        self.threshold = threshold
        self._name = name
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.jobs = 0  # jobs that ran on the worker (for tests and stats)
        self._paused = 0  # large jobs under way with the collector paused
        self._collector_was_on = True

    def heavy(self, cost: int) -> bool:
        return cost >= self.threshold

    async def run(self, cost: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)`, on the worker thread when `cost` is at the threshold or over."""
        if cost < self.threshold:
            return fn(*args, **kwargs)
        return await self.always(fn, *args, **kwargs)

    async def always(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the worker thread, whatever its size."""
        return await self.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """`fn(*args, **kwargs)` queued for the worker thread; its future, for several waiters
        (a waiter that is cancelled does not cancel the job when it awaits it shielded)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self.jobs += 1
        return asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @contextlib.contextmanager
    def collector_paused(self, cost: int) -> Iterator[None]:
        """The cyclic garbage collector off while this block runs, when `cost` makes it a large
        job (see the module doc); blocks may nest and overlap (across tasks)."""
        if cost < self.threshold:
            yield
            return
        if self._paused == 0:
            self._collector_was_on = gc.isenabled()
            gc.disable()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if self._paused == 0 and self._collector_was_on:
                gc.enable()

    def close(self) -> None:
        """Let the queued jobs finish and the thread end (at shutdown)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class Budget:
    """Time slices for a long loop on the event loop: `spent()` is cheap enough to ask per item."""

    def __init__(self, slice_s: float = DEFAULT_SLICE_S) -> None:
        self._slice = slice_s
        self._since = time.perf_counter()
        self.pauses = 0

    def spent(self) -> bool:
        return time.perf_counter() - self._since >= self._slice

    async def pause(self) -> None:
        """Let every other ready task run, then start a new slice."""
        await asyncio.sleep(0)
        self.pauses += 1
        self._since = time.perf_counter()
