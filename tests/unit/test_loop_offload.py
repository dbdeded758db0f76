"""Large requests leave the event loop free (issue 13, point 3): no timing in here.

A `Ticker` task does nothing but yield, so it counts the turns the event loop takes. Work that
holds the loop lets it turn only at its own awaits; work done on the offload worker lets it turn
hundreds of times meanwhile. Each test drives one heavy request class through a real Registry
and Store and asserts the loop kept turning. Writes are dry runs: the same work without the
commit, whose wait for the disk would let the loop turn even while the rest held it. On the code
before this change each of them computed on the loop and the ticker stood still (with the worker
disabled, `Offload(threshold=...)` out of reach, they fail the same way).
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekube._cogs import clock as clock_mod
from edgekube._cogs import gctrack, offload
from edgekube.api import patch
from edgekube.api.registry import resources, rest
from edgekube.client import events as events_mod
from edgekube.client import informer as informer_mod
from edgekube.client import local
from edgekube.controllers import deployment
from edgekube.store import records
from edgekube.store import store as store_mod
from tests.support.loopmeter import LoopMeter

T = TypeVar("T")
NS = "loop"
# Turns of the loop a heavy request must leave: hundreds on the worker, a handful on the loop.
TURNS = 200


class Ticker:
    def __init__(self) -> None:
        self.ticks = 0
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    async def during(self, work: Awaitable[T]) -> tuple[T, int]:
        """`work`'s result and the turns the loop took while it ran."""
        self._stop = False
        task = asyncio.ensure_future(self.run())
        await asyncio.sleep(0)
        start = self.ticks
        try:
            out = await work
        finally:
            self._stop = True
            await task
        return out, self.ticks - start


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[rest.Registry]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    reg = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork(),
                        offload=offload.Offload())
    await reg.ensure_system_namespaces()
    await reg.create(_info(reg, "", "namespaces"), {"metadata": {"name": NS}}, namespace=None)
    try:
        yield reg
    finally:
        await store.close()
        reg.offload.close()


def _info(reg: rest.Registry, group: str, plural: str, version: str = "v1") -> resources.ResourceInfo:
    info = reg.catalog.lookup(group, version, plural)
    assert info is not None, plural
    return info


