"""The kubelet's decisions without root: pod phase, container statuses and conditions as upstream
computes them, back-off windows under a fake clock, resolv.conf and /etc/hosts, the container
environment, the volume writer's atomic updates, and node capacity and pressure."""

from __future__ import annotations

import base64
import datetime
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.kubelet import backoff, envvars, node, pods, podstatus, sandbox, volumes
from edgekube.kubelet.runtime import containers

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def cs(name: str = "main", *, state: str = "running", attempt: int = 0, code: int | None = None,
       reason: str = "", cid: str | None = None) -> containers.ContainerStatus:
    return containers.ContainerStatus(
        id=cid or f"{name}-{attempt}", state=state, pid=1 if state == "running" else 0, pod_uid="u", pod_name="p",
        namespace="ns", name=name, attempt=attempt, created_at=T0, started_at=T0,
        finished_at=T0 + datetime.timedelta(seconds=5) if state == "exited" else None, exit_code=code,
        oom_killed=reason == "OOMKilled", reason=reason, log_path="", cgroup="",
        annotations={podstatus.ANNOTATION_IMAGE_ID: "reg/busybox@sha256:ab"})


def pod(*, containers_: list[dict[str, Any]] | None = None, init: list[dict[str, Any]] | None = None,
        policy: str = "Always", **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"containers": containers_ or [{"name": "main", "image": "busybox"}],
                         "restartPolicy": policy, **spec}
    if init:
        s["initContainers"] = init
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": s, "status": {}}


def status_of(c: dict[str, Any], obs: podstatus.Observed, *, init: bool = False) -> dict[str, Any]:
    return podstatus.container_status(c, obs, old=None, default_waiting="ContainerCreating", init=init)


# --- container statuses and phase ----------------------------------------------------------------


def test_running_container_status() -> None:
    st = status_of({"name": "main", "image": "busybox"}, podstatus.Observed(latest=cs()))
    assert st["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    assert (st["ready"], st["started"], st["restartCount"], st["containerID"]) == (True, True, 0, "runc://main-0")
    assert st["imageID"] == "reg/busybox@sha256:ab" and st["lastState"] == {}


def test_crash_looping_container_waits_with_its_last_run_in_last_state() -> None:
    latest = cs(state="exited", attempt=3, code=1, reason="Error")
    obs = podstatus.Observed(latest=latest, previous=cs(state="exited", attempt=2, code=1, reason="Error"),
                             waiting=("CrashLoopBackOff", "back-off 40s restarting failed container"),
                             will_restart=True)
    st = status_of({"name": "main", "image": "busybox"}, obs)
    assert st["state"] == {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": "back-off 40s restarting failed container"}}
    assert st["lastState"]["terminated"]["exitCode"] == 1 and st["lastState"]["terminated"]["containerID"] == "runc://main-3"
    assert st["restartCount"] == 3 and st["ready"] is False


def test_exit_while_down_is_status_unknown_with_137() -> None:
    st = status_of({"name": "main"}, podstatus.Observed(latest=cs(state="exited", code=None,
                                                                  reason="ContainerStatusUnknown")))
    term = st["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (137, "ContainerStatusUnknown") and term["message"]


def test_no_container_yet_keeps_restart_count_from_the_api() -> None:
    st = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(),
                                    old={"restartCount": 4, "lastState": {"terminated": {"exitCode": 2}}},
                                    default_waiting="PodInitializing", init=False)
    assert st["restartCount"] == 4 and st["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert st["lastState"] == {"terminated": {"exitCode": 2}}


RAN = {"name": "main", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "lastState": {},
       "restartCount": 2, "containerID": "runc://main-2", "ready": True}
LOST = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                       "message": "The container could not be located when the pod was deleted.  "
                                  "The container used to be Running"}}


@pytest.mark.parametrize("waiting", [None, ("ContainerCreating", "waiting for the image store")])
def test_a_running_container_lost_without_a_trace_terminated_unknown_and_counts_a_restart(
        waiting: tuple[str, str] | None) -> None:
    # A reboot took the container with runc's state: upstream infers the termination.
    st = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(waiting=waiting), old=RAN,
                                    default_waiting="ContainerCreating", init=False)
    assert st["lastState"] == {"terminated": {**LOST["terminated"], "containerID": "runc://main-2"}}
    assert st["restartCount"] == 3 and "containerID" not in st
    assert "waiting" in st["state"] and not st["ready"]
    # Written, then computed again from it: counted once.
    again = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(), old=st,
                                       default_waiting="ContainerCreating", init=False)
    assert again["restartCount"] == 3 and again["lastState"] == st["lastState"]
    # The new run keeps that lastState (the runtime has no run before it).
    new = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(latest=cs(attempt=3)),
                                     old=again, default_waiting="ContainerCreating", init=False)
    assert new["restartCount"] == 3 and new["lastState"] == st["lastState"] and "running" in new["state"]
    # And the next power cut counts too (upstream would not, its lastState already set).
    cut = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(), old=new,
                                     default_waiting="ContainerCreating", init=False)
    assert cut["restartCount"] == 4 and cut["lastState"]["terminated"]["containerID"] == "runc://main-3"


