"""ResourceQuota and LimitRange through kubectl 1.36: `kubectl create quota`, `describe quota`,
pods refused with upstream's messages, freed quota, LimitRange defaults and maximums."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.testnode import PREFIX, NodeProcess
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e


@pytest.fixture
def k(server: Server, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(server, request, prefix="quota-")


def _pod(name: str, *, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None, restart: str = "Always") -> str:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"restartPolicy": restart,
                 "containers": [{"name": "app", "image": "busybox:1.36", "resources": resources}]},
    })


def _used(k: Kubectl, name: str = "q") -> dict[str, str]:
    used: dict[str, str] = (k.json("get", "quota", name).get("status") or {}).get("used") or {}
    return used


def _rows(describe: str) -> dict[str, tuple[str, str]]:
    """`kubectl describe quota`'s table: resource -> (used, hard)."""
    rows = {}
    for line in describe.splitlines():
        m = re.fullmatch(r"(\S+)\s+(\S+)\s+(\S+)", line.strip())
        if m and m.group(1) not in ("Resource", "--------"):
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_quota_counts_refuses_and_frees(k: Kubectl) -> None:
    _until(lambda: k.run("get", "configmap", "kube-root-ca.crt", check=False).returncode == 0)
    k.run("create", "quota", "q", "--hard=pods=2,requests.cpu=1,requests.memory=1Gi,configmaps=20")
    # Enforced once the controller has worked out what the namespace uses (the root CA counts).
    _until(lambda: _used(k) == {"pods": "0", "requests.cpu": "0", "requests.memory": "0", "configmaps": "1"})
    quota = k.json("get", "quota", "q")
    assert quota["status"]["hard"] == {"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi", "configmaps": "20"}

    k.run("create", "-f", "-", input=_pod("one", requests={"cpu": "400m", "memory": "256Mi"}))
    k.run("create", "-f", "-", input=_pod("two", requests={"cpu": "0.4", "memory": "256Mi"}))
    k.run("create", "configmap", "settings")
    assert _used(k)["configmaps"] == "2"  # charged as it was created
    rows = _rows(k.out("describe", "quota", "q"))
    assert rows == {"configmaps": ("2", "20"), "pods": ("2", "2"), "requests.cpu": ("800m", "1"),
                    "requests.memory": ("512Mi", "1Gi")}
    described = k.out("describe", "quota", "q")
    assert re.search(r"^Name:\s+q$", described, re.M) and re.search(rf"^Namespace:\s+{k.ns}$", described, re.M)
    table = k.out("get", "quota", "q")
    assert "pods: 2/2" in table and "requests.cpu: 800m/1" in table

    over = k.run("create", "-f", "-", input=_pod("three", requests={"cpu": "100m", "memory": "64Mi"}), check=False)
    assert over.returncode != 0
    assert over.stderr.strip() == ('Error from server (Forbidden): error when creating "STDIN": pods "three" is forbidden: '
                                   "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2")
    bare = k.run("run", "bare", "--image=busybox:1.36", check=False)
    assert bare.returncode != 0
    assert bare.stderr.strip() == ('Error from server (Forbidden): pods "bare" is forbidden: failed quota: q: '
                                   "must specify requests.cpu for: bare; requests.memory for: bare")

    # Deleting a pod gives its share back.
    k.run("delete", "pod", "one", "--wait=false")
    _until(lambda: _used(k)["pods"] == "1")
    assert _used(k) == {"pods": "1", "requests.cpu": "400m", "requests.memory": "256Mi", "configmaps": "2"}
    k.run("create", "-f", "-", input=_pod("three", requests={"cpu": "500m", "memory": "64Mi"}))
    cpu = k.run("create", "-f", "-", input=_pod("four", requests={"cpu": "200m", "memory": "64Mi"}), check=False)
    assert "exceeded quota: q, requested: pods=1,requests.cpu=200m, used: pods=2,requests.cpu=900m, " \
           "limited: pods=2,requests.cpu=1" in cpu.stderr


def test_finished_pods_free_their_quota(k: Kubectl, test_node: NodeProcess) -> None:
    k.run("create", "quota", "q", "--hard=pods=1")
    _until(lambda: _used(k) == {"pods": "0"})
    k.run("create", "-f", "-", input=_pod("done", restart="Never", annotations={PREFIX + "exit-code": "0"}))
    _until(lambda: k.json("get", "pod", "done")["status"].get("phase") == "Succeeded")
    _until(lambda: _used(k) == {"pods": "0"})  # it is kept, but no longer counts
    k.run("create", "-f", "-", input=_pod("next"))
    refused = k.run("create", "-f", "-", input=_pod("more"), check=False)
    assert "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1" in refused.stderr


LIMITS = """\
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits:
  - type: Container
    default: {cpu: 300m, memory: 128Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: 500m}
"""


def test_limit_range_defaults_and_maximum(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=LIMITS)
    stored = k.json("get", "limitrange", "limits")["spec"]["limits"][0]
    assert stored["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}
    k.run("run", "app", "--image=busybox:1.36")
    pod = k.json("get", "pod", "app")
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "300m", "memory": "128Mi"}}
    assert pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app")
    assert pod["status"]["qosClass"] == "Burstable"

    big = k.run("create", "-f", "-", input=_pod("big", requests={"cpu": "1"}, limits={"cpu": "1"}), check=False)
    assert big.returncode != 0
    assert big.stderr.strip() == ('Error from server (Forbidden): error when creating "STDIN": pods "big" is forbidden: '
                                  "maximum cpu usage per Container is 500m, but limit is 1")
    # kubectl run's --dry-run=server goes through the same admission
    dry = k.run("run", "big2", "--image=busybox:1.36", "--dry-run=server", "--overrides",
                json.dumps({"spec": {"containers": [{"name": "big2", "image": "busybox:1.36",
                                                     "resources": {"limits": {"cpu": "600m"}}}]}}), check=False)
    assert 'pods "big2" is forbidden: maximum cpu usage per Container is 500m, but limit is 600m' in dry.stderr
