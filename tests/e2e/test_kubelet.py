"""The kubelet end to end: real kubectl 1.36, a server with its kubelet on, real runc containers,
images built from busybox-static with umoci and pulled from Debian's docker-registry on
127.0.0.1 (plain HTTP, as loopback registries are by default).

Each server gets its own kubelet root dir, pod log dir and cgroup parent under the test's temp
dir; the fixtures delete every container, mount, cgroup and namespace the kubelet made, whatever
happened (the kubelet's containers outlive the server on purpose, so nothing else would).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_kubectl import Kubectl
from tests.support import images as ti
from tests.support.kubelet import KubeletServer, running
from tests.support.waiting import fresh_namespace, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "docker-registry")),
                       reason="needs runc, umoci, skopeo and docker-registry (make installs them)"),
]

CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z (stdout|stderr) [FP] (.*)$")
# A shell that ends at once on SIGTERM (a sleeping PID 1 would ignore it and wait for SIGKILL).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`127.0.0.1:<port>/busybox:1.0` in a real registry."""
    work = tmp_path_factory.mktemp("kubelet-images")
    layout = ti.busybox_layout(work / "layout", tag="1.0")
    registry = ti.Registry(work / "registry").start()
    try:
        ti.skopeo_copy(layout, f"docker://{registry.host}/busybox:1.0")
        yield f"{registry.host}/busybox:1.0"
    finally:
        registry.close()


def _kubelet_server(root: Path, settings: dict[str, Any] | None = None) -> Iterator[KubeletServer]:
    with running(KubeletServer(root, settings=settings)) as ks:
        yield ks


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[KubeletServer]:
    yield from _kubelet_server(tmp_path_factory.mktemp("kubelet"))


