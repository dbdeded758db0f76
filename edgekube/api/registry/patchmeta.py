"""Strategic-merge-patch metadata for the built-in kinds.

Upstream Kubernetes reads how each list merges from Go struct tags (`patchStrategy`,
`patchMergeKey`, and `retainKeys`) on the typed API structs. We have no typed structs, so the
same facts live here as a small tree of frozen `Node`s keyed by JSON field name. Only fields that
carry a strategy, or lead to one, appear: everything else is a plain map (merged key by key) or
an atomic list (replaced whole), which is what the patch code does when a field has no node.

A `Node` describes a field's value. For a list of objects, its `fields` describe each element
(as the Go element type does), so `containers` has `merge_key="name"` and `fields["env"]`.

Shared shapes (ObjectMeta, PodSpec, Container) are built once and reused by every kind that
embeds them, so a fix to the PodSpec reaches Pods, every workload's `spec.template.spec` and
CronJob's `spec.jobTemplate.spec.template.spec` at once.

Deliberate departures from what a reader might expect, all matching upstream:
- `tolerations`, `envFrom`, `readinessGates`, Node `spec.taints` and ServiceAccount
  `imagePullSecrets` carry no strategy upstream, so they are replaced whole.
- Service `spec.ports` merges on `port` alone (upstream's patchMergeKey), even though the
  list-map key for server-side apply is (port, protocol).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

_NO_FIELDS: Mapping[str, Node] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Node:
    """How one field's value is patched.

    `merge` is patchStrategy "merge": a list merges with the original instead of replacing it
    (by `merge_key` for lists of objects, by value for lists of scalars). `retain_keys` is
    patchStrategy "retainKeys": the patch may send `$retainKeys` to clear fields of a union
    (Deployment strategy, volume source) that it did not name.
    """

    # A read-only view, so the tree really is immutable; dataclasses wants a factory for it.
    fields: Mapping[str, Node] = dataclasses.field(default_factory=lambda: _NO_FIELDS)
    merge: bool = False
    merge_key: str = ""
    retain_keys: bool = False

    def child(self, name: str) -> Node | None:
        return self.fields.get(name)


def _node(
    fields: Mapping[str, Node] | None = None,
    *,
    merge: bool = False,
    merge_key: str = "",
    retain_keys: bool = False,
) -> Node:
    frozen = types.MappingProxyType(dict(fields)) if fields else _NO_FIELDS
    return Node(fields=frozen, merge=merge, merge_key=merge_key, retain_keys=retain_keys)


def _merge_by(key: str, fields: Mapping[str, Node] | None = None, *, retain_keys: bool = False) -> Node:
    return _node(fields, merge=True, merge_key=key, retain_keys=retain_keys)


_PRIMITIVE_SET = _node(merge=True)  # a list of scalars unioned with the original
_CONDITIONS = _merge_by("type")

OBJECT_META = _node({
    "finalizers": _PRIMITIVE_SET,
    "ownerReferences": _merge_by("uid"),
})

CONTAINER = _node({
    "ports": _merge_by("containerPort"),
    "env": _merge_by("name"),
    "volumeMounts": _merge_by("mountPath"),
    "volumeDevices": _merge_by("devicePath"),
})

POD_SPEC = _node({
    "volumes": _merge_by("name", retain_keys=True),
    "initContainers": _merge_by("name", CONTAINER.fields),
    "containers": _merge_by("name", CONTAINER.fields),
    # EphemeralContainerCommon carries the same tags as Container.
    "ephemeralContainers": _merge_by("name", CONTAINER.fields),
    "imagePullSecrets": _merge_by("name"),
    "hostAliases": _merge_by("ip"),
    "topologySpreadConstraints": _merge_by("topologyKey"),
    "schedulingGates": _merge_by("name"),
    "resourceClaims": _merge_by("name", retain_keys=True),
})

POD_STATUS = _node({
    "conditions": _CONDITIONS,
    "podIPs": _merge_by("ip"),
    "hostIPs": _merge_by("ip"),
    "resourceClaimStatuses": _merge_by("name", retain_keys=True),
})

POD_TEMPLATE_SPEC = _node({"metadata": OBJECT_META, "spec": POD_SPEC})

_CONDITIONS_STATUS = _node({"conditions": _CONDITIONS})


def _object(**fields: Node) -> Node:
    """A top-level kind: ObjectMeta plus the given fields."""
    return _node({"metadata": OBJECT_META, **fields})


def _workload(**spec_fields: Node) -> Node:
    return _object(
        spec=_node({"template": POD_TEMPLATE_SPEC, **spec_fields}),
        status=_CONDITIONS_STATUS,
    )


JOB_SPEC = _node({"template": POD_TEMPLATE_SPEC})

_PLAIN = _object()

# Keyed by `ResourceInfo.gk`. Kinds without list strategies still get ObjectMeta's, so that
# finalizers and ownerReferences merge on every built-in kind.
_BY_GK: Mapping[str, Node] = types.MappingProxyType({
    "Pod": _object(spec=POD_SPEC, status=POD_STATUS),
    "Deployment.apps": _workload(strategy=_node(retain_keys=True)),
    "ReplicaSet.apps": _workload(),
    "DaemonSet.apps": _workload(),
    "StatefulSet.apps": _workload(),
    "Job.batch": _object(spec=JOB_SPEC, status=_CONDITIONS_STATUS),
    "CronJob.batch": _object(spec=_node({
        "jobTemplate": _node({"metadata": OBJECT_META, "spec": JOB_SPEC}),
    })),
    "Service": _object(
        spec=_node({"ports": _merge_by("port")}),
        status=_CONDITIONS_STATUS,
    ),
    "Node": _object(
        spec=_node({"podCIDRs": _PRIMITIVE_SET}),
        status=_node({"addresses": _merge_by("type"), "conditions": _CONDITIONS}),
    ),
    "ServiceAccount": _object(secrets=_merge_by("name")),
    "Namespace": _object(status=_CONDITIONS_STATUS),
    "PersistentVolumeClaim": _object(status=_CONDITIONS_STATUS),
    "Endpoints": _PLAIN,
    "ConfigMap": _PLAIN,
    "Secret": _PLAIN,
    "Event": _PLAIN,
    "PersistentVolume": _PLAIN,
    "ResourceQuota": _PLAIN,
    "LimitRange": _PLAIN,
    "ControllerRevision.apps": _PLAIN,
    "Lease.coordination.k8s.io": _PLAIN,
    "EndpointSlice.discovery.k8s.io": _PLAIN,
    "StorageClass.storage.k8s.io": _PLAIN,
    "Role.rbac.authorization.k8s.io": _PLAIN,
    "RoleBinding.rbac.authorization.k8s.io": _PLAIN,
    "ClusterRole.rbac.authorization.k8s.io": _PLAIN,
    "ClusterRoleBinding.rbac.authorization.k8s.io": _PLAIN,
    # The scale subresource: spec.replicas and status only, nothing list-shaped.
    "Scale.autoscaling": _node(),
})


def meta_for(gk: str) -> Node | None:
    """The patch metadata of a kind (`Pod`, `Deployment.apps`), or None when it has none.

    None (custom resources, unknown kinds) means every list is replaced whole, which is what
    upstream's JSON-schema-less merge does.
    """
    return _BY_GK.get(gk)
