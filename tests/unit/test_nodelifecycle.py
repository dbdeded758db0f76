"""Node lifecycle and taint eviction: the pure rules, then both controllers in-process over a real
registry and store, with fake time (reconciles are driven by hand, one step at a time)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable, Hashable
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import resources, rest
from edgekube.client import objects
from edgekube.client.events import EventRecorder
from edgekube.client.informer import InformerFactory
from edgekube.client.local import LocalClient
from edgekube.controllers import nodelifecycle as nl
from edgekube.controllers.base import Controller, Requeue
from edgekube.store import store as store_mod

JSON = dict[str, Any]
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
UNREACHABLE_NE = {"key": nl.UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}


# --- pure rules ---------------------------------------------------------------------------------


def _pod(*tolerations: JSON) -> JSON:
    return {"spec": {"tolerations": list(tolerations)}}


def test_toleration_matching() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert objects.toleration_matches({"key": "k", "operator": "Equal", "value": "v"}, taint)
    assert objects.toleration_matches({"key": "k", "value": "v", "effect": "NoExecute"}, taint)  # Equal by default
    assert not objects.toleration_matches({"key": "k", "value": "w"}, taint)
    assert objects.toleration_matches({"key": "k", "operator": "Exists"}, taint)
    assert not objects.toleration_matches({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, taint)
    assert objects.toleration_matches({"operator": "Exists"}, taint)  # an empty key with Exists tolerates all
    assert not objects.toleration_matches({"key": "other", "operator": "Exists"}, taint)
    pod = _pod({"key": "k", "operator": "Exists", "tolerationSeconds": 5}, {"key": "k", "operator": "Exists"})
    assert objects.matching_toleration(pod, taint) == {"key": "k", "operator": "Exists", "tolerationSeconds": 5}
    assert not objects.tolerated(_pod(), taint)


def test_eviction_time() -> None:
    def started(_taint: JSON) -> datetime.datetime:
        return T0

    forever = {"key": nl.UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    brief = {**forever, "tolerationSeconds": 2}
    assert nl.eviction_time(_pod(forever), [UNREACHABLE_NE], started=started) is None
    assert nl.eviction_time(_pod(brief), [UNREACHABLE_NE], started=started) == T0 + datetime.timedelta(seconds=2)
    # Not tolerated at all: at once. A toleration of 0 or less: at once too.
    assert nl.eviction_time(_pod(), [UNREACHABLE_NE], started=started) == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert nl.eviction_time(_pod({**brief, "tolerationSeconds": -1}), [UNREACHABLE_NE], started=started) == T0
    # An int64 toleration past any date is for ever (it raised OverflowError in the reconcile).
    assert nl.eviction_time(_pod({**brief, "tolerationSeconds": 2**62}), [UNREACHABLE_NE], started=started) is None
    # The first matching toleration is the one used, as upstream.
    assert nl.eviction_time(_pod(forever, brief), [UNREACHABLE_NE], started=started) is None
    # Several taints: the earliest end wins, each counted from its own start.
    other = {"key": "example.com/drain", "effect": "NoExecute"}
    starts = {nl.UNREACHABLE: T0, "example.com/drain": T0 + datetime.timedelta(seconds=10)}
    pod = _pod({**brief, "tolerationSeconds": 30}, {"key": "example.com/drain", "operator": "Exists", "tolerationSeconds": 5})
    assert nl.eviction_time(pod, [UNREACHABLE_NE, other], started=lambda t: starts[t["key"]]) == T0 + datetime.timedelta(seconds=15)
    # No NoExecute taints: nothing to do.
    assert nl.eviction_time(_pod(), [], started=started) is None


def test_zone_state_and_key() -> None:
    assert nl.zone_state(["True"]) == nl.NORMAL
    assert nl.zone_state(["Unknown"]) == nl.FULL_DISRUPTION
    assert nl.zone_state(["True", "Unknown", "False"]) == nl.NORMAL  # only 2 down
    assert nl.zone_state(["True", "Unknown", "False", "Unknown"]) == nl.PARTIAL_DISRUPTION
    assert nl.zone_state(["True"] * 4 + ["Unknown"] * 3) == nl.NORMAL  # 3 of 7 is under 55%
    assert nl.zone_key({"metadata": {}}) == ""
    assert nl.zone_key({"metadata": {"labels": {"topology.kubernetes.io/zone": "a", "topology.kubernetes.io/region": "r"}}}) == "r:\x00:a"


def test_condition_taints() -> None:
    node = {"spec": {"unschedulable": True}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown"}, {"type": "MemoryPressure", "status": "True"},
        {"type": "DiskPressure", "status": "False"}, {"type": "PIDPressure", "status": "True"},
        {"type": "NetworkUnavailable", "status": "True"}]}}
    assert nl.no_schedule_keys(node) == {nl.UNREACHABLE, nl.UNSCHEDULABLE, "node.kubernetes.io/memory-pressure",
                                         "node.kubernetes.io/pid-pressure", "node.kubernetes.io/network-unavailable"}
    assert nl.no_schedule_keys({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}) == {nl.NOT_READY}
    assert nl.no_schedule_keys({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}) == set()


# --- in-process -----------------------------------------------------------------------------------


class Cluster:
    def __init__(self, client: LocalClient, clock: clock_mod.FakeClock) -> None:
        self.client = client
        self.clock = clock
        self.factory = InformerFactory(client)
        self.events = EventRecorder(client, clock=clock)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Run the informers the controllers asked for."""
        self.tasks.extend(asyncio.create_task(inf.run()) for _, inf in self.factory.unstarted())

    def now(self) -> str:
        return clock_mod.rfc3339(self.clock.now())

    async def node(self, name: str, *, zone: str = "") -> None:
        labels = {"kubernetes.io/os": "linux", **({"topology.kubernetes.io/zone": zone} if zone else {})}
        await self.client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
        await self.heartbeat(name)

    async def heartbeat(self, name: str, *, ready: str = "True") -> None:
        """What a kubelet posts: conditions with a fresh heartbeat, and a renewed Lease."""
        now = self.now()

        def post(node: JSON) -> JSON:
            node["status"] = {"conditions": [
                {"type": t, "status": s, "reason": "Kubelet", "message": "", "lastHeartbeatTime": now, "lastTransitionTime": now}
                for t, s in (("MemoryPressure", "False"), ("DiskPressure", "False"), ("PIDPressure", "False"), ("Ready", ready))]}
            return node

        await self.client.patch("v1", "Node", name=name, mutate=post, subresource="status")
        await self.renew(name)

    async def renew(self, name: str) -> None:
        micro = self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro}
        try:
            await self.client.patch("coordination.k8s.io/v1", "Lease", name=name, namespace=nl.LEASE_NAMESPACE,
                                    mutate=lambda lease: {**lease, "spec": spec})
        except errors.APIError:
            await self.client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": name, "namespace": nl.LEASE_NAMESPACE}, "spec": spec})

    async def pod(self, name: str, node: str, *tolerations: JSON) -> None:
        await self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                                  "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                                           "tolerations": list(tolerations)}})
        now = self.now()

        def running(pod: JSON) -> JSON:
            pod["status"] = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}]}
            return pod

        await self.client.patch("v1", "Pod", name=name, namespace="default", mutate=running, subresource="status")

    def get(self, kind: str, name: str) -> JSON:
        return self.client.get("v1", kind, name=name, namespace="default" if kind == "Pod" else None)

    def taints(self, node: str) -> set[tuple[str, str]]:
        return {(t["key"], t["effect"]) for t in self.get("Node", node).get("spec", {}).get("taints") or []}

    async def settle(self, check: Callable[[], bool]) -> None:
        """Wait (briefly, for real) until the informers have caught up."""
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("informers did not catch up")

    async def caught_up(self) -> None:
        """Every informer holds what the store holds."""
        def same() -> bool:
            for kind, api in (("Node", "v1"), ("Pod", "v1"), ("Lease", "coordination.k8s.io/v1")):
                inf = self.factory.get(api, kind)
                stored = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in self.client.list(api, kind).items}
                cached = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in inf.list()}
                if stored != cached:
                    return False
            return True

        await self.settle(same)


