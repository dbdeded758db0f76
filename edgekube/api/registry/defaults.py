"""Defaults, as upstream's generated defaulters and the default admission plugins apply them.

`apply(gk, obj)` fills in missing fields in place and is idempotent, so it runs on create and
on every update (an update that drops a defaulted field gets it back, as upstream). Pod
templates inside workloads get the same pod-spec defaults as pods; what upstream adds only by
admission to pods themselves (service account, default tolerations, priority) is added only to
pods; mirror pods (a kubelet's copies of its static pods) get no service account, as upstream's
ServiceAccount admission leaves them alone.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

from edgekube.api import apischema
from edgekube.api.registry import admissionconfig, crds

JSON = dict[str, Any]

# A kubelet's copy of one of its static pods carries the static pod's hash under this key.
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

_NOT_READY_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", 300),
    ("node.kubernetes.io/unreachable", 300),
)


def apply(gk: str, obj: JSON) -> None:
    fn = _DEFAULTERS.get(gk)
    if fn is not None:
        fn(obj)


# The status every object of a kind shows, as upstream's Go types encode an empty status: the
# fields without `omitempty` (and structs, which omitempty never drops) appear at their zero
# value, and the phases its defaulters set. Clients rely on them: the Python client refuses a
# ReplicaSetStatus without `replicas`, its tests check that a new Service has a status.
_ZERO_STATUS: dict[str, JSON] = {
    "Service": {"loadBalancer": {}},
    "ReplicationController": {"replicas": 0},
    "Ingress.networking.k8s.io": {"loadBalancer": {}},
    "Namespace": {"phase": "Active"},
    "PersistentVolumeClaim": {"phase": "Pending"},
    "PersistentVolume": {"phase": "Pending"},
    "ResourceQuota": {},
    "Deployment.apps": {},
    "ReplicaSet.apps": {"replicas": 0},
    "DaemonSet.apps": {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0},
    "StatefulSet.apps": {"replicas": 0, "availableReplicas": 0},
    "Job.batch": {},
    "CronJob.batch": {},
    "HorizontalPodAutoscaler.autoscaling": {"desiredReplicas": 0},
}


def status(gk: str, obj: JSON) -> None:
    """Fill in the zero status of `obj`'s kind (upstream's encoding of an empty status)."""
    zero = _ZERO_STATUS.get(gk)
    if zero is None:
        return
    current = obj.get("status")
    if not isinstance(current, dict):
        current = {}
        obj["status"] = current
    for k, v in zero.items():
        if current.get(k) is None:
            current[k] = copy.deepcopy(v)


_ZERO_SCALARS: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}


def drop_null_fields(schema: JSON | None, value: Any) -> None:
    """Struct fields of a built-in kind that are null, at any depth, become what Go makes of
    them: a null decodes into the field's zero value, which Go's encoder leaves out (omitempty)
    or writes (a required scalar: "", 0, false). So `metadata: {creationTimestamp: null}` in a
    pod template (what clients re-encoding through Go types send) is the same template as none,
    and no spec change. Map values, list items and open fields (RawExtension, JSON) keep their
    nulls."""
    s = apischema.resolve(schema)
    if s is None or s.get("x-kubernetes-preserve-unknown-fields"):
        return
    props = s.get("properties")
    if isinstance(value, dict) and isinstance(props, dict):
        required = s.get("required") or ()
        for key in [k for k, v in value.items() if v is None and k in props]:
            zero = _ZERO_SCALARS.get(str((apischema.resolve(props[key]) or {}).get("type")))
            if key in required and zero is not None:
                value[key] = zero
            else:
                del value[key]
        for key, item in value.items():
            if key in props:
                drop_null_fields(props[key], item)
        return
    if isinstance(value, dict) and isinstance(s.get("additionalProperties"), dict):
        for item in value.values():
            drop_null_fields(s["additionalProperties"], item)
        return
    items = s.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        for item in value:
            drop_null_fields(items, item)


def with_status(gk: str, obj: JSON) -> JSON:
    """`obj` as read: with its kind's zero status, in a copy when it lacks any of it (objects
    stored before their kind had one; the object given may be shared, so is never changed)."""
    zero = _ZERO_STATUS.get(gk)
    current = obj.get("status")
    if zero is None or (isinstance(current, dict) and all(current.get(k) is not None for k in zero)):
        return obj
    out = {**obj, "status": dict(current) if isinstance(current, dict) else {}}
    status(gk, out)
    return out


def job_selector(obj: JSON) -> None:
    """A Job without manualSelector gets a selector on its own uid (upstream's job strategy)."""
    spec = obj.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    meta = obj.get("metadata") or {}
    uid = meta.get("uid", "")
    name = meta.get("name", "")
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = tmeta.get("labels") or {}
    labels.setdefault("batch.kubernetes.io/controller-uid", uid)
    labels.setdefault("batch.kubernetes.io/job-name", name)
    labels.setdefault("controller-uid", uid)
    labels.setdefault("job-name", name)
    tmeta["labels"] = labels


# --- pods ----------------------------------------------------------------------------------


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or no tag, IfNotPresent for a tag or a digest."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _http_get(http: Any) -> None:
    if isinstance(http, dict):
        http["path"] = http.get("path") or "/"
        http["scheme"] = http.get("scheme") or "HTTP"


def _probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    # As upstream's SetDefaults_Probe: an unset or zero field gets the default.
    for key, default in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        if not probe.get(key):
            probe[key] = default
    _http_get(probe.get("httpGet"))
    grpc = probe.get("grpc")
    if isinstance(grpc, dict):
        grpc.setdefault("service", "")


def _container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    image = c.get("image")
    if isinstance(image, str) and image:
        c.setdefault("imagePullPolicy", image_pull_policy(image))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    res = c.get("resources")
    if not isinstance(res, dict):
        res = {}
        c["resources"] = res
    limits = res.get("limits")
    if isinstance(limits, dict) and limits:
        requests = res.get("requests")
        if not isinstance(requests, dict):
            requests = {}
        for k, v in limits.items():
            requests.setdefault(k, v)
        res["requests"] = requests
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        if isinstance(e, dict):
            ref = (e.get("valueFrom") or {}).get("fieldRef")
            if isinstance(ref, dict):
                ref.setdefault("apiVersion", "v1")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(key))
    hooks = c.get("lifecycle")
    if isinstance(hooks, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(hooks.get(hook), dict):
                _http_get(hooks[hook].get("httpGet"))


def _volume(v: Any) -> None:
    if not isinstance(v, dict):
        return
    if all(value is None for key, value in v.items() if key != "name"):
        # A volume that names no source is an emptyDir (upstream's SetDefaults_Volume).
        v["emptyDir"] = {}
    for kind in ("configMap", "secret", "downwardAPI", "projected"):
        src = v.get(kind)
        if isinstance(src, dict):
            src.setdefault("defaultMode", 420)
    hp = v.get("hostPath")
    if isinstance(hp, dict):
        hp.setdefault("type", "")
    src = v.get("downwardAPI")
    if isinstance(src, dict):
        for item in src.get("items") or []:
            ref = item.get("fieldRef") if isinstance(item, dict) else None
            if isinstance(ref, dict):
                ref.setdefault("apiVersion", "v1")


def pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            _container(c)
    for v in spec.get("volumes") or []:
        _volume(v)


def _pod_template(template: Any) -> None:
    if not isinstance(template, dict):
        return
    pod_spec(template.setdefault("spec", {}))


def _pod(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    # Admission plugins: ServiceAccount, DefaultTolerationSeconds (Priority is the registry's: it
    # reads PriorityClasses).
    if MIRROR_POD_ANNOTATION not in ((obj.get("metadata") or {}).get("annotations") or {}):
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = sa
        spec["serviceAccount"] = sa
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    for key, seconds in _NOT_READY_TOLERATIONS:
        # A toleration without a key tolerates the taint too (a static pod's of every NoExecute).
        if not any(isinstance(t, dict) and t.get("key") in (key, None, "") and t.get("effect") in (None, "", "NoExecute")
                   for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    spec["tolerations"] = tolerations


# --- workloads -----------------------------------------------------------------------------


def _child(parent: JSON, key: str) -> JSON:
    """parent[key] as a dict, made (or replaced, when it is not a dict) if need be."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _rolling_update(spec: JSON, key: str, **values: Any) -> None:
    strategy = _child(spec, key)
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = _child(strategy, "rollingUpdate")
        for k, v in values.items():
            ru.setdefault(k, v)


def _deployment(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _rolling_update(spec, "strategy", maxUnavailable="25%", maxSurge="25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _pod_template(spec.setdefault("template", {}))


def _replicaset(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _pod_template(spec.setdefault("template", {}))


def _replicationcontroller(obj: JSON) -> None:
    """Upstream's SetDefaults_ReplicationController: an empty selector, and empty labels, take the
    template's labels; replicas 1. Runs on updates too, as upstream's decoder defaults both."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict):
        labels = (template.get("metadata") or {}).get("labels") if isinstance(template.get("metadata"), dict) else None
        if isinstance(labels, dict) and labels:
            if not spec.get("selector"):
                spec["selector"] = dict(labels)
            meta = _child(obj, "metadata")
            if not meta.get("labels"):
                meta["labels"] = dict(labels)
        _pod_template(template)
    spec.setdefault("replicas", 1)


def _apiservice(obj: JSON) -> None:
    service = (obj.get("spec") or {}).get("service") if isinstance(obj.get("spec"), dict) else None
    if isinstance(service, dict):
        service.setdefault("port", 443)


def _daemonset(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    _rolling_update(spec, "updateStrategy", maxUnavailable=1, maxSurge=0)
    spec.setdefault("revisionHistoryLimit", 10)
    _pod_template(spec.setdefault("template", {}))


def _statefulset(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    _rolling_update(spec, "updateStrategy", partition=0)
    spec.setdefault("revisionHistoryLimit", 10)
    policy = _child(spec, "persistentVolumeClaimRetentionPolicy")
    policy.setdefault("whenDeleted", "Retain")
    policy.setdefault("whenScaled", "Retain")
    for claim in spec.get("volumeClaimTemplates") or []:
        if isinstance(claim, dict):
            claim.setdefault("apiVersion", "v1")
            claim.setdefault("kind", "PersistentVolumeClaim")
            claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    _pod_template(spec.setdefault("template", {}))


def _job_spec(spec: JSON) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    else:
        spec.setdefault("podReplacementPolicy", "Failed")
    _pod_template(spec.setdefault("template", {}))


def _job(obj: JSON) -> None:
    _job_spec(obj.setdefault("spec", {}))


def _cronjob(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    template = spec.setdefault("jobTemplate", {})
    if isinstance(template, dict):
        _job_spec(template.setdefault("spec", {}))


# --- core ----------------------------------------------------------------------------------


def _service(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if stype == "ExternalName":
        return
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if p.get("targetPort") in (None, 0, ""):
                p["targetPort"] = p.get("port")
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec.get("clusterIP") != "None" or spec.get("selector"):
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")


def _secret(obj: JSON) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = {}
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data


def _namespace(obj: JSON) -> None:
    meta = obj.setdefault("metadata", {})
    name = meta.get("name")
    if name:
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = {}
        labels["kubernetes.io/metadata.name"] = name
        meta["labels"] = labels
    obj.setdefault("spec", {})


def _endpoints(obj: JSON) -> None:
    for subset in obj.get("subsets") or []:
        if isinstance(subset, dict):
            for p in subset.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def _endpointslice(obj: JSON) -> None:
    for p in obj.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            p.setdefault("name", "")


def _pvc(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")


def _pv(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")


def _storageclass(obj: JSON) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _priorityclass(obj: JSON) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _limitrange(obj: JSON) -> None:
    # Upstream's SetDefaults_LimitRangeItem: a Container max is the default limit, and a default
    # limit, else a min, the default request.
    for item in (obj.get("spec") or {}).get("limits") or []:
        if not isinstance(item, dict) or item.get("type") != "Container":
            continue
        default, request, top, bottom = (
            v if isinstance(v, dict) else {} for v in (item.get(k) for k in ("default", "defaultRequest", "max", "min"))
        )
        for source, target in ((top, default), (default, request), (bottom, request)):
            for k, v in source.items():
                target.setdefault(k, v)
        if default:
            item["default"] = default
        if request:
            item["defaultRequest"] = request


def _binding_subjects(obj: JSON) -> None:
    for s in obj.get("subjects") or []:
        if isinstance(s, dict) and s.get("kind") in ("User", "Group"):
            s.setdefault("apiGroup", "rbac.authorization.k8s.io")


def _hpa(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]


def _networkpolicy(obj: JSON) -> None:
    """Upstream's SetDefaults_NetworkPolicy(Port): policy types from the rules (Ingress, plus
    Egress when there are egress rules), TCP for a port's protocol; the podSelector is a
    struct in Go, so an absent one reads back as `{}`."""
    spec = _child(obj, "spec")
    spec.setdefault("podSelector", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule or {}).get("ports") or [] if isinstance(rule, dict) else []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _pod_template_kind(obj: JSON) -> None:
    _pod_template(obj.get("template"))


_DEFAULTERS: dict[str, Callable[[JSON], None]] = {
    "Pod": _pod,
    "PodTemplate": _pod_template_kind,
    "Service": _service,
    "Secret": _secret,
    "Namespace": _namespace,
    "Endpoints": _endpoints,
    "PersistentVolumeClaim": _pvc,
    "PersistentVolume": _pv,
    "LimitRange": _limitrange,
    "Deployment.apps": _deployment,
    "ReplicaSet.apps": _replicaset,
    "ReplicationController": _replicationcontroller,
    "APIService.apiregistration.k8s.io": _apiservice,
    "DaemonSet.apps": _daemonset,
    "StatefulSet.apps": _statefulset,
    "Job.batch": _job,
    "CronJob.batch": _cronjob,
    "EndpointSlice.discovery.k8s.io": _endpointslice,
    "StorageClass.storage.k8s.io": _storageclass,
    "PriorityClass.scheduling.k8s.io": _priorityclass,
    "CustomResourceDefinition.apiextensions.k8s.io": crds.defaults,
    "HorizontalPodAutoscaler.autoscaling": _hpa,
    "NetworkPolicy.networking.k8s.io": _networkpolicy,
    "RoleBinding.rbac.authorization.k8s.io": _binding_subjects,
    "ClusterRoleBinding.rbac.authorization.k8s.io": _binding_subjects,
    **admissionconfig.DEFAULTERS,
}
