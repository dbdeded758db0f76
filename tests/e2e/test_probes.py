"""Probes and lifecycle hooks end to end: real kubectl 1.36, a server with its kubelet on, real
runc containers (the busybox image of test_kubelet, whose fixtures these tests share).

Files a test toggles or reads (readiness flags, web roots, hook markers) live in a hostPath
directory under the test's temp dir, so the test drives the container's health from outside and
sees what its hooks did after the pod is gone. busybox's httpd (with a CGI script to answer as
the test likes) is the server in the pod.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import memdir
from tests.e2e.test_kubectl import Kubectl
from tests.e2e.test_kubelet import (
    SLEEPER,
    _cid,
    _kubelet_server,
    _pod,
    _ready,
    _running,
    image,
    k,
    node,
)
from tests.support.kubelet import KubeletServer
from tests.support.waiting import fresh_namespace, until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "docker-registry")),
                       reason="needs runc, umoci, skopeo and docker-registry (make installs them)"),
]
__all__ = ["image", "k", "node"]  # fixtures, used by name

# PID 1 of a container without a TERM handler ignores SIGTERM: only SIGKILL ends it.
DEAF = ["sh", "-c", "while true; do sleep 0.2; done"]


def _apply(k: Kubectl, manifest: dict[str, Any]) -> None:
    k.run("apply", "-f", "-", input=json.dumps(manifest))


def _pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def _host_dir(path: Path) -> dict[str, Any]:
    return {"name": "host", "hostPath": {"path": str(path), "type": "Directory"}}


def _events(k: Kubectl, name: str) -> list[tuple[str, str]]:
    return [(e["reason"], e.get("message", "")) for e in k.json("get", "events")["items"]
            if e["involvedObject"].get("name") == name]


def _status(k: Kubectl, name: str, index: int = 0) -> dict[str, Any]:
    return dict((_pod(k, name)["status"].get("containerStatuses") or [{}] * (index + 1))[index])


def _conditions(pod: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}


# --- liveness -------------------------------------------------------------------------------------


def test_failing_liveness_probe_restarts_the_container(k: Kubectl, image: str) -> None:
    # The pod's grace period is long; the probe's own (2 s) is what the kill uses.
    _apply(k, _pod_manifest("sickly", [{
        "name": "main", "image": image, "command": DEAF,
        "livenessProbe": {"exec": {"command": ["cat", "/nonexistent"]}, "periodSeconds": 1, "failureThreshold": 2,
                          "terminationGracePeriodSeconds": 2},
    }], terminationGracePeriodSeconds=300))
    first = _running(k, "sickly")
    cs = until(lambda: (s := _status(k, "sickly"))["restartCount"] >= 1 and s, timeout=60,
               what="the container restarted by its liveness probe")
    last = cs["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "Error"), last  # SIGKILLed after the probe's grace
    assert last["containerID"] == first["status"]["containerStatuses"][0]["containerID"]
    events = _events(k, "sickly")
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed: cat: can't open '/nonexistent'") for r, m in events)
    assert ("Killing", "Container main failed liveness probe, will be restarted") in events
    assert sum(1 for r, _ in events if r == "Started") >= 1


def test_tcp_liveness_probe_keeps_a_serving_container_running(k: Kubectl, image: str) -> None:
    """Both containers share the pod's network namespace: the one probing the server's port
    lives on, the one probing a closed port is restarted meanwhile."""
    probe = {"periodSeconds": 1, "failureThreshold": 1, "terminationGracePeriodSeconds": 2}
    _apply(k, _pod_manifest("served", [
        {"name": "web", "image": image, "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/tmp"],
         "ports": [{"name": "http", "containerPort": 8080}],
         "livenessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 1, **probe}},
        {"name": "closed", "image": image, "command": SLEEPER, "livenessProbe": {"tcpSocket": {"port": 9}, **probe}},
    ], terminationGracePeriodSeconds=2))
    until(lambda: _status(k, "served").get("started"), what="web started")
    web = _status(k, "served")
    until(lambda: _status(k, "served", 1).get("restartCount", 0) >= 1, timeout=60,
          what="the container probing a closed port restarted")
    now = _status(k, "served")
    assert now["restartCount"] == 0 and now["containerID"] == web["containerID"] and "running" in now["state"]
    assert ("Unhealthy", "Liveness probe failed: dial tcp 127.0.0.1:9: connect: connection refused") in \
        _events(k, "served")


# --- readiness ------------------------------------------------------------------------------------


def test_exec_readiness_probe_and_readiness_gates_decide_ready(k: Kubectl, image: str, tmp_path: Path) -> None:
    _apply(k, _pod_manifest("gated", [{
        "name": "main", "image": image, "command": SLEEPER,
        "readinessProbe": {"exec": {"command": ["cat", "/host/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
        "volumeMounts": [{"name": "host", "mountPath": "/host"}],
    }], readinessGates=[{"conditionType": "example.com/gate"}], volumes=[_host_dir(tmp_path)],
        terminationGracePeriodSeconds=2))
    pod = until(lambda: (p := _pod(k, "gated"))["status"].get("phase") == "Running" and p, what="Running")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["started"] is True and cs["ready"] is False
    assert _conditions(pod)["ContainersReady"] == "False" and _conditions(pod)["Ready"] == "False"
    (tmp_path / "ready").write_text("yes\n")
    pod = until(lambda: (p := _pod(k, "gated"))["status"]["containerStatuses"][0]["ready"] and p,
                what="ready once the file is there")
    assert _conditions(pod)["ContainersReady"] == "True"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    # The gate's condition, set by someone else, makes the pod Ready at once (no resync wait).
    gate = {"type": "example.com/gate", "status": "True"}
    k.run("patch", "pod", "gated", "--subresource=status", "-p", json.dumps({"status": {"conditions": [gate]}}))
    until(lambda: _ready(_pod(k, "gated")), timeout=20, what="Ready once the gate is True")
    (tmp_path / "ready").unlink()
    pod = until(lambda: (p := _pod(k, "gated"))["status"]["containerStatuses"][0]["ready"] is False and p,
                what="unready once the file is gone")
    assert _conditions(pod)["Ready"] == "False" and _conditions(pod)["ContainersReady"] == "False"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert any(r == "Unhealthy" and m.startswith("Readiness probe failed: cat: can't open '/host/ready'")
               for r, m in _events(k, "gated"))


READY_CGI = """#!/bin/sh
if [ "$HTTP_X_PROBE" = yes ] && [ -f /www/flag ]; then echo "HTTP/1.0 200 OK"; else echo "HTTP/1.0 503 Unavailable"; fi
echo "Content-Type: text/plain"
echo
echo checked
"""


def test_http_readiness_probe_against_a_server_in_the_pod(k: Kubectl, image: str, tmp_path: Path) -> None:
    """The probe goes to the pod's own network (the pod's IP, a named port) with its header:
    the CGI script answers 200 only to requests that carry it, and only while the flag is there."""
    (tmp_path / "cgi-bin").mkdir()
    (tmp_path / "cgi-bin" / "ready").write_text(READY_CGI)
    (tmp_path / "cgi-bin" / "ready").chmod(0o755)
    _apply(k, _pod_manifest("web", [{
        "name": "httpd", "image": image, "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/cgi-bin/ready", "port": "http",
                                       "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},
                           "periodSeconds": 1, "failureThreshold": 1},
        "volumeMounts": [{"name": "host", "mountPath": "/www"}],
    }], volumes=[_host_dir(tmp_path)], terminationGracePeriodSeconds=2))
    until(lambda: ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503") in _events(k, "web"),
          what="the probe answered 503")
    assert not _status(k, "web")["ready"]
    (tmp_path / "flag").write_text("")
    _running(k, "web")
    (tmp_path / "flag").unlink()
    until(lambda: not _ready(_pod(k, "web")), what="unready again")


# --- startup --------------------------------------------------------------------------------------


def test_startup_probe_gates_liveness_and_kills_when_it_fails(k: Kubectl, image: str) -> None:
    check = {"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1}
    # The liveness probe would kill it within 2 s if it ran before the startup probe passed.
    _apply(k, _pod_manifest("slow", [{
        "name": "main", "image": image,
        "command": ["sh", "-c", "sleep 5; echo up > /tmp/started; trap 'exit 0' TERM; while true; do sleep 0.2; done"],
        "startupProbe": {**check, "failureThreshold": 60}, "livenessProbe": {**check, "failureThreshold": 1},
    }], terminationGracePeriodSeconds=2))
    _apply(k, _pod_manifest("never", [{
        "name": "main", "image": image, "command": SLEEPER,
        "startupProbe": {"exec": {"command": ["cat", "/nonexistent"]}, "periodSeconds": 1, "failureThreshold": 2},
    }], terminationGracePeriodSeconds=2))
    cs = until(lambda: "running" in (s := _status(k, "slow")).get("state", {}) and s, what="slow running")
    assert cs["started"] is False and cs["ready"] is False
    until(lambda: _status(k, "slow").get("started"), timeout=30, what="started once the startup probe passed")
    pod = _running(k, "slow")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert not [m for r, m in _events(k, "slow") if m.startswith("Liveness probe")]
    until(lambda: _status(k, "never").get("restartCount", 0) >= 1, timeout=60, what="killed by its startup probe")
    assert ("Killing", "Container main failed startup probe, will be restarted") in _events(k, "never")
    assert _status(k, "never")["started"] is False


# --- hooks ----------------------------------------------------------------------------------------


def test_pre_stop_hook_runs_before_sigterm_within_the_grace_period(k: Kubectl, image: str, tmp_path: Path) -> None:
    mount = {"volumeMounts": [{"name": "host", "mountPath": "/host"}]}
    _apply(k, _pod_manifest("polite", [{
        "name": "main", "image": image, **mount,
        "command": ["sh", "-c", "trap 'echo term >> /host/polite; exit 0' TERM; while true; do sleep 0.2; done"],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /host/polite; sleep 2"]}}},
    }], volumes=[_host_dir(tmp_path)], terminationGracePeriodSeconds=30))
    _apply(k, _pod_manifest("deaf", [{"name": "main", "image": image, "command": DEAF,
                                      "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}}],
                            terminationGracePeriodSeconds=5))
    _apply(k, _pod_manifest("broken", [{"name": "main", "image": image, "command": SLEEPER,
                                        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "exit 3"]}}}}],
                            terminationGracePeriodSeconds=2))
    for name in ("polite", "deaf", "broken"):
        _running(k, name)
    began = time.monotonic()
    k.run("delete", "pod", "polite", "--wait=true", "--timeout=60s")
    assert time.monotonic() - began >= 2  # the hook's time
    assert (tmp_path / "polite").read_text() == "prestop\nterm\n"
    # TERM ignored: SIGKILL once the grace period (5 s, the hook's 2 s included) is over.
    began = time.monotonic()
    k.run("delete", "pod", "deaf", "--wait=true", "--timeout=60s")
    assert time.monotonic() - began >= 5
    k.run("delete", "pod", "broken", "--wait=true", "--timeout=60s")
    failed = [m for r, m in _events(k, "broken") if r == "FailedPreStopHook"]
    assert failed and failed[0].startswith('Exec lifecycle hook ([sh -c exit 3]) for Container "main" in Pod "broken_')
    assert "command 'sh -c exit 3' exited with 3" in failed[0]


def test_post_start_hook_runs_before_the_container_counts_as_started(k: Kubectl, image: str, tmp_path: Path) -> None:
    _apply(k, _pod_manifest("greeted", [{
        "name": "main", "image": image, "command": SLEEPER, "volumeMounts": [{"name": "host", "mountPath": "/host"}],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "sleep 2; echo done > /host/post-start"]}}},
    }], volumes=[_host_dir(tmp_path)], terminationGracePeriodSeconds=2))
    _apply(k, _pod_manifest("refused", [{
        "name": "main", "image": image, "command": ["sleep", "3600"],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 1"]}}},
    }], restartPolicy="Never", terminationGracePeriodSeconds=2))

    def seen_running() -> bool:
        cs = _status(k, "greeted")
        if "running" in cs.get("state", {}) or cs.get("started"):
            # Whenever the container shows as running, its hook has finished.
            assert (tmp_path / "post-start").exists(), cs
            return True
        return False

    until(seen_running, timeout=60, what="greeted running")
    pod = until(lambda: (p := _pod(k, "refused"))["status"].get("phase") == "Failed" and p, timeout=60,
                what="the pod whose postStart hook failed is Failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 137, term
    events = _events(k, "refused")
    assert ("Killing", "FailedPostStartHook") in events
    failed = [m for r, m in events if r == "FailedPostStartHook"]
    assert failed and failed[0].startswith('Exec lifecycle hook ([sh -c exit 1]) for Container "main"')


MARK_CGI = """#!/bin/sh
echo "$HTTP_USER_AGENT" > /www/marked
echo "Content-Type: text/plain"
echo
echo marked
"""


def test_sidecar_probes_and_an_http_post_start_hook(k: Kubectl, image: str, tmp_path: Path) -> None:
    """A web sidecar, started once its startup probe passes, ready by its readiness probe; the
    main container starts after it, and its postStart hook is a GET to the sidecar."""
    (tmp_path / "cgi-bin").mkdir()
    (tmp_path / "cgi-bin" / "mark").write_text(MARK_CGI)
    (tmp_path / "cgi-bin" / "mark").chmod(0o755)
    (tmp_path / "index.html").write_text("up\n")
    _apply(k, _pod_manifest("duo", [{
        "name": "main", "image": image, "command": SLEEPER,
        "lifecycle": {"postStart": {"httpGet": {"path": "/cgi-bin/mark", "port": 8080}}},
    }], initContainers=[{
        "name": "web", "image": image, "restartPolicy": "Always",
        "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        "volumeMounts": [{"name": "host", "mountPath": "/www"}],
        "startupProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }], volumes=[_host_dir(tmp_path)], terminationGracePeriodSeconds=2))
    pod = _running(k, "duo")
    web = pod["status"]["initContainerStatuses"][0]
    assert web["started"] is True and web["ready"] is True and "running" in web["state"]
    assert (tmp_path / "marked").read_text() == "kube-lifecycle/1.31\n"


def test_a_crash_looping_sidecar_holds_nothing_back_once_the_pod_ran(k: Kubectl, image: str) -> None:
    """Upstream's podHasInitialized: once a regular container has run, a sidecar in back-off
    neither stops the main container's restarts nor sends the pod back to Pending."""
    _apply(k, _pod_manifest("flaky", [{"name": "main", "image": image, "command": ["sh", "-c", "sleep 1; exit 1"]}],
                            initContainers=[{"name": "side", "image": image, "restartPolicy": "Always",
                                             "command": ["sh", "-c", "sleep 1; exit 1"]}],
                            terminationGracePeriodSeconds=2))
    phases: set[str] = set()
    initialized: set[str] = set()

    def main_restarted_while_side_backs_off() -> bool:
        pod = k.json("get", "pod", "flaky")
        status = pod["status"]
        main = (status.get("containerStatuses") or [{}])[0]
        if main.get("restartCount", 0) or set(main.get("state") or {}) & {"running", "terminated"}:
            phases.add(status.get("phase", ""))  # from the first run of the main container on
            initialized.add(_conditions(pod).get("Initialized", ""))
        side = (status.get("initContainerStatuses") or [{}])[0]
        side_waiting = ((side.get("state") or {}).get("waiting") or {}).get("reason")
        return bool(main.get("restartCount", 0) >= 2 and side.get("restartCount", 0) >= 1
                    and (side_waiting == "CrashLoopBackOff" or main.get("restartCount", 0) >= 3))

    until(main_restarted_while_side_backs_off, timeout=120, what="the main container restarting beside a crashing sidecar")
    assert phases == {"Running"}, phases
    assert initialized == {"True"}, initialized