async def step(ctl: Controller, key: Hashable) -> float | None:
    """One reconcile; the requeue delay it asked for, if any."""
    try:
        await ctl.reconcile(key)
    except Requeue as again:
        return again.after
    return None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    clock = clock_mod.FakeClock(T0)
    registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    c = Cluster(LocalClient(registry), clock)
    try:
        yield c
    finally:
        for t in c.tasks:
            t.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)
        await store.close()


def _controllers(c: Cluster, *, local: str = "") -> tuple[nl.NodeLifecycleController, nl.TaintEvictionController]:
    inf = c.factory
    life = nl.NodeLifecycleController(c.client, inf.get("v1", "Node"), inf.get("coordination.k8s.io/v1", "Lease"),
                                      inf.get("v1", "Pod"), c.events.for_component("node-controller"),
                                      clock=c.clock, grace_seconds=40, local_node=local)
    evict = nl.TaintEvictionController(c.client, inf.get("v1", "Node"), inf.get("v1", "Pod"),
                                       c.events.for_component("taint-eviction-controller"),
                                       clock=c.clock, local_node=local)
    c.start()
    return life, evict


def _ready(c: Cluster, kind: str, name: str) -> str | None:
    cond = objects.condition(c.get(kind, name), "Ready")
    return None if cond is None else str(cond["status"])


