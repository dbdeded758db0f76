"""The bootstrap RBAC policy, reconciled at every boot as upstream's `rbac/bootstrap-roles` hook.

Roles: upstream's user-facing ones (`cluster-admin`, `admin`, `edit`, `view`, the last three
aggregated from `system:aggregate-to-*` by label), the discovery and self-review ones every
authenticated user gets (`system:discovery`, `system:basic-user`, `system:public-info-viewer`),
and one for each of edgekube's own components, which run in process as their own users
(runtime.py gives each its `LocalClient(user=...)`):

    user                          ClusterRole                      what it does
    system:kube-controller-manager system:kube-controller-manager  every controller
    system:kube-scheduler          system:kube-scheduler           binds pods
    system:node:<node> (system:nodes) system:node                  the kubelet
    system:kube-proxy              system:node-proxier             service proxy, network policy
    system:edgekube:servicelb      system:edgekube:servicelb       LoadBalancer status
    system:edgekube:pod-network    system:edgekube:pod-network     node CIDRs of the bridge
    system:kube-dns                system:kube-dns                 cluster DNS

The kubelets' role is bound to the group `system:nodes` (upstream leaves that to its Node
authorizer, which edgekube does not have; the role is as narrow as upstream's `system:node`).

Reconciling is upstream's, with the annotation `rbac.authorization.kubernetes.io/autoupdate`:
a missing object is created; an existing one whose annotation is not "false" gets what it lacks
(rules not already covered, aggregation selectors, labels and annotations, subjects) and keeps
what an administrator added; a binding whose roleRef changed (immutable) is replaced. An object
annotated "false" is left alone. An aggregated role's rules are left to the aggregation.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekube.api import errors
from edgekube.api.auth import escalation, rbac
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources, rest
from edgekube.store import errors as store_errors

JSON = dict[str, Any]
log = logging.getLogger(__name__)
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_EVENTS = [{"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]}]

# Component users (runtime.py builds their clients with these names).
CONTROLLER_MANAGER = "system:kube-controller-manager"
SCHEDULER = "system:kube-scheduler"
PROXY = "system:kube-proxy"
SERVICELB = "system:edgekube:servicelb"
POD_NETWORK = "system:edgekube:pod-network"
DNS = "system:kube-dns"
# The deployer of DATA/manifests: root's files on the node, applied with the administrator's
# rights (k3s's deploy controller runs as its admin too).
MANIFESTS = "system:edgekube:manifests"
NODES_GROUP = "system:nodes"


def node_user(node: str) -> user_mod.UserInfo:
    return user_mod.authenticated(f"system:node:{node}", groups=[NODES_GROUP])


def component_user(name: str) -> user_mod.UserInfo:
    return user_mod.authenticated(name)


def manifests_user() -> user_mod.UserInfo:
    return user_mod.authenticated(MANIFESTS, groups=[user_mod.SYSTEM_MASTERS])


def _rule(groups: list[str], resources_: list[str], verbs: list[str], names: list[str] | None = None) -> JSON:
    out: JSON = {"apiGroups": groups, "resources": resources_, "verbs": verbs}
    if names:
        out["resourceNames"] = names
    return out


def _urls(urls: list[str], verbs: list[str]) -> JSON:
    return {"nonResourceURLs": urls, "verbs": verbs}


def _role(name: str, rules: list[JSON], *, labels: dict[str, str] | None = None,
          aggregate: str | None = None) -> JSON:
    obj: JSON = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
                              "annotations": {AUTOUPDATE: "true"}},
                 "rules": rules}
    if aggregate is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate: "true"}}]}
    return obj


def _binding(name: str, role: str, subjects: list[tuple[str, str]]) -> JSON:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                         "annotations": {AUTOUPDATE: "true"}},
            "roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": rbac.GROUP, "kind": kind, "name": who} for kind, who in subjects]}


def cluster_roles() -> list[JSON]:
    """Upstream's bootstrap ClusterRoles that matter on an edge node, and edgekube's own."""
    agg = {AGGREGATE_TO + "admin": "true"}
    return [
        _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _role("system:discovery", [_urls(["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                          "/openapi/*", "/readyz", "/version", "/version/"], ["get"])]),
        _role("system:public-info-viewer", [_urls(["/healthz", "/livez", "/readyz", "/version", "/version/"], ["get"])]),
        _role("system:basic-user", [
            _rule(["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], ["create"]),
            _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"])]),
        _role("system:service-account-issuer-discovery", [_urls(
            ["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks",
             "/openid/v1/jwks/"], ["get"])]),
        _role("system:monitoring", [_urls(["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*",
                                           "/metrics", "/metrics/slis"], ["get"])]),
        _role("system:auth-delegator", [_rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
                                        _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"])]),
        _role("admin", [], aggregate="admin"),
        _role("edit", [], labels=agg, aggregate="edit"),
        _role("view", [], labels={AGGREGATE_TO + "edit": "true"}, aggregate="view"),
        _role("system:aggregate-to-admin", [
            _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
            _rule(["rbac.authorization.k8s.io"], ["rolebindings", "roles"], _ALL)], labels=agg),
        _role("system:aggregate-to-edit", [
            _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], _READ),
            _rule([""], ["serviceaccounts"], ["impersonate"]),
            _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], _WRITE),
            _rule([""], ["pods/eviction", "serviceaccounts/token"], ["create"]),
            _rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                         "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"],
                  _WRITE),
            _rule(["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                             "replicasets/scale", "statefulsets", "statefulsets/scale"], _WRITE),
            _rule(["autoscaling"], ["horizontalpodautoscalers"], _WRITE),
            _rule(["batch"], ["cronjobs", "jobs"], _WRITE),
            _rule(["policy"], ["poddisruptionbudgets"], _WRITE),
            _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], _WRITE),
            _rule(["coordination.k8s.io"], ["leases"], _ALL)], labels={AGGREGATE_TO + "edit": "true"}),
        _role("system:aggregate-to-view", [
            _rule([""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                         "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                         "services/status"], _READ),
            _rule([""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                         "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], _READ),
            _rule([""], ["namespaces"], _READ),
            _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
            _rule(["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                             "deployments/status", "replicasets", "replicasets/scale", "replicasets/status",
                             "statefulsets", "statefulsets/scale", "statefulsets/status"], _READ),
            _rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], _READ),
            _rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], _READ),
            _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], _READ),
            _rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], _READ)],
            labels={AGGREGATE_TO + "view": "true"}),
        # edgekube's components.
        _role(CONTROLLER_MANAGER, [
            # The garbage collector, the namespace deleter and the quota controller follow every
            # kind (custom ones too), as upstream's generic-garbage-collector and
            # namespace-controller roles.
            _rule(["*"], ["*"], ["get", "list", "watch", "patch", "update", "delete", "deletecollection"]),
            _rule([""], ["pods", "configmaps", "endpoints", "events", "persistentvolumeclaims", "serviceaccounts",
                         "secrets", "serviceaccounts/token", "pods/eviction"], ["create"]),
            _rule(["apps"], ["controllerrevisions", "replicasets"], ["create"]),
            _rule(["batch"], ["jobs"], ["create"]),
            _rule(["discovery.k8s.io"], ["endpointslices"], ["create"]),
            _rule(["events.k8s.io"], ["events"], ["create"]),
            _rule(["coordination.k8s.io"], ["leases"], ["create"]),
            _rule(["apiregistration.k8s.io"], ["apiservices"], ["create"]),
            _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
            _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"])]),
        _role(SCHEDULER, [
            *_EVENTS,
            _rule([""], ["nodes", "namespaces", "replicationcontrollers", "services", "persistentvolumeclaims",
                         "persistentvolumes"], _READ),
            _rule([""], ["pods"], ["delete", "get", "list", "watch"]),
            _rule([""], ["bindings", "pods/binding"], ["create"]),
            _rule([""], ["pods/status"], ["patch", "update"]),
            _rule(["apps"], ["replicasets", "statefulsets"], _READ),
            _rule(["policy"], ["poddisruptionbudgets"], _READ),
            _rule(["storage.k8s.io"], ["csidrivers", "csinodes", "csistoragecapacities", "storageclasses"], _READ),
            _rule(["coordination.k8s.io"], ["leases"], ["create", "get", "update"])]),
        _role("system:node", [
            *_EVENTS,
            _rule([""], ["nodes"], ["create", "get", "list", "watch", "patch", "update"]),
            _rule([""], ["nodes/status", "pods/status"], ["patch", "update"]),
            _rule([""], ["pods"], ["create", "delete", "get", "list", "watch"]),
            _rule([""], ["pods/eviction", "serviceaccounts/token"], ["create"]),
            _rule([""], ["configmaps", "secrets", "services", "endpoints", "namespaces"], _READ),
            _rule([""], ["persistentvolumeclaims", "persistentvolumes"], ["get"]),
            _rule([""], ["persistentvolumeclaims/status"], ["get", "patch", "update"]),
            _rule(["coordination.k8s.io"], ["leases"], ["create", "delete", "get", "patch", "update"]),
            _rule(["storage.k8s.io"], ["csidrivers", "csinodes", "volumeattachments"], _READ),
            _rule(["node.k8s.io"], ["runtimeclasses"], _READ),
            _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
            _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"])]),
        _role("system:node-proxier", [
            *_EVENTS,
            _rule([""], ["endpoints", "services"], ["list", "watch"]),
            _rule([""], ["nodes"], _READ),
            _rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
            # edgekube's proxy also enforces NetworkPolicy (pods and namespaces by label).
            _rule([""], ["pods", "namespaces"], ["list", "watch"]),
            _rule(["networking.k8s.io"], ["networkpolicies"], ["list", "watch"])]),
        _role(SERVICELB, [*_EVENTS, _rule([""], ["services"], _READ), _rule([""], ["services/status"], ["patch", "update"]),
                          _rule([""], ["nodes"], _READ)]),
        _role(POD_NETWORK, [_rule([""], ["nodes"], _READ)]),
        _role(DNS, [_rule([""], ["endpoints", "services", "namespaces", "pods"], ["list", "watch"]),
                    _rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
                    # The kube-dns Service and its endpoints it keeps in kube-system (net/dnsservice.py).
                    _rule([""], ["services", "endpoints"], ["get", "create", "update", "delete"]),
                    _rule(["discovery.k8s.io"], ["endpointslices"], ["get", "create", "update", "delete"])]),
    ]


def cluster_role_bindings() -> list[JSON]:
    return [
        _binding("cluster-admin", "cluster-admin", [("Group", user_mod.SYSTEM_MASTERS)]),
        _binding("system:discovery", "system:discovery", [("Group", user_mod.AUTHENTICATED)]),
        _binding("system:basic-user", "system:basic-user", [("Group", user_mod.AUTHENTICATED)]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [("Group", user_mod.AUTHENTICATED), ("Group", user_mod.UNAUTHENTICATED)]),
        _binding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery",
                 [("Group", user_mod.SERVICE_ACCOUNTS_GROUP)]),
        _binding("system:monitoring", "system:monitoring", [("Group", "system:monitoring")]),
        _binding(CONTROLLER_MANAGER, CONTROLLER_MANAGER, [("User", CONTROLLER_MANAGER)]),
        _binding(SCHEDULER, SCHEDULER, [("User", SCHEDULER)]),
        _binding("system:node", "system:node", [("Group", NODES_GROUP)]),
        _binding("system:node-proxier", "system:node-proxier", [("User", PROXY)]),
        _binding(SERVICELB, SERVICELB, [("User", SERVICELB)]),
        _binding(POD_NETWORK, POD_NETWORK, [("User", POD_NETWORK)]),
        _binding(DNS, DNS, [("User", DNS)]),
    ]


def _merged_meta(existing: JSON, expected: JSON) -> tuple[JSON, bool]:
    """Existing metadata with the expected labels and annotations it lacks (existing values win)."""
    meta = dict(existing.get("metadata") or {})
    changed = False
    for key in ("labels", "annotations"):
        have = dict(meta.get(key) or {})
        for k, v in (expected["metadata"].get(key) or {}).items():
            if k not in have:
                have[k] = v
                changed = True
        if have:
            meta[key] = have
    return meta, changed


def reconcile_role(existing: JSON, expected: JSON) -> JSON | None:
    """The role with what it lacks from `expected`; None when nothing is missing."""
    meta, changed = _merged_meta(existing, expected)
    out = {**existing, "metadata": meta}
    wanted_agg = expected.get("aggregationRule")
    if wanted_agg:
        have = list(((existing.get("aggregationRule") or {}).get("clusterRoleSelectors")) or [])
        for selector in wanted_agg["clusterRoleSelectors"]:
            if selector not in have:
                have.append(selector)
                changed = True
        out["aggregationRule"] = {"clusterRoleSelectors": have}
    else:
        rules = [r for r in existing.get("rules") or [] if isinstance(r, dict)]
        missing = [r for r in expected.get("rules") or [] if escalation.uncovered(rules, [r])]
        if missing:
            out["rules"] = rules + missing
            changed = True
    return out if changed else None


def reconcile_binding(existing: JSON, expected: JSON) -> JSON | None:
    meta, changed = _merged_meta(existing, expected)
    subjects = list(existing.get("subjects") or [])
    for subject in expected["subjects"]:
        if not any(s.get("kind") == subject["kind"] and s.get("name") == subject["name"] for s in subjects):
            subjects.append(subject)
            changed = True
    return {**existing, "metadata": meta, "subjects": subjects} if changed else None


def _protected(obj: JSON) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE) == "false"


async def reconcile(registry: rest.Registry) -> None:
    """Create or complete the bootstrap policy (the registry's own work: no user, no checks)."""
    catalog = registry.catalog
    roles_info = catalog.lookup(rbac.GROUP, "v1", "clusterroles")
    bindings_info = catalog.lookup(rbac.GROUP, "v1", "clusterrolebindings")
    assert roles_info is not None and bindings_info is not None
    work = [(roles_info, r, reconcile_role) for r in cluster_roles()]
    work += [(bindings_info, b, reconcile_binding) for b in cluster_role_bindings()]
    for info, expected, merge in work:
        try:
            await _reconcile_one(registry, info, expected, merge)
        except (errors.APIError, store_errors.StoreError) as exc:
            # Serving beats not serving (a damaged record, a full disk): the rest of the policy
            # still holds, and the next boot tries again.
            log.error("could not reconcile the bootstrap %s %s: %s", info.kind, expected["metadata"]["name"], exc)


async def _reconcile_one(registry: rest.Registry, info: resources.ResourceInfo, expected: JSON,
                         merge: Any) -> None:
    name = expected["metadata"]["name"]
    try:
        existing = registry.get(info, namespace=None, name=name)
    except errors.APIError as exc:
        if exc.code != 404:
            raise
        await registry.create(info, expected, namespace=None)
        return
    if _protected(existing):
        return
    if expected.get("roleRef") and existing.get("roleRef") != expected["roleRef"]:
        log.info("replacing %s %s: its roleRef is not the bootstrap one", info.kind, name)
        await registry.delete(info, namespace=None, name=name)
        await registry.create(info, expected, namespace=None)
        return
    wanted = merge(existing, expected)
    if wanted is not None:
        log.info("reconciling %s %s with the bootstrap policy", info.kind, name)
        await registry.update(info, wanted, namespace=None, name=name)