def test_a_container_in_back_off_lost_in_a_power_cut_starts_its_next_attempt() -> None:
    backing_off = {"name": "main", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 5,
                   "lastState": {"terminated": {"exitCode": 1, "containerID": "runc://main-5"}},
                   "containerID": "runc://main-5"}
    st = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(), old=backing_off,
                                    default_waiting="ContainerCreating", init=False)
    assert st["restartCount"] == 5 and st["containerID"] == "runc://main-5"  # not counted twice
    assert st["lastState"] == backing_off["lastState"]


def test_a_lost_container_of_a_pod_being_deleted_is_not_a_restart() -> None:
    st = podstatus.container_status({"name": "main", "image": "b"}, podstatus.Observed(), old=RAN,
                                    default_waiting="ContainerCreating", init=False, deleting=True)
    assert st["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown" and st["restartCount"] == 2


def _phase(p: dict[str, Any], main: dict[str, podstatus.Observed], init: dict[str, podstatus.Observed] | None = None,
           terminal: bool = False) -> str:
    statuses = {n: status_of({"name": n}, o) for n, o in main.items()}
    inits = {n: status_of({"name": n}, o, init=True) for n, o in (init or {}).items()}
    return podstatus.phase(p, inits, statuses, terminal=terminal)


@pytest.mark.parametrize(("policy", "code", "expected"), [
    ("Never", 0, "Succeeded"), ("Never", 1, "Failed"), ("OnFailure", 0, "Succeeded"), ("OnFailure", 1, "Running"),
    ("Always", 0, "Running"), ("Always", 1, "Running"),
])
def test_phase_of_a_stopped_container(policy: str, code: int, expected: str) -> None:
    latest = cs(state="exited", code=code, reason="Completed" if code == 0 else "Error")
    assert _phase(pod(policy=policy), {"main": podstatus.Observed(latest=latest)}) == expected


def test_phase_pending_until_init_containers_complete() -> None:
    p = pod(init=[{"name": "setup"}])
    assert _phase(p, {"main": podstatus.Observed()}, {"setup": podstatus.Observed(latest=cs("setup"))}) == "Pending"
    done = podstatus.Observed(latest=cs("setup", state="exited", code=0, reason="Completed"))
    assert _phase(p, {"main": podstatus.Observed(latest=cs())}, {"setup": done}) == "Running"
    failed = podstatus.Observed(latest=cs("setup", state="exited", code=1, reason="Error"))
    assert _phase(pod(init=[{"name": "setup"}], policy="Never"), {"main": podstatus.Observed()},
                  {"setup": failed}) == "Failed"


def test_deleted_pod_ends_failed_or_succeeded_from_its_exit_codes() -> None:
    killed = podstatus.Observed(latest=cs(state="exited", code=137, reason="Error"))
    clean = podstatus.Observed(latest=cs(state="exited", code=0, reason="Completed"))
    assert _phase(pod(), {"main": killed}, terminal=True) == "Failed"
    assert _phase(pod(), {"main": clean}, terminal=True) == "Succeeded"
    assert _phase(pod(), {"main": podstatus.Observed()}, terminal=True) == "Failed"


def test_conditions_keep_their_transition_times() -> None:
    p = pod(containers_=[{"name": "a"}, {"name": "b"}])
    statuses = {"a": status_of({"name": "a"}, podstatus.Observed(latest=cs("a"))),
                "b": status_of({"name": "b"}, podstatus.Observed())}
    first = podstatus.conditions(p, {}, statuses, pod_phase="Pending", sandbox_ready=True, now="T1", previous=[])
    by = {c["type"]: c for c in first}
    assert by["Ready"]["status"] == "False" and by["Ready"]["message"] == "containers with unready status: [b]"
    assert by["Initialized"]["status"] == "True" and by["PodReadyToStartContainers"]["status"] == "True"
    statuses["b"] = status_of({"name": "b"}, podstatus.Observed(latest=cs("b")))
    second = {c["type"]: c for c in podstatus.conditions(p, {}, statuses, pod_phase="Running", sandbox_ready=True,
                                                         now="T2", previous=first)}
    assert second["Ready"] == {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": "T2"}
    assert second["Initialized"]["lastTransitionTime"] == "T1"


def test_readiness_gates_hold_ready_back() -> None:
    p = pod(readinessGates=[{"conditionType": "example.com/lb"}])
    statuses = {"main": status_of({"name": "main"}, podstatus.Observed(latest=cs()))}
    by = {c["type"]: c for c in podstatus.conditions(p, {}, statuses, pod_phase="Running", sandbox_ready=True,
                                                     now="T", previous=[])}
    assert by["ContainersReady"]["status"] == "True"
    assert by["Ready"]["status"] == "False" and by["Ready"]["reason"] == "ReadinessGatesNotReady"


def test_merge_conditions_keeps_others() -> None:
    current = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]
    merged = podstatus.merge_conditions(current, [{"type": "Ready", "status": "True"},
                                                  {"type": "Initialized", "status": "True"}])
    assert [c["type"] for c in merged] == ["PodScheduled", "Ready", "Initialized"]
    assert merged[1]["status"] == "True"


# --- back-off ---------------------------------------------------------------------------------


def test_crash_loop_back_off_doubles_caps_and_resets() -> None:
    clock = clock_mod.FakeClock()
    b = backoff.Backoff(clock=clock, initial=10, maximum=300)
    t = clock.now().timestamp()
    assert not b.in_backoff_since("k", t)  # the first exit restarts at once
    b.next("k", t)
    windows = []
    for _ in range(7):
        clock.advance(1)
        exited = clock.now().timestamp()
        assert b.in_backoff_since("k", exited)
        windows.append(b.window("k"))
        clock.advance(b.remaining("k", exited))
        assert not b.in_backoff_since("k", exited)
        b.next("k", exited)
    assert windows == [10, 20, 40, 80, 160, 300, 300]
    # Ten minutes without a crash: back to 10 s.
    clock.advance(601)
    exited = clock.now().timestamp()
    b.next("k", exited)
    assert b.window("k") == 10


# --- DNS and hosts -----------------------------------------------------------------------------

HOST_RESOLV = "nameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n"


def test_cluster_first_resolv_conf() -> None:
    text, warnings = sandbox.resolv_conf(pod(), cluster_dns="10.43.0.10", cluster_domain="cluster.local",
                                         host_resolv=HOST_RESOLV)
    assert text == ("search ns.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                    "nameserver 10.43.0.10\noptions ndots:5\n") and warnings == []


def test_host_network_and_default_use_the_hosts_resolv_conf() -> None:
    for p in (pod(hostNetwork=True), pod(dnsPolicy="Default")):
        text, _ = sandbox.resolv_conf(p, cluster_dns="10.43.0.10", cluster_domain="cluster.local",
                                      host_resolv=HOST_RESOLV)
        assert text == "search corp.example\nnameserver 192.0.2.53\noptions timeout:2\n"
    text, _ = sandbox.resolv_conf(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), cluster_dns="10.43.0.10",
                                  cluster_domain="cluster.local", host_resolv=HOST_RESOLV)
    assert "nameserver 10.43.0.10" in text
    text, _ = sandbox.resolv_conf(pod(dnsPolicy="ClusterFirstWithHostNet"), cluster_dns="10.43.0.10",
                                  cluster_domain="cluster.local", host_resolv=HOST_RESOLV)
    assert "nameserver 10.43.0.10" in text  # without hostNetwork it is ClusterFirst


def test_the_host_file_is_read_as_the_kubelet_reads_it() -> None:
    """Upstream's parseResolvConf: `domain` lines are not searches, the last `options` line wins
    (not a union), searches lose a trailing dot, and only whole-line `#` comments are comments."""
    host = ("# generated\ndomain lan.example\nnameserver 192.0.2.53\nsearch a.example. b.example\n"
            "options rotate\noptions timeout:1 attempts:3\n")
    text, _ = sandbox.resolv_conf(pod(dnsPolicy="Default"), cluster_dns="10.43.0.10", cluster_domain="cluster.local",
                                  host_resolv=host)
    assert text == "search a.example b.example\nnameserver 192.0.2.53\noptions timeout:1 attempts:3\n"
    text, _ = sandbox.resolv_conf(pod(), cluster_dns="10.43.0.10", cluster_domain="cluster.local",
                                  host_resolv="nameserver 192.0.2.53\ndomain lan.example\n")
    assert text.startswith("search ns.svc.cluster.local svc.cluster.local cluster.local\n")


def test_dns_config_is_merged_and_limited() -> None:
    p = pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8", "9.9.9.9", "4.4.4.4"],
                                         "searches": ["a.example"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    text, warnings = sandbox.resolv_conf(p, cluster_dns="10.43.0.10", cluster_domain="cluster.local",
                                         host_resolv=HOST_RESOLV)
    assert text == "search a.example\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\noptions ndots:2 edns0\n"
    assert warnings == [("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, "
                                             "the applied nameserver line is: 1.1.1.1 8.8.8.8 9.9.9.9")]


def test_dns_config_searches_over_the_limits_are_left_out_with_a_warning() -> None:
    """Upstream's formDNSSearchFitsLimits: at most 32 domains, none longer than 253 characters,
    and the line at most 2048 characters, cut from the end."""
    long = "x" * 60 + "." + "y" * 60 + "." + "z" * 60 + "." + "w" * 80  # 263 characters
    p = pod(dnsConfig={"searches": ["a.example", long, "b.example"]})
    text, warnings = sandbox.resolv_conf(p, cluster_dns="10.43.0.10", cluster_domain="cluster.local", host_resolv="")
    assert text.startswith("search ns.svc.cluster.local svc.cluster.local cluster.local a.example b.example\n")
    assert warnings and warnings[0][0] == "DNSConfigForming" and "Search Line limits were exceeded" in warnings[0][1]
    many = [f"d{i}.example" for i in range(40)]
    text, warnings = sandbox.resolv_conf(pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": many}),
                                         cluster_dns="10.43.0.10", cluster_domain="cluster.local", host_resolv="")
    assert text.splitlines()[0] == "search " + " ".join(many[:32]) and len(warnings) == 1
    wide = [f"{i:02d}" + "q" * 200 + ".example" for i in range(12)]  # 12 x 210 characters: past 2048
    text, _ = sandbox.resolv_conf(pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": wide}),
                                  cluster_dns="10.43.0.10", cluster_domain="cluster.local", host_resolv="")
    assert text.splitlines()[0] == "search " + " ".join(wide[:9])


def test_missing_cluster_dns_falls_back_with_a_warning() -> None:
    for policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        text, warnings = sandbox.resolv_conf(pod(dnsPolicy=policy), cluster_dns="", cluster_domain="cluster.local",
                                             host_resolv=HOST_RESOLV)
        assert "192.0.2.53" in text
        assert warnings == [("MissingClusterDNS", 'pod: "p_ns(u)". kubelet does not have ClusterDNS IP configured and '
                                                  'cannot create Pod using "ClusterFirst" policy. Falling back to '
                                                  '"Default" policy.')]


def test_hosts_file() -> None:
    p = pod(subdomain="db", hostAliases=[{"ip": "10.0.0.9", "hostnames": ["foo", "bar"]}])
    text = sandbox.hosts_file(p, pod_ip="10.42.0.5", hostname="p", cluster_domain="cluster.local")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.42.0.5\tp.db.ns.svc.cluster.local\tp\n" in text
    assert text.endswith("# Entries added by HostAliases.\n10.0.0.9\tfoo\tbar\n")
    host = sandbox.hosts_file(pod(hostNetwork=True), pod_ip="192.0.2.2", hostname="vm", cluster_domain="cluster.local",
                              host_hosts="127.0.0.1 localhost")
    assert host == "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"


# --- environment -------------------------------------------------------------------------------


def _getter(objs: dict[tuple[str, str], dict[str, Any]]) -> Any:
    return lambda ns, name: objs.get((ns, name))


def test_environment_sources_and_order() -> None:
    cms = _getter({("ns", "cfg"): {"data": {"A": "from-cm", "bad-name!": "x", "DOLLAR": "$(A)"}}})
    secrets = _getter({("ns", "sec"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}}})
    c = {"name": "main", "resources": {"limits": {"memory": "64Mi"}},
         "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}],
         "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                 {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                 {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                 {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
                 {"name": "REF", "value": "$(NAME)-$(P_A)"}]}
    svc = {"metadata": {"name": "my-db"}, "spec": {"clusterIP": "10.43.0.7", "ports": [{"name": "pg", "port": 5432,
                                                                                        "protocol": "TCP"}]}}
    pairs = envvars.resolve(pod(containers_=[c]), c, get_configmap=cms, get_secret=secrets, services=[svc],
                            allocatable={"cpu": "1900m", "memory": "1Gi"})
    from edgekube.kubelet.runtime import bundle

    env = dict(bundle.container_env(c, env=pairs))
    assert env["MY_DB_SERVICE_HOST"] == "10.43.0.7" and env["MY_DB_PORT_5432_TCP"] == "tcp://10.43.0.7:5432"
    assert env["MY_DB_SERVICE_PORT_PG"] == "5432"
    assert env["P_A"] == "from-cm" and "P_bad-name!" not in env
    assert env["P_DOLLAR"] == "$(A)"  # envFrom values are not expanded
    assert (env["PW"], env["NAME"], env["MEM"], env["CPU"]) == ("hunter2", "p", "64", "2")
    assert "OPT" not in env and env["REF"] == "p-from-cm"