async def test_a_silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted(cluster: Cluster) -> None:
    c = cluster
    life, evict = _controllers(c, local="self")
    for name in ("remote", "self", "other"):
        await c.node(name)
    forever = {"key": nl.UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    await c.pod("brief", "remote", {**forever, "tolerationSeconds": 5})
    await c.pod("stays", "remote", forever)
    await c.pod("mine", "self", {**forever, "tolerationSeconds": 0})
    await c.caught_up()
    for name in ("remote", "other"):
        wait = await step(life, name)
        assert wait is not None and 39 < wait <= 41  # woken when the grace period would run out
    assert await step(life, "self") is None  # never judged by silence: nothing to wake for
    assert c.taints("remote") == set()

    # 30 s on, the other nodes post; "remote" and "self" (whose kubelet is this process) do not.
    c.clock.advance(30)
    await c.heartbeat("other")
    await c.caught_up()
    assert await step(life, "remote") is not None and _ready(c, "Node", "remote") == "True"
    c.clock.advance(11)
    await c.heartbeat("other")
    await c.caught_up()
    await step(life, "remote")
    await c.caught_up()
    node = c.get("Node", "remote")
    for kind in nl.SILENT_CONDITIONS:
        cond = objects.condition(node, kind)
        assert cond is not None
        assert (cond["status"], cond["reason"], cond["message"]) == ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
        assert cond["lastTransitionTime"] == c.now()
    assert c.taints("remote") == {(nl.UNREACHABLE, "NoExecute"), (nl.UNREACHABLE, "NoSchedule")}
    assert {t["timeAdded"] for t in node["spec"]["taints"]} == {c.now()}
    assert _ready(c, "Pod", "brief") == "False" and _ready(c, "Pod", "stays") == "False"
    rv = node["metadata"]["resourceVersion"]
    await step(life, "remote")  # nothing more to write
    assert c.get("Node", "remote")["metadata"]["resourceVersion"] == rv

    # The local node is never taken for unreachable, nor are its pods touched.
    assert await step(life, "self") is None
    await c.caught_up()
    assert _ready(c, "Node", "self") == "True" and c.taints("self") == set() and _ready(c, "Pod", "mine") == "True"

    # Eviction: at once for what is not tolerated, after tolerationSeconds for the rest.
    wait = await step(evict, "default/brief")
    assert wait is not None and 4 < wait <= 5.1
    assert await step(evict, "default/stays") is None
    assert await step(evict, "default/mine") is None
    c.clock.advance(5)
    assert await step(evict, "default/brief") is None
    brief = c.get("Pod", "brief")
    assert brief["metadata"].get("deletionTimestamp")
    cond = objects.condition(brief, "DisruptionTarget")
    assert cond is not None and (cond["reason"], cond["message"]) == ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")
    assert not c.get("Pod", "stays")["metadata"].get("deletionTimestamp")
    assert not c.get("Pod", "mine")["metadata"].get("deletionTimestamp")

    # Back: the taints go, and no eviction is left scheduled.
    c.clock.advance(1)
    await c.heartbeat("remote")
    await c.caught_up()
    await step(life, "remote")
    await c.caught_up()
    assert c.taints("remote") == set() and _ready(c, "Node", "remote") == "True"
    assert await step(evict, "default/stays") is None


async def test_not_ready_taints_swap_and_conditions_and_cordon_taint(cluster: Cluster) -> None:
    c = cluster
    life, _ = _controllers(c)
    await c.node("a")
    await c.node("b")
    await c.caught_up()
    await step(life, "a")
    await c.heartbeat("a", ready="False")
    await c.caught_up()
    await step(life, "a")
    await c.caught_up()
    assert c.taints("a") == {(nl.NOT_READY, "NoExecute"), (nl.NOT_READY, "NoSchedule")}
    # Silent after reporting NotReady: Unknown, and the NoExecute taint swaps at once (no rate limit).
    c.clock.advance(41)
    await c.heartbeat("b")
    await c.caught_up()
    await step(life, "a")
    await c.caught_up()
    assert _ready(c, "Node", "a") == "Unknown"
    assert c.taints("a") == {(nl.UNREACHABLE, "NoExecute"), (nl.UNREACHABLE, "NoSchedule")}
    # Cordoned, under memory pressure, then healthy.
    await c.client.patch("v1", "Node", name="a", mutate=lambda n: {**n, "spec": {**(n.get("spec") or {}), "unschedulable": True}})
    await c.heartbeat("a")

    def pressure(node: JSON) -> JSON:
        for cond in node["status"]["conditions"]:
            if cond["type"] == "MemoryPressure":
                cond["status"] = "True"
        return node

    await c.client.patch("v1", "Node", name="a", mutate=pressure, subresource="status")
    await c.caught_up()
    await step(life, "a")
    await c.caught_up()
    assert c.taints("a") == {(nl.UNSCHEDULABLE, "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule")}
    assert c.get("Node", "a")["metadata"]["labels"]["beta.kubernetes.io/os"] == "linux"
    await c.client.patch("v1", "Node", name="a", mutate=lambda n: {**n, "spec": {}})
    await c.heartbeat("a")
    await c.caught_up()
    await step(life, "a")
    await c.caught_up()
    assert c.taints("a") == set()


async def test_no_node_ready_means_the_control_plane_is_cut_off(cluster: Cluster) -> None:
    c = cluster
    life, _ = _controllers(c)
    await c.node("lonely")
    await c.caught_up()
    await step(life, "lonely")
    c.clock.advance(41)
    await step(life, "lonely")
    await c.caught_up()
    await step(life, "lonely")
    await c.caught_up()
    # Unknown and not schedulable, but no NoExecute taint: nothing is evicted.
    assert _ready(c, "Node", "lonely") == "Unknown"
    assert c.taints("lonely") == {(nl.UNREACHABLE, "NoSchedule")}


async def test_a_node_that_never_posts_status_gets_the_startup_grace_period(cluster: Cluster) -> None:
    c = cluster
    life, _ = _controllers(c)
    await c.node("up")
    await c.client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "mute"}})
    await c.caught_up()
    await step(life, "up")
    wait = await step(life, "mute")
    assert wait is not None and 59 < wait <= 61
    c.clock.advance(30)
    await c.heartbeat("up")
    c.clock.advance(31)
    await c.heartbeat("up")
    await c.caught_up()
    await step(life, "mute")
    await c.caught_up()
    node = c.get("Node", "mute")
    for kind in nl.SILENT_CONDITIONS:
        cond = objects.condition(node, kind)
        assert cond is not None
        assert (cond["status"], cond["reason"], cond["message"]) == ("Unknown", "NodeStatusNeverUpdated", "Kubelet never posted node status.")
        assert cond["lastHeartbeatTime"] == node["metadata"]["creationTimestamp"]
    assert c.taints("mute") == {(nl.UNREACHABLE, "NoExecute"), (nl.UNREACHABLE, "NoSchedule")}