async def _blobs(reg: rest.Registry) -> resources.ResourceInfo:
    """A CRD whose objects take any spec, and its resource."""
    crd = {"metadata": {"name": "blobs.loop.example.com"},
           "spec": {"group": "loop.example.com", "scope": "Namespaced",
                    "names": {"plural": "blobs", "singular": "blob", "kind": "Blob", "listKind": "BlobList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    await reg.create(_info(reg, "apiextensions.k8s.io", "customresourcedefinitions"), crd, namespace=None)
    return _info(reg, "loop.example.com", "blobs")


def _blob(name: str, keys: int = 30_000) -> dict[str, Any]:
    return {"apiVersion": "loop.example.com/v1", "kind": "Blob", "metadata": {"name": name},
            "spec": {f"key-{i:06d}": f"value-{i}" for i in range(keys)}}


def _options(body: Any) -> rest.Options:
    """What the HTTP handlers pass, the size of the request's body; a dry run."""
    return rest.Options(field_manager="test", cost=len(orjson.dumps(body)), dry_run=True)


async def test_a_large_create_and_update_leave_the_loop_turning(registry: rest.Registry) -> None:
    blobs = await _blobs(registry)
    ticker = Ticker()
    body = _blob("big")
    created, turns = await ticker.during(registry.create(blobs, body, namespace=NS, options=_options(body)))
    assert turns > TURNS
    assert created["spec"]["key-029999"] == "value-29999" and created["metadata"]["managedFields"]
    created = await registry.create(blobs, body, namespace=NS, options=rest.Options(cost=len(orjson.dumps(body))))

    update = {**_blob("big"), "metadata": {"name": "big", "resourceVersion": created["metadata"]["resourceVersion"]}}
    update["spec"]["key-000001"] = "changed"
    (updated, _), turns = await ticker.during(registry.update(blobs, update, namespace=NS, name="big",
                                                              options=_options(update)))
    assert turns > TURNS
    assert updated["spec"]["key-000001"] == "changed"
    assert registry.get(blobs, namespace=NS, name="big")["spec"]["key-000001"] == "value-1"  # a dry run


async def test_an_in_process_create_of_a_large_object_works_off_the_loop_too(registry: rest.Registry) -> None:
    """No body size from a controller: the object's encoded size decides."""
    blobs = await _blobs(registry)
    ticker = Ticker()
    _, turns = await ticker.during(registry.create(blobs, _blob("inproc"), namespace=NS,
                                                   options=rest.Options(field_manager="controller", dry_run=True)))
    assert turns > TURNS


async def test_a_large_server_side_apply_leaves_the_loop_turning(registry: rest.Registry) -> None:
    cms = _info(registry, "", "configmaps")

    def configmap(prefix: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
                "data": {f"{prefix}{i:05d}": str(i) for i in range(15_000)}}

    first = configmap("a")
    await registry.apply(cms, first, namespace=NS, name="applied", force=True,
                         options=rest.Options(field_manager="one", cost=len(orjson.dumps(first))))
    second = configmap("b")
    ticker = Ticker()
    (out, created), turns = await ticker.during(registry.apply(
        cms, second, namespace=NS, name="applied", force=True,
        options=rest.Options(field_manager="two", cost=len(orjson.dumps(second)), dry_run=True)))
    assert turns > TURNS
    assert not created and len(out["data"]) == 30_000
    assert {e["manager"] for e in out["metadata"]["managedFields"]} == {"one", "two"}


async def test_a_large_strategic_merge_patch_leaves_the_loop_turning(registry: rest.Registry) -> None:
    deployments = _info(registry, "apps", "deployments")
    env = [{"name": f"VAR_{i:05d}", "value": "a"} for i in range(8_000)]
    await registry.create(deployments, {
        "metadata": {"name": "env"},
        "spec": {"paused": True, "selector": {"matchLabels": {"app": "env"}}, "template": {
            "metadata": {"labels": {"app": "env"}}, "spec": {"containers": [{"name": "c", "image": "busybox", "env": env}]}}},
    }, namespace=NS)
    body = orjson.dumps({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": e["name"], "value": "b"} for e in env]}]}}}})
    ticker = Ticker()
    out, turns = await ticker.during(registry.patch(
        deployments, namespace=NS, name="env", pure=True,
        options=rest.Options(field_manager="test", cost=len(body), dry_run=True),
        apply=lambda current: patch.apply_patch(patch.STRATEGIC_MERGE_PATCH, current, body, gk="Deployment.apps")))
    assert turns > TURNS
    assert {e["value"] for e in out["spec"]["template"]["spec"]["containers"][0]["env"]} == {"b"}


async def test_a_large_get_is_decoded_and_rendered_off_the_loop(registry: rest.Registry) -> None:
    blobs = await _blobs(registry)
    await registry.create(blobs, _blob("read"), namespace=NS)
    ticker = Ticker()
    body, turns = await ticker.during(registry.read(blobs, namespace=NS, name="read", render=orjson.dumps))
    assert turns > TURNS // 4  # a decode in pieces and one encode: shorter than a write
    assert orjson.loads(body)["spec"]["key-000007"] == "value-7"


async def test_a_list_is_read_filtered_and_rendered_off_the_loop(registry: rest.Registry) -> None:
    cms = _info(registry, "", "configmaps")
    for i in range(600):
        await registry.create(cms, {"metadata": {"name": f"cm-{i:04d}", "labels": {"app": "x", "n": str(i % 3)}},
                                    "data": {f"k{j}": "v" * 40 for j in range(40)}}, namespace=NS)
    selector = ",".join([*(f"!x{i}" for i in range(700)), "app=x", "n in (0,1)"])
    ticker = Ticker()
    out, turns = await ticker.during(registry.list_rendered(cms, namespace=NS, label_selector=selector,
                                                            render=orjson.dumps))
    assert turns > TURNS
    assert len(out.items) == 400
    assert sorted(orjson.loads(b)["metadata"]["name"] for b in out.items)[:2] == ["cm-0000", "cm-0001"]


# --- the pieces ---------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=20) | st.dictionaries(st.text(max_size=8), children, max_size=20),
    max_leaves=80,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=12), st.integers(8, 200))
@settings(max_examples=150, deadline=None)
def test_decoding_in_pieces_gives_the_same_object(obj: dict[str, Any], piece: int) -> None:
    """Pieces of a few bytes, so that objects of any shape are cut everywhere."""
    data = msgpack.packb(obj, use_bin_type=True)
    with mock.patch.object(records, "PIECE_BYTES", piece):
        assert records.decode_in_pieces(data) == records.decode(data)


def test_a_large_value_is_decoded_in_calls_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(7)
    obj = {"metadata": {"name": "x", "managedFields": [{"fieldsV1": {f"f:k{i}": {} for i in range(20_000)}}]},
           "spec": {"items": [{"a": i, "b": "x" * rnd.randint(0, 200), "c": [1, 2, {"d": None}]} for i in range(20_000)],
                    "blob": "y" * 100_000}}
    data = msgpack.packb(obj, use_bin_type=True)
    sizes: list[int] = []
    real = msgpack.unpackb

    def counting(view: Any, **kwargs: Any) -> Any:
        sizes.append(len(view))
        return real(view, **kwargs)

    monkeypatch.setattr(records.msgpack, "unpackb", counting)
    got = records.decode_in_pieces(data)
    pieces = list(sizes)
    assert got == records.decode(data)
    assert len(pieces) > 20
    # Runs of entries up to a piece, plus the last entry that crossed it; one string as a whole.
    assert max(s for s in pieces if s != 100_000 + 5) < 2 * records.PIECE_BYTES


def test_damaged_values_are_damaged_in_pieces_too() -> None:
    data = msgpack.packb({"spec": {f"k{i}": "v" * 10 for i in range(10_000)}}, use_bin_type=True)
    for bad in (data[:-7], data[:40_000], b"\x93" + data[1:]):
        with pytest.raises(records.errors.CorruptRecordError):
            records.decode_in_pieces(bad, key="/k")


def test_only_the_fields_asked_for_are_decoded_and_metadata_without_managed_fields() -> None:
    obj = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "y"}, "managedFields": [{"m": 1}]},
           "spec": {"big": list(range(1000))}, "status": {"phase": "Running"}}
    data = msgpack.packb(obj, use_bin_type=True)
    assert records.decode_fields(data, frozenset({"metadata"})) == {"metadata": {"name": "a", "labels": {"x": "y"}}}
    assert records.decode_fields(data, frozenset({"metadata", "status"}))["status"] == {"phase": "Running"}
    with pytest.raises(records.errors.CorruptRecordError):
        records.decode_fields(msgpack.packb({1: "a"}, strict_types=False), frozenset({"metadata"}))


