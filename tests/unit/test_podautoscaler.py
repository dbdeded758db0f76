"""The HorizontalPodAutoscaler controller over a real Registry and Store, with a fake clock and
usage reported into the metrics store as the kubelet reports it."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api import metrics as metrics_mod
from edgekube.api.registry import resources, rest
from edgekube.client.events import EventRecorder
from edgekube.client.informer import InformerFactory
from edgekube.client.local import LocalClient
from edgekube.controllers import podautoscaler
from edgekube.store import store as store_mod

JSON = dict[str, Any]
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Env:
    def __init__(self, client: LocalClient, clock: clock_mod.FakeClock, recorder: EventRecorder) -> None:
        self.client = client
        self.clock = clock
        self.metrics = metrics_mod.MetricsStore()
        self.factory = InformerFactory(client)
        self.ctl = podautoscaler.HorizontalPodAutoscalerController(
            client, self.factory.get("autoscaling/v2", "HorizontalPodAutoscaler"), self.factory.get("v1", "Pod"),
            self.metrics, recorder.for_component("horizontal-pod-autoscaler"), clock=clock)
        self.tasks = [asyncio.ensure_future(inf.run()) for _, inf in self.factory.unstarted()]
        self.tasks.append(asyncio.ensure_future(recorder.run()))

    async def deployment(self, replicas: int) -> None:
        await self.client.create({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "200m"}}}]}}}})

    async def pods(self, n: int, *, ready: bool = True, started: datetime.datetime | None = None) -> list[str]:
        names = []
        at = clock_mod.rfc3339(started or T0 - datetime.timedelta(minutes=10))

        def run(obj: JSON) -> JSON:
            obj["status"] = {"phase": "Running", "startTime": at, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": at}]}
            return obj

        for _ in range(n):
            pod = await self.client.create({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "default",
                                                                "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "200m"}}}]}})
            await self.client.patch("v1", "Pod", name=pod["metadata"]["name"], namespace="default", mutate=run,
                                    subresource="status")
            names.append(pod["metadata"]["name"])
        return names

    def use(self, names: list[str], cpu_milli: int) -> None:
        for name in names:
            self.metrics.report_pod("default", name, metrics_mod.PodUsage(
                timestamp=self.clock.now(), window_seconds=15,
                containers={"c": metrics_mod.Usage(cpu_milli=cpu_milli, memory_bytes=10 << 20)}))

    async def hpa(self, *, min_r: int = 1, max_r: int = 10, target: int = 50, behavior: JSON | None = None) -> None:
        spec: JSON = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                      "minReplicas": min_r, "maxReplicas": max_r,
                      "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                          "type": "Utilization", "averageUtilization": target}}}]}
        if behavior:
            spec["behavior"] = behavior
        await self.client.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                  "metadata": {"name": "web", "namespace": "default"}, "spec": spec})

    async def sync(self) -> JSON:
        await self.settle()
        hpa = self.factory.get("autoscaling/v2", "HorizontalPodAutoscaler").get("default/web")
        assert hpa is not None
        await self.ctl.sync("default/web", hpa)
        await self.settle()
        got = self.factory.get("autoscaling/v2", "HorizontalPodAutoscaler").get("default/web")
        assert got is not None
        return got

    async def settle(self) -> None:
        for _ in range(20):  # let the informers catch up with the store
            await asyncio.sleep(0.005)

    def replicas(self) -> int:
        return int(self.client.get("apps/v1", "Deployment", name="web", namespace="default")["spec"]["replicas"])

    def condition(self, hpa: JSON, kind: str) -> JSON:
        return next(c for c in hpa["status"]["conditions"] if c["type"] == kind)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    clock = clock_mod.FakeClock(T0)
    registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    client = LocalClient(registry)
    e = Env(client, clock, EventRecorder(client, clock=clock))
    await e.settle()
    try:
        yield e
    finally:
        for t in e.tasks:
            t.cancel()
        await asyncio.gather(*e.tasks, return_exceptions=True)
        await store.close()


async def test_scales_up_on_high_cpu_within_the_rate_limit(env: Env) -> None:
    await env.deployment(2)
    names = await env.pods(2)
    env.use(names, 200)  # 100% of the 200m request, target 50%: twice as many pods
    await env.hpa()
    hpa = await env.sync()
    assert env.replicas() == 4
    assert hpa["status"]["desiredReplicas"] == 4 and hpa["status"]["currentReplicas"] == 2
    assert hpa["status"]["currentMetrics"] == [{"type": "Resource", "resource": {"name": "cpu", "current": {
        "averageUtilization": 100, "averageValue": "200m"}}}]
    assert env.condition(hpa, "AbleToScale")["reason"] == "SucceededRescale"
    assert env.condition(hpa, "ScalingActive")["reason"] == "ValidMetricFound"
    assert "lastScaleTime" in hpa["status"]
    await env.settle()
    events = [e for e in env.client.list("v1", "Event").items if e["reason"] == "SuccessfulRescale"]
    assert events and events[0]["message"] == \
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"


async def test_within_tolerance_nothing_changes_and_max_replicas_clamps(env: Env) -> None:
    await env.deployment(2)
    names = await env.pods(2)
    env.use(names, 105)  # 52.5% against 50%: within 10%
    await env.hpa(max_r=3)
    hpa = await env.sync()
    assert env.replicas() == 2 and env.condition(hpa, "AbleToScale")["reason"] == "ReadyForNewScale"
    env.use(names, 400)  # 200%: 8 wanted, 3 allowed
    hpa = await env.sync()
    assert env.replicas() == 3
    limited = env.condition(hpa, "ScalingLimited")
    assert limited["status"] == "True" and limited["reason"] == "TooManyReplicas"


async def test_scale_down_waits_for_the_stabilization_window(env: Env) -> None:
    await env.deployment(4)
    names = await env.pods(4)
    env.use(names, 100)  # exactly on target
    await env.hpa()
    await env.sync()
    assert env.replicas() == 4
    env.clock.advance(15)
    env.use(names, 25)  # 12.5%: one pod would do
    await env.sync()
    assert env.replicas() == 4  # the recommendation of 4 is still inside the 300 s window
    env.clock.advance(301)
    env.use(names, 25)
    await env.sync()
    assert env.replicas() == 1


async def test_scale_up_policies_limit_the_rate(env: Env) -> None:
    await env.deployment(1)
    names = await env.pods(1)
    env.use(names, 2000)  # 1000%: 20 pods wanted
    await env.hpa(max_r=50, behavior={"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}})
    hpa = await env.sync()
    assert env.replicas() == 3  # +2 per minute
    assert env.condition(hpa, "ScalingLimited")["reason"] == "ScaleUpLimit"
    env.clock.advance(30)
    await env.sync()
    assert env.replicas() == 3  # still within the same minute
    env.clock.advance(31)
    env.use(names, 2000)
    await env.sync()
    assert env.replicas() == 5


async def test_missing_metrics_and_unready_pods_are_counted_cautiously(env: Env) -> None:
    await env.deployment(4)
    names = await env.pods(4)
    env.use(names[:2], 20)  # 10% on two pods, no reading for the other two
    await env.hpa()
    await env.sync()
    # Going down, pods without a reading count as using all of their request: (20+20+200+200)/800 = 55%,
    # which is within tolerance of 50%, so nothing changes.
    assert env.replicas() == 4


async def test_a_target_scaled_to_zero_disables_autoscaling(env: Env) -> None:
    await env.deployment(0)
    await env.hpa()
    hpa = await env.sync()
    assert env.replicas() == 0
    active = env.condition(hpa, "ScalingActive")
    assert active["status"] == "False" and active["reason"] == "ScalingDisabled"


async def test_no_metrics_is_reported_not_guessed(env: Env) -> None:
    await env.deployment(2)
    await env.pods(2)
    await env.hpa()
    hpa = await env.sync()
    assert env.replicas() == 2
    active = env.condition(hpa, "ScalingActive")
    assert active["status"] == "False" and active["reason"] == "FailedGetResourceMetric"