# --- surviving edgekube ---------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path, image: str) -> Iterator[KubeletServer]:
    yield from _kubelet_server(tmp_path / "restart")


def test_probes_resume_on_adopted_containers(restartable: KubeletServer, image: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    """kill -9 of edgekube restarts no container; its probes start again and still decide."""
    ks = restartable
    k = fresh_namespace(ks.server, request)
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "ready").write_text("")
    _apply(k, _pod_manifest("steady", [{
        "name": "main", "image": image, "command": SLEEPER, "volumeMounts": [{"name": "host", "mountPath": "/host"}],
        "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1},
        "readinessProbe": {"exec": {"command": ["cat", "/host/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
    }], volumes=[_host_dir(flags)], terminationGracePeriodSeconds=2))
    before = _running(k, "steady")
    assert ks.server.proc is not None
    ks.server.proc.send_signal(signal.SIGKILL)
    ks.server.proc.wait()
    ks.server.proc = None
    ks.server.start()
    after = _running(k, "steady")
    assert _cid(after) == _cid(before) and after["status"]["containerStatuses"][0]["restartCount"] == 0
    (flags / "ready").unlink()
    until(lambda: not _ready(_pod(k, "steady")), what="readiness probed again after the restart")
    assert _pod(k, "steady")["status"]["containerStatuses"][0]["restartCount"] == 0


def test_exec_probes_write_nothing_on_the_data_dir(k: Kubectl, node: KubeletServer, image: str, tmp_path: Path) -> None:
    """Flash wear (issue 16): an exec probe is a `runc exec`, several a second on a busy node;
    its process spec, its pid file and runc's own state live in memory (/run or /dev/shm), as
    LMDB's lock file does (every read transaction writes in it), so that a healthy pod costs the
    SD card nothing."""
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    _apply(k, _pod_manifest("probed", [{"name": "main", "image": image, "command": SLEEPER,
                                        "readinessProbe": probe, "livenessProbe": probe}],
                            terminationGracePeriodSeconds=1))
    _running(k, "probed")
    time.sleep(2)
    stamp = tmp_path / "stamp"
    stamp.touch()
    before = time.time()
    time.sleep(4)  # some eight execs
    # A file made and removed again leaves its directory's time changed.
    changed = sorted(str(p.relative_to(node.data_dir.parent)) for p in [node.data_dir, *node.data_dir.rglob("*")]
                     if p.lstat().st_mtime > stamp.stat().st_mtime)
    assert time.time() - before >= 4
    assert changed == [], changed  # before: the bundle's and runc's directories, LMDB's lock file
    lock = node.data_dir / "db" / "lock.mdb"
    assert lock.is_symlink() and memdir.memory_dir() in Path(os.readlink(lock)).parents
    status = _status(k, "probed")
    assert status["ready"] is True and status["restartCount"] == 0
    k.run("delete", "pod", "probed", "--wait=true", "--timeout=60s")
