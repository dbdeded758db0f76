"""Resource usage of pods and nodes, as the metrics API (metrics.k8s.io) serves it.

The kubelet reports each pod's container usage (CPU in millicores averaged over a window, memory
working set in bytes) here, in memory only: usage is a reading, not state, and is never written
to disk. Consumers (the HorizontalPodAutoscaler controller, `kubectl top` through the API) read
the latest reading; a reading older than `max_age` counts as missing, as a metrics-server scrape
that failed would.
"""

from __future__ import annotations

import dataclasses
import datetime


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_milli: int
    memory_bytes: int


@dataclasses.dataclass(frozen=True)
class PodUsage:
    timestamp: datetime.datetime
    window_seconds: float
    containers: dict[str, Usage]

    def total(self, resource: str) -> int:
        if resource == "cpu":
            return sum(u.cpu_milli for u in self.containers.values())
        if resource == "memory":
            return sum(u.memory_bytes for u in self.containers.values())
        raise KeyError(resource)


class MetricsStore:
    def __init__(self, *, max_age_seconds: float = 120.0) -> None:
        self._pods: dict[tuple[str, str], PodUsage] = {}
        self._nodes: dict[str, tuple[datetime.datetime, Usage]] = {}
        self.max_age = datetime.timedelta(seconds=max_age_seconds)

    def report_pod(self, namespace: str, name: str, usage: PodUsage) -> None:
        self._pods[(namespace, name)] = usage

    def forget_pod(self, namespace: str, name: str) -> None:
        self._pods.pop((namespace, name), None)

    def pod(self, namespace: str, name: str, *, now: datetime.datetime) -> PodUsage | None:
        usage = self._pods.get((namespace, name))
        if usage is None or now - usage.timestamp > self.max_age:
            return None
        return usage

    def report_node(self, name: str, at: datetime.datetime, usage: Usage) -> None:
        self._nodes[name] = (at, usage)

    def node(self, name: str, *, now: datetime.datetime) -> Usage | None:
        got = self._nodes.get(name)
        if got is None or now - got[0] > self.max_age:
            return None
        return got[1]
