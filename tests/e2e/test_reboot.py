"""A node that loses power and boots again with no network: every pod Running again, from the
images on the disk, with nothing of the old containers left behind (tests/support/kubelet.py
`simulate_reboot`: the server and containers killed at once, mounts, cgroups, /run, links and
nft tables gone, the disk as it was). The node runs in a network namespace with no uplink: no
default route, no DNS server, no registry. How fast (20 pods): benchmarks/kubelet_bench.py."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_durability import Storm, check_after_restart
from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_pod_network import IMAGE, SLEEPER, _start, tarball  # noqa: F401 (the fixture)
from tests.support.kubelet import running, simulate_reboot
from tests.support.netns import NetNS
from tests.support.waiting import fresh_namespace, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet and the pod network need root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "ip", "nsenter", "nft")),
                       reason="needs runc, umoci, skopeo, ip, nsenter and nft (make installs them)"),
]

WITH_VOLUMES = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "with-volumes"},
    "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
        "name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "echo boot >> /scratch/boots; trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "cfg", "mountPath": "/cfg"}]}],
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}},
                    {"name": "cfg", "configMap": {"name": "settings"}}]},
}


def _pods(k: Kubectl) -> list[dict[str, Any]]:
    return list(k.json("get", "pods")["items"])


def _all_running(k: Kubectl, count: int, *, not_in: set[str] = frozenset()) -> list[dict[str, Any]] | None:  # type: ignore[assignment]
    """The pods once `count` run and are ready, each in a container not among `not_in` (the API
    shows the old containers' status until the kubelet writes the new one)."""
    pods = _pods(k)
    ok = len(pods) == count and all(
        p["status"].get("phase") == "Running" and p["status"].get("podIP")
        and all(c.get("ready") and c.get("containerID", "").split("://")[-1] not in not_in
                for c in p["status"].get("containerStatuses") or [{}]) for p in pods)
    return pods if ok else None


def test_after_a_power_cut_with_no_network_every_pod_runs_again(tmp_path: Path, tarball: Path, netns: NetNS,  # noqa: F811
                                                               request: pytest.FixtureRequest) -> None:
    assert "default" not in netns.run(["ip", "route", "show"]).stdout  # offline: no way out
    with running(_start(tmp_path / "node", tarball, netns)) as ks:
        k = fresh_namespace(ks.server, request)
        k.run("create", "configmap", "settings", "--from-literal=mode=edge")
        k.run("create", "deployment", "keep", f"--image={IMAGE}", "--replicas=2", "--", *SLEEPER)
        k.run("apply", "-f", "-", input=json.dumps(WITH_VOLUMES))
        before = until(lambda: _all_running(k, 3), timeout=90, what="3 pods Running")
        old_containers = set(ks.runc_list())
        assert len(old_containers) == 3
        old_ids = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["containerID"].split("://")[1] for p in before}

        simulate_reboot(ks, netns)
        assert not ks.mounts() and not ks.cgroup_dirs() and not ks.runc_root.exists()
        ks.server.start()
        after = until(lambda: _all_running(k, 3, not_in=old_containers), timeout=90,
                      what="3 pods Running again after the reboot")
        assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in before}
        for pod in after:
            status = pod["status"]["containerStatuses"][0]
            # A new run; the old one died with the power, and how is unknown (as upstream shows it).
            assert status["restartCount"] == 1, status
            assert status["lastState"] == {"terminated": {
                "exitCode": 137, "reason": "ContainerStatusUnknown", "containerID": f"runc://{old_ids[pod['metadata']['uid']]}",
                "message": "The container could not be located when the pod was deleted.  The container used to be "
                           "Running"}}, status
            logs = ks.log_dir / f"{k.ns}_{pod['metadata']['name']}_{pod['metadata']['uid']}" / status['name']
            assert sorted(p.name for p in logs.iterdir()) == ["0.log", "1.log"]  # the first run's log kept
        # Only the new containers run, each in its new sandbox; nothing of the old ones is left.
        now = ks.runc_list()
        assert len(now) == 3 and not set(now) & old_containers
        assert all(c["status"] == "running" for c in now.values())
        # The emptyDir in memory started empty again (as a tmpfs does after a reboot).
        vol = next(p for p in after if p["metadata"]["name"] == "with-volumes")
        cid = vol["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        boots = Path(f"/proc/{now[cid]['pid']}/root/scratch/boots")
        assert until(lambda: boots.exists() and boots.read_text(), timeout=30) == "boot\n"
        assert Path(f"/proc/{now[cid]['pid']}/root/cfg/mode").read_text() == "edge"
        node = json.loads(k.out("get", "nodes", "-o", "json", namespaced=False))["items"][0]
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
        assert "default" not in netns.run(["ip", "route", "show"]).stdout


def test_twenty_power_cuts_during_writes_lose_nothing_and_the_pods_come_back(
        tmp_path: Path, tarball: Path, request: pytest.FixtureRequest) -> None:  # noqa: F811
    """Twenty rounds of: writers creating, updating and deleting ConfigMaps, then, at a random
    moment, the power cut (the server and every container killed at once, mounts, cgroups, /run,
    links and nft tables gone) and a boot with no network. After each boot every acknowledged
    write is there as acknowledged (tests/e2e/test_durability.py's check); every few rounds, and
    after the last, both pods run again in new containers. The writers run in this process: the
    server runs in the host's namespace with its network component off (pods on loopback); the
    boot without network is the test above's."""
    rnd = random.Random(16)
    with running(_start(tmp_path / "node", tarball, None)) as ks:
        k = fresh_namespace(ks.server, request)
        k.run("create", "deployment", "keep", f"--image={IMAGE}", "--replicas=2", "--", *SLEEPER)
        until(lambda: _all_running(k, 2), timeout=90, what="2 pods Running")
        state: dict[str, tuple[int, str] | None] = {}
        top = 0
        for round_ in range(20):
            before = set(ks.runc_list())
            storm = Storm(ks.server, round_=round_, state=state)
            threads = [threading.Thread(target=storm.writer, args=(w,)) for w in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.2 + rnd.random() * 0.8)
            simulate_reboot(ks)
            storm.stop.set()
            for t in threads:
                t.join(timeout=10)
            ks.server.start()
            top = check_after_restart(ks.server, storm, top=top)
            if round_ % 5 == 4:
                until(lambda before=before: _all_running(k, 2, not_in=before), timeout=90,
                      what=f"the pods Running again after power cut {round_ + 1}")
        assert sum(1 for v in state.values() if v is not None) > 20
        pods = until(lambda: _all_running(k, 2, not_in=before), timeout=90, what="the pods Running at the end")
        counts = [p["status"]["containerStatuses"][0]["restartCount"] for p in pods]
        assert all(c >= 4 for c in counts), counts