async def test_full_collections_wait_while_large_jobs_run_and_young_ones_go_on() -> None:
    work = offload.Offload(threshold=100)
    before = gc.get_threshold()
    assert gc.isenabled()
    with work.collector_paused(10):
        assert gc.get_threshold() == before  # small: nothing changes
    with work.collector_paused(1000):
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10**6
        with work.collector_paused(1000):
            assert gc.get_threshold()[2] > 10**6
        assert gc.get_threshold()[2] > 10**6  # the outer job still runs
        # Young passes go on: what a job keeps alive is walked a few hundred objects at a time,
        # not all at once by the first pass after the job (with the collector off, the young
        # generation held all 50,000 here).
        kept = [[i] for i in range(50_000)]
        assert gc.isenabled() and gc.get_count()[0] < 5_000
    assert gc.get_threshold() == before
    del kept
    work.close()


async def test_full_collections_wait_while_the_worker_runs_any_job() -> None:
    """Every job on the worker is a large one (a watch event decoded in pieces for its watchers
    too, which no caller wrapped): a full pass meanwhile walked the whole heap holding the lock,
    120 ms of the loop stopped in the loop benchmark's watch fan-out."""
    import threading

    before = gc.get_threshold()
    work = offload.Offload(threshold=1)
    release = threading.Event()
    job = work.submit(release.wait)
    try:
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10**6
        with work.collector_paused(1000):  # nests with a caller's own pause
            pass
        assert gc.get_threshold()[2] > 10**6
    finally:
        release.set()
    await job
    assert gc.get_threshold() == before
    work.close()


