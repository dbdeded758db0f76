"""The controllers' work queue: adds collapse, one key at a time, backoff, delayed adds."""

from __future__ import annotations

import asyncio

import pytest

from edgekube.api import errors
from edgekube.client.workqueue import WorkQueue
from edgekube.controllers.base import Controller, Requeue


async def test_adds_collapse_and_a_key_is_never_handed_out_twice() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    first = await q.get()
    assert first == "a"
    q.add("a")  # while processing: marked dirty, not queued
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")  # dirty: queued again
    assert await q.get() == "a"


async def test_rate_limited_backoff_and_forget() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=0.04)
    assert [q.add_rate_limited("k") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
    q.forget("k")
    assert q.failures("k") == 0
    assert await asyncio.wait_for(q.get(), 1) == "k"


async def test_controller_retries_failures_and_requeues() -> None:
    seen: list[str] = []

    class Flaky(Controller):
        async def reconcile(self, key: object) -> None:
            seen.append(str(key))
            if len(seen) == 1:
                raise RuntimeError("transient")
            if len(seen) == 2:
                raise Requeue(0.01)

    c = Flaky()
    task = asyncio.create_task(c.run())
    c.queue.add("x")
    for _ in range(100):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.01)
    c.queue.shutdown()
    await asyncio.wait_for(task, 1)
    assert seen == ["x", "x", "x"]


async def test_an_api_answer_is_logged_as_one_line_and_a_bug_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A Status from the API (an administrator took a component's rights away, a conflict) is
    the cluster's state, not a fault of the controller: one warning naming it. Anything else is
    a bug, logged with its traceback."""
    failures = [errors.forbidden("pods is forbidden: User \"system:kube-controller-manager\" cannot list"),
                ValueError("a bug")]

    class Failing(Controller):
        name = "failing"

        async def reconcile(self, key: object) -> None:
            if failures:
                raise failures.pop(0)

    c = Failing()
    c.queue = WorkQueue(base_delay=0.001)
    task = asyncio.create_task(c.run())
    c.queue.add("x")
    for _ in range(200):
        if not failures and len([r for r in caplog.records if r.name == "edgekube.controllers.base"]) >= 2:
            break
        await asyncio.sleep(0.01)
    c.queue.shutdown()
    await asyncio.wait_for(task, 1)
    forbidden, bug = [r for r in caplog.records if r.name == "edgekube.controllers.base"]
    assert forbidden.levelname == "WARNING" and not forbidden.exc_info
    assert forbidden.getMessage().startswith("failing: reconcile x failed; retrying in ")
    assert forbidden.getMessage().endswith(': pods is forbidden: User "system:kube-controller-manager" cannot list')
    assert bug.exc_info is not None and bug.exc_info[0] is ValueError
