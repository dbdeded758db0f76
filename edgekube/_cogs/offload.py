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
- `let_go(obj)`: a large object the caller is done with (or soon will be), freed on the worker
  rather than where its last reference goes: freeing a tree of 100,000 containers takes
  milliseconds too, and a controller that drops the object a write returned, an informer that
  replaces a cached one, would do it on the loop. The object is kept here, and looked at every
  `LET_GO_CHECK_S`: once nothing else holds it, the worker gets it to free (with whatever else
  is ready); one still held elsewhere after `LET_GO_CHECKS` looks is left to its other holders.
- `collector_paused(cost)`: the cyclic garbage collector's *full* passes postponed while a large
  job's objects are alive; and while the worker has any job (each is a large one: a watch event
  decoded for its watchers, say, which no caller wraps), so that no full pass runs on the
  worker, where it would walk the job's trees as well as the whole heap with the lock held (120
  ms seen during a 45,000-key ConfigMap's watch fan-out). A 1.5 MiB object is some 100,000
  containers per copy, and a write holds several copies for a second or more: the young passes
  promote them, which soon triggers full passes over the whole heap, each traversing all of them
  (100-400 ms seen, each one a stall of the loop as well). JSON trees hold no cycles, so
  reference counting frees them all the same. Only the full passes wait: the young ones go on,
  each over the few hundred objects made since the last. (The collector once was off altogether
  meanwhile: the young generation then held every object made during the job and still alive at
  its end, and the first young pass after it walked them all at once, 15-80 ms on the loop.)
  Callers let their large objects go before the end (or on the worker: freeing them takes
  milliseconds too).
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

from edgekube._cogs import pieces

T = TypeVar("T")
P = ParamSpec("P")

# Work estimated at this many bytes of input or more goes to the worker thread; below it a job is
# done inline. A request's CPU grows with its object (about 1.5 us per byte on a slow core for a
# write's Python walks), so this keeps an inline job near a couple of milliseconds.
DEFAULT_THRESHOLD = 16 * 1024
# The interpreter lock's switch interval while jobs run: how long the loop may wait for it.
DEFAULT_BUSY_SWITCH_S = 0.001
_BYTES_PER_VALUE = 16
# How often objects let go of are looked at (the first time at the next turn of the loop), and
# how many times before one still held elsewhere is left to its holders.
LET_GO_CHECK_S = 0.2
LET_GO_CHECKS = 50


_NOTHING = contextlib.nullcontext()
# A full pass's threshold (young-generation-1 passes before one is considered) that is never met.
_NEVER = 1 << 30


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
        self._let_go: list[tuple[object, int]] = []  # large objects to free on the worker, looks left
        self._paused = 0  # large jobs under way with the collector's full passes postponed
        self._thresholds = gc.get_threshold()  # the collector's, from before they began

    def heavy(self, cost: int) -> bool:
        return cost >= self.threshold

    def heavy_value(self, value: object) -> bool:
        """Whether work on JSON tree `value` is a large job, when no byte size is at hand (an
        object built in memory): more values than a threshold's worth of bytes holds, at some
        16 bytes a value, found by a walk that stops there."""
        return pieces.larger_than(value, self.threshold // _BYTES_PER_VALUE)

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
            self._hold_collector()
        self._in_flight += 1
        fut = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        fut.add_done_callback(self._job_done)
        return fut

    def _job_done(self, _: asyncio.Future[T]) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            sys.setswitchinterval(self._idle_switch)
            self._release_collector()

    def let_go(self, obj: object) -> None:
        """Free `obj` on the worker once the caller drops it (see the module doc)."""
        if not self._let_go:
            asyncio.get_running_loop().call_soon(self._free_let_go)
        elif any(held is obj for held, _ in self._let_go):
            return  # once is enough (twice, each would count the other as a holder)
        self._let_go.append((obj, LET_GO_CHECKS))

    def _free_let_go(self) -> None:
        ready: list[object] = []
        kept: list[tuple[object, int]] = []
        for obj, looks in self._let_go:
            # Held here, by `obj` and by the call's argument: nobody else.
            if sys.getrefcount(obj) <= 3:
                ready.append(obj)
            elif looks > 1:
                kept.append((obj, looks - 1))
        obj = None  # this frame's own reference gone before the worker frees the rest
        self._let_go = kept
        if ready:
            self.submit(ready.clear)
        if kept:
            asyncio.get_running_loop().call_later(LET_GO_CHECK_S, self._free_let_go)

    def collector_paused(self, cost: int) -> contextlib.AbstractContextManager[None]:
        """The collector's full passes postponed while this block runs, when `cost` makes it a
        large job (see the module doc); blocks may nest and overlap (across tasks)."""
        # A small job (every ordinary request) pays for no generator-based context manager.
        return _NOTHING if cost < self.threshold else self._paused_collector()

    @contextlib.contextmanager
    def _paused_collector(self) -> Iterator[None]:
        self._hold_collector()
        try:
            yield
        finally:
            self._release_collector()

    def _hold_collector(self) -> None:
        if self._paused == 0:
            self._thresholds = gc.get_threshold()
            young, middle, _ = self._thresholds
            gc.set_threshold(young, middle, _NEVER)
        self._paused += 1

    def _release_collector(self) -> None:
        self._paused -= 1
        if self._paused == 0:
            gc.set_threshold(*self._thresholds)

    def close(self) -> None:
        """Let the queued jobs finish and the thread end (at shutdown)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
