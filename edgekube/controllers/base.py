"""The controller loop: informer handlers enqueue keys, workers reconcile them (DESIGN §4).

`reconcile(key)` reads the caches, compares desired with observed, writes with resourceVersion
preconditions (the registry's patch retries races), and raises to be retried with a per-key
exponential backoff. A key is never reconciled by two workers at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable

from edgekube.api import errors
from edgekube.client.workqueue import WorkQueue

log = logging.getLogger(__name__)


class Requeue(Exception):
    """Reconcile again after `after` seconds (waiting for something, not a failure)."""

    def __init__(self, after: float) -> None:
        super().__init__(f"requeue after {after}s")
        self.after = after


class Controller:
    name = "controller"
    workers = 1

    def __init__(self) -> None:
        self.queue = WorkQueue()

    async def reconcile(self, key: Hashable) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.reconcile(key)
            except Requeue as again:
                self.queue.forget(key)
                self.queue.add_after(key, again.after)
            except Exception as exc:
                delay = self.queue.add_rate_limited(key)
                # A Status is the cluster's answer (forbidden, conflict, quota), told in one
                # line; anything else is a bug of the controller, with its traceback.
                log.warning("%s: reconcile %s failed; retrying in %.2fs: %s", self.name, key, delay, exc,
                            exc_info=not isinstance(exc, errors.APIError))
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
