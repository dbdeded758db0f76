"""The event recorder over a real Registry and Store: dedup by count, time to live, a bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api.auth import authz
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources, rest
from edgekube.client.events import EventRecorder
from edgekube.client.local import LocalClient
from edgekube.store import store as store_mod

JSON = dict[str, Any]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[LocalClient, clock_mod.FakeClock]]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    clock = clock_mod.FakeClock()
    registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    try:
        yield LocalClient(registry), clock
    finally:
        await store.close()


def _pod(name: str) -> JSON:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "7"}}


async def _drain(task: asyncio.Task[None], client: LocalClient, want: int) -> list[JSON]:
    for _ in range(200):
        events = client.list("v1", "Event").items
        if sum(int(e.get("count") or 1) for e in events) >= want:
            return events
        await asyncio.sleep(0.01)
    raise AssertionError(f"events not written: {client.list('v1', 'Event').items}")


async def test_repeated_events_bump_count_and_different_ones_are_new(env: tuple[LocalClient, clock_mod.FakeClock]) -> None:
    client, clock = env
    recorder = EventRecorder(client, clock=clock)
    rec = recorder.for_component("default-scheduler")
    task = asyncio.ensure_future(recorder.run())
    try:
        rec.warning(_pod("a"), "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
        await _drain(task, client, 1)
        clock.advance(30)
        rec.warning(_pod("a"), "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
        rec.normal(_pod("a"), "Scheduled", "Successfully assigned default/a to n1")
        events = await _drain(task, client, 3)
    finally:
        task.cancel()
    by_reason = {e["reason"]: e for e in events}
    assert len(events) == 2
    failed = by_reason["FailedScheduling"]
    assert failed["count"] == 2 and failed["type"] == "Warning"
    assert failed["firstTimestamp"] == "2026-01-01T00:00:00Z" and failed["lastTimestamp"] == "2026-01-01T00:00:30Z"
    assert failed["involvedObject"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a",
                                        "apiVersion": "v1", "resourceVersion": "7"}
    assert failed["source"] == {"component": "default-scheduler"}
    assert failed["metadata"]["name"].startswith("a.")
    assert by_reason["Scheduled"]["count"] == 1


async def test_sweep_drops_expired_events_then_the_oldest_beyond_the_limit(
        env: tuple[LocalClient, clock_mod.FakeClock]) -> None:
    client, clock = env
    recorder = EventRecorder(client, clock=clock, ttl_seconds=3600, limit=3)
    rec = recorder.for_component("test")
    task = asyncio.ensure_future(recorder.run())
    try:
        rec.normal(_pod("old"), "Old", "from long ago")
        await _drain(task, client, 1)
        clock.advance(7200)
        for i in range(4):
            rec.normal(_pod(f"p{i}"), "New", f"event {i}")
            await _drain(task, client, 2 + i)
            clock.advance(1)
    finally:
        task.cancel()
    assert await recorder.sweep() == 2  # the expired one, then the oldest of the four
    names = sorted(e["involvedObject"]["name"] for e in client.list("v1", "Event").items)
    assert names == ["p1", "p2", "p3"]


async def test_a_full_queue_drops_events_and_never_blocks(env: tuple[LocalClient, clock_mod.FakeClock]) -> None:
    client, clock = env
    recorder = EventRecorder(client, clock=clock)
    rec = recorder.for_component("test")
    for i in range(1100):  # no writer running: the queue (1000) fills up
        rec.normal(_pod(f"p{i}"), "Burst", "x")
    assert recorder.dropped == 100


async def test_a_component_without_the_right_logs_one_line_per_failure(
        env: tuple[LocalClient, clock_mod.FakeClock], caplog: pytest.LogCaptureFixture) -> None:
    """An administrator may take the events rights away from a component (edit its bootstrap
    role): the recorder's writes and sweeps then fail with a Forbidden Status, each a single
    warning that names it, never a traceback (the server's log is not a bug report)."""
    admin, clock = env
    registry = admin._registry
    registry.gate = authz.Gate(authz.Privileged())
    client = LocalClient(registry, user=user_mod.UserInfo("system:kube-controller-manager"))
    recorder = EventRecorder(client, clock=clock, sweep_seconds=0.01)
    task = asyncio.ensure_future(recorder.run())
    try:
        recorder.for_component("test").normal(_pod("a"), "Made", "made")
        for _ in range(200):
            failed = {r.getMessage().split(":")[0] for r in caplog.records if r.name == "edgekube.client.events"}
            if {"event Made for Pod default/a not recorded", "event clean-up failed"} <= failed:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    records = [r for r in caplog.records if r.name == "edgekube.client.events"]
    assert {r.getMessage().split(":")[0] for r in records} == {"event Made for Pod default/a not recorded",
                                                               "event clean-up failed"}, records
    for r in records:
        assert r.levelname == "WARNING" and not r.exc_info, r
        assert 'User "system:kube-controller-manager" cannot' in r.getMessage(), r.getMessage()