async def test_new_no_execute_taints_are_rate_limited_per_zone(cluster: Cluster) -> None:
    c = cluster
    life, _ = _controllers(c)
    for name in ("up", "x", "y"):
        await c.node(name, zone="a")
    await c.caught_up()
    for name in ("up", "x", "y"):
        await step(life, name)
    await c.heartbeat("x", ready="False")
    await c.heartbeat("y", ready="False")
    await c.caught_up()
    assert await step(life, "x") is not None
    wait = await step(life, "y")
    await c.caught_up()
    assert (nl.NOT_READY, "NoExecute") in c.taints("x")
    assert (nl.NOT_READY, "NoExecute") not in c.taints("y") and (nl.NOT_READY, "NoSchedule") in c.taints("y")
    assert wait is not None and 9 < wait <= 10.1  # 0.1 nodes per second
    c.clock.advance(10)
    await step(life, "y")
    await c.caught_up()
    assert (nl.NOT_READY, "NoExecute") in c.taints("y")


async def test_a_wall_clock_set_forward_or_back_marks_no_node_unknown(cluster: Cluster) -> None:
    """Silence is measured on the monotonic clock: NTP setting a board's clock an hour ahead (or
    back) while its nodes keep posting changes nothing, and a silent node still goes Unknown
    after its grace period of real time."""
    c = cluster
    life, _ = _controllers(c)
    for name in ("a", "b"):
        await c.node(name)
    await c.caught_up()
    for name in ("a", "b"):
        await step(life, name)
    for jump in (3600, -7200, 86400 * 365):
        c.clock.jump(jump)
        c.clock.advance(10)
        await c.heartbeat("a")
        await c.caught_up()
        for name in ("a", "b"):
            wait = await step(life, name)
            assert wait is not None and wait > 0
        assert _ready(c, "Node", "a") == "True" and _ready(c, "Node", "b") == "True"
        assert c.taints("a") == c.taints("b") == set()
    c.clock.advance(31)  # b has been silent for 41 s of real time, whatever the wall clock said
    await c.heartbeat("a")
    await c.caught_up()
    await step(life, "b")
    await step(life, "a")
    await c.caught_up()
    assert _ready(c, "Node", "b") == "Unknown" and _ready(c, "Node", "a") == "True"
