"""The CPU each callback of the event loop takes, measured in-process (for tests of issue 13, point 3).

`LoopMeter` wraps `asyncio.Handle._run` (every task step, callback and timer the loop runs) and
keeps, for the handles that ran while it was on, their thread CPU time: CPU, not wall time, so a
busy machine (another process, the offload worker holding the interpreter lock) does not count
against the loop. The worst one, with a description of what ran, is what the tests bound,
generously: work that belongs off the loop costs tens of milliseconds per handle there, a turn of
the loop a fraction of one.
"""

from __future__ import annotations

import asyncio.events
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class LoopMeter:
    def __init__(self, *, record: Callable[[float, float, str, str], None] | None = None) -> None:
        """`record(start, cpu_ms, what, where)`, if given, is called for every handle."""
        self._record = record
        self.worst_ms = 0.0
        self.worst_what = ""
        self.handles = 0
        self.worst_where = ""  # where the loop thread was, sampled, during the worst handle
        self._current: list[str] | None = None

    @contextmanager
    def on(self, *, any_thread: bool = False) -> Iterator[LoopMeter]:
        """Metered while this block runs: the loop of this thread (`any_thread`: the first loop
        to run a handle, for a process that starts its loop inside the block)."""
        original = asyncio.events.Handle._run
        meter = self
        loop_thread = None if any_thread else threading.get_ident()

        def _run(handle: asyncio.events.Handle) -> None:
            nonlocal loop_thread
            if loop_thread is None:
                loop_thread = threading.get_ident()
            if threading.get_ident() != loop_thread:
                original(handle)
                return
            samples: list[str] = []
            meter._current = samples
            t0 = time.monotonic()
            c0 = time.thread_time()
            try:
                original(handle)
            finally:
                took = 1000 * (time.thread_time() - c0)
                meter._current = None
                meter.handles += 1
                if meter._record is not None:
                    meter._record(t0, took, _describe(handle), "\n".join(samples[:3]))
                if took > meter.worst_ms:
                    meter.worst_ms = took
                    meter.worst_what = _describe(handle)
                    meter.worst_where = "\n".join(samples[:3])

        stop = threading.Event()

        def sample() -> None:  # the loop thread's stack, every few ms of a long handle
            while not stop.wait(0.003):
                samples = meter._current
                frame = sys._current_frames().get(loop_thread) if loop_thread is not None else None
                if samples is not None and frame is not None and len(samples) < 3:
                    samples.append(" < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                                              for f in traceback.extract_stack(frame, limit=8)[::-1]))

        sampler = threading.Thread(target=sample, daemon=True)
        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        sampler.start()
        try:
            yield self
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]
            stop.set()
            sampler.join()

    def __str__(self) -> str:
        return f"{self.worst_ms:.1f} ms of CPU in one callback: {self.worst_what}\n{self.worst_where}"


def _describe(handle: asyncio.events.Handle) -> str:
    cb: Any = handle._callback
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return f"task {owner.get_name()}: {owner.get_coro()!r}"
    return repr(cb)
