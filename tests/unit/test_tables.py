"""Server-side Table output matches upstream's printers cell for cell.

Expected cells are what `kubectl get` shows against a real apiserver for the same objects; the
column sets and priorities are upstream's (pkg/printers/internalversion).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgekube.api import errors, tables

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(**kw: float) -> str:
    return ts(timedelta(**kw))


def meta(name: str, *, created: timedelta = timedelta(minutes=5), **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "42",
            "creationTimestamp": ts(created), **extra}


def cells(gk: str, obj: dict[str, Any]) -> list[Any]:
    table = tables.to_table(gk, [obj], now=NOW)
    row: list[Any] = table["rows"][0]["cells"]
    assert len(row) == len(table["columnDefinitions"])
    return row


def columns(gk: str) -> list[tuple[str, str, int]]:
    table = tables.to_table(gk, [], now=NOW)
    return [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]]


# --- ages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=-5), "<invalid>"),
        (timedelta(seconds=-2), "<invalid>"),
        (timedelta(seconds=-1), "0s"),
        (timedelta(milliseconds=-1500), "0s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(seconds=120), "2m"),
        (timedelta(seconds=182), "3m2s"),
        (timedelta(minutes=9, seconds=59), "9m59s"),
        (timedelta(minutes=10, seconds=30), "10m"),
        (timedelta(minutes=179, seconds=59), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=8, minutes=30), "8h"),
        (timedelta(hours=25), "25h"),
        (timedelta(hours=47, minutes=59), "47h"),
        (timedelta(hours=48), "2d"),
        (timedelta(days=3, hours=5), "3d5h"),
        (timedelta(days=7, hours=23), "7d23h"),
        (timedelta(days=8, hours=5), "8d"),
        (timedelta(days=729), "729d"),
        (timedelta(days=730), "2y"),
        (timedelta(days=731), "2y1d"),
        (timedelta(days=365 * 8 - 1), "7y364d"),
        (timedelta(days=365 * 8), "8y"),
        (timedelta(days=365 * 30), "30y"),
    ],
)
def test_human_duration_follows_upstream_boundaries(delta: timedelta, text: str) -> None:
    assert tables.human_duration(delta) == text


def test_age_is_unknown_without_a_usable_timestamp() -> None:
    assert tables.age(None, NOW) == "<unknown>"
    assert tables.age("", NOW) == "<unknown>"
    assert tables.age("not a time", NOW) == "<unknown>"
    assert tables.age("0001-01-01T00:00:00Z", NOW) == "<unknown>"
    assert tables.age("2024-05-01T11:59:00.123456Z", NOW) == "59s"  # MicroTime
    assert tables.age("2024-05-01T13:55:00+02:00", NOW) == "5m"


# --- pods -----------------------------------------------------------------------------------


def running(name: str, *, ready: bool, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts, "image": "nginx",
            "state": {"running": {"startedAt": ago(minutes=4)}}, **extra}


def pod(statuses: list[dict[str, Any]], *, phase: str = "Running", n: int | None = None,
        **meta_extra: Any) -> dict[str, Any]:
    count = len(statuses) if n is None else n
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("web-1", **meta_extra),
        "spec": {"nodeName": "pi-1", "containers": [{"name": f"c{i}", "image": "nginx"} for i in range(count)]},
        "status": {"phase": phase, "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}],
                   "containerStatuses": statuses},
    }


def test_pod_with_one_of_two_containers_ready_shows_1_of_2() -> None:
    obj = pod([running("c0", ready=True), running("c1", ready=False)])
    assert cells("Pod", obj) == ["web-1", "1/2", "Running", "0", "5m", "10.42.0.7", "pi-1", "<none>", "<none>"]


def test_crashlooping_pod_shows_waiting_reason_and_last_restart() -> None:
    crashing = {
        "name": "c0", "ready": False, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(minutes=3, seconds=2)}},
    }
    assert cells("Pod", pod([crashing]))[:5] == ["web-1", "0/1", "CrashLoopBackOff", "5 (3m2s ago)", "5m"]


def test_first_container_reason_wins_and_restarts_sum() -> None:
    first = {"name": "c0", "restartCount": 1, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    second = {"name": "c1", "restartCount": 2, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert cells("Pod", pod([first, second]))[1:4] == ["0/2", "OOMKilled", "3"]


def test_terminated_container_without_reason_shows_signal_or_exit_code() -> None:
    by_signal = {"name": "c0", "state": {"terminated": {"exitCode": 0, "signal": 9}}}
    by_code = {"name": "c0", "state": {"terminated": {"exitCode": 2}}}
    assert cells("Pod", pod([by_signal]))[2] == "Signal:9"
    assert cells("Pod", pod([by_code]))[2] == "ExitCode:2"


def test_terminating_pod_shows_terminating() -> None:
    obj = pod([running("c0", ready=True)], deletionTimestamp=ago(seconds=10))
    assert cells("Pod", obj)[:3] == ["web-1", "1/1", "Terminating"]


def test_finished_pod_being_deleted_keeps_its_final_status() -> None:
    done = {"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    obj = pod([done], phase="Succeeded", deletionTimestamp=ago(seconds=10))
    assert cells("Pod", obj)[2] == "Completed"


def test_pod_on_lost_node_being_deleted_shows_unknown() -> None:
    obj = pod([running("c0", ready=True)], deletionTimestamp=ago(seconds=10))
    obj["status"]["reason"] = "NodeLost"
    assert cells("Pod", obj)[2] == "Unknown"


def test_completed_pod_shows_completed_and_a_completed_row_condition() -> None:
    done = {"name": "c0", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    table = tables.to_table("Pod", [pod([done], phase="Succeeded")], now=NOW)
    row = table["rows"][0]
    assert row["cells"][1:4] == ["0/1", "Completed", "0"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]
    running_table = tables.to_table("Pod", [pod([running("c0", ready=True)])], now=NOW)
    assert "conditions" not in running_table["rows"][0]


def test_completed_reason_with_a_running_container_reads_running_or_not_ready() -> None:
    done = {"name": "c1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    obj = pod([running("c0", ready=True), done])
    assert cells("Pod", obj)[1:3] == ["1/2", "NotReady"]
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cells("Pod", obj)[1:3] == ["1/2", "Running"]


def init_pod(init_statuses: list[dict[str, Any]], n_init: int = 2) -> dict[str, Any]:
    obj = pod([{"name": "c0", "state": {"waiting": {"reason": "PodInitializing"}}}], phase="Pending")
    obj["spec"]["initContainers"] = [{"name": f"i{i}", "image": "busybox"} for i in range(n_init)]
    obj["status"]["initContainerStatuses"] = init_statuses
    return obj


def test_pod_running_its_second_init_container_shows_init_1_of_2() -> None:
    obj = init_pod([
        {"name": "i0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "i1", "state": {"running": {}}},
    ])
    assert cells("Pod", obj)[1:4] == ["0/1", "Init:1/2", "0"]


def test_failing_init_container_names_its_reason() -> None:
    waiting = init_pod([{"name": "i0", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=40)}}}])
    assert cells("Pod", waiting)[2:4] == ["Init:CrashLoopBackOff", "3 (40s ago)"]
    failed = init_pod([{"name": "i0", "state": {"terminated": {"exitCode": 1}}}])
    assert cells("Pod", failed)[2] == "Init:ExitCode:1"
    reasoned = init_pod([{"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}])
    assert cells("Pod", reasoned)[2] == "Init:Error"


def test_started_sidecar_counts_as_a_ready_container() -> None:
    obj = pod([running("c0", ready=True)])
    obj["spec"]["initContainers"] = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": "proxy", "started": True, "ready": True, "restartCount": 1,
         "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(hours=4)}}},
    ]
    assert cells("Pod", obj)[1:4] == ["2/2", "Running", "1 (4h ago)"]


def test_scheduling_gated_pod() -> None:
    obj = pod([], phase="Pending", n=1)
    obj["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
    assert cells("Pod", obj)[1:3] == ["0/1", "SchedulingGated"]


def test_pod_wide_columns_show_ip_node_nomination_and_readiness_gates() -> None:
    obj = pod([running("c0", ready=True)])
    obj["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]
    obj["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"},
                                   {"type": "example.com/dns", "status": "False"}]
    obj["status"]["nominatedNodeName"] = "pi-2"
    assert cells("Pod", obj)[5:] == ["10.42.0.7", "pi-1", "pi-2", "1/2"]
    pending = pod([], phase="Pending", n=1)
    del pending["spec"]["nodeName"]
    del pending["status"]["podIPs"]
    assert cells("Pod", pending) == ["web-1", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"]


# --- workloads ------------------------------------------------------------------------------


def template(*containers: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}


def test_deployment_shows_ready_of_desired() -> None:
    obj = {
        "metadata": meta("web", created=timedelta(days=3, hours=2)),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                 "template": template(("nginx", "nginx:1.25"), ("log", "fluent-bit"))},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert cells("Deployment.apps", obj) == [
        "web", "2/3", 3, 2, "3d2h", "nginx,log", "nginx:1.25,fluent-bit", "app=web,tier=fe"]
    fresh = {"metadata": meta("new"), "spec": {}}
    assert cells("Deployment.apps", fresh) == ["new", "0/1", 0, 0, "5m", "", "", ""]


def test_replicaset_daemonset_statefulset_rows() -> None:
    rs = {"metadata": meta("web-5d8f"),
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"},
                                                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
                   "template": template(("nginx", "nginx"))},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells("ReplicaSet.apps", rs) == ["web-5d8f", 2, 2, 1, "5m", "nginx", "nginx", "app=web,env in (dev,prod)"]
    ds = {"metadata": meta("agent"),
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "a", "image": "agent:1"}]}}},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert cells("DaemonSet.apps", ds) == ["agent", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "5m", "a", "agent:1", "app=agent"]
    no_selector = {"metadata": meta("bare"), "spec": {}}
    assert cells("DaemonSet.apps", no_selector)[6] == "<none>"
    assert cells("DaemonSet.apps", no_selector)[10] == "<none>"
    sts = {"metadata": meta("db"), "spec": {"replicas": 3, "template": template(("pg", "postgres:16"))},
           "status": {"readyReplicas": 3}}
    assert cells("StatefulSet.apps", sts) == ["db", "3/3", "5m", "pg", "postgres:16"]


def test_job_status_completions_and_duration() -> None:
    done = {"metadata": meta("migrate", created=timedelta(minutes=30)),
            "spec": {"completions": 3, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/job-name": "migrate"}},
                     "template": template(("m", "migrate:1"))},
            "status": {"succeeded": 3, "startTime": ago(minutes=30), "completionTime": ago(minutes=27, seconds=15),
                       "conditions": [{"type": "Complete", "status": "True"}]}}
    assert cells("Job.batch", done) == ["migrate", "Complete", "3/3", "2m45s", "30m", "m", "migrate:1",
                                        "batch.kubernetes.io/job-name=migrate"]
    running_job = {"metadata": meta("work"), "spec": {"parallelism": 4},
                   "status": {"active": 4, "startTime": ago(seconds=90)}}
    assert cells("Job.batch", running_job)[:5] == ["work", "Running", "0/1 of 4", "90s", "5m"]
    failed = {"metadata": meta("bad"), "spec": {},
              "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert cells("Job.batch", failed)[:4] == ["bad", "Failed", "0/1", ""]
    suspended = {"metadata": meta("later"), "spec": {"completions": 1},
                 "status": {"conditions": [{"type": "Complete", "status": "False"}, {"type": "Suspended", "status": "True"}]}}
    assert cells("Job.batch", suspended)[1:3] == ["Suspended", "0/1"]


def test_cronjob_row() -> None:
    obj = {"metadata": meta("backup", created=timedelta(days=10)),
           "spec": {"schedule": "*/5 * * * *", "suspend": False,
                    "jobTemplate": {"spec": {"template": template(("b", "backup:2"))}}},
           "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(minutes=2)}}
    assert cells("CronJob.batch", obj) == ["backup", "*/5 * * * *", "<none>", "False", 1, "2m", "10d", "b", "backup:2", "<none>"]
    never = {"metadata": meta("nightly"), "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Paris"}}
    assert cells("CronJob.batch", never)[:6] == ["nightly", "0 3 * * *", "Europe/Paris", "<unset>", 0, "<none>"]


def test_controller_revision_names_its_controller() -> None:
    obj = {"metadata": meta("agent-7c9", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": True}]),
        "revision": 4}
    assert cells("ControllerRevision.apps", obj) == ["agent-7c9", "daemonset.apps/agent", 4, "5m"]
    orphan = {"metadata": meta("orphan")}
    assert cells("ControllerRevision.apps", orphan) == ["orphan", "<none>", 0, "5m"]


# --- services and endpoints -----------------------------------------------------------------


def service(type_: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                            "selector": {"app": "web"}, **spec}
    if type_ is not None:
        body["type"] = type_
    return {"metadata": meta("web"), "spec": body}


def test_nodeport_service_shows_node_ports() -> None:
    obj = service("NodePort", ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                     {"port": 53, "nodePort": 30053, "protocol": "UDP"}])
    assert cells("Service", obj) == ["web", "NodePort", "10.43.0.10", "<none>", "80:30080/TCP,53:30053/UDP", "5m", "app=web"]


def test_clusterip_service_defaults_and_empty_fields() -> None:
    obj = service(None, ports=[{"port": 443}])  # type and protocol left to their defaults
    assert cells("Service", obj)[1:5] == ["ClusterIP", "10.43.0.10", "<none>", "443/TCP"]
    headless = {"metadata": meta("db"), "spec": {"clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP"}}
    assert cells("Service", headless) == ["db", "ClusterIP", "None", "<none>", "<none>", "5m", "<none>"]
    external = service("ClusterIP", externalIPs=["192.168.1.5", "192.168.1.6"], ports=[{"port": 80, "protocol": "TCP"}])
    assert cells("Service", external)[3] == "192.168.1.5,192.168.1.6"


def test_load_balancer_and_external_name_services() -> None:
    pending = service("LoadBalancer", ports=[{"port": 80, "nodePort": 31000, "protocol": "TCP"}])
    assert cells("Service", pending)[3:5] == ["<pending>", "80:31000/TCP"]
    assigned = service("LoadBalancer", ports=[{"port": 80, "protocol": "TCP"}])
    assigned["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.241"}, {"hostname": "lb.example.com"},
                                                         {"ip": "192.168.1.240"}]}}
    assert cells("Service", assigned)[3] == "192.168.1.240,192.168.1.241,lb.example.com"
    alias = {"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert cells("Service", alias)[1:5] == ["ExternalName", "<none>", "db.example.com", "<none>"]


def test_endpoints_list_host_ports_and_count_the_rest() -> None:
    obj = {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}], "ports": [{"port": 8080}, {"name": "m", "port": 9090}]},
        {"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]},
    ]}
    assert cells("Endpoints", obj) == ["web", "10.42.0.5:8080,10.42.0.6:8080,10.42.0.5:9090 + 2 more...", "5m"]
    headless = {"metadata": meta("h"), "subsets": [{"addresses": [{"ip": "fd00::5"}]}]}
    assert cells("Endpoints", headless)[1] == "fd00::5"
    v6 = {"metadata": meta("v6"), "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}]}
    assert cells("Endpoints", v6)[1] == "[fd00::5]:80"
    assert cells("Endpoints", {"metadata": meta("none")})[1] == "<none>"


def test_endpoint_slice_row() -> None:
    obj = {"metadata": meta("web-abc12"), "addressType": "IPv4",
           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}, {}],
           "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]},
                         {"addresses": ["10.42.0.7"]}, {"addresses": ["10.42.0.8"]}]}
    assert cells("EndpointSlice.discovery.k8s.io", obj) == [
        "web-abc12", "IPv4", "80,named,*", "10.42.0.5,10.42.0.6,10.42.0.7 + 1 more...", "5m"]
    empty = {"metadata": meta("empty"), "addressType": "IPv4"}
    assert cells("EndpointSlice.discovery.k8s.io", empty)[2:4] == ["<unset>", "<unset>"]


# --- nodes, namespaces, config --------------------------------------------------------------


def test_cordoned_node_shows_scheduling_disabled_and_roles() -> None:
    obj = {
        "metadata": {"name": "pi-1", "creationTimestamp": ago(days=40),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "true",
                                "kubernetes.io/role": "edge", "kubernetes.io/hostname": "pi-1"}},
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "pi-1"}, {"type": "InternalIP", "address": "192.168.1.20"}],
            "nodeInfo": {"kubeletVersion": "v1.30.0-edgekube", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.6.20-v8+", "containerRuntimeVersion": "runc://1.1.12"},
        },
    }
    assert cells("Node", obj) == [
        "pi-1", "Ready,SchedulingDisabled", "control-plane,edge,master", "40d", "v1.30.0-edgekube",
        "192.168.1.20", "<none>", "Debian GNU/Linux 12 (bookworm)", "6.6.20-v8+", "runc://1.1.12"]


def test_node_not_ready_and_without_status() -> None:
    down = {"metadata": {"name": "pi-2", "creationTimestamp": ago(hours=1)},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert cells("Node", down)[:5] == ["pi-2", "NotReady", "<none>", "60m", ""]
    new = {"metadata": {"name": "pi-3"}}
    assert cells("Node", new) == ["pi-3", "Unknown", "<none>", "<unknown>", "", "<none>", "<none>",
                                  "<unknown>", "<unknown>", "<unknown>"]


def test_namespace_configmap_secret_serviceaccount_lease_rows() -> None:
    ns = {"metadata": {"name": "kube-system", "creationTimestamp": ago(days=2)}, "status": {"phase": "Active"}}
    assert cells("Namespace", ns) == ["kube-system", "Active", "2d"]
    cm = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert cells("ConfigMap", cm) == ["cfg", 3, "5m"]
    assert cells("ConfigMap", {"metadata": meta("empty")}) == ["empty", 0, "5m"]
    secret = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "x", "tls.key": "y"}}
    assert cells("Secret", secret) == ["tls", "kubernetes.io/tls", 2, "5m"]
    sa = {"metadata": meta("default"), "secrets": [{"name": "default-token"}]}
    assert cells("ServiceAccount", sa) == ["default", 1, "5m"]
    assert cells("ServiceAccount", {"metadata": meta("bare")}) == ["bare", 0, "5m"]
    lease = {"metadata": meta("pi-1"), "spec": {"holderIdentity": "pi-1", "leaseDurationSeconds": 40}}
    assert cells("Lease.coordination.k8s.io", lease) == ["pi-1", "pi-1", "5m"]


def test_resource_quota_splits_requests_and_limits() -> None:
    obj = {"metadata": meta("compute"),
           "status": {"hard": {"requests.cpu": "2", "limits.memory": "4Gi", "pods": "10", "limits.cpu": "4"},
                      "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}}}
    assert cells("ResourceQuota", obj) == [
        "compute", "pods: 3/10, requests.cpu: 500m/2", "limits.cpu: 1/4, limits.memory: 0/4Gi", "5m"]


# --- storage --------------------------------------------------------------------------------


def test_persistent_volume_and_claim_rows() -> None:
    pv = {"metadata": meta("pvc-123"),
          "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                   "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
          "status": {"phase": "Bound"}}
    assert cells("PersistentVolume", pv) == [
        "pvc-123", "5Gi", "RWO,RWX", "Delete", "Bound", "default/data", "local-path", "<unset>", "", "5m", "Filesystem"]
    pvc = {"metadata": meta("data"),
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                    "storageClassName": "local-path", "volumeName": "pvc-123", "volumeMode": "Filesystem"},
           "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "5Gi"}}}
    assert cells("PersistentVolumeClaim", pvc) == [
        "data", "Bound", "pvc-123", "5Gi", "RWO", "local-path", "<unset>", "5m", "Filesystem"]
    pending = {"metadata": meta("wait", deletionTimestamp=ago(seconds=3)),
               "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    assert cells("PersistentVolumeClaim", pending) == ["wait", "Terminating", "", "", "", "", "<unset>", "5m", "<unset>"]


def test_storage_class_marks_the_default() -> None:
    obj = {"metadata": {"name": "local-path", "creationTimestamp": ago(days=1),
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
           "provisioner": "edgekube.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}
    assert cells("StorageClass.storage.k8s.io", obj) == [
        "local-path (default)", "edgekube.io/local-path", "Delete", "WaitForFirstConsumer", False, "24h"]


# --- events ---------------------------------------------------------------------------------


def test_event_row_has_upstreams_cells_in_column_order() -> None:
    obj = {
        "metadata": meta("web-1.17c2", created=timedelta(minutes=10)),
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{nginx}"},
        "reason": "BackOff", "message": "Back-off restarting failed container\n", "type": "Warning",
        "source": {"component": "kubelet", "host": "pi-1"},
        "firstTimestamp": ago(minutes=10), "lastTimestamp": ago(seconds=30), "count": 7,
    }
    assert cells("Event", obj) == [
        "30s", "Warning", "BackOff", "pod/web-1", "spec.containers{nginx}", "kubelet, pi-1",
        "Back-off restarting failed container", "10m", 7, "web-1.17c2"]


def test_new_style_event_uses_event_time_series_and_reporting_fields() -> None:
    obj = {
        "metadata": meta("e2"), "involvedObject": {"kind": "Node"}, "reason": "Starting", "type": "Normal",
        "eventTime": "2024-05-01T11:55:00.000000Z", "reportingComponent": "edgekube-kubelet",
        "reportingInstance": "pi-1", "message": "Starting kubelet.",
    }
    assert cells("Event", obj) == ["5m", "Normal", "Starting", "node", "", "edgekube-kubelet, pi-1",
                                   "Starting kubelet.", "5m", 1, "e2"]
    obj["series"] = {"count": 4, "lastObservedTime": "2024-05-01T11:59:50.000000Z"}
    assert cells("Event", obj)[0] == "10s"
    assert cells("Event", obj)[8] == 4
    v1 = {"metadata": meta("e3"), "regarding": {"kind": "Pod", "name": "web-1"}, "note": "pulled",
          "reason": "Pulled", "type": "Normal", "eventTime": "2024-05-01T11:59:00.000000Z",
          "reportingController": "kubelet", "reportingInstance": "pi-1"}
    assert cells("Event.events.k8s.io", v1) == ["60s", "Normal", "Pulled", "pod/web-1", "", "kubelet, pi-1",
                                                "pulled", "60s", 1, "e3"]


# --- RBAC and the default table -------------------------------------------------------------


def test_role_binding_row_lists_subjects_by_kind() -> None:
    obj = {"metadata": meta("readers"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
           "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                        {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}, {"kind": "User", "name": "bob"}]}
    assert cells("RoleBinding.rbac.authorization.k8s.io", obj) == [
        "readers", "ClusterRole/view", "5m", "alice, bob", "ops", "build/ci"]
    assert cells("ClusterRoleBinding.rbac.authorization.k8s.io", {"metadata": {"name": "x"}}) == [
        "x", "/", "<unknown>", "", "", ""]


@pytest.mark.parametrize("gk", ["Role.rbac.authorization.k8s.io", "ClusterRole.rbac.authorization.k8s.io",
                                "LimitRange", "Widget.example.com"])
def test_kinds_without_printer_get_the_default_name_and_created_at_table(gk: str) -> None:
    table = tables.to_table(gk, [{"metadata": {"name": "a", "creationTimestamp": "2024-04-30T10:00:00+02:00"}},
                                 {"metadata": {"name": "b"}}], now=NOW)
    assert [(c["name"], c["type"], c["format"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", "name", 0), ("Created At", "date", "", 0)]
    assert [r["cells"] for r in table["rows"]] == [["a", "2024-04-30T08:00:00Z"], ["b", "0001-01-01T00:00:00Z"]]


# --- column sets ----------------------------------------------------------------------------

STR, INT, BOOL = "string", "integer", "boolean"

UPSTREAM_COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "Pod": [("Name", STR, 0), ("Ready", STR, 0), ("Status", STR, 0), ("Restarts", STR, 0), ("Age", STR, 0),
            ("IP", STR, 1), ("Node", STR, 1), ("Nominated Node", STR, 1), ("Readiness Gates", STR, 1)],
    "Deployment.apps": [("Name", STR, 0), ("Ready", STR, 0), ("Up-to-date", STR, 0), ("Available", STR, 0), ("Age", STR, 0),
                        ("Containers", STR, 1), ("Images", STR, 1), ("Selector", STR, 1)],
    "ReplicaSet.apps": [("Name", STR, 0), ("Desired", INT, 0), ("Current", INT, 0), ("Ready", INT, 0), ("Age", STR, 0),
                        ("Containers", STR, 1), ("Images", STR, 1), ("Selector", STR, 1)],
    "DaemonSet.apps": [("Name", STR, 0), ("Desired", INT, 0), ("Current", INT, 0), ("Ready", INT, 0), ("Up-to-date", INT, 0),
                       ("Available", INT, 0), ("Node Selector", STR, 0), ("Age", STR, 0),
                       ("Containers", STR, 1), ("Images", STR, 1), ("Selector", STR, 1)],
    "StatefulSet.apps": [("Name", STR, 0), ("Ready", STR, 0), ("Age", STR, 0), ("Containers", STR, 1), ("Images", STR, 1)],
    "Job.batch": [("Name", STR, 0), ("Status", STR, 0), ("Completions", STR, 0), ("Duration", STR, 0), ("Age", STR, 0),
                  ("Containers", STR, 1), ("Images", STR, 1), ("Selector", STR, 1)],
    "CronJob.batch": [("Name", STR, 0), ("Schedule", STR, 0), ("Timezone", STR, 0), ("Suspend", BOOL, 0), ("Active", INT, 0),
                      ("Last Schedule", STR, 0), ("Age", STR, 0), ("Containers", STR, 1), ("Images", STR, 1), ("Selector", STR, 1)],
    "Service": [("Name", STR, 0), ("Type", STR, 0), ("Cluster-IP", STR, 0), ("External-IP", STR, 0), ("Port(s)", STR, 0),
                ("Age", STR, 0), ("Selector", STR, 1)],
    "Endpoints": [("Name", STR, 0), ("Endpoints", STR, 0), ("Age", STR, 0)],
    "Node": [("Name", STR, 0), ("Status", STR, 0), ("Roles", STR, 0), ("Age", STR, 0), ("Version", STR, 0),
             ("Internal-IP", STR, 1), ("External-IP", STR, 1), ("OS-Image", STR, 1), ("Kernel-Version", STR, 1),
             ("Container-Runtime", STR, 1)],
    "Event": [("Last Seen", STR, 0), ("Type", STR, 0), ("Reason", STR, 0), ("Object", STR, 0), ("Subobject", STR, 1),
              ("Source", STR, 1), ("Message", STR, 0), ("First Seen", STR, 1), ("Count", STR, 1), ("Name", STR, 1)],
    "Namespace": [("Name", STR, 0), ("Status", STR, 0), ("Age", STR, 0)],
    "ConfigMap": [("Name", STR, 0), ("Data", STR, 0), ("Age", STR, 0)],
    "Secret": [("Name", STR, 0), ("Type", STR, 0), ("Data", STR, 0), ("Age", STR, 0)],
    "ServiceAccount": [("Name", STR, 0), ("Secrets", STR, 0), ("Age", STR, 0)],
    "Lease.coordination.k8s.io": [("Name", STR, 0), ("Holder", STR, 0), ("Age", STR, 0)],
    "PersistentVolume": [("Name", STR, 0), ("Capacity", STR, 0), ("Access Modes", STR, 0), ("Reclaim Policy", STR, 0),
                         ("Status", STR, 0), ("Claim", STR, 0), ("StorageClass", STR, 0), ("VolumeAttributesClass", STR, 0),
                         ("Reason", STR, 0), ("Age", STR, 0), ("VolumeMode", STR, 1)],
    "PersistentVolumeClaim": [("Name", STR, 0), ("Status", STR, 0), ("Volume", STR, 0), ("Capacity", STR, 0),
                              ("Access Modes", STR, 0), ("StorageClass", STR, 0), ("VolumeAttributesClass", STR, 0),
                              ("Age", STR, 0), ("VolumeMode", STR, 1)],
    "StorageClass.storage.k8s.io": [("Name", STR, 0), ("Provisioner", STR, 0), ("ReclaimPolicy", STR, 0),
                                    ("VolumeBindingMode", STR, 0), ("AllowVolumeExpansion", STR, 0), ("Age", STR, 0)],
    "ResourceQuota": [("Name", STR, 0), ("Request", STR, 0), ("Limit", STR, 0), ("Age", STR, 0)],
    "EndpointSlice.discovery.k8s.io": [("Name", STR, 0), ("AddressType", STR, 0), ("Ports", STR, 0), ("Endpoints", STR, 0),
                                       ("Age", STR, 0)],
    "ControllerRevision.apps": [("Name", STR, 0), ("Controller", STR, 0), ("Revision", STR, 0), ("Age", STR, 0)],
    "RoleBinding.rbac.authorization.k8s.io": [("Name", STR, 0), ("Role", STR, 0), ("Age", STR, 0), ("Users", STR, 1),
                                              ("Groups", STR, 1), ("ServiceAccounts", STR, 1)],
    "ClusterRoleBinding.rbac.authorization.k8s.io": [("Name", STR, 0), ("Role", STR, 0), ("Age", STR, 0), ("Users", STR, 1),
                                                     ("Groups", STR, 1), ("ServiceAccounts", STR, 1)],
}


@pytest.mark.parametrize("gk", sorted(UPSTREAM_COLUMNS))
def test_column_names_types_and_priorities_match_upstream(gk: str) -> None:
    assert columns(gk) == UPSTREAM_COLUMNS[gk]


def test_name_columns_carry_the_name_format() -> None:
    for gk in UPSTREAM_COLUMNS:
        defs = tables.to_table(gk, [])["columnDefinitions"]
        formats = {c["name"]: c["format"] for c in defs}
        assert formats["Name"] == "name", gk
        assert all(c["description"] for c in defs), gk


# --- robustness -----------------------------------------------------------------------------

MALFORMED: list[dict[str, Any]] = [
    {},
    {"metadata": None, "spec": None, "status": None},
    {"metadata": "x", "spec": [], "status": 3, "data": "y", "subsets": {"a": 1}, "endpoints": "z",
     "ports": [None, 1], "subjects": [1, None], "roleRef": "r", "involvedObject": "p", "series": 4},
    {"metadata": {"name": 5, "creationTimestamp": 12, "labels": [], "ownerReferences": [None, {"controller": True}]},
     "spec": {"containers": "c", "initContainers": [None], "replicas": "3", "selector": {"matchExpressions": [{"operator": "Bogus"}]},
              "ports": [{"port": "80", "nodePort": None}], "template": {"spec": {"containers": [None]}},
              "capacity": "5Gi", "claimRef": "c", "readinessGates": [{}], "jobTemplate": 1},
     "status": {"containerStatuses": [None, {"state": None, "lastState": {"terminated": {"finishedAt": "bad"}}}],
                "initContainerStatuses": [{"state": {"terminated": None}}], "conditions": "c",
                "hard": {"cpu": None}, "addresses": [None], "loadBalancer": {"ingress": [None, {"ip": 1}]}}},
]


@pytest.mark.parametrize("gk", [*sorted(UPSTREAM_COLUMNS), "Event.events.k8s.io", "LimitRange"])
@pytest.mark.parametrize("index", range(len(MALFORMED)))
def test_partial_or_malformed_objects_never_raise(gk: str, index: int) -> None:
    table = tables.to_table(gk, [MALFORMED[index]], now=NOW)
    row = table["rows"][0]["cells"]
    assert len(row) == len(table["columnDefinitions"])
    assert all(isinstance(c, str | int | bool) for c in row)


def test_invalid_selector_prints_invalid_for_deployments_and_error_elsewhere() -> None:
    bad = {"matchExpressions": [{"key": "a", "operator": "Sometimes"}]}
    dep = {"metadata": meta("d"), "spec": {"selector": bad}}
    rs = {"metadata": meta("r"), "spec": {"selector": bad}}
    assert cells("Deployment.apps", dep)[7] == "<invalid>"
    assert cells("ReplicaSet.apps", rs)[7] == "<error>"


# --- table envelope and includeObject -------------------------------------------------------


def test_table_envelope_and_default_partial_object_metadata() -> None:
    obj = pod([running("c0", ready=True)], labels={"app": "web"})
    table = tables.to_table("Pod", [obj], now=NOW, list_meta={"resourceVersion": "99", "continue": "tok"})
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "99", "continue": "tok"}
    assert table["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                          "metadata": obj["metadata"]}
    assert set(table["columnDefinitions"][0]) == {"name", "type", "format", "description", "priority"}


def test_include_object_none_and_object() -> None:
    obj = pod([running("c0", ready=True)])
    none = tables.to_table("Pod", [obj], include_object="None", now=NOW)
    assert none["rows"][0]["object"] is None
    full = tables.to_table("Pod", [obj], include_object="Object", now=NOW)
    assert full["rows"][0]["object"] == obj


def test_unknown_include_object_is_a_bad_request() -> None:
    with pytest.raises(errors.APIError) as info:
        tables.to_table("Pod", [], include_object="Everything")
    assert info.value.code == 400
    assert "Everything" in str(info.value.message)


def test_single_object_table_carries_its_resource_version_and_watch_rows_omit_columns() -> None:
    obj = pod([running("c0", ready=True)])
    first = tables.to_table("Pod", [obj], now=NOW)
    assert first["metadata"] == {"resourceVersion": "42"}
    later = tables.to_table("Pod", [obj], now=NOW, with_columns=False)
    assert later["columnDefinitions"] is None
    assert later["rows"][0]["cells"] == first["rows"][0]["cells"]


def test_empty_list_has_columns_and_no_rows() -> None:
    table = tables.to_table("Deployment.apps", [], list_meta={"resourceVersion": "7"})
    assert table["rows"] == []
    assert table["metadata"] == {"resourceVersion": "7"}
    assert len(table["columnDefinitions"]) == 8


def test_now_defaults_to_the_current_time() -> None:
    obj = {"metadata": {"name": "a", "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
           "data": {}}
    age_cell = tables.to_table("ConfigMap", [obj])["rows"][0]["cells"][2]
    assert age_cell in ("0s", "1s", "2s")


def test_ingress_columns_hosts_and_ports_as_upstream() -> None:
    assert [c[0] for c in columns("Ingress.networking.k8s.io")] == ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    rule = {"http": {"paths": []}}
    many = {"metadata": meta("many"), "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a"]}], "rules": [
        {**rule, "host": "a.example"}, dict(rule), {**rule, "host": "b.example"}, {**rule, "host": "c.example"},
        {**rule, "host": "d.example"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}, {"hostname": "lb.example"}]}}}
    # formatHosts counts rules, not hosts, once three hosts are listed.
    assert cells("Ingress.networking.k8s.io", many) == [
        "many", "nginx", "a.example,b.example,c.example + 2 more...", "10.0.0.9,lb.e...", "80, 443", "5m"]
    bare = {"metadata": meta("bare"), "spec": {"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}}
    assert cells("Ingress.networking.k8s.io", bare) == ["bare", "<none>", "*", "", "80", "5m"]


@pytest.mark.parametrize(("spec", "conditions", "shown"), [
    ({"version": "v1"}, [{"type": "Available", "status": "True", "reason": "Local"}], ["Local", "True"]),
    ({"service": {"namespace": "kube-system", "name": "metrics-server"}},
     [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}],
     ["kube-system/metrics-server", "False (FailedDiscoveryCheck)"]),
    ({"service": {"namespace": "ns", "name": "api"}}, [{"type": "Available", "status": "Unknown"}], ["ns/api", "Unknown"]),
    ({}, [], ["Local", "Unknown"]),
])
def test_apiservice_service_and_availability(spec: dict[str, Any], conditions: list[Any], shown: list[str]) -> None:
    assert [c[0] for c in columns("APIService.apiregistration.k8s.io")] == ["Name", "Service", "Available", "Age"]
    obj = {"metadata": meta("v1.x"), "spec": spec, "status": {"conditions": conditions}}
    assert cells("APIService.apiregistration.k8s.io", obj) == ["v1.x", *shown, "5m"]


def test_replication_controller_columns_and_map_selector() -> None:
    assert columns("ReplicationController")[1:4] == [("Desired", "integer", 0), ("Current", "integer", 0),
                                                     ("Ready", "integer", 0)]
    rc = {"metadata": meta("web"), "spec": {"selector": {"tier": "front", "app": "web"}, "template": {"spec": {
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells("ReplicationController", rc) == ["web", 1, 2, 1, "5m", "a,b", "busybox,nginx", "app=web,tier=front"]