async def test_small_jobs_stay_on_the_loop_and_large_ones_go_to_the_worker() -> None:
    work = offload.Offload(threshold=100)
    loop_thread = __import__("threading").get_ident()

    def where() -> int:
        return __import__("threading").get_ident()

    assert await work.run(10, where) == loop_thread
    assert await work.run(1000, where) != loop_thread
    assert work.jobs == 1
    work.close()


async def test_the_switch_interval_is_short_while_jobs_run_and_back_after() -> None:
    import sys
    import threading

    before = sys.getswitchinterval()
    work = offload.Offload(threshold=1, busy_switch_s=0.0005)
    release = threading.Event()
    job = work.submit(release.wait)
    assert sys.getswitchinterval() == 0.0005
    release.set()
    await job
    assert sys.getswitchinterval() == before
    work.close()


# --- controllers ----------------------------------------------------------------------------------


async def test_the_deployment_controller_compares_a_large_template_off_the_loop(registry: rest.Registry) -> None:
    """Before: every reconcile put the template (10,000 env entries) in normal form on the loop,
    some 20 ms of CPU in one callback on this machine, again at each status change."""
    client = local.LocalClient(registry)
    informers = informer_mod.InformerFactory(client)
    recorder = events_mod.EventRecorder(client, clock=clock_mod.FakeClock())
    controller = deployment.DeploymentController(
        client, informers.get("apps/v1", "Deployment"), informers.get("apps/v1", "ReplicaSet"),
        informers.get("v1", "Pod"), recorder.for_component("deployment-controller"), clock=clock_mod.FakeClock())
    tasks = [asyncio.create_task(inf.run(), name=name) for name, inf in informers.unstarted()]
    tasks.append(asyncio.create_task(controller.run()))
    deployments = _info(registry, "apps", "deployments")
    env = [{"name": f"VAR_{i:05d}", "value": f"v{i}"} for i in range(10_000)]
    body = {"metadata": {"name": "env"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "env"}}, "template": {
                "metadata": {"labels": {"app": "env"}, "creationTimestamp": None},
                "spec": {"containers": [{"name": "c", "image": "busybox", "env": env}]}}}}
    try:
        await informers.wait_synced()
        with LoopMeter().on() as meter:
            await asyncio.create_task(registry.create(deployments, body, namespace=NS,
                                                      options=rest.Options(cost=len(orjson.dumps(body)))))
            for _ in range(400):  # its ReplicaSet made, its status written: reconciled a few times
                # Read from the caches: a read from the store would decode on the loop here.
                sets = informers.get("apps/v1", "ReplicaSet").list(NS)
                d = informers.get("apps/v1", "Deployment").get(f"{NS}/env") or {}
                if sets and (d.get("status") or {}).get("observedGeneration") == 1:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the controller made no ReplicaSet")
        assert len(sets) == 1 and sets[0]["spec"]["template"]["spec"]["containers"][0]["env"][-1]["value"] == "v9999"
        assert meter.worst_ms < 25, str(meter)  # before: 55-110 ms; now some 5
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _big_crd(plural: str, fields: int = 12_000) -> dict[str, Any]:
    """A CRD of about 0.8 MB: a schema of many small properties, as large generated CRDs are."""
    props = {f"field{i:05d}": {"type": "string", "maxLength": 63, "description": f"Field {i}."} for i in range(fields)}
    return {"metadata": {"name": f"{plural}.loop.example.com"},
            "spec": {"group": "loop.example.com", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": plural[:-1], "kind": plural.title()[:-1],
                               "listKind": plural.title()[:-1] + "List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object", "properties": props}}}}}]}}


