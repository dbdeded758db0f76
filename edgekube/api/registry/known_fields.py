"""Which fields each built-in kind knows, for `fieldValidation` (Strict, Warn, Ignore).

Until full schemas land (the API-completeness issue brings them from the OpenAPI definitions),
unknown-field detection covers what users mistype most and what upstream rejects the same way:
the top-level fields of every built-in kind and the fields of `metadata`. Deeper typos pass
through untouched (as with `fieldValidation=Ignore`), never rejected wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_COMMON = frozenset({"apiVersion", "kind", "metadata"})
_SPEC_STATUS = _COMMON | {"spec", "status"}

TOP_LEVEL: dict[str, frozenset[str]] = {
    "Namespace": _SPEC_STATUS,
    "Pod": _SPEC_STATUS,
    "Service": _SPEC_STATUS,
    "Endpoints": _COMMON | {"subsets"},
    "ConfigMap": _COMMON | {"data", "binaryData", "immutable"},
    "Secret": _COMMON | {"data", "stringData", "type", "immutable"},
    "ServiceAccount": _COMMON | {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "Node": _SPEC_STATUS,
    "Event": _COMMON
    | {
        "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
        "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance",
    },
    "PersistentVolume": _SPEC_STATUS,
    "PersistentVolumeClaim": _SPEC_STATUS,
    "ResourceQuota": _SPEC_STATUS,
    "LimitRange": _COMMON | {"spec"},
    "Deployment.apps": _SPEC_STATUS,
    "ReplicaSet.apps": _SPEC_STATUS,
    "DaemonSet.apps": _SPEC_STATUS,
    "StatefulSet.apps": _SPEC_STATUS,
    "ControllerRevision.apps": _COMMON | {"data", "revision"},
    "Job.batch": _SPEC_STATUS,
    "CronJob.batch": _SPEC_STATUS,
    "Lease.coordination.k8s.io": _COMMON | {"spec"},
    "EndpointSlice.discovery.k8s.io": _COMMON | {"addressType", "endpoints", "ports"},
    "StorageClass.storage.k8s.io": _COMMON
    | {"provisioner", "parameters", "reclaimPolicy", "mountOptions", "allowVolumeExpansion", "volumeBindingMode", "allowedTopologies"},
    "Role.rbac.authorization.k8s.io": _COMMON | {"rules"},
    "ClusterRole.rbac.authorization.k8s.io": _COMMON | {"rules", "aggregationRule"},
    "RoleBinding.rbac.authorization.k8s.io": _COMMON | {"subjects", "roleRef"},
    "ClusterRoleBinding.rbac.authorization.k8s.io": _COMMON | {"subjects", "roleRef"},
}

OBJECT_META = frozenset(
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    }
)


def unknown_fields(gk: str, obj: Mapping[str, Any]) -> list[str]:
    """Dotted paths of fields the kind does not have, in the order they appear."""
    known = TOP_LEVEL.get(gk)
    out: list[str] = []
    if known is not None:
        out.extend(k for k in obj if k not in known)
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        out.extend(f"metadata.{k}" for k in meta if k not in OBJECT_META)
    return out