@pytest.fixture
def k(node: KubeletServer, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(node.server, request)


def _pod(k: Kubectl, name: str) -> dict[str, Any]:
    return dict(k.json("get", "pod", name))


def _finished(k: Kubectl, name: str) -> dict[str, Any]:
    """The pod once it Succeeded or Failed."""
    out: dict[str, Any] = until(lambda: (p := _pod(k, name))["status"].get("phase") in ("Succeeded", "Failed") and p,
                                what=f"pod {name} finished")
    return out


def _running(k: Kubectl, name: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = _pod(k, name)
        return pod if pod["status"].get("phase") == "Running" and _ready(pod) else None

    return dict(until(check, timeout=timeout, what=f"pod {name} Running and Ready"))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _cid(pod: dict[str, Any], index: int = 0) -> str:
    return str(pod["status"]["containerStatuses"][index]["containerID"]).split("://", 1)[1]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def _run_pod(k: Kubectl, name: str, image: str, command: list[str], *, restart: str = "Always") -> None:
    k.run("run", name, f"--image={image}", f"--restart={restart}", "--command", "--", *command)


# --- the node ------------------------------------------------------------------------------------


def test_node_registers_ready(node: KubeletServer) -> None:
    k = Kubectl("1.36", node.server, "default")
    nodes = k.json("get", "nodes")["items"]
    assert len(nodes) == 1
    n = nodes[0]
    name = n["metadata"]["name"]
    conds = {c["type"]: c for c in n["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conds[kind]["status"] == "False", conds[kind]
    labels = n["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == name and labels["kubernetes.io/os"] == "linux"
    cap, alloc = n["status"]["capacity"], n["status"]["allocatable"]
    assert cap["pods"] == "110" and int(cap["cpu"]) == len(os.sched_getaffinity(0))
    mem_total = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal:")))
    assert cap["memory"] == f"{mem_total}Ki"
    # Allocatable is capacity minus the defaults: 100m cpu, 128Mi reserved + 100Mi eviction.
    assert alloc["memory"] == f"{mem_total - (128 + 100) * 1024}Ki"
    assert alloc["cpu"] == f"{int(cap['cpu']) * 1000 - 100}m"
    info = n["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("runc://") and info["kernelVersion"] == os.uname().release
    assert {a["type"] for a in n["status"]["addresses"]} == {"InternalIP", "Hostname"}
    lease = k.json("get", "lease", name, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == name and lease["spec"]["renewTime"]
    # kubectl's own view.
    assert re.search(rf"^{re.escape(name)}\s+Ready\s", k.out("get", "nodes"), re.M)


def test_idle_node_writes_no_node_status(node: KubeletServer) -> None:
    """The status is checked every 10 s and written only when it changed; the Lease is what moves."""
    k = Kubectl("1.36", node.server, "default")
    name = k.json("get", "nodes")["items"][0]["metadata"]["name"]
    lease_before = k.json("get", "lease", name, "-n", "kube-node-lease")["spec"]["renewTime"]
    before = k.json("get", "node", name)["metadata"]["resourceVersion"]
    until(lambda: k.json("get", "lease", name, "-n", "kube-node-lease")["spec"]["renewTime"] != lease_before,
          timeout=30, what="the Lease renewed")
    # Two status checks later (10 s apart) the Node is unchanged.
    time.sleep(21)
    assert k.json("get", "node", name)["metadata"]["resourceVersion"] == before


# --- pods ---------------------------------------------------------------------------------------


def test_kubectl_run_starts_a_real_process(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("run", "sleeper", f"--image={image}", "--", "sleep", "3600")
    pod = _running(k, "sleeper")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0 and status["started"] is True and "running" in status["state"]
    assert status["imageID"].startswith(image.rsplit(":", 1)[0] + "@sha256:")
    assert pod["status"]["podIP"] == "127.0.0.1" and pod["status"]["hostIP"]
    cid = _cid(pod)
    state = node.runc_list()[cid]
    assert state["status"] == "running"
    assert _cmdline(state["pid"]) == ["sleep", "3600"]
    # In a network namespace of its own (loopback only until the network issue).
    assert os.readlink(f"/proc/{state['pid']}/ns/net") != os.readlink("/proc/self/ns/net")
    # And in the pod's cgroup under the test's parent.
    uid = pod["metadata"]["uid"]
    dirs = node.pod_cgroups(uid)
    assert dirs, "the pod has a cgroup"
    memory = next(d for d in dirs if "/memory/" in str(d))
    assert str(state["pid"]) in (memory / cid / "cgroup.procs").read_text().split()
    kinds = {(e["reason"]) for e in k.json("get", "events")["items"]
             if e["involvedObject"].get("name") == "sleeper"}
    assert {"Scheduled", "Pulled", "Created", "Started"} <= kinds


def _tmpfs_mounts() -> list[Path]:
    with open("/proc/self/mountinfo") as f:
        return [Path(line.split()[4]) for line in f if line.split(" - ")[1].startswith("tmpfs ")]


def test_secrets_in_pods_stay_off_the_disk(k: Kubectl, node: KubeletServer, image: str) -> None:
    """Secret and projected volumes are tmpfs mounts (upstream's memory medium): a Secret a pod
    reads is in no file on the disk, the data dir's included."""
    value = "pod-secret-value-8d2e41"
    k.run("create", "secret", "generic", "mounted", f"--from-literal=pw={value}")
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: mounts-secrets}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "sha256sum /plain/pw /projected/pw; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: plain, mountPath: /plain}}, {{name: projected, mountPath: /projected}}]
  volumes:
  - {{name: plain, secret: {{secretName: mounted}}}}
  - {{name: projected, projected: {{sources: [{{secret: {{name: mounted}}}}]}}}}
""")
    pod = _running(k, "mounts-secrets")
    digest = hashlib.sha256(value.encode()).hexdigest()  # the log shows a digest: it is a file on the disk
    until(lambda: k.out("logs", "mounts-secrets").count(digest) == 2, what="the pod read the Secret from both volumes")
    volumes = node.kubelet_dir / "pods" / pod["metadata"]["uid"] / "volumes"
    tmpfs = _tmpfs_mounts()
    for plugin, name in (("kubernetes.io~secret", "plain"), ("kubernetes.io~projected", "projected")):
        assert volumes / plugin / name in tmpfs, f"{plugin}/{name} is not on a tmpfs"
    mounts = {Path(line.split()[4]) for line in open("/proc/self/mountinfo")}

    def holds_it(p: Path) -> bool:
        # Regular files of the disk only: not tmpfs contents, not pinned namespaces (mount points).
        if not p.is_file() or p.is_symlink() or p in mounts or any(m in p.parents for m in tmpfs):
            return False
        return value.encode() in p.read_bytes()

    assert [p for p in node.root.rglob("*") if holds_it(p)] == []
    k.run("delete", "pod", "mounts-secrets", "--wait=true", "--timeout=60s")


def test_the_data_dir_stays_private_with_the_kubelet_on(k: Kubectl, node: KubeletServer, image: str) -> None:
    """docs/security.md: the data dir 0700, the image store's own files 0600 in 0700 dirs (layers
    keep the image's modes), the pod log dir 0750 as upstream's kubelet; non-root containers run."""
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 1000}}
  containers: [{{name: main, image: {image}, command: ["sh", "-c", "id -u"]}}]
""")
    pod = _finished(k, "private")
    assert pod["status"]["phase"] == "Succeeded" and k.out("logs", "private").strip() == "1000"

    def mode(p: Path) -> int:
        return p.lstat().st_mode & 0o7777

    assert mode(node.data_dir) == 0o700 and mode(node.log_dir) == 0o750
    store = node.data_dir / "image-store"
    layers = store / "layers"
    for p in [store, *store.rglob("*")]:
        if p.is_symlink() or layers in p.parents:
            continue
        assert mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(mode(p)))


def test_container_output_in_cri_log_files(k: Kubectl, node: KubeletServer, image: str) -> None:
    _run_pod(k, "printer", image, ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2"],
             restart="Never")
    pod = until(lambda: (p := _pod(k, "printer"))["status"].get("phase") == "Succeeded" and p,
                what="pod Succeeded")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    path = node.log_dir / f"{k.ns}_printer_{pod['metadata']['uid']}" / "printer" / "0.log"
    lines = until(lambda: path.exists() and len(path.read_text().splitlines()) >= 4 and path.read_text().splitlines(),
                  what=f"{path} written")
    parsed = [CRI_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(2), m.group(3)) for m in parsed if m] == [
        ("stdout", "line 1"), ("stdout", "line 2"), ("stdout", "line 3"), ("stderr", "oops")]
    # A finished pod keeps no container, mount or network namespace, but keeps its log.
    uid = pod["metadata"]["uid"]
    until(lambda: not node.pod_cgroups(uid) and not (node.kubelet_dir / "netns" / uid).exists(),
          what="the finished pod's sandbox removed")
    assert path.exists()


def test_crashing_container_backs_off(k: Kubectl, node: KubeletServer, image: str) -> None:
    _run_pod(k, "crasher", image, ["sh", "-c", "echo crashing; exit 1"])
    seen: set[str] = set()

    def restarted_twice() -> bool:
        cs = _pod(k, "crasher")["status"].get("containerStatuses") or [{}]
        waiting = (cs[0].get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            seen.add(waiting["reason"])
        return bool(cs[0].get("restartCount", 0) >= 2 and "CrashLoopBackOff" in seen)

    until(restarted_twice, timeout=90, what="restartCount >= 2 and CrashLoopBackOff")
    pod = _pod(k, "crasher")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running" and not _ready(pod)
    reasons = [e["reason"] for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == "crasher"]
    assert "BackOff" in reasons
    # Only the newest run and the one before are kept (for lastState and --previous logs).
    uid = pod["metadata"]["uid"]
    mine = [c for c in node.runc_list().values() if c.get("annotations", {}).get("io.kubernetes.pod.uid") == uid]
    assert 1 <= len(mine) <= 2


def test_unpullable_image_backs_off(k: Kubectl, image: str) -> None:
    missing = image.rsplit(":", 1)[0] + ":no-such-tag"
    k.run("run", "ghost", f"--image={missing}")
    seen: set[str] = set()

    def both() -> bool:
        cs = _pod(k, "ghost")["status"].get("containerStatuses") or [{}]
        reason = ((cs[0].get("state") or {}).get("waiting") or {}).get("reason")
        if reason:
            seen.add(reason)
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    until(both, timeout=60, what="ErrImagePull then ImagePullBackOff")
    assert _pod(k, "ghost")["status"]["phase"] == "Pending"
    reasons = {e["reason"] for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == "ghost"}
    assert {"Pulling", "Failed", "BackOff"} <= reasons


def test_deployment_of_three_replicas_runs(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("create", "deployment", "web", f"--image={image}", "--replicas=3", "--", *SLEEPER)
    assert "successfully rolled out" in k.out("rollout", "status", "deployment/web", "--timeout=90s")
    pods = [p for p in k.json("get", "pods", "-l", "app=web")["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 3 and all(p["status"]["phase"] == "Running" for p in pods)
    listed = node.runc_list()
    assert all(listed[_cid(p)]["status"] == "running" for p in pods)
    assert len({_cid(p) for p in pods}) == 3


def test_deleting_a_pod_leaves_nothing(k: Kubectl, node: KubeletServer, image: str) -> None:
    _run_pod(k, "doomed", image, SLEEPER)
    pod = _running(k, "doomed")
    uid, cid = pod["metadata"]["uid"], _cid(pod)
    pid = node.runc_list()[cid]["pid"]
    bundle = node.kubelet_dir / "containers" / cid
    assert bundle.is_dir() and node.pod_cgroups(uid)
    k.run("delete", "pod", "doomed", "--wait=true", "--timeout=60s")
    assert cid not in node.runc_list()
    assert not bundle.exists()
    assert not node.pod_cgroups(uid)
    assert not [m for m in node.mounts() if uid in str(m) or cid in str(m)]
    assert not (node.kubelet_dir / "pods" / uid).exists() and not (node.kubelet_dir / "netns" / uid).exists()
    assert not Path(f"/proc/{pid}").exists() or _cmdline(pid) != ["sh", "-c", SLEEPER[2]]
    assert not (node.log_dir / f"{k.ns}_doomed_{uid}").exists(), list((node.log_dir / f"{k.ns}_doomed_{uid}").rglob("*"))
    reasons = {e["reason"] for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == "doomed"}
    assert "Killing" in reasons


# --- surviving edgekube --------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path, image: str) -> Iterator[KubeletServer]:
    yield from _kubelet_server(tmp_path / "restart")


def test_kill_9_and_restart_adopts_running_containers(restartable: KubeletServer, image: str,
                                                      request: pytest.FixtureRequest) -> None:
    ks = restartable
    k = fresh_namespace(ks.server, request)
    k.run("create", "deployment", "keep", f"--image={image}", "--replicas=9", "--", *SLEEPER)
    _run_pod(k, "ticker", image, ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"])
    assert "successfully rolled out" in k.out("rollout", "status", "deployment/keep", "--timeout=90s")
    _running(k, "ticker")

    def snapshot() -> dict[str, tuple[str, int, int]]:
        pods = k.json("get", "pods")["items"]
        listed = ks.runc_list()
        return {p["metadata"]["name"]: (_cid(p), p["status"]["containerStatuses"][0]["restartCount"],
                                        listed[_cid(p)]["pid"]) for p in pods}

    before = snapshot()
    assert len(before) == 10
    assert ks.server.proc is not None
    ks.server.proc.send_signal(signal.SIGKILL)
    ks.server.proc.wait()
    ks.server.proc = None
    # The containers do not notice.
    listed = ks.runc_list()
    assert all(listed[cid]["status"] == "running" for cid, _, _ in before.values())
    ks.server.start()
    for name in before:
        _running(k, name)
    assert "adopted 10 containers (10 running)" in ks.server.log()
    # The log of the ticker goes on in the same file, with no gap across the restart.
    ticker = _pod(k, "ticker")
    log = ks.log_dir / f"{k.ns}_ticker_{ticker['metadata']['uid']}" / "ticker" / "0.log"

    def ticks() -> list[int]:
        out = []
        for line in log.read_text().splitlines():
            m = CRI_LINE.match(line)
            if m and m.group(3).startswith("tick "):
                out.append(int(m.group(3).split()[1]))
        return out

    last_before = len(ticks())
    until(lambda: len(ticks()) > last_before + 10, what="ticks logged after the restart")
    seen = ticks()
    assert seen == list(range(1, len(seen) + 1))
    # Meanwhile every pod was synced again: same containers, same processes, no restart.
    assert snapshot() == before
    # A clean stop and start adopts them too.
    assert ks.server.stop() == 0
    ks.server.start()
    for name in before:
        _running(k, name)
    assert snapshot() == before
    # And the node is still Ready.
    node = json.loads(k.out("get", "nodes", "-o", "json", namespaced=False))["items"][0]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


# --- init containers, volumes, environment, host network --------------------------------------

POD_WITH_VOLUMES = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: edge, greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: shapes, labels: {app: shapes}}
spec:
  restartPolicy: Never
  initContainers:
  - name: first
    image: IMAGE
    command: ["sh", "-c", "echo from-init > /work/seed"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: IMAGE
    command: ["sh", "-c", "cat /work/seed; cat /cfg/mode; echo; cat /sec/password; echo; echo $MODE $POD $NS $PASS; cat /etc/hostname; grep -c localhost /etc/hosts; cat /etc/resolv.conf"]
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
  volumes:
  - {name: work, emptyDir: {}}
  - {name: cfg, configMap: {name: settings}}
  - {name: sec, secret: {secretName: creds}}
"""


def test_init_container_volumes_and_env(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("apply", "-f", "-", input=POD_WITH_VOLUMES.replace("IMAGE", image))
    pod = _finished(k, "shapes")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0 and init["ready"] is True
    path = node.log_dir / f"{k.ns}_shapes_{pod['metadata']['uid']}" / "main" / "0.log"
    out = [m.group(3) for line in path.read_text().splitlines() if (m := CRI_LINE.match(line))]
    assert out[:5] == ["from-init", "edge", "s3cret", f"edge shapes {k.ns} s3cret", "shapes"]
    assert out[5] == "2"  # the managed hosts file: 127.0.0.1 and ::1 localhost lines
    # This server runs in the host's namespace, so without its cluster DNS (tests/conftest.py):
    # ClusterFirst falls back to the host's resolv.conf, as upstream's kubelet does with no
    # cluster DNS (the cluster's own is tested in tests/e2e/test_dns_pods.py, in a namespace).
    assert "nameserver 10.43.0.10" not in out and not any(f"{k.ns}.svc.cluster.local" in line for line in out)
    events = k.json("get", "events", "--field-selector", "involvedObject.name=shapes")["items"]
    assert any(e["reason"] == "MissingClusterDNS" for e in events), [e["reason"] for e in events]
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "False"


def test_missing_configmap_is_a_config_error(k: Kubectl, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: lacking}}
spec:
  containers:
  - name: main
    image: {image}
    command: ["sleep", "3600"]
    env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: absent, key: x}}}}}}]
""")
    waiting = until(lambda: ((_pod(k, "lacking")["status"].get("containerStatuses") or [{}])[0].get("state") or {})
                    .get("waiting", {}).get("reason") == "CreateContainerConfigError"
                    and _pod(k, "lacking")["status"]["containerStatuses"][0]["state"]["waiting"],
                    what="CreateContainerConfigError")
    assert waiting["message"] == 'configmap "absent" not found'
    # Once the ConfigMap exists the container starts (on its next try, after the back-off).
    k.run("create", "configmap", "absent", "--from-literal=x=1")
    _running(k, "lacking", timeout=60)


def test_host_network_pod(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hostnet}}
spec:
  hostNetwork: true
  containers:
  - {{name: main, image: {image}, command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}}
""")
    pod = _running(k, "hostnet")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"]
    pid = node.runc_list()[_cid(pod)]["pid"]
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    assert not (node.kubelet_dir / "netns" / pod["metadata"]["uid"]).exists()


def test_active_deadline_fails_the_pod(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: bounded}}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 2
  containers: [{{name: main, image: {image}, command: {json.dumps(SLEEPER)}}}]
""")
    pod = _running(k, "bounded")
    cid = _cid(pod)
    pod = until(lambda: (p := _pod(k, "bounded"))["status"].get("phase") == "Failed" and p, timeout=30,
                what="the pod Failed at its deadline")
    assert (pod["status"]["reason"], pod["status"]["message"]) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    assert "terminated" in pod["status"]["containerStatuses"][0]["state"]
    until(lambda: cid not in node.runc_list(), what="the container removed")
    reasons = {e["reason"] for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == "bounded"}
    assert "DeadlineExceeded" in reasons


def test_oom_killed_container(k: Kubectl, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    # A shell variable doubling until the 16Mi limit is hit.
    command: ["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"]
    resources: {{limits: {{memory: 16Mi}}}}
""")
    pod = until(lambda: (p := _pod(k, "hog"))["status"].get("phase") == "Failed" and p, timeout=60,
                what="the pod Failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 137), term
    assert "OOMKilled" in k.out("get", "pod", "hog").splitlines()[1].split()


def test_configmap_update_reaches_a_running_container(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("create", "configmap", "live", "--from-literal=value=first")
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do echo value=$(cat /cfg/value); sleep 0.3; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
  volumes: [{{name: cfg, configMap: {{name: live}}}}]
""")
    pod = _running(k, "reader")
    until(lambda: "value=first" in k.out("logs", "reader", "--tail=1"), what="the first value read")
    k.run("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: live}\ndata: {value: second}\n")
    until(lambda: "value=second" in k.out("logs", "reader", "--tail=1"), timeout=90,
          what="the new value seen inside the running container")
    # The same container, not a restart.
    again = _pod(k, "reader")
    assert _cid(again) == _cid(pod) and again["status"]["containerStatuses"][0]["restartCount"] == 0


def test_fs_group_owns_the_volumes(k: Kubectl, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: grouped}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "id; echo hi > /data/new && ls -ln /data/new; ls -lnd /data"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
""")
    pod = _finished(k, "grouped")
    out = k.out("logs", "grouped")
    assert pod["status"]["phase"] == "Succeeded", out
    ident, new, root = out.splitlines()
    assert "uid=1000 gid=3000 groups=2000" in ident or "groups=3000,2000" in ident, ident
    assert new.split()[3] == "2000"  # a new file inherits the group from the setgid directory
    assert root.startswith("drwxrwsrwx") and root.split()[3] == "2000", root


def test_containers_of_a_pod_share_ipc_and_dev_shm(k: Kubectl, node: KubeletServer, image: str) -> None:
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: shared}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: writer, image: {image}, command: ["sh", "-c", "echo from-writer > /dev/shm/note; {SLEEPER[2]}"]}}
  - {{name: reader, image: {image}, command: ["sh", "-c", "until cat /dev/shm/note; do sleep 0.2; done; {SLEEPER[2]}"]}}
""")
    pod = _running(k, "shared")
    until(lambda: "from-writer" in k.out("logs", "shared", "-c", "reader"), what="the reader saw the writer's note")
    pids = [node.runc_list()[_cid(pod, i)]["pid"] for i in (0, 1)]
    ipc = {os.readlink(f"/proc/{pid}/ns/ipc") for pid in pids}
    assert len(ipc) == 1 and ipc != {os.readlink("/proc/self/ns/ipc")}
    uid = pod["metadata"]["uid"]
    k.run("delete", "pod", "shared", "--wait=true", "--timeout=60s")
    assert not [m for m in node.mounts() if uid in str(m)]


def test_pod_usage_feeds_the_autoscaler(k: Kubectl, image: str) -> None:
    """cgroup usage -> the kubelet's metrics -> the HorizontalPodAutoscaler: a busy container held
    to 100m by its CFS quota runs at about 100% of its 100m request, so a 50% target scales up."""
    k.run("apply", "-f", "-", input=f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: busy}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: busy}}}}
  template:
    metadata: {{labels: {{app: busy}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: spin
        image: {image}
        command: ["sh", "-c", "while true; do :; done"]
        resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 100m}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: busy}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: busy}}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
