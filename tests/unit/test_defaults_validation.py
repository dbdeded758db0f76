"""Defaults and validation for the served kinds, with upstream's values and field paths."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgekube.api import ssa
from edgekube.api.registry import defaults, validation

JSON = dict[str, Any]


def _pod(**spec: Any) -> JSON:
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def _deploy(**spec: Any) -> JSON:
    return {
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}, **spec},
    }


def _fields(gk: str, obj: JSON, old: JSON | None = None, namespaced: bool = True) -> list[str]:
    defaults.apply(gk, obj)
    return [c.field for c in validation.validate(gk, obj, old=old, namespaced=namespaced)]


def test_pod_defaults_match_upstream_and_are_idempotent() -> None:
    pod = _pod()
    defaults.apply("Pod", pod)
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["serviceAccountName"] == "default"
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert {t["key"] for t in spec["tolerations"]} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    again = copy.deepcopy(pod)
    defaults.apply("Pod", again)
    assert again == pod


@pytest.mark.parametrize(
    ("image", "policy"),
    [("busybox", "Always"), ("busybox:latest", "Always"), ("busybox:1.36", "IfNotPresent"),
     ("reg:5000/busybox", "Always"), ("reg:5000/busybox:1", "IfNotPresent"), ("busybox@sha256:abc", "IfNotPresent")],
)
def test_image_pull_policy_by_tag(image: str, policy: str) -> None:
    assert defaults.image_pull_policy(image) == policy


def test_deployment_defaults() -> None:
    d = _deploy()
    defaults.apply("Deployment.apps", d)
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert "serviceAccountName" not in spec["template"]["spec"]  # admission adds it to pods only


def test_service_and_secret_defaults() -> None:
    svc: JSON = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}}
    defaults.apply("Service", svc)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert svc["spec"]["ports"][1]["targetPort"] == "http"
    sec: JSON = {"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}}
    defaults.apply("Secret", sec)
    assert sec == {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA==", "b": "aGVsbG8="}}


def test_job_selector_and_defaults() -> None:
    job: JSON = {"metadata": {"name": "j", "uid": "u1"},
                 "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}
    defaults.apply("Job.batch", job)
    defaults.job_selector(job)
    assert job["spec"]["completions"] == 1 and job["spec"]["parallelism"] == 1 and job["spec"]["backoffLimit"] == 6
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "j"
    assert validation.validate("Job.batch", job, old=None, namespaced=False) == []


def test_valid_objects_have_no_causes() -> None:
    assert _fields("Pod", _pod()) == []
    assert _fields("Deployment.apps", _deploy()) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p["metadata"].update(name="Bad_Name"), "metadata.name"),
        (lambda p: p["metadata"].update(labels={"a": "-x"}), "metadata.labels"),
        (lambda p: p["spec"].update(containers=[]), "spec.containers"),
        (lambda p: p["spec"]["containers"][0].pop("image"), "spec.containers[0].image"),
        (lambda p: p["spec"]["containers"].append({"name": "c", "image": "x"}), "spec.containers[1].name"),
        (lambda p: p["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy"),
        (lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 70000}]), "spec.containers[0].ports[0].containerPort"),
        (lambda p: p["spec"]["containers"][0].update(volumeMounts=[{"name": "v", "mountPath": "/v"}]), "spec.containers[0].volumeMounts[0].name"),
        (lambda p: p["spec"]["containers"][0].update(resources={"limits": {"cpu": "lots"}}), "spec.containers[0].resources.limits[cpu]"),
        (lambda p: p["spec"]["containers"][0].update(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}), "spec.containers[0].resources.requests"),
    ],
)
def test_invalid_pods_name_the_field(mutate: Any, field: str) -> None:
    pod = _pod()
    mutate(pod)
    assert field in _fields("Pod", pod)


def test_pod_update_may_change_only_images() -> None:
    old = _pod()
    defaults.apply("Pod", old)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "busybox:2"
    assert _fields("Pod", new, old=old) == []
    new["spec"]["restartPolicy"] = "Never"
    assert "spec" in _fields("Pod", new, old=old)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["spec"].pop("selector"), "spec.selector"),
        (lambda d: d["spec"]["selector"].update(matchLabels={"app": "other"}), "spec.template.metadata.labels"),
        (lambda d: d["spec"].update(replicas=-1), "spec.replicas"),
        (lambda d: d["spec"].update(strategy={"type": "Sideways"}), "spec.strategy.type"),
        (lambda d: d["spec"].update(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}),
         "spec.strategy.rollingUpdate.maxUnavailable"),
        (lambda d: d["spec"].update(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}}),
         "spec.strategy.rollingUpdate.maxSurge"),
        (lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Never"), "spec.template.spec.restartPolicy"),
    ],
)
def test_invalid_deployments(mutate: Any, field: str) -> None:
    d = _deploy()
    mutate(d)
    assert field in _fields("Deployment.apps", d)


def test_deployment_selector_is_immutable() -> None:
    old = _deploy()
    defaults.apply("Deployment.apps", old)
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["x"] = "y"
    new["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert "spec.selector" in _fields("Deployment.apps", new, old=old)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"ports": [{"port": 0}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
        ({"ports": [{"port": 80, "nodePort": 30001}]}, "spec.ports[0].nodePort"),
        ({"type": "Magic", "ports": [{"port": 80}]}, "spec.type"),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol"),
        ({"clusterIP": "x.y", "ports": [{"port": 80}]}, "spec.clusterIPs[0]"),
        ({"type": "ExternalName"}, "spec.externalName"),
    ],
)
def test_invalid_services(spec: JSON, field: str) -> None:
    assert field in _fields("Service", {"metadata": {"name": "s", "namespace": "default"}, "spec": spec})


def test_service_name_is_dns1035() -> None:
    assert "metadata.name" in _fields("Service", {"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 1}]}})


def test_configmap_secret_and_cronjob() -> None:
    assert "data[a b]" in _fields("ConfigMap", {"metadata": {"name": "c", "namespace": "d"}, "data": {"a b": "1"}})
    assert "data[x]" in _fields("Secret", {"metadata": {"name": "s", "namespace": "d"}, "data": {"x": "not base64!"}})
    tls = {"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {}}
    assert "data[tls.crt]" in _fields("Secret", tls)
    cj = {"metadata": {"name": "c", "namespace": "d"},
          "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
              "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}
    assert "spec.schedule" in _fields("CronJob.batch", cj)
    cj["spec"]["schedule"] = "*/5 * * * 1-5"
    assert _fields("CronJob.batch", cj) == []


def test_namespace_names_are_labels() -> None:
    assert "metadata.name" in _fields("Namespace", {"metadata": {"name": "a.b"}}, namespaced=False)
    ns: JSON = {"metadata": {"name": "ok"}}
    assert _fields("Namespace", ns, namespaced=False) == []
    assert ns["spec"] == {}  # the `kubernetes` finalizer is set by create, not by defaults
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "ok"}


def test_status_validation() -> None:
    pod = _pod(nodeName="n")
    pod["status"] = {"phase": "Dancing", "conditions": [{"type": "Ready", "status": "Maybe"}]}
    fields = [c.field for c in validation.validate_status("Pod", pod, old=None, namespaced=True)]
    assert fields == ["status.phase", "status.conditions[0].status"]


def _rc(**spec: Any) -> JSON:
    return {"metadata": {"name": "r", "namespace": "default"},
            "spec": {"template": {"metadata": {"labels": {"app": "r"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


def test_replication_controller_defaults_selector_labels_and_replicas_from_the_template() -> None:
    rc = _rc()
    defaults.apply("ReplicationController", rc)
    assert rc["spec"]["selector"] == {"app": "r"} and rc["metadata"]["labels"] == {"app": "r"}
    assert rc["spec"]["replicas"] == 1
    assert rc["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    given = _rc(selector={"app": "r"}, replicas=0)
    given["metadata"]["labels"] = {"team": "x"}
    defaults.apply("ReplicationController", given)
    assert given["metadata"]["labels"] == {"team": "x"} and given["spec"]["replicas"] == 0
    assert _fields("ReplicationController", _rc()) == []


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"selector": {"app": "other"}}, "spec.template.metadata.labels", "`selector` does not match template `labels`"),
    ({"replicas": -1}, "spec.replicas", "must be greater than or equal to 0"),
    ({"minReadySeconds": -1}, "spec.minReadySeconds", "must be greater than or equal to 0"),
    ({"template": None, "selector": {"a": "b"}}, "spec.template", "Required value"),
])
def test_replication_controller_validation(spec: JSON, field: str, message: str) -> None:
    rc = _rc(**spec)
    defaults.apply("ReplicationController", rc)
    causes = validation.validate("ReplicationController", rc, old=None, namespaced=True)
    assert [(c.field, message in c.message) for c in causes] == [(field, True)]


def test_replication_controller_without_any_selector_is_refused() -> None:
    rc = {"metadata": {"name": "r", "namespace": "default"}, "spec": {"template": {
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    assert _fields("ReplicationController", rc) == ["spec.selector"]


def _apiservice(name: str, **spec: Any) -> JSON:
    return {"metadata": {"name": name}, "spec": {"groupPriorityMinimum": 100, "versionPriority": 10, **spec}}


@pytest.mark.parametrize(("obj", "causes"), [
    (_apiservice("v1.", version="v1"), []),
    (_apiservice("v1.x.io", group="x.io", version="v1", service={"namespace": "n", "name": "s"}), []),
    (_apiservice("v2.", version="v2"), ["spec.group"]),
    (_apiservice("v1.y.io", group="x.io", version="v1"), ["metadata.name"]),
    (_apiservice("v1.x.io", group="x.io", version="v1", groupPriorityMinimum=20001, versionPriority=0),
     ["spec.groupPriorityMinimum", "spec.versionPriority"]),
    (_apiservice("v1.x.io", group="x.io", version="v1", caBundle="YWJj"), ["spec.caBundle"]),
    (_apiservice("v1.x.io", group="x.io", version="v1", service={"namespace": "n", "name": "", "port": 0}),
     ["spec.service.name", "spec.service.port"]),
])
def test_apiservice_validation(obj: JSON, causes: list[str]) -> None:
    assert _fields("APIService.apiregistration.k8s.io", copy.deepcopy(obj), namespaced=False) == causes


def test_priority_class_names_values_and_updates() -> None:
    def pc(name: str, value: int, **extra: Any) -> JSON:
        return {"metadata": {"name": name}, "value": value, **extra}

    gk = "PriorityClass.scheduling.k8s.io"
    assert _fields(gk, pc("system-node-critical", 2000001000), namespaced=False) == []
    for bad in (pc("system-node-critical", 1), pc("system-x", 1), pc("system-node-critical", 2000001000, globalDefault=True)):
        defaults.apply(gk, bad)
        causes = validation.validate(gk, bad, old=None, namespaced=False)
        assert [c.field for c in causes] == ["metadata.name"]
        assert "priority class names with 'system-' prefix are reserved for system use only. error: " in causes[0].message
    assert _fields(gk, pc("big", 1000000001), namespaced=False) == ["value"]
    old = pc("mine", 5)
    defaults.apply(gk, old)
    assert _fields(gk, pc("mine", 6), old=old, namespaced=False) == ["value"]
    assert _fields(gk, pc("mine", 5, preemptionPolicy="Never"), old=old, namespaced=False) == ["preemptionPolicy"]


@pytest.mark.parametrize("gk", ["ReplicationController", "ReplicaSet.apps"])
def test_replica_status_counts_stay_under_replicas(gk: str) -> None:
    def status(**counts: int) -> list[tuple[str, str]]:
        obj = {"metadata": {"name": "r", "namespace": "default"}, "status": counts}
        return [(c.field, c.message) for c in validation.validate_status(gk, obj, old=None, namespaced=True)]

    assert status(replicas=2, fullyLabeledReplicas=2, readyReplicas=2, availableReplicas=1) == []
    assert status(replicas=1, readyReplicas=2, availableReplicas=2) == [
        ("status.readyReplicas", "Invalid value: 2: cannot be greater than status.replicas"),
        ("status.availableReplicas", "Invalid value: 2: cannot be greater than status.replicas")]
    assert status(replicas=3, readyReplicas=1, availableReplicas=2) == [
        ("status.availableReplicas", "Invalid value: 2: cannot be greater than readyReplicas")]
    assert status(replicas=1, fullyLabeledReplicas=-1) == [
        ("status.fullyLabeledReplicas", "Invalid value: -1: must be greater than or equal to 0")]


_BACKEND = {"service": {"name": "s", "port": {"number": 80}}}


def _ingress(**spec: Any) -> JSON:
    return {"metadata": {"name": "i", "namespace": "default"}, "spec": spec}


def _rule(host: str = "", backend: Any = None, **path: Any) -> JSON:
    one = {"path": "/", "pathType": "Prefix", "backend": _BACKEND if backend is None else backend, **path}
    return {**({"host": host} if host else {}), "http": {"paths": [one]}}


@pytest.mark.parametrize(("spec", "fields"), [
    ({"rules": [_rule("foo.example"), _rule("*.example.com")], "tls": [{"hosts": ["foo.example"]}]}, []),
    ({"defaultBackend": _BACKEND, "ingressClassName": "nginx"}, []),
    ({}, ["spec"]),
    ({"rules": [_rule("10.0.0.1")]}, ["spec.rules[0].host"]),
    ({"rules": [_rule("*x.example")], "tls": [{"hosts": ["Bad"]}]}, ["spec.tls[0].hosts[0]", "spec.rules[0].host"]),
    ({"rules": [_rule(pathType=None)]}, ["spec.rules[0].http.paths[0].pathType"]),
    ({"rules": [_rule(path="rel")]}, ["spec.rules[0].http.paths[0].path"]),
    ({"rules": [_rule(backend={"service": {"name": "Bad_", "port": {"name": "HTTP"}}})]},
     ["spec.rules[0].http.paths[0].backend.service.name", "spec.rules[0].http.paths[0].backend.service.port.name"]),
    ({"rules": [_rule(backend={"service": {"name": "s", "port": {}}})]}, ["spec.rules[0].http.paths[0].backend.service.port"]),
    ({"defaultBackend": {"service": _BACKEND["service"], "resource": {"kind": "X", "name": "x"}}}, ["spec.defaultBackend"]),
])
def test_ingress_validation(spec: JSON, fields: list[str]) -> None:
    assert _fields("Ingress.networking.k8s.io", _ingress(**copy.deepcopy(spec))) == fields


def test_nulls_become_what_go_makes_of_them() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": None}},
                  "spec": {"template": {"metadata": {"creationTimestamp": None, "labels": {"app": "d"}},
                                        "spec": {"containers": [{"name": "c", "image": None, "ports": [{"containerPort": None}]}]}}}}
    defaults.drop_null_fields(ssa.kind_schema("apps", "v1", "Deployment"), deployment)
    assert deployment["spec"]["template"]["metadata"] == {"labels": {"app": "d"}}  # omitempty: left out
    assert deployment["spec"]["template"]["spec"]["containers"] == [{"name": "c", "ports": [{"containerPort": 0}]}]  # required: zero
    assert deployment["metadata"]["labels"] == {"a": None}  # map values are not struct fields
    crd_default = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"},
                   "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"default": {"a": None}, "example": None, "type": "object"}}}]}}
    defaults.drop_null_fields(ssa.kind_schema("apiextensions.k8s.io", "v1", "CustomResourceDefinition"), crd_default)
    # Inside an open field (JSON) a null is a value; the field itself is a pointer, nil when null.
    assert crd_default["spec"]["versions"][0]["schema"]["openAPIV3Schema"] == {"default": {"a": None}, "type": "object"}


def test_sourceless_volumes_are_empty_dirs() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}],
                                               "volumes": [{"name": "a"}, {"name": "b", "emptyDir": None}, {"name": "c", "secret": {"secretName": "s"}}]}}
    defaults.apply("Pod", pod)
    assert [sorted(v) for v in pod["spec"]["volumes"]] == [["emptyDir", "name"], ["emptyDir", "name"], ["name", "secret"]]
