"""Named, owned tasks: nothing runs fire-and-forget, and nothing dies silently.

A `Supervisor` starts tasks under names. When one ends on its own (returns or raises) while the
process is not stopping, that is a failure of the whole: it is logged with the task's name and
`wait` returns it, so the runtime can shut down and systemd can restart the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._failed: asyncio.Future[str] | None = None
        self._stopping = False

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if name in self._tasks:
            raise ValueError(f"task {name} already running")
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._done)
        return task

    def watch(self, name: str, task: asyncio.Task[Any]) -> None:
        """Supervise a task some component started itself."""
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        self._tasks[name] = task
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._stopping:
            return
        name = task.get_name()
        if task.cancelled():
            log.error("task %s was cancelled unexpectedly", name)
        elif task.exception() is not None:
            log.error("task %s died", name, exc_info=task.exception())
        else:
            log.error("task %s ended unexpectedly", name)
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(name)

    async def wait_failure(self) -> str:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return await self._failed

    def begin_stop(self) -> None:
        """From now on tasks ending is expected (components close their own tasks)."""
        self._stopping = True

    async def stop(self) -> None:
        self._stopping = True
        for task in reversed(list(self._tasks.values())):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def stop_some(self, names: list[str]) -> None:
        """Cancel and await these tasks (a component stopping before those it depends on)."""
        self._stopping = True
        tasks = [self._tasks.pop(n) for n in names if n in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