""")
    hpa = until(lambda: (h := k.json("get", "hpa", "busy"))["status"].get("desiredReplicas", 0) >= 2 and h,
                timeout=150, what="the autoscaler scaling up on the kubelet's readings")
    current = hpa["status"]["currentMetrics"][0]["resource"]["current"]
    assert current["averageUtilization"] > 50
    conds = {c["type"]: c["status"] for c in hpa["status"]["conditions"]}
    assert conds["ScalingActive"] == "True"
    k.run("delete", "hpa", "busy")
    k.run("scale", "deployment", "busy", "--replicas=0")


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def test_guaranteed_pod_runs_without_cap_sys_resource(k: Kubectl, node: KubeletServer, image: str) -> None:
    """A Guaranteed pod's containers get oom_score_adj -997, which only CAP_SYS_RESOURCE may set
    below the kubelet's own; in LXC and containers (and on this machine) runc would fail the
    start. As containerd does, the kubelet clamps it to its own value and says so in an event."""
    k.run("apply", "-f", "-", input=f"""\
apiVersion: v1
kind: Pod
metadata: {{name: guaranteed}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: {json.dumps(SLEEPER)}
    resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}
""")
    pod = _running(k, "guaranteed")
    assert pod["status"]["qosClass"] == "Guaranteed"
    adj = int(Path(f"/proc/{node.runc_list()[_cid(pod)]['pid']}/oom_score_adj").read_text())
    assert node.server.proc is not None
    own = int(Path(f"/proc/{node.server.proc.pid}/oom_score_adj").read_text())
    events = [e for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == "guaranteed"]
    clamped = [e for e in events if e["reason"] == "OOMScoreAdjustClamped"]
    if _has_cap_sys_resource():
        assert adj == -997 and not clamped
    else:
        assert adj == max(-997, own), (adj, own)
        assert clamped and clamped[0]["type"] == "Warning", events
        assert clamped[0]["message"] == (
            f"container main: oom_score_adj -997 (Guaranteed) needs CAP_SYS_RESOURCE, which edgekube lacks; "
            f"set to {own}, edgekube's own")
    k.run("delete", "pod", "guaranteed", "--wait=true", "--timeout=60s")
