"""Endpoints and EndpointSlice controllers: port resolution, subset repacking, slice packing, and
the controllers in-process over a real registry (a steady cluster makes no writes)."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api.registry import resources, rest
from edgekube.client import events as events_mod
from edgekube.client import informer, local
from edgekube.controllers import endpoints as ep
from edgekube.controllers import endpointslices as es
from edgekube.controllers.base import Requeue
from edgekube.store import store as store_mod

JSON = dict[str, Any]


def pod(name: str, ip: str | None = "10.0.0.1", *, ready: bool = True, labels: dict[str, str] | None = None,
        ports: list[JSON] | None = None, phase: str = "Running", deleting: bool = False, node: str = "n1",
        uid: str | None = None, **spec: Any) -> JSON:
    meta: JSON = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "labels": labels or {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: JSON = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-01-01T00:00:10Z"}]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}], **spec}, "status": status}


def service(name: str = "web", *, ports: list[JSON] | None = None, uid: str = "svc-uid", **spec: Any) -> JSON:
    body: JSON = {"selector": {"app": "web"}, "clusterIP": "10.43.0.10", "ipFamilies": ["IPv4"],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}] if ports is None else ports}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": uid, "labels": {"tier": "front"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": body}


# --- ports ------------------------------------------------------------------------------------


def test_find_port_numbers_names_protocols_and_sidecars() -> None:
    p = pod("a", ports=[{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}])
    assert ep.find_port(p, {"port": 80, "targetPort": 9090}) == 9090
    assert ep.find_port(p, {"port": 80, "targetPort": "http", "protocol": "TCP"}) == 8080
    assert ep.find_port(p, {"port": 53, "targetPort": "dns", "protocol": "UDP"}) == 53
    assert ep.find_port(p, {"port": 53, "targetPort": "dns", "protocol": "TCP"}) is None  # protocol must match
    assert ep.find_port(p, {"port": 80, "targetPort": "metrics"}) is None
    assert ep.find_port(p, {"port": 80}) == 80  # an undefaulted targetPort is the port
    sidecar = pod("b", initContainers=[
        {"name": "proxy", "restartPolicy": "Always", "ports": [{"name": "proxy", "containerPort": 15001}]},
        {"name": "init", "ports": [{"name": "setup", "containerPort": 1}]}])
    assert ep.find_port(sidecar, {"port": 80, "targetPort": "proxy"}) == 15001
    assert ep.find_port(sidecar, {"port": 80, "targetPort": "setup"}) is None  # plain init containers don't serve


def test_subsets_ready_not_ready_named_ports_and_pods_left_out() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                         {"name": "admin", "port": 81, "protocol": "TCP", "targetPort": 9000, "appProtocol": "http"}])
    named = [{"name": "http", "containerPort": 8080}]
    pods = [pod("a", "10.0.0.2", ports=named), pod("b", "10.0.0.1", ports=named, ready=False),
            pod("c", "10.0.0.3"),  # no port named http: only in the admin subset
            pod("d", None), pod("e", "10.0.0.5", phase="Succeeded"), pod("f", "10.0.0.6", deleting=True)]
    subsets = ep.desired_subsets(svc, pods)
    by_ports = {tuple(p["name"] for p in s["ports"]): s for s in subsets}
    # One subset per distinct set of addresses: c serves admin only, so the ports part ways.
    assert set(by_ports) == {("http",), ("admin",)}
    http, admin = by_ports[("http",)], by_ports[("admin",)]
    assert [a["ip"] for a in http["addresses"]] == ["10.0.0.2"]
    assert [a["ip"] for a in http["notReadyAddresses"]] == ["10.0.0.1"]
    assert http["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert [a["ip"] for a in admin["addresses"]] == ["10.0.0.2", "10.0.0.3"]
    assert [a["ip"] for a in admin["notReadyAddresses"]] == ["10.0.0.1"]
    assert admin["ports"] == [{"name": "admin", "port": 9000, "protocol": "TCP", "appProtocol": "http"}]
    assert http["addresses"][0] == {"ip": "10.0.0.2", "nodeName": "n1",
                                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}
    # Without c, the same addresses serve both ports: one subset.
    [both] = ep.desired_subsets(svc, [p for p in pods if p["metadata"]["name"] != "c"])
    assert [p["name"] for p in both["ports"]] == ["admin", "http"]


def test_subsets_publish_not_ready_headless_and_hostnames() -> None:
    pods = [pod("a", "10.0.0.1", hostname="a", subdomain="db"), pod("b", "10.0.0.2", ready=False),
            pod("c", "10.0.0.3", deleting=True)]
    headless = service("db", ports=[], clusterIP="None")
    [subset] = ep.desired_subsets(headless, pods)
    assert "ports" not in subset
    assert [(a["ip"], a.get("hostname")) for a in subset["addresses"]] == [("10.0.0.1", "a")]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.2"]
    assert ep.endpoints_labels(headless) == {"tier": "front", "service.kubernetes.io/headless": ""}
    # A Service with a cluster IP and no ports has no endpoints.
    assert ep.desired_subsets(service(ports=[]), pods) == []
    # Published: every pod, terminating ones too, as ready addresses.
    [subset] = ep.desired_subsets(service(publishNotReadyAddresses=True), pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert "notReadyAddresses" not in subset and all("hostname" not in a for a in subset["addresses"])


def test_repack_merges_by_address_set_and_ready_wins() -> None:
    a = {"ip": "10.0.0.1"}
    b = {"ip": "10.0.0.2"}
    p80, p81 = {"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}
    out = ep.repack_subsets([
        {"addresses": [a], "ports": [p80]}, {"addresses": [a], "ports": [p81]},
        {"notReadyAddresses": [b], "ports": [p80]}, {"notReadyAddresses": [b], "ports": [p81]},
        {"addresses": [b], "ports": [p81]},  # b is ready for 81 after all
    ])
    assert sorted(map(str, out)) == sorted(map(str, [
        {"addresses": [a], "notReadyAddresses": [b], "ports": [p80]},
        {"addresses": [a, b], "ports": [p81]},
    ]))
    assert ep.repack_subsets(out) == out  # repacking is idempotent


def test_truncate_keeps_ready_addresses_first() -> None:
    def addrs(n: int, base: int) -> list[JSON]:
        return [{"ip": f"10.{base}.{i // 250}.{i % 250}"} for i in range(n)]

    subsets = [{"addresses": addrs(900, 1), "notReadyAddresses": addrs(300, 2)}]
    assert ep.truncate(subsets)
    assert len(subsets[0]["addresses"]) == 900 and len(subsets[0]["notReadyAddresses"]) == 100
    subsets = [{"addresses": addrs(600, 1), "notReadyAddresses": addrs(10, 2)}, {"addresses": addrs(600, 3)}]
    assert ep.truncate(subsets)
    assert [len(s["addresses"]) for s in subsets] == [500, 500]
    assert "notReadyAddresses" not in subsets[0]
    small = [{"addresses": addrs(10, 1)}]
    assert not ep.truncate(small) and len(small[0]["addresses"]) == 10


def test_trigger_time_is_creation_first_then_the_earliest_change() -> None:
    tracker = ep.TriggerTimeTracker()
    svc = service()
    a = pod("a")
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert tracker.compute("default/web", svc, [a]) == t0  # a new Service: its creation
    assert tracker.compute("default/web", svc, [a]) is None  # nothing changed since
    b = copy.deepcopy(a)
    b["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:05:00Z"
    c = pod("c")
    c["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:03:00Z"
    assert tracker.compute("default/web", svc, [b, c]) == t0 + datetime.timedelta(minutes=3)
    tracker.forget("default/web")
    assert tracker.compute("default/web", svc, [b, c]) == t0


# --- slice packing --------------------------------------------------------------------------------


def many(n: int, *, start: int = 0, ready: bool = True) -> list[JSON]:
    return [pod(f"p{i:04d}", f"10.1.{i // 250}.{i % 250 + 1}", ready=ready) for i in range(start, start + n)]


def node_lookup(zone: str | None = None) -> Callable[[str], JSON | None]:
    def get(name: str) -> JSON | None:
        return {"metadata": {"name": name, "labels": {es.ZONE: zone} if zone else {}}}

    return get


def materialize(plan: es.Plan, existing: list[JSON]) -> list[JSON]:
    """Apply a plan to a list of slices, as the API would (names for the created ones)."""
    out = {es.slice_name(s): s for s in existing}
    for s in plan.delete:
        del out[es.slice_name(s)]
    for s in plan.update:
        assert es.slice_name(s) in out
        out[es.slice_name(s)] = s
    for i, s in enumerate(plan.create):
        s = copy.deepcopy(s)
        s["metadata"]["name"] = f"{s['metadata']['generateName']}new{len(out)}{i}"
        out[s["metadata"]["name"]] = s
    return sorted(out.values(), key=es.slice_name)


def ips(slices: list[JSON]) -> set[str]:
    return {a for s in slices for e in s["endpoints"] for a in e["addresses"]}


def test_slices_hold_at_most_the_limit_and_change_in_place() -> None:
    svc = service()
    plan = es.plan_service(svc, many(250), [], node_lookup("z1"))
    assert not plan.update and not plan.delete
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]
    first = plan.create[0]
    assert first["metadata"]["generateName"] == "web-"
    assert first["metadata"]["labels"] == {"tier": "front", es.SERVICE_NAME: "web", es.MANAGED_BY: es.CONTROLLER}
    assert first["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                      "uid": "svc-uid", "controller": True, "blockOwnerDeletion": True}]
    assert first["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert first["endpoints"][0] == {
        "addresses": ["10.1.0.1"], "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "p0000", "uid": "uid-p0000"},
        "nodeName": "n1", "zone": "z1"}
    slices = materialize(plan, [])

    # Steady: nothing to write.
    assert es.plan_service(svc, many(250), slices, node_lookup("z1")).empty()

    # One pod gone and one new: the new endpoint takes the freed place, no slice is made.
    pods = [p for p in many(250) if p["metadata"]["name"] != "p0007"] + many(1, start=900)
    plan = es.plan_service(svc, pods, slices, node_lookup("z1"))
    assert not plan.create and not plan.delete and len(plan.update) == 1
    slices = materialize(plan, slices)
    assert ips(slices) == {a for p in pods for a in [p["status"]["podIP"]]}
    assert len(slices) == 3

    # A readiness change rewrites only the slice holding that pod.
    pods[3] = pod(pods[3]["metadata"]["name"], pods[3]["status"]["podIP"], ready=False)
    plan = es.plan_service(svc, pods, slices, node_lookup("z1"))
    assert not plan.create and not plan.delete and len(plan.update) == 1
    [changed] = [e for e in plan.update[0]["endpoints"] if e["targetRef"]["name"] == pods[3]["metadata"]["name"]]
    assert changed["conditions"] == {"ready": False, "serving": False, "terminating": False}

    # A few new pods fit whole into the fullest unchanged slice that has room.
    slices = materialize(plan, slices)
    plan = es.plan_service(svc, pods + many(10, start=1000), slices, node_lookup("z1"))
    assert not plan.create and not plan.delete and len(plan.update) == 1
    assert len(plan.update[0]["endpoints"]) == 60


def test_terminating_pods_stay_serving_but_not_ready() -> None:
    svc = service()
    plan = es.plan_service(svc, [pod("a", deleting=True), pod("b", "10.0.0.2", deleting=True, ready=False)], [],
                           node_lookup())
    eps = {e["targetRef"]["name"]: e["conditions"] for s in plan.create for e in s["endpoints"]}
    assert eps == {"a": {"ready": False, "serving": True, "terminating": True},
                   "b": {"ready": False, "serving": False, "terminating": True}}
    published = service(publishNotReadyAddresses=True)
    plan = es.plan_service(published, [pod("b", "10.0.0.2", deleting=True, ready=False)], [], node_lookup())
    assert plan.create[0]["endpoints"][0]["conditions"] == {"ready": True, "serving": False, "terminating": True}


def test_placeholder_when_nothing_is_selected_then_reused() -> None:
    svc = service()
    plan = es.plan_service(svc, [], [], node_lookup())
    [placeholder] = plan.create
    assert placeholder["endpoints"] == [] and placeholder["ports"] == []
    slices = materialize(plan, [])
    assert es.plan_service(svc, [], slices, node_lookup()).empty()
    # Pods come: the placeholder is rewritten in place rather than deleted and replaced.
    plan = es.plan_service(svc, many(3), slices, node_lookup())
    assert not plan.create and not plan.delete
    [updated] = plan.update
    assert es.slice_name(updated) == es.slice_name(slices[0])
    assert updated["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}] and len(updated["endpoints"]) == 3


def test_slices_of_an_earlier_service_of_the_same_name_are_replaced() -> None:
    old = materialize(es.plan_service(service(uid="old"), many(3), [], node_lookup()), [])
    plan = es.plan_service(service(uid="new"), many(3), old, node_lookup())
    # Not reused: a slice being collected with its old owner must not be adopted.
    assert [es.slice_name(s) for s in plan.delete] == [es.slice_name(old[0])]
    assert len(plan.create) == 1 and not plan.update


def test_pods_on_unknown_nodes_are_left_out_and_reported() -> None:
    plan = es.plan_service(service(), [pod("a", node="gone")], [], lambda _name: None)
    assert plan.errors == ["skipping Pod a for Service default/web: Node gone Not Found"]
    assert [s["endpoints"] for s in plan.create] == [[]]


def test_mirroring_user_endpoints() -> None:
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": "ext", "namespace": "default", "uid": "ep-uid", "labels": {"a": "b"},
                              "annotations": {ep.TRIGGER_TIME: "x", "note": "n"}},
                 "subsets": [{"addresses": [{"ip": "192.0.2.1", "hostname": "h1", "nodeName": "n1"},
                                            {"ip": "2001:db8::1"}, {"ip": "not-an-ip"}],
                              "notReadyAddresses": [{"ip": "192.0.2.2"}],
                              "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]}
    plan = es.plan_mirror(endpoints, [])
    assert plan.invalid == 1 and plan.skipped == 1
    by_type = {s["addressType"]: s for s in plan.create}
    assert set(by_type) == {"IPv4", "IPv6"}
    v4 = by_type["IPv4"]
    assert v4["metadata"]["labels"] == {"a": "b", es.SERVICE_NAME: "ext", es.MANAGED_BY: es.MIRRORING_CONTROLLER}
    assert v4["metadata"]["annotations"] == {"note": "n"}
    assert v4["metadata"]["ownerReferences"][0]["kind"] == "Endpoints"
    assert v4["ports"] == [{"name": "db", "protocol": "TCP", "port": 5432}]
    assert {e["addresses"][0]: e for e in v4["endpoints"]} == {
        "192.0.2.1": {"addresses": ["192.0.2.1"], "conditions": {"ready": True}, "hostname": "h1", "nodeName": "n1"},
        "192.0.2.2": {"addresses": ["192.0.2.2"], "conditions": {"ready": False}}}
    slices = materialize(plan, [])
    assert es.plan_mirror(endpoints, slices).empty()
    # The IPv6 address goes: its slice is deleted; the other is left as is.
    endpoints["subsets"][0]["addresses"] = endpoints["subsets"][0]["addresses"][:1]
    plan = es.plan_mirror(endpoints, slices)
    assert not plan.create and not plan.update and [s["addressType"] for s in plan.delete] == ["IPv6"]
    # Past the limit per subset, addresses are skipped.
    endpoints["subsets"][0]["addresses"] = [{"ip": f"10.2.{i // 250}.{i % 250}"} for i in range(12)]
    plan = es.plan_mirror(endpoints, [], max_per_subset=10)
    assert plan.skipped == 3 and len(plan.create[0]["endpoints"]) == 10


# --- the controllers, in-process ---------------------------------------------------------------------


class CountingClient(local.LocalClient):
    """The in-process client, counting the writes the controllers ask for (even those the
    registry finds to change nothing)."""

    writes = 0

    async def create(self, obj: JSON) -> JSON:
        self.writes += 1
        return await super().create(obj)

    async def patch(self, api_version: str, kind: str, **kw: Any) -> JSON:
        self.writes += 1
        return await super().patch(api_version, kind, **kw)

    async def delete(self, api_version: str, kind: str, **kw: Any) -> JSON:
        self.writes += 1
        return await super().delete(api_version, kind, **kw)


class Cluster:
    def __init__(self, client: CountingClient, store: store_mod.Store) -> None:
        self.client = client
        self.store = store
        factory = informer.InformerFactory(client)
        recorder = events_mod.EventRecorder(client, clock=clock_mod.FakeClock())
        self.endpoints = ep.EndpointsController(client, factory.get("v1", "Service"), factory.get("v1", "Pod"),
                                                factory.get("v1", "Endpoints"), recorder.for_component("endpoint-controller"))
        self.slices = es.EndpointSliceController(client, factory.get("v1", "Service"), factory.get("v1", "Pod"),
                                                 factory.get("discovery.k8s.io/v1", "EndpointSlice"),
                                                 factory.get("v1", "Node"), recorder.for_component("endpoint-slice-controller"),
                                                 max_per_slice=2)
        self.mirror = es.EndpointSliceMirroringController(
            client, factory.get("v1", "Service"), factory.get("v1", "Endpoints"),
            factory.get("discovery.k8s.io/v1", "EndpointSlice"),
            recorder.for_component("endpoint-slice-mirroring-controller"))
        self.factory = factory
        self.tasks = [asyncio.create_task(inf.run(), name=name) for name, inf in factory.unstarted()]
        self.tasks += [asyncio.create_task(c.run(), name=c.name) for c in (self.endpoints, self.slices, self.mirror)]

    async def until(self, check: Callable[[], Any]) -> Any:
        """Poll `check` (it reads caches and the store) until it holds, for at most 20 s."""
        deadline = asyncio.get_running_loop().time() + 20.0
        while asyncio.get_running_loop().time() < deadline:
            got = check()
            if got:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError("condition not met within 20s")

    def get(self, api_version: str, kind: str, name: str) -> JSON | None:
        try:
            return self.client.get(api_version, kind, name=name, namespace="default")
        except Exception:
            return None

    def slices_of(self, svc: str) -> list[JSON]:
        return self.client.list("discovery.k8s.io/v1", "EndpointSlice", namespace="default",
                                label_selector=f"{es.SERVICE_NAME}={svc}").items


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    catalog = resources.Catalog()
    store = store_mod.Store(
        store_mod.StoreConfig(path=tmp_path, map_size_mb=16, max_size_mb=64, compaction_interval_seconds=0),
        memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    registry = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    client = CountingClient(registry, manager="test")
    c = Cluster(client, store)
    try:
        yield c
    finally:
        for t in c.tasks:
            t.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)
        await store.close()


async def _make_pod(c: Cluster, name: str, ip: str, *, ready: bool = True) -> JSON:
    created = await c.client.create({"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                                     "spec": {"nodeName": "n1", "containers": [
                                         {"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}})

    def run(p: JSON) -> JSON:
        p["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}
        return p

    await c.client.patch("v1", "Pod", name=name, namespace="default", mutate=run, subresource="status")
    return created


async def test_controllers_converge_and_a_steady_cluster_makes_no_writes(cluster: Cluster) -> None:
    c = cluster
    await c.client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    await c.client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    for i in range(5):
        await _make_pod(c, f"p{i}", f"10.0.0.{i + 1}", ready=i != 4)

    def endpoints_done() -> bool:
        e = c.get("v1", "Endpoints", "web") or {}
        subsets = e.get("subsets") or []
        return len([a for s in subsets for a in s.get("addresses") or []]) == 4 and \
            len([a for s in subsets for a in s.get("notReadyAddresses") or []]) == 1

    await c.until(endpoints_done)
    await c.until(lambda: len([e for s in c.slices_of("web") for e in s["endpoints"]]) == 5)
    slices = c.slices_of("web")
    assert sorted(len(s["endpoints"]) for s in slices) == [1, 2, 2]  # at most 2 per slice here

    # Steady: syncing every key again, with caches caught up, writes nothing.
    for _ in range(20):
        try:
            before, writes = c.store.revision, c.client.writes
            await c.endpoints.reconcile("default/web")
            await c.slices.reconcile("default/web")
            await c.mirror.reconcile("default/web")
            break
        except Requeue:  # an informer not yet at our last write: wait for it
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("caches never caught up")
    assert c.store.revision == before and c.client.writes == writes
    # The last change was the pods turning ready (their Ready transition), and it stays recorded.
    trigger = {ep.TRIGGER_TIME: "2026-01-01T00:00:05Z"}
    assert (c.get("v1", "Endpoints", "web") or {})["metadata"]["annotations"] == trigger
    assert all(s["metadata"]["annotations"] == trigger for s in c.slices_of("web"))

    # A pod update that endpoints do not show wakes nothing up either.
    await c.client.patch("v1", "Pod", name="p0", namespace="default",
                         mutate=lambda p: {**p, "metadata": {**p["metadata"], "annotations": {"x": "y"}}})
    after_annotation, writes = c.store.revision, c.client.writes
    await c.until(lambda: c.factory.get("v1", "Pod").get("default/p0")["metadata"].get("annotations") == {"x": "y"})
    await c.endpoints.reconcile("default/web")
    await c.slices.reconcile("default/web")
    assert c.store.revision == after_annotation and c.client.writes == writes

    # A pod deleted: it leaves both; the service deleted: its Endpoints go.
    await c.client.delete("v1", "Pod", name="p1", namespace="default",
                          options=rest.DeleteOptions(grace_period_seconds=0))
    await c.until(lambda: "10.0.0.2" not in str((c.get("v1", "Endpoints", "web") or {}).get("subsets")))
    await c.until(lambda: "10.0.0.2" not in str(c.slices_of("web")))
    await c.client.delete("v1", "Service", name="web", namespace="default")
    await c.until(lambda: c.get("v1", "Endpoints", "web") is None)