def test_environment_errors_name_what_is_missing() -> None:
    none = _getter({})
    c = {"name": "main", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x"}}}]}
    with pytest.raises(envvars.EnvError, match='configmap "absent" not found'):
        envvars.resolve(pod(), c, get_configmap=none, get_secret=none, services=[], allocatable={})
    have = _getter({("ns", "s"): {"data": {}}})
    c = {"name": "main", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(envvars.EnvError, match="couldn't find key k in Secret ns/s"):
        envvars.resolve(pod(), c, get_configmap=none, get_secret=have, services=[], allocatable={})


# --- volumes -----------------------------------------------------------------------------------


def test_atomic_writer_swaps_the_payload_whole(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert volumes.write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (target / "a").read_text() == "1" and (target / "dir" / "b").read_text() == "2"
    assert os.readlink(target / "a") == "..data/a" and (target / "..data").is_symlink()
    assert stat.S_IMODE((target / "dir" / "b").stat().st_mode) == 0o600
    first = os.readlink(target / "..data")
    assert not volumes.write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})  # unchanged
    assert volumes.write_atomic(target, {"a": (b"3", 0o644)})
    assert os.readlink(target / "..data") != first and not (target / first).exists()
    assert (target / "a").read_text() == "3" and not (target / "dir").exists()


def test_configmap_volume_items_modes_and_optional(tmp_path: Path) -> None:
    cms = _getter({("ns", "cfg"): {"data": {"a": "A", "b": "B"}}})
    p = pod(volumes=[{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/bee", "mode": 0o400}],
                                                 "defaultMode": 0o640}},
                     {"name": "o", "configMap": {"name": "absent", "optional": True}},
                     {"name": "e", "emptyDir": {}}])
    got = volumes.setup(p, volumes_dir=tmp_path, get_configmap=cms, get_secret=_getter({}), allocatable={}, known={})
    assert (got["c"].path / "sub" / "bee").read_text() == "B" and not (got["c"].path / "a").exists()
    assert stat.S_IMODE((got["c"].path / "sub" / "bee").stat().st_mode) == 0o400
    assert got["o"].path.is_dir() and stat.S_IMODE(got["e"].path.stat().st_mode) == 0o777
    with pytest.raises(volumes.VolumeError, match='configmap "gone" not found'):
        volumes.setup(pod(volumes=[{"name": "x", "configMap": {"name": "gone"}}]), volumes_dir=tmp_path,
                      get_configmap=cms, get_secret=_getter({}), allocatable={}, known={})


