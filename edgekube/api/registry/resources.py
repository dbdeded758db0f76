"""The catalog of resources this API server serves.

One `ResourceInfo` per resource (group, version, plural) says everything the generic REST code,
discovery, OpenAPI and the store need to know: its kind, whether it is namespaced, its short
names, verbs and subresources, and which storage tier holds it. Behaviour that differs per kind
(defaults, validation, Table columns) lives in the modules named for that job and is keyed by
`ResourceInfo.gk`.

Store keys are `/<group>/<resource>/<namespace>/<name>` for namespaced resources and
`/<group>/<resource>/<name>` for cluster-scoped ones; the core group is spelled `core` so that
no key has an empty segment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from edgekube.api.registry import crds

# Kinds whose upstream registry sets ReturnDeletedObject: a DELETE that removes the object at once
# answers with the object (the clients' generated code decodes it as that kind); every other kind
# answers a Status naming it. An object only marked for deletion (finalizers, a grace period) is
# returned whatever its kind.
_RETURNS_DELETED_OBJECT = frozenset({
    "Pod", "Service", "ServiceAccount", "Namespace", "PersistentVolume", "PersistentVolumeClaim",
    "ResourceQuota", "PodTemplate", "StorageClass.storage.k8s.io", "CSIDriver.storage.k8s.io",
    "CSINode.storage.k8s.io", "VolumeAttachment.storage.k8s.io",
})

STANDARD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclasses.dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    # Subresources served under /<name>/<sub>: "status", "scale", "binding", ...
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Volatile kinds (Leases, Events) live in the memory tier and never touch flash per write.
    memory_tier: bool = False
    # Set for the kinds a CustomResourceDefinition serves.
    custom: crds.CustomResource | None = None


    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.custom.list_kind if self.custom is not None else self.kind + "List"

    @property
    def gk(self) -> str:
        """Group and kind, as `Kind.group` (`Pod`, `Deployment.apps`): the key for per-kind code."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def returns_deleted_object(self) -> bool:
        return self.custom is None and self.gk in _RETURNS_DELETED_OBJECT

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def key_group(self) -> str:
        return self.group or "core"

    def key_prefix(self, namespace: str | None = None) -> str:
        """Prefix of every key of this resource, or of one namespace's keys when given."""
        base = f"/{self.key_group}/{self.plural}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, name: str, namespace: str | None = None) -> str:
        if self.namespaced:
            return f"/{self.key_group}/{self.plural}/{namespace}/{name}"
        return f"/{self.key_group}/{self.plural}/{name}"

    def url_path(self, name: str | None = None, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


def _r(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    sub: Iterable[str] = (),
    categories: Iterable[str] = (),
    verbs: tuple[str, ...] = STANDARD_VERBS,
    memory_tier: bool = False,
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=tuple(short),
        verbs=verbs,
        subresources=tuple(sub),
        categories=tuple(categories),
        memory_tier=memory_tier,
    )


_ALL = ("all",)

BUILTIN: tuple[ResourceInfo, ...] = (
    # core/v1
    _r("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",), sub=("status", "finalize"),
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "Pod", "pods", short=("po",), sub=("status", "binding", "log"), categories=_ALL),
    _r("", "v1", "Service", "services", short=("svc",), sub=("status",), categories=_ALL,
       verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "Endpoints", "endpoints", short=("ep",)),
    _r("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _r("", "v1", "Secret", "secrets"),
    _r("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",), sub=("token",)),
    _r("", "v1", "Node", "nodes", namespaced=False, short=("no",), sub=("status",)),
    _r("", "v1", "Event", "events", short=("ev",), memory_tier=True),
    _r("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False, short=("pv",), sub=("status",)),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=("status",)),
    _r("", "v1", "ResourceQuota", "resourcequotas", short=("quota",), sub=("status",)),
    _r("", "v1", "LimitRange", "limitranges", short=("limits",)),
    _r("", "v1", "ReplicationController", "replicationcontrollers", short=("rc",), sub=("status", "scale"),
       categories=_ALL),
    # apps/v1
    _r("apps", "v1", "Deployment", "deployments", short=("deploy",), sub=("status", "scale"), categories=_ALL),
    _r("apps", "v1", "ReplicaSet", "replicasets", short=("rs",), sub=("status", "scale"), categories=_ALL),
    _r("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), sub=("status",), categories=_ALL),
    _r("apps", "v1", "StatefulSet", "statefulsets", short=("sts",), sub=("status", "scale"), categories=_ALL),
    _r("apps", "v1", "ControllerRevision", "controllerrevisions"),
    # batch/v1
    _r("batch", "v1", "Job", "jobs", sub=("status",), categories=_ALL),
    _r("batch", "v1", "CronJob", "cronjobs", short=("cj",), sub=("status",), categories=_ALL),
    # coordination.k8s.io/v1
    _r("coordination.k8s.io", "v1", "Lease", "leases", memory_tier=True),
    # discovery.k8s.io/v1
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    # scheduling.k8s.io/v1
    _r("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False, short=("pc",)),
    # storage.k8s.io/v1
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
    # autoscaling/v2
    _r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=("hpa",), sub=("status",),
       categories=_ALL),
    _r("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=("hpa",), sub=("status",)),
    # authorization.k8s.io/v1 and authentication.k8s.io/v1: create-only reviews, never stored.
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", namespaced=False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", namespaced=False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", verbs=("create",)),
    _r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False,
       verbs=("create",)),
    _r("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, verbs=("create",)),
    # apiextensions.k8s.io/v1
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False,
       short=("crd", "crds"), sub=("status",), categories=("api-extensions",)),
    # apiregistration.k8s.io/v1: the local entries for every served group-version (aggregation
    # itself is not done: see edgekube/controllers/apiservices.py).
    _r("apiregistration.k8s.io", "v1", "APIService", "apiservices", namespaced=False, sub=("status",),
       categories=("api-extensions",)),
    # networking.k8s.io/v1: stored and shown; no ingress controller ships with edgekube (as upstream).
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",), sub=("status",)),
    # Enforced by the network component (edgekube/net/policy.py), in its nftables table.
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    # admissionregistration.k8s.io/v1: enforced by the registry's admission chain (registry/chain.py).
    _r("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
       namespaced=False, categories=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
       namespaced=False, categories=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
       namespaced=False, sub=("status",), categories=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings",
       namespaced=False, categories=("api-extensions",)),
    # rbac.authorization.k8s.io/v1: stored now, enforced by the RBAC issue.
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
)


def custom_info(cr: crds.CustomResource) -> ResourceInfo:
    sub = tuple(name for name, on in (("status", cr.status), ("scale", cr.scale is not None)) if on)
    return ResourceInfo(
        group=cr.group,
        version=cr.version,
        kind=cr.kind,
        plural=cr.plural,
        singular=cr.singular,
        namespaced=cr.namespaced,
        short_names=cr.short_names,
        subresources=sub,
        categories=cr.categories,
        custom=cr,
    )


class Catalog:
    """Lookup of served resources by URL coordinates and by kind.

    `generation` moves whenever the set of served resources changes (CRDs come and go), so
    documents built from the catalog (OpenAPI) know when to rebuild.
    """

    def __init__(self, resources: Iterable[ResourceInfo] = BUILTIN) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_kind: dict[tuple[str, str], ResourceInfo] = {}
        self._order: list[ResourceInfo] = []
        self.generation = 0
        for info in resources:
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._by_path[(info.group, info.version, info.plural)] = info
        self._by_kind[(info.group_version, info.kind)] = info
        self._order.append(info)
        self.generation += 1

    def set_custom(self, infos: Iterable[ResourceInfo]) -> None:
        """Serve exactly `infos` as the custom resources (called after every CRD change)."""
        for info in [i for i in self._order if i.custom is not None]:
            self._order.remove(info)
            self._by_path.pop((info.group, info.version, info.plural), None)
            self._by_kind.pop((info.group_version, info.kind), None)
        for info in infos:
            self.add(info)
        self.generation += 1

    def by_key(self, key: str) -> ResourceInfo | None:
        """The resource a store key belongs to (`/apps/deployments/ns/name`), any version."""
        parts = key.split("/")
        if len(parts) < 4:
            return None
        group = "" if parts[1] == "core" else parts[1]
        for info in self._order:
            if info.group == group and info.plural == parts[2]:
                return info
        return None

    def builtin(self, group: str, plural: str) -> bool:
        return any(i.custom is None and i.group == group and i.plural == plural for i in self._order)

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((api_version, kind))

    def all(self) -> list[ResourceInfo]:
        return list(self._order)

    def groups(self) -> dict[str, list[str]]:
        """Group name to its versions, in the order resources were added (core group first)."""
        out: dict[str, list[str]] = {}
        for info in self._order:
            versions = out.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._order if i.group == group and i.version == version]
