"""Launch `edgekube` with its event loop instrumented: which callback holds the loop, and for how long.

    python benchmarks/loop_trace.py TRACE_FILE server --data-dir ... (edgekube's own arguments)

The probe of `loop_bench` sees a stall from outside, distorted by the machine's load (the prober,
the client and other processes share the CPUs). This launcher measures it from inside, by the
loop's own handles, and names its cause:

- every handle the loop runs (`asyncio.Handle._run`: a task's step, a callback, a timer) is timed,
  wall and the loop thread's CPU time. Wall much above CPU means the loop waited: for a CPU, or
  for the interpreter lock held by another thread (the offload worker inside one long C call).
  Handles of `threshold_ms` or more are written to TRACE_FILE (one JSON object a line), with the
  stacks a sampler thread took of the loop thread while the handle ran (every `SAMPLE_S`);
- every collection of the cyclic garbage collector of `threshold_ms` or more is written, with
  its generation, the objects it walked, its thread and the stack that triggered it (a pass is
  one C call: it holds the lock, and on the loop thread the loop, for all of its length);
- the sampler also times its own sleeps: a wake-up late by `threshold_ms` or more means the
  interpreter lock was not handed over for that long (a long C call in some thread); it writes
  that, with every thread's stack as it finds them (just after the call: the line that made it).

With `LOOP_TRACE_LIGHT=1` only the first is kept, and a handle is written when it used
`LIGHT_CPU_MS` of the loop thread's CPU or more: no sampler thread (which would take the
interpreter lock 2,000 times a second) and no collector records, so that what `loop_bench`
measures from outside is the server's own behaviour; every handle still pays two clock reads.

Times are `time.monotonic()` (CLOCK_MONOTONIC, the same in every process), so the benchmark can
attribute each record to the heavy request in flight. Stdlib only; nothing here is imported by
edgekube itself.
"""

from __future__ import annotations

import asyncio.events
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

SAMPLE_S = 0.0005
THRESHOLD_MS = float(os.environ.get("LOOP_TRACE_THRESHOLD_MS", "3"))
LIGHT = os.environ.get("LOOP_TRACE_LIGHT") == "1"
LIGHT_CPU_MS = 0.5
_REPO = Path(__file__).resolve().parent.parent


def _stack(frame: FrameType | None, depth: int = 14) -> str:
    lines = []
    for fs in traceback.extract_stack(frame, limit=depth)[::-1]:
        path = fs.filename
        if path.startswith(str(_REPO)):
            path = path[len(str(_REPO)) + 1:]
        else:
            path = "/".join(path.split("/")[-2:])
        lines.append(f"{path}:{fs.lineno} {fs.name}")
    return " < ".join(lines)


def _describe(handle: asyncio.events.Handle) -> str:
    cb: Any = handle._callback
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {owner.get_name()} {getattr(coro, '__qualname__', coro)!s}"
    return getattr(cb, "__qualname__", repr(cb))[:200]


class Tracer:
    def __init__(self, path: str) -> None:
        self._out = open(path, "a", buffering=1)
        self._lock = threading.Lock()
        self.loop_tid: int | None = None
        self.current: tuple[float, dict[str, int]] | None = None  # (start, stack samples)
        self._gc_records: list[dict[str, Any]] = []

    def write(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(rec) + "\n")

    def install(self) -> None:
        tracer = self
        original = asyncio.events.Handle._run
        threshold = THRESHOLD_MS / 1000.0
        clock, cpu = time.monotonic, time.thread_time

        def _light(self: asyncio.events.Handle) -> None:
            t0, c0 = clock(), cpu()
            try:
                original(self)
            finally:
                used = cpu() - c0
                if used >= LIGHT_CPU_MS / 1000.0:
                    tracer.write({"kind": "handle", "t0": t0, "wall_ms": 1000 * (clock() - t0), "cpu_ms": 1000 * used,
                                  "what": _describe(self)})

        if LIGHT:
            asyncio.events.Handle._run = _light  # type: ignore[method-assign]
            return

        def _run(self: asyncio.events.Handle) -> None:
            if tracer.loop_tid is None:
                tracer.loop_tid = threading.get_ident()
            samples: dict[str, int] = {}
            t0, c0 = clock(), cpu()
            tracer.current = (t0, samples)
            try:
                original(self)
            finally:
                tracer.current = None
                wall = clock() - t0
                if wall >= threshold:
                    tracer.write({"kind": "handle", "t0": t0, "wall_ms": 1000 * wall, "cpu_ms": 1000 * (cpu() - c0),
                                  "what": _describe(self), "stacks": samples})

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        threading.Thread(target=self._sample, name="loop-trace", daemon=True).start()

    _gc_start = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.monotonic()
            return
        took = time.monotonic() - self._gc_start
        if took * 1000 >= THRESHOLD_MS:
            # Kept for the sampler thread to write: a collection may start inside `write` (its
            # lock held, in this very thread), so no lock and no I/O here.
            self._gc_records.append({
                "kind": "gc", "t0": self._gc_start, "wall_ms": 1000 * took, "generation": info["generation"],
                "collected": info["collected"], "thread": threading.current_thread().name,
                "stack": _stack(sys._getframe(1))})

    def _sample(self) -> None:
        threshold = THRESHOLD_MS / 1000.0
        while True:
            before = time.monotonic()
            time.sleep(SAMPLE_S)
            now = time.monotonic()
            frames = sys._current_frames()
            while self._gc_records:
                self.write(self._gc_records.pop(0))
            late = now - before - SAMPLE_S
            if late >= threshold:
                names = {t.ident: t.name for t in threading.enumerate()}
                self.write({"kind": "gil", "t0": before, "late_ms": 1000 * late,
                            "threads": {names.get(tid, str(tid)): _stack(f, 8) for tid, f in frames.items()
                                        if tid != threading.get_ident()}})
            cur = self.current
            if cur is not None and self.loop_tid is not None and now - cur[0] >= 0.001:
                frame = frames.get(self.loop_tid)
                if frame is not None:
                    key = _stack(frame)
                    cur[1][key] = cur[1].get(key, 0) + 1


def main() -> int:
    path = sys.argv[1]
    sys.argv = ["edgekube", *sys.argv[2:]]
    Tracer(path).install()
    sys.path.insert(0, str(_REPO))
    from edgekube import cli

    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