def test_fs_group_owns_volumes_as_upstream(tmp_path: Path) -> None:
    cms = _getter({("ns", "cfg"): {"data": {"a": "A"}}})
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("x")
    p = pod(volumes=[{"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o600}}, {"name": "e", "emptyDir": {}},
                     {"name": "h", "hostPath": {"path": str(host)}}],
            securityContext={"fsGroup": 4321})
    got = volumes.setup(p, volumes_dir=tmp_path / "v", get_configmap=cms, get_secret=_getter({}), allocatable={},
                        known={})
    e = got["e"].path.stat()
    assert e.st_gid == 4321 and stat.S_IMODE(e.st_mode) == 0o777 | stat.S_ISGID
    data = got["c"].path / "a"
    assert data.stat().st_gid == 4321 and stat.S_IMODE(data.stat().st_mode) == 0o640  # 0600 + group read
    assert os.lstat(got["c"].path / "a").st_gid == 4321  # the symlink too
    assert (host / "keep").stat().st_gid == 0  # hostPath is the host's
    # A file made in the emptyDir later is not walked again on resync (the setgid bit gives new
    # files the group); OnRootMismatch skips a root that is already right.
    (got["e"].path / "new").write_text("n")
    os.chown(got["e"].path / "new", -1, 0)
    volumes.setup(p, volumes_dir=tmp_path / "v", get_configmap=cms, get_secret=_getter({}), allocatable={}, known=got)
    assert (got["e"].path / "new").stat().st_gid == 0
    volumes.set_ownership(got["e"].path, 4321, readonly=False, policy="OnRootMismatch")
    assert (got["e"].path / "new").stat().st_gid == 0
    volumes.set_ownership(got["e"].path, 4321, readonly=False)
    assert (got["e"].path / "new").stat().st_gid == 4321
    # A link a container left in its emptyDir to a host file: the walk never follows it.
    secret_host_file = tmp_path / "host-secret"
    secret_host_file.write_text("s")
    secret_host_file.chmod(0o600)
    os.symlink(secret_host_file, got["e"].path / "escape")
    volumes.set_ownership(got["e"].path, 4321, readonly=False)
    assert secret_host_file.stat().st_gid == 0 and stat.S_IMODE(secret_host_file.stat().st_mode) == 0o600
    # An updated ConfigMap under OnRootMismatch: the new payload gets the group all the same.
    p["spec"]["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    cms2 = _getter({("ns", "cfg"): {"data": {"a": "A2", "b": "B"}}})
    got2 = volumes.setup(p, volumes_dir=tmp_path / "v", get_configmap=cms2, get_secret=_getter({}), allocatable={},
                         known=got)
    for name in ("a", "b"):
        assert (got2["c"].path / name).stat().st_gid == 4321


def test_host_path_types(tmp_path: Path) -> None:
    made = tmp_path / "made"
    p = pod(volumes=[{"name": "d", "hostPath": {"path": str(made), "type": "DirectoryOrCreate"}}])
    got = volumes.setup(p, volumes_dir=tmp_path / "v", get_configmap=_getter({}), get_secret=_getter({}),
                        allocatable={}, known={})
    assert got["d"].path == made and made.is_dir()
    with pytest.raises(volumes.VolumeError, match=r"hostPath type check failed: .* is not a file"):
        volumes.setup(pod(volumes=[{"name": "f", "hostPath": {"path": str(made), "type": "File"}}]),
                      volumes_dir=tmp_path / "v", get_configmap=_getter({}), get_secret=_getter({}), allocatable={},
                      known={})


def test_mounts_of_a_container(tmp_path: Path) -> None:
    vols = {"cfg": volumes.Volume("cfg", "configMap", tmp_path / "cfg"), "w": volumes.Volume("w", "emptyDir", tmp_path / "w")}
    (tmp_path / "w").mkdir()
    c = {"name": "main", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"},
                                          {"name": "w", "mountPath": "/data", "subPathExpr": "$(POD)"}]}
    mounts = volumes.container_mounts(c, vols, {"POD": "p1"})
    assert (mounts[0].destination, mounts[0].readonly) == ("/etc/app", True)  # configMap: always read-only
    assert mounts[1].source == str(tmp_path / "w" / "p1") and (tmp_path / "w" / "p1").is_dir()
    with pytest.raises(volumes.VolumeError, match="must be a relative path"):
        volumes.container_mounts({"name": "m", "volumeMounts": [{"name": "w", "mountPath": "/x", "subPath": "../up"}]},
                                 vols, {})


# --- node --------------------------------------------------------------------------------------


def machine(**kw: Any) -> node.Machine:
    base: dict[str, Any] = dict(cpus=4, memory=8 << 30, memory_available=6 << 30, storage=100 << 30,
                                storage_free=50 << 30, threads=200, pid_max=32768, machine_id="m", system_uuid="s",
                                boot_id="b", kernel="6.1", os_image="Debian")
    base.update(kw)
    return node.Machine(**base)


def test_capacity_and_allocatable() -> None:
    r = node.Reservations.parse(cpu="100m", memory="128Mi", eviction_memory="100Mi", nodefs_percent=10, max_pods=110)
    cap, alloc = node.resources(machine(), r)
    assert cap == {"cpu": "4", "memory": f"{8 << 20}Ki", "pods": "110", "ephemeral-storage": f"{100 << 20}Ki",
                   "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    assert alloc["cpu"] == "3900m" and alloc["memory"] == f"{(8 << 20) - 228 * 1024}Ki"
    assert alloc["ephemeral-storage"] == str((100 << 30) * 90 // 100)


def test_pressure_conditions() -> None:
    r = node.Reservations.parse(cpu="0", memory="0", eviction_memory="100Mi", nodefs_percent=10, max_pods=110)
    assert node.pressure(machine(), r) == {"MemoryPressure": False, "DiskPressure": False, "PIDPressure": False}
    assert node.pressure(machine(memory_available=50 << 20, storage_free=5 << 30, threads=32000), r) == {
        "MemoryPressure": True, "DiskPressure": True, "PIDPressure": True}
    conds = node.conditions({"MemoryPressure": True, "DiskPressure": False, "PIDPressure": False}, ready=True, now="T2",
                            previous=[{"type": "Ready", "status": "True", "lastTransitionTime": "T1"},
                                      {"type": "MemoryPressure", "status": "False", "lastTransitionTime": "T1"}])
    by = {c["type"]: c for c in conds}
    assert by["Ready"]["lastTransitionTime"] == "T1" and by["Ready"]["lastHeartbeatTime"] == "T2"
    assert by["MemoryPressure"]["lastTransitionTime"] == "T2"
    assert by["MemoryPressure"]["reason"] == "KubeletHasInsufficientMemory"


def test_pods_are_woken_by_the_config_objects_they_use() -> None:
    spec = pod(volumes=[{"name": "a", "configMap": {"name": "vol-cm"}}, {"name": "b", "secret": {"secretName": "vol-s"}},
                        {"name": "c", "projected": {"sources": [{"configMap": {"name": "proj-cm"}},
                                                                {"secret": {"name": "proj-s"}}]}}],
               containers_=[{"name": "m", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                                                  {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}}],
                             "envFrom": [{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-s"}}]}],
               init=[{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}])["spec"]
    assert pods._references(spec, "ConfigMap") == {"vol-cm", "proj-cm", "env-cm", "from-cm", "init-cm"}
    assert pods._references(spec, "Secret") == {"vol-s", "proj-s", "env-s", "from-s"}


@pytest.mark.parametrize("jump", [-86400 * 365, -3600, 3600, 86400 * 365])
def test_crash_loop_back_off_ignores_wall_clock_jumps(jump: int) -> None:
    """A board's clock is set at any moment (NTP's first sync moves it by years): a crash-looping
    container still waits its window, no more and no less, whichever way the clock jumps."""
    clock = clock_mod.FakeClock()
    b = backoff.Backoff(clock=clock, initial=10, maximum=300)
    exited = clock.now().timestamp()
    b.next("k", exited)
    clock.advance(1)
    exited = clock.now().timestamp()
    assert b.in_backoff_since("k", exited) and b.window("k") == 10
    clock.jump(jump)
    clock.advance(5)
    assert b.in_backoff_since("k", exited), "half the window passed: still backing off"
    assert b.remaining("k", exited) == pytest.approx(5)
    clock.advance(5.01)
    assert not b.in_backoff_since("k", exited), "the window passed: restart"


def test_an_exit_seen_after_a_clock_jump_waits_at_most_its_window() -> None:
    """An exit stamped under a wall clock that later jumped back (or forward) by a year counts as
    just now (or long ago): never a year of CrashLoopBackOff."""
    clock = clock_mod.FakeClock()
    b = backoff.Backoff(clock=clock, initial=10, maximum=300)
    b.next("k", clock.now().timestamp())
    clock.advance(1)
    exited = clock.now().timestamp()
    clock.jump(-86400 * 365)  # the exit now looks a year in the future
    assert b.in_backoff_since("k", exited)
    clock.advance(10.01)
    assert not b.in_backoff_since("k", exited)
