"""CPU work that must not hold the event loop: one worker thread for large jobs.

One process serves every client from one event loop, so a request that computes for a second
(a write of a 1 MB object walks it in Python a dozen times: defaults, validation, managedFields)
stops every other request, `/readyz` included, for that second. `Offload` keeps such work off the
loop:

- `run(cost, fn, ...)`: a pure function of values the caller owns, called inline when `cost`
  (the caller's size estimate, in bytes) is below `threshold`, else on the one worker thread.
  Small jobs never hop: a thread round trip costs tens of microseconds, more than a small
  object's whole write. One worker, not several: jobs share one interpreter lock, so more workers
  add no throughput, only more contenders the loop must wait behind; large jobs queue in arrival
  order instead. What runs there touches nothing the loop owns (the store, caches, informers,
  allocators): only its arguments, immutable tables and thread-safe caches.
- The interpreter lock: while the worker computes in Python the interpreter hands the lock back
  to the loop every switch interval (`sys.setswitchinterval`), so the loop goes on serving. While
  jobs are queued or running the interval is `busy_switch_s` (1 ms); otherwise it is what it was
  (Python's 5 ms), which spares the ordinary load (the loop and the store's writer thread)
  needless handoffs. One C call (a JSON or msgpack decode of a whole object) still holds the lock
  for its whole length whichever thread makes it: callers decode large values in pieces
  (`store.records.decode_in_pieces`).
- `collector_paused(cost)`: Python's cyclic garbage collector off while a large job's objects
  are alive. A 1.5 MiB object is some 100,000 containers per copy, and a write holds several
  copies for a second or more: the collector's young passes promote them, which soon triggers
  full passes over the whole heap, each traversing all of them (100-400 ms seen, each one a
  stall of the loop as well). JSON trees hold no cycles, so reference counting frees them all the
  same; the collector comes back when the last large job is done. Its callers let their large
  objects go before that (or on the worker: freeing them takes milliseconds too), or the
  collector's first pass would walk them all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# Work estimated at this many bytes of input or more goes to the worker thread; below it a job is
# done inline. A request's CPU grows with its object (about 1.5 us per byte on a slow core for a
# write's Python walks), so this keeps an inline job near a couple of milliseconds.
DEFAULT_THRESHOLD = 16 * 1024
# The interpreter lock's switch interval while jobs run: how long the loop may wait for it.
DEFAULT_BUSY_SWITCH_S = 0.001


_NOTHING = contextlib.nullcontext()


class Offload:
    def __init__(self, *, threshold: int = DEFAULT_THRESHOLD, name: str = "cpu",
                 busy_switch_s: float = DEFAULT_BUSY_SWITCH_S) -> None:
        self.threshold = threshold
        self._name = name
        self._busy_switch = busy_switch_s
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.jobs = 0  # jobs given to the worker (for tests and stats)
        self._in_flight = 0  # jobs queued or running
        self._idle_switch = sys.getswitchinterval()
        self._paused = 0  # large jobs under way with the collector paused
        self._collector_was_on = True

    def heavy(self, cost: int) -> bool:
        return cost >= self.threshold

    async def run(self, cost: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)`, on the worker thread when `cost` is at the threshold or over."""
        if cost < self.threshold:
            return fn(*args, **kwargs)
        return await self.submit(fn, *args, **kwargs)

    async def always(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the worker thread, whatever its size."""
        return await self.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """`fn(*args, **kwargs)` queued for the worker thread; its future, for several waiters
        (a waiter that is cancelled does not cancel the job when it awaits it shielded)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self.jobs += 1
        if self._in_flight == 0:
            self._idle_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._busy_switch, self._idle_switch))
        self._in_flight += 1
        fut = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        fut.add_done_callback(self._job_done)
        return fut

    def _job_done(self, _: asyncio.Future[T]) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            sys.setswitchinterval(self._idle_switch)

    def collector_paused(self, cost: int) -> contextlib.AbstractContextManager[None]:
        """The cyclic garbage collector off while this block runs, when `cost` makes it a large
        job (see the module doc); blocks may nest and overlap (across tasks)."""
        # A small job (every ordinary request) pays for no generator-based context manager.
        return _NOTHING if cost < self.threshold else self._paused_collector()

    @contextlib.contextmanager
    def _paused_collector(self) -> Iterator[None]:
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
