"""Static pods end to end: manifests in the kubelet's `pod-manifest-path` (inside the test's temp
dir) run as real runc containers, show up as mirror pods in real kubectl 1.36, follow their files
(added, edited, removed: picked up by the rescan, every second here), outlive the deletion of their mirror pod
and a `kill -9` of edgekube. The image is test_kubelet.py's (busybox-static in a registry on
127.0.0.1); the fixtures delete every container, mount and cgroup the kubelet made.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import test_kubelet as kubelet_e2e
from tests.e2e.test_kubectl import Kubectl
from tests.support.kubelet import KubeletServer
from tests.support.waiting import until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "docker-registry")),
                       reason="needs runc, umoci, skopeo and docker-registry (make installs them)"),
]

image = kubelet_e2e.image  # the module-scoped fixture: busybox in a registry on 127.0.0.1
RESCAN = 60.0  # the kubelet reads the folder every second here; then the pod starts


def _manifest(name: str, image: str, *, version: str = "1") -> str:
    """A pod that says its version, then sleeps until SIGTERM."""
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                           "spec": {"containers": [{
                               "name": "main", "image": image, "env": [{"name": "VERSION", "value": version}],
                               "command": ["sh", "-c", "echo version $VERSION; trap 'exit 0' TERM; "
                                                       "while true; do sleep 0.2; done"]}]}})


def _server(root: Path, manifests: Path) -> Iterator[KubeletServer]:
    yield from kubelet_e2e._kubelet_server(root, {"pod-manifest-path": str(manifests),
                                                  "pod-manifest-check-seconds": 1})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[KubeletServer]:
    """A server whose folder holds a valid manifest and a broken one at boot."""
    root = tmp_path_factory.mktemp("static")
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / "boot.yaml").write_text(_manifest("boot", image))
    broken = yaml.safe_load(_manifest("broken", image))
    del broken["spec"]["containers"][0]["image"]
    (manifests / "broken.yaml").write_text(yaml.safe_dump(broken))
    (manifests / ".hidden.yaml").write_text(_manifest("hidden", image))
    yield from _server(root, manifests)


def _manifests(ks: KubeletServer) -> Path:
    return ks.root / "manifests"


def _kubectl(ks: KubeletServer) -> Kubectl:
    return Kubectl("1.36", ks.server, "default")


def _static_name(k: Kubectl, name: str) -> str:
    node = k.json("get", "nodes")["items"][0]["metadata"]["name"]
    return f"{name}-{node.lower()}"


def _get(k: Kubectl, name: str) -> dict[str, Any] | None:
    proc = k.run("get", "pod", name, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return dict(yaml.safe_load(proc.stdout))


def _running(k: Kubectl, name: str, *, but_not: str = "", timeout: float = RESCAN) -> dict[str, Any]:
    """The mirror pod once it shows its static pod Running and Ready (and stands for another
    static pod than `but_not`)."""
    def check() -> dict[str, Any] | None:
        pod = _get(k, name)
        if pod is None or pod["metadata"]["annotations"].get("kubernetes.io/config.mirror") in (None, but_not):
            return None
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        return pod if pod["status"].get("phase") == "Running" and ready else None

    return dict(until(check, timeout=timeout, what=f"mirror pod {name} Running and Ready"))


def _cid(pod: dict[str, Any]) -> str:
    return str(pod["status"]["containerStatuses"][0]["containerID"]).split("://", 1)[1]


# --- the folder at boot --------------------------------------------------------------------------


def test_a_manifest_present_at_boot_runs_as_a_mirror_pod(node: KubeletServer) -> None:
    k = _kubectl(node)
    name = _static_name(k, "boot")
    pod = _running(k, name)
    meta = pod["metadata"]
    notes = meta["annotations"]
    assert notes["kubernetes.io/config.source"] == "file" and notes["kubernetes.io/config.seen"]
    assert notes["kubernetes.io/config.mirror"] == notes["kubernetes.io/config.hash"] != meta["uid"]
    node_obj = k.json("get", "nodes")["items"][0]
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": node_obj["metadata"]["name"],
                                        "uid": node_obj["metadata"]["uid"], "controller": True}]
    assert meta["labels"] == {"app": "boot"} and pod["spec"]["nodeName"] == node_obj["metadata"]["name"]
    assert {"operator": "Exists", "effect": "NoExecute"} in pod["spec"]["tolerations"]
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 0 and cs["ready"] and cs["state"]["running"]
    assert node.runc_list()[_cid(pod)]["status"] == "running"
    # kubectl's own views: the pod list, and the logs of the static pod through its mirror.
    assert any(line.split()[:3] == [name, "1/1", "Running"] for line in k.out("get", "pods").splitlines())
    until(lambda: "version 1" in k.out("logs", name), what="the static pod's log through its mirror pod")
    # The hidden file is not read.
    assert _get(k, _static_name(k, "hidden")) is None


def test_an_invalid_manifest_is_reported_and_skipped(node: KubeletServer) -> None:
    k = _kubectl(node)
    _running(k, _static_name(k, "boot"))
    log = node.server.log_path.read_text(errors="replace")
    broken = _manifests(node) / "broken.yaml"
    assert f"static pod manifest {broken} skipped: spec.containers[0].image: Required value" in log
    assert log.count(f"static pod manifest {broken} skipped") == 1  # said once, not at every rescan
    assert _get(k, _static_name(k, "broken")) is None


# --- the folder changes --------------------------------------------------------------------------


def test_a_manifest_added_later_starts_and_outlives_its_mirror_pod(node: KubeletServer, image: str) -> None:
    k = _kubectl(node)
    name = _static_name(k, "later")
    (_manifests(node) / "later.yaml").write_text(_manifest("later", image))
    pod = _running(k, name)
    cid = _cid(pod)
    pid = node.runc_list()[cid]["pid"]
    # Deleting the mirror pod (kubectl waits for that object to be gone) stops nothing: the
    # kubelet runs static pods from their files, and makes the mirror pod again.
    k.run("delete", "pod", name, "--timeout=30s")
    again = until(lambda: (p := _get(k, name)) is not None and p["metadata"]["uid"] != pod["metadata"]["uid"]
                  and p["status"].get("containerStatuses") and p,
                  what="a new mirror pod with the static pod's status")
    assert again["metadata"]["annotations"]["kubernetes.io/config.mirror"] == \
        pod["metadata"]["annotations"]["kubernetes.io/config.mirror"]
    assert again["status"]["phase"] == "Running"
    assert _cid(again) == cid and again["status"]["containerStatuses"][0]["restartCount"] == 0
    listed = node.runc_list()[cid]
    assert listed["status"] == "running" and listed["pid"] == pid


def test_an_edited_manifest_replaces_the_pod(node: KubeletServer, image: str) -> None:
    k = _kubectl(node)
    name = _static_name(k, "edited")
    path = _manifests(node) / "edited.yaml"
    path.write_text(_manifest("edited", image, version="1"))
    first = _running(k, name)
    old_hash = first["metadata"]["annotations"]["kubernetes.io/config.mirror"]
    old_cid = _cid(first)
    path.write_text(_manifest("edited", image, version="2"))
    second = _running(k, name, but_not=old_hash)
    assert second["metadata"]["annotations"]["kubernetes.io/config.hash"] != old_hash
    assert second["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "2"}]
    assert _cid(second) != old_cid and old_cid not in node.runc_list()
    until(lambda: "version 2" in k.out("logs", name), what="the new pod's log")
    assert not list(node.log_dir.glob(f"default_{name}_{old_hash}"))  # the old pod's logs went with it


def test_a_removed_manifest_stops_its_pod_and_removes_the_mirror(node: KubeletServer, image: str) -> None:
    k = _kubectl(node)
    name = _static_name(k, "removed")
    path = _manifests(node) / "removed.yaml"
    path.write_text(_manifest("removed", image))
    pod = _running(k, name)
    cid, uid = _cid(pod), pod["metadata"]["annotations"]["kubernetes.io/config.hash"]
    path.unlink()
    until(lambda: _get(k, name) is None, timeout=RESCAN, what="the mirror pod gone")
    assert cid not in node.runc_list()
    assert not node.pod_cgroups(uid)
    assert not (node.log_dir / f"default_{name}_{uid}").exists()
    # The others run on.
    assert _running(k, _static_name(k, "boot"))


# --- surviving edgekube --------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path, image: str) -> Iterator[KubeletServer]:
    manifests = tmp_path / "restart" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "keep.yaml").write_text(_manifest("keep", image))
    yield from _server(tmp_path / "restart", manifests)


def test_kill_9_and_restart_adopts_a_static_pod(restartable: KubeletServer) -> None:
    ks = restartable
    k = _kubectl(ks)
    name = _static_name(k, "keep")
    before = _running(k, name)
    cid = _cid(before)
    pid = ks.runc_list()[cid]["pid"]
    assert ks.server.proc is not None
    ks.server.proc.send_signal(signal.SIGKILL)
    ks.server.proc.wait()
    ks.server.proc = None
    ks.server.start()

    def same_again() -> dict[str, Any] | None:
        pod = _running(k, name)
        started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        return pod if started == before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] else None

    after = until(same_again, what="the mirror pod showing the adopted container")
    assert "adopted 1 containers (1 running) of 1 pods" in ks.server.log()
    assert _cid(after) == cid and after["status"]["containerStatuses"][0]["restartCount"] == 0
    assert after["metadata"]["annotations"]["kubernetes.io/config.hash"] == \
        before["metadata"]["annotations"]["kubernetes.io/config.hash"]
    listed = ks.runc_list()[cid]
    assert listed["status"] == "running" and listed["pid"] == pid
    # The pod's start time goes on from before the restart (activeDeadlineSeconds counts from it).
    assert after["status"]["startTime"] == before["status"]["startTime"]