async def test_writing_a_crd_decodes_no_stored_crd_on_the_loop(registry: rest.Registry) -> None:
    """Before: each CRD write decoded every stored CRD again on the loop to sync what is served
    (with three large ones, 30-60 ms of CPU in one callback)."""
    crds_info = _info(registry, "apiextensions.k8s.io", "customresourcedefinitions")
    for plural in ("larges", "bigs", "huges"):
        body = _big_crd(plural)
        await registry.create(crds_info, body, namespace=None, options=rest.Options(cost=len(orjson.dumps(body))))
    body = _big_crd("hefties")
    with LoopMeter().on() as meter:
        created = await asyncio.create_task(registry.create(crds_info, body, namespace=None,
                                                            options=rest.Options(cost=len(orjson.dumps(body)))))
    assert created["metadata"]["name"] == "hefties.loop.example.com"
    assert registry.catalog.lookup("loop.example.com", "v1", "larges") is not None
    assert meter.worst_ms < 10, str(meter)  # before: some 30 ms; now under 1


async def test_a_long_selector_is_parsed_off_the_loop(registry: rest.Registry) -> None:
    """Before: parsed and compiled on the loop, some 5 us a term (30 ms here for 6,000)."""
    cms = _info(registry, "", "configmaps")
    await registry.create(cms, {"metadata": {"name": "one", "labels": {"app": "x"}}}, namespace=NS)
    selector = ",".join([*(f"!x{i:04d}" for i in range(6000)), "app=x"])
    with LoopMeter().on() as meter:
        # A task of its own: its steps are the loop's callbacks the meter sees.
        out = await asyncio.create_task(registry.list_rendered(cms, namespace=NS, label_selector=selector,
                                                               render=orjson.dumps))
    assert len(out.items) == 1
    assert meter.worst_ms < 10, str(meter)


# --- long-lived caches out of the collector's sight --------------------------------------------


def _containers(tree: Any) -> list[Any]:
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            out.append(node)
            stack.extend(node.values() if isinstance(node, dict) else node)
    return out


def test_untracked_trees_stay_equal_and_are_freed_by_reference_counting() -> None:
    pod = {"metadata": {"name": "p", "labels": {"a": "b"}, "ownerReferences": [{"kind": "ReplicaSet"}]},
           "spec": {"containers": [{"name": "c", "command": ["sleep", "1"], "env": [{"name": "A"}]}]}}
    tree = msgpack.unpackb(msgpack.packb(pod))
    assert any(gc.is_tracked(c) for c in _containers(tree))
    assert gctrack.untrack([tree]) == len(_containers(tree))
    assert not any(gc.is_tracked(c) for c in _containers(tree))
    assert tree == pod
    # Given a container later, a dict is tracked again by CPython itself.
    tree["spec"]["extra"] = {"x": [1]}
    assert gc.is_tracked(tree["spec"])
    # Reference counting frees an untracked tree, as any other.
    tree["spec"]["containers"][0]["env"].append(_Probe())
    gctrack.untrack([tree])
    assert _Probe.alive == 1
    del tree
    assert _Probe.alive == 0


class _Probe:
    alive = 0

    def __init__(self) -> None:
        _Probe.alive += 1

    def __del__(self) -> None:
        _Probe.alive -= 1


async def test_informer_caches_leave_the_collector_after_a_moment(registry: rest.Registry,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached objects are taken off the collector's lists (on the worker), so that a full pass
    does not walk a node's thousands of pods."""
    monkeypatch.setattr(informer_mod, "UNTRACK_DELAY_S", 0.01)
    client = local.LocalClient(registry)
    pods = _info(registry, "", "pods")
    for i in range(3):
        await registry.create(pods, {"metadata": {"name": f"p{i}", "namespace": NS},
                                     "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep"]}]}},
                              namespace=NS)
    inf = informer_mod.Informer(client, "v1", "Pod")
    task = asyncio.ensure_future(inf.run())
    try:
        await asyncio.wait_for(inf.synced.wait(), 5)
        await registry.create(pods, {"metadata": {"name": "late", "namespace": NS},
                                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace=NS)
        for _ in range(300):
            cached = inf.list(NS)
            if len(cached) == 4 and not any(gc.is_tracked(c) for p in cached for c in _containers(p)):
                break
            await asyncio.sleep(0.01)
        cached = inf.list(NS)
        assert len(cached) == 4
        assert not [p["metadata"]["name"] for p in cached if any(gc.is_tracked(c) for c in _containers(p))]
    finally:
        task.cancel()
