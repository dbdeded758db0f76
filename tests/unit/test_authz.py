"""Authorization: request attributes as upstream's RequestInfo, RBAC rules and the index, the
escalation check, aggregation, impersonation, the reviews, the token file, and the in-process
client refused through the same gate as HTTP (a real Registry over a real Store)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, reviews
from edgekube.api.auth import (
    aggregation,
    attributes,
    authz,
    bootstrap,
    escalation,
    impersonation,
    rbac,
    tokenfile,
)
from edgekube.api.auth import policy as policy_mod
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources, rest
from edgekube.client.local import LocalClient
from edgekube.store import store as store_mod

JSON = dict[str, Any]
BOB = user_mod.authenticated("bob")
ADMIN = user_mod.authenticated("kubernetes-admin", groups=[user_mod.SYSTEM_MASTERS])


def http(method: str, path: str, **query: str) -> attributes.Attributes:
    return attributes.from_http(BOB, method=method, path=path, query=query)


# --- attributes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "query", "want"), [
    ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, ("watch", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "0"}, ("list", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"fieldSelector": "metadata.name=x"}, ("list", "", "pods", "", "ns", "x")),
    ("GET", "/api/v1/namespaces/ns/pods/x", {}, ("get", "", "pods", "", "ns", "x")),
    ("HEAD", "/api/v1/namespaces/ns/pods/x", {}, ("get", "", "pods", "", "ns", "x")),
    ("GET", "/api/v1/namespaces/ns/pods/x/log", {}, ("get", "", "pods", "log", "ns", "x")),
    ("POST", "/api/v1/namespaces/ns/pods/x/binding", {}, ("create", "", "pods", "binding", "ns", "x")),
    ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token", {}, ("create", "", "serviceaccounts", "token", "ns", "sa")),
    ("POST", "/api/v1/namespaces/ns/pods", {}, ("create", "", "pods", "", "ns", "")),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {}, ("update", "apps", "deployments", "scale", "ns", "d")),
    ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/status", {}, ("patch", "apps", "deployments", "status", "ns", "d")),
    ("DELETE", "/api/v1/namespaces/ns/pods/x", {}, ("delete", "", "pods", "", "ns", "x")),
    ("DELETE", "/api/v1/namespaces/ns/pods", {}, ("deletecollection", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
    ("GET", "/api/v1/nodes/n1", {}, ("get", "", "nodes", "", "", "n1")),
    # The Namespace object is in its own namespace, with its status and finalize subresources.
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "namespaces", "finalize", "ns", "ns")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ("GET", "/api/v1/proxy/namespaces/ns/pods/x/a/b", {}, ("proxy", "", "pods", "", "ns", "x")),
])
def test_resource_attributes_are_upstreams(method: str, path: str, query: dict[str, str],
                                           want: tuple[str, ...]) -> None:
    a = attributes.from_http(BOB, method=method, path=path, query=query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api"), ("GET", "/api/v1"), ("GET", "/apis"), ("GET", "/apis/apps"), ("GET", "/apis/apps/v1"),
    ("GET", "/openapi/v2"), ("GET", "/version"), ("GET", "/healthz"), ("POST", "/logs"),
])
def test_non_resource_paths(method: str, path: str) -> None:
    a = attributes.from_http(BOB, method=method, path=path, query={})
    assert not a.resource_request and a.path == path and a.verb == method.lower()


def test_forbidden_is_upstreams_status() -> None:
    err = attributes.forbidden(http("GET", "/api/v1/namespaces/ns/pods/x"))
    assert err.code == 403 and err.reason == "Forbidden"
    assert err.message == 'pods "x" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "ns"'
    assert err.details == {"name": "x", "kind": "pods"}
    err = attributes.forbidden(http("GET", "/apis/apps/v1/deployments"))
    assert err.message == ('deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group '
                           '"apps" at the cluster scope')
    assert err.details == {"group": "apps", "kind": "deployments"}
    err = attributes.forbidden(http("GET", "/apis/apps/v1/namespaces/n/deployments/d/scale"), "RBAC: oops")
    assert err.message.endswith('cannot get resource "deployments/scale" in API group "apps" in the namespace "n": RBAC: oops')
    err = attributes.forbidden(http("GET", "/openapi/v2"))
    assert err.message == 'forbidden: User "bob" cannot get path "/openapi/v2"'


# --- RBAC ------------------------------------------------------------------------------------


def _rules(*rules: JSON) -> tuple[rbac.Rule, ...]:
    return rbac.compile_rules(list(rules))


@pytest.mark.parametrize(("rule", "path", "method", "allowed"), [
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, "/api/v1/namespaces/n/pods/x", "GET", True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, "/api/v1/namespaces/n/pods", "GET", False),
    ({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}, "/api/v1/namespaces/n/pods", "DELETE", True),
    ({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]}, "/api/v1/namespaces/n/pods/x", "GET", False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}, "/api/v1/namespaces/n/pods/x", "GET", True),
    # A resource does not give its subresources; `*` and `*/<sub>` do.
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, "/api/v1/namespaces/n/pods/x/log", "GET", False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, "/api/v1/namespaces/n/pods/x/log", "GET", True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}, "/api/v1/namespaces/n/pods/x/log", "GET", True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, "/api/v1/namespaces/n/pods/x/log", "GET", True),
    # resourceNames limit names, so never a list or a create.
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]},
     "/api/v1/namespaces/n/pods/x", "GET", True),
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]},
     "/api/v1/namespaces/n/pods/y", "GET", False),
    ({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]},
     "/api/v1/namespaces/n/pods", "GET", False),
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, "/healthz", "GET", True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, "/apis/apps/v1", "GET", True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, "/api", "GET", False),
    ({"verbs": ["get"], "nonResourceURLs": ["*"]}, "/anything", "POST", False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}, "/version", "GET", False),
])
def test_rule_matching(rule: JSON, path: str, method: str, allowed: bool) -> None:
    (compiled,) = _rules(rule)
    assert compiled.allows(http(method, path)) is allowed


def _binding(kind: str, name: str, role: tuple[str, str], subjects: list[JSON], namespace: str = "") -> tuple[str, JSON]:
    plural = "rolebindings" if kind == "RoleBinding" else "clusterrolebindings"
    key = f"/rbac.authorization.k8s.io/{plural}/{namespace + '/' if namespace else ''}{name}"
    return key, {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
                 "roleRef": {"apiGroup": rbac.GROUP, "kind": role[0], "name": role[1]}, "subjects": subjects}


def _policy() -> tuple[rbac.RBAC, authz.Gate]:
    policy = rbac.RBAC(None, prefixes={})  # type: ignore[arg-type]  # the index alone: no store
    gate = authz.Gate(authz.Chain([authz.Privileged(), policy]))
    policy.on_change.append(lambda _: gate.policy_changed())
    return policy, gate


def _put(policy: rbac.RBAC, key: str, obj: JSON) -> None:
    policy.index.put(key, obj)
    policy._changed(key.split("/")[2])


def test_bindings_by_user_group_and_service_account() -> None:
    policy, gate = _policy()
    _put(policy, "/rbac.authorization.k8s.io/roles/team/reader",
         {"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]}]})
    _put(policy, "/rbac.authorization.k8s.io/clusterroles/view-nodes",
         {"rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]}]})
    _put(policy, *_binding("RoleBinding", "b1", ("Role", "reader"), [{"kind": "User", "name": "bob"}], "team"))
    _put(policy, *_binding("ClusterRoleBinding", "b2", ("ClusterRole", "view-nodes"), [{"kind": "Group", "name": "ops"}]))
    _put(policy, *_binding("RoleBinding", "b3", ("ClusterRole", "view-nodes"),
                           [{"kind": "ServiceAccount", "name": "robot"}], "team"))
    cm = attributes.for_resource(BOB, "list", group="", resource="configmaps", namespace="team")
    assert gate.decide(cm).allowed
    assert gate.decide(cm).reason == 'RBAC: allowed by RoleBinding "b1/team" of Role "reader" to User "bob"'
    assert not gate.decide(attributes.for_resource(BOB, "list", group="", resource="configmaps", namespace="other")).allowed
    assert not gate.decide(attributes.for_resource(BOB, "list", group="", resource="secrets", namespace="team")).allowed
    nodes = attributes.for_resource(user_mod.authenticated("alice", groups=["ops"]), "list", group="", resource="nodes")
    assert gate.decide(nodes).allowed
    assert not gate.decide(nodes.with_user(BOB)).allowed
    robot = user_mod.authenticated(user_mod.service_account_name("team", "robot"))
    # A RoleBinding grants a ClusterRole's rules in its own namespace only.
    assert gate.decide(attributes.for_resource(robot, "list", group="", resource="nodes", namespace="team")).allowed
    assert not gate.decide(attributes.for_resource(robot, "list", group="", resource="nodes")).allowed
    # Incremental: the binding gone, its grant is gone (and the memo forgotten).
    policy.index.remove(_binding("RoleBinding", "b1", ("Role", "reader"), [], "team")[0])
    policy._changed("rolebindings")
    assert not gate.decide(cm).allowed
    assert policy.index.namespace_grants.get(("team", "user:bob")) is None
    # system:masters needs no binding.
    assert gate.decide(cm.with_user(ADMIN)).allowed


def test_a_binding_to_a_missing_role_says_so() -> None:
    policy, gate = _policy()
    _put(policy, *_binding("ClusterRoleBinding", "b", ("ClusterRole", "ghost"), [{"kind": "User", "name": "bob"}]))
    decision = gate.decide(attributes.for_resource(BOB, "get", group="", resource="pods", namespace="n", name="x"))
    assert not decision.allowed
    assert decision.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "ghost" not found'


def test_rules_for_lists_cluster_and_namespace_rules() -> None:
    policy, gate = _policy()
    _put(policy, "/rbac.authorization.k8s.io/roles/team/reader",
         {"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})
    _put(policy, "/rbac.authorization.k8s.io/clusterroles/disco", {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/api"]}]})
    _put(policy, *_binding("RoleBinding", "b1", ("Role", "reader"), [{"kind": "User", "name": "bob"}], "team"))
    _put(policy, *_binding("ClusterRoleBinding", "b2", ("ClusterRole", "disco"),
                           [{"kind": "Group", "name": user_mod.AUTHENTICATED}]))
    found = gate.authorizer.rules_for(BOB, "team")
    assert found.resource_rules == [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]
    assert found.non_resource_rules == [{"verbs": ["get"], "nonResourceURLs": ["/api"]}]
    assert gate.authorizer.rules_for(BOB, "other").resource_rules == []


# --- escalation ------------------------------------------------------------------------------


def test_covers_and_the_message() -> None:
    owner = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]},
             {"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]},
             {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}]
    assert not escalation.uncovered(owner, [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps", "pods/status"]}])
    assert not escalation.uncovered(owner, [{"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]}])
    missing = escalation.uncovered(owner, [{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["secrets", "configmaps"]}])
    assert escalation.not_held(BOB, missing) == (
        'user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["configmaps"], Verbs:["delete"]}\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}')
    # Names: an owner limited to names does not cover all of them.
    named = [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}]
    assert escalation.uncovered(named, [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}])
    assert not escalation.uncovered(named, [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}])


def test_role_and_binding_writes_are_checked() -> None:
    policy, gate = _policy()
    check = escalation.Escalation(gate, policy, index=policy)
    _put(policy, "/rbac.authorization.k8s.io/roles/team/writer",
         {"rules": [{"verbs": ["*"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"]},
                    {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})
    _put(policy, "/rbac.authorization.k8s.io/clusterroles/secrets",
         {"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]})
    _put(policy, *_binding("RoleBinding", "b", ("Role", "writer"), [{"kind": "User", "name": "bob"}], "team"))
    role = {"metadata": {"name": "r", "namespace": "team"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]}
    check(BOB, "Role.rbac.authorization.k8s.io", role, None)  # held: allowed
    binding = {"metadata": {"name": "rb", "namespace": "team"},
               "roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole", "name": "secrets"},
               "subjects": [{"kind": "User", "name": "eve"}]}
    with pytest.raises(errors.APIError) as err:
        check(BOB, "RoleBinding.rbac.authorization.k8s.io", binding, None)
    assert err.value.code == 403
    assert err.value.message.startswith('rolebindings.rbac.authorization.k8s.io "rb" is forbidden: user "bob" '
                                        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions')
    # `bind` on that ClusterRole lets it through; `escalate` lets a role through.
    _put(policy, "/rbac.authorization.k8s.io/clusterroles/binder",
         {"rules": [{"verbs": ["bind"], "apiGroups": [rbac.GROUP], "resources": ["clusterroles"], "resourceNames": ["secrets"]}]})
    _put(policy, *_binding("RoleBinding", "b2", ("ClusterRole", "binder"), [{"kind": "User", "name": "bob"}], "team"))
    check(BOB, "RoleBinding.rbac.authorization.k8s.io", binding, None)
    # An aggregationRule needs full authority.
    cluster = {"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}
    _put(policy, *_binding("ClusterRoleBinding", "c", ("Role", "writer"), [{"kind": "User", "name": "bob"}]))
    with pytest.raises(errors.APIError, match="must have cluster-admin privileges to use the aggregationRule"):
        check(BOB, "ClusterRole.rbac.authorization.k8s.io", cluster, None)
    check(ADMIN, "ClusterRole.rbac.authorization.k8s.io", cluster, None)


# --- aggregation -----------------------------------------------------------------------------


def test_aggregated_rules_in_name_order_each_once() -> None:
    r1 = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
    r2 = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
    roles = {
        "agg": {"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "1"}}]}},
        "b": {"metadata": {"name": "b", "labels": {"x": "1"}}, "rules": [r2, r1]},
        "a": {"metadata": {"name": "a", "labels": {"x": "1"}}, "rules": [r1]},
        "c": {"metadata": {"name": "c", "labels": {"x": "2"}}, "rules": [{"verbs": ["*"]}]},
    }
    assert aggregation.aggregated_rules(roles["agg"], roles) == [r1, r2]
    assert aggregation.aggregated_rules(roles["a"], roles) is None


# --- impersonation ---------------------------------------------------------------------------


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_impersonation_needs_the_impersonate_verb() -> None:
    policy, gate = _policy()
    with pytest.raises(errors.APIError) as err:
        impersonation.impersonate(BOB, _headers(("Impersonate-User", "alice")), gate=gate)
    assert err.value.code == 403
    assert err.value.message == ('users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" '
                                 'at the cluster scope')
    _put(policy, "/rbac.authorization.k8s.io/clusterroles/imp",
         {"rules": [{"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users", "groups"]}]})
    _put(policy, *_binding("ClusterRoleBinding", "imp", ("ClusterRole", "imp"), [{"kind": "User", "name": "bob"}]))
    alice = impersonation.impersonate(BOB, _headers(("Impersonate-User", "alice"), ("Impersonate-Group", "devs"),
                                                    ("Impersonate-Group", "ops")), gate=gate)
    assert (alice.name, alice.groups) == ("alice", ("devs", "ops", user_mod.AUTHENTICATED))
    with pytest.raises(errors.APIError, match=re.escape('uids.authentication.k8s.io "u-1" is forbidden: User "bob" cannot impersonate '
                                                        'resource "uids" in API group "authentication.k8s.io"')):
        impersonation.impersonate(BOB, _headers(("Impersonate-User", "alice"), ("Impersonate-Uid", "u-1")), gate=gate)
    with pytest.raises(errors.APIError, match="without impersonating a user"):
        impersonation.impersonate(BOB, _headers(("Impersonate-Group", "devs")), gate=gate)
    admin_as = impersonation.impersonate(
        ADMIN, _headers(("Impersonate-User", "system:serviceaccount:team:robot"), ("Impersonate-Extra-Scopes", "a"),
                        ("Impersonate-Extra-Scopes", "b"), ("Impersonate-Uid", "u-2")), gate=gate)
    assert admin_as == user_mod.UserInfo(name="system:serviceaccount:team:robot", uid="u-2",
                                         groups=("system:serviceaccounts", "system:serviceaccounts:team",
                                                 user_mod.AUTHENTICATED),
                                         extra=(("scopes", ("a", "b")),))
    assert impersonation.impersonate(BOB, _headers(), gate=gate) is BOB


# --- reviews ---------------------------------------------------------------------------------


def test_reviews_answer_as_the_gate_decides() -> None:
    policy, gate = _policy()
    _put(policy, "/rbac.authorization.k8s.io/roles/team/reader",
         {"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]}]})
    _put(policy, *_binding("RoleBinding", "b1", ("Role", "reader"), [{"kind": "User", "name": "bob"}], "team"))
    ssar = {"spec": {"resourceAttributes": {"namespace": "team", "verb": "list", "resource": "configmaps"}}}
    out = reviews.review("SelfSubjectAccessReview.authorization.k8s.io", ssar, user=BOB, gate=gate)
    assert out["status"] == {"allowed": True, "reason": 'RBAC: allowed by RoleBinding "b1/team" of Role "reader" to User "bob"'}
    ssar["spec"]["resourceAttributes"]["resource"] = "secrets"
    assert reviews.review("SelfSubjectAccessReview.authorization.k8s.io", ssar, user=BOB, gate=gate)["status"] == {
        "allowed": False}
    sar = {"spec": {"user": "bob", "resourceAttributes": {"namespace": "team", "verb": "get", "resource": "configmaps"}}}
    assert reviews.review("SubjectAccessReview.authorization.k8s.io", sar, user=ADMIN, gate=gate)["status"]["allowed"]
    with pytest.raises(errors.APIError, match="at least one of user or group must be specified"):
        reviews.review("SubjectAccessReview.authorization.k8s.io", {"spec": {"resourceAttributes": {"verb": "get"}}},
                       user=ADMIN, gate=gate)
    with pytest.raises(errors.APIError, match="must match namespace"):
        reviews.review("LocalSubjectAccessReview.authorization.k8s.io", sar, user=ADMIN, gate=gate, namespace="other")
    rules = reviews.review("SelfSubjectRulesReview.authorization.k8s.io", {"spec": {"namespace": "team"}}, user=BOB,
                           gate=gate)
    assert rules["status"] == {"resourceRules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]}],
                               "nonResourceRules": [], "incomplete": False}


# --- the token file --------------------------------------------------------------------------


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text('\ufefft1,bob,uid-1\nt2,alice,uid-2,"devs,ops"\n,nobody,x\n')
    tokens = tokenfile.TokenFile(path)
    assert tokens.authenticate_token("t1") == user_mod.UserInfo("bob", "uid-1", (user_mod.AUTHENTICATED,))
    assert tokens.authenticate_token("t2") == user_mod.UserInfo("alice", "uid-2", ("devs", "ops", user_mod.AUTHENTICATED))
    assert tokens.authenticate_token("") is None and tokens.authenticate_token("t3") is None
    path.write_text("t1,bob\n")
    with pytest.raises(tokenfile.TokenFileError, match="must have at least 3 columns"):
        tokenfile.TokenFile(path)


# --- the in-process client, the bootstrap policy, the watch ----------------------------------


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[rest.Registry, policy_mod.Policy]]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    policy = policy_mod.Policy(store, catalog=catalog)
    registry = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork(),
                             gate=policy.gate)
    await registry.ensure_system_namespaces()
    tasks = [asyncio.create_task(run, name=name) for name, run in await policy.start(registry)]
    try:
        yield registry, policy
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not in time")


async def test_local_client_goes_through_the_gate(env: tuple[rest.Registry, policy_mod.Policy]) -> None:
    registry, _ = env
    admin = LocalClient(registry)  # the registry's own work: never asked about
    bob = LocalClient(registry, user=BOB)
    await admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})
    with pytest.raises(errors.APIError) as err:
        bob.get("v1", "ConfigMap", name="c", namespace="default")
    assert err.value.message == ('configmaps "c" is forbidden: User "bob" cannot get resource "configmaps" in API group "" '
                                 'in the namespace "default"')
    with pytest.raises(errors.APIError, match='cannot watch resource "configmaps"'):
        await bob.watch("v1", "ConfigMap", namespace="default", since=0)
    with pytest.raises(errors.APIError, match='cannot list resource "\\*" in API group "\\*" at the cluster scope'):
        bob.scan_all()
    await admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": "r", "namespace": "default"},
                        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})
    await admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": "r", "namespace": "default"},
                        "roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "r"},
                        "subjects": [{"kind": "User", "name": "bob"}]})

    def can_get() -> bool:
        try:
            bob.get("v1", "ConfigMap", name="c", namespace="default")
            return True
        except errors.APIError:
            return False

    await _until(can_get)  # the index follows the store's watch
    with pytest.raises(errors.APIError, match='cannot create resource "configmaps"'):
        await bob.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d", "namespace": "default"}})
    # The components' own users may do their work.
    kcm = LocalClient(registry, user=bootstrap.component_user(bootstrap.CONTROLLER_MANAGER))
    kcm.scan_all()
    node = LocalClient(registry, user=bootstrap.node_user("n1"))
    with pytest.raises(errors.APIError, match='User "system:node:n1" cannot delete resource "namespaces"'):
        await node.delete("v1", "Namespace", name="default")


async def test_bootstrap_policy_and_aggregation(env: tuple[rest.Registry, policy_mod.Policy]) -> None:
    registry, _ = env
    roles = registry.catalog.lookup(rbac.GROUP, "v1", "clusterroles")
    assert roles is not None
    view = registry.get(roles, namespace=None, name="view")
    admin_rules = registry.get(roles, namespace=None, name="admin")["rules"]
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]} in view["rules"]
    assert all(r in admin_rules for r in view["rules"])  # admin aggregates edit, which aggregates view
    # A new labelled role is picked up by the aggregated one.
    extra = {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}
    await registry.create(roles, {"metadata": {"name": "widgets-view", "labels": {bootstrap.AGGREGATE_TO + "view": "true"}},
                                  "rules": [extra]}, namespace=None)
    await _until(lambda: extra in registry.get(roles, namespace=None, name="view")["rules"])
    await _until(lambda: extra in registry.get(roles, namespace=None, name="admin")["rules"])
    # Reconcile: a removed rule comes back; a role annotated autoupdate=false is left alone.
    basic = registry.get(roles, namespace=None, name="system:basic-user")
    basic["rules"] = basic["rules"][:1]
    await registry.update(roles, basic, namespace=None, name="system:basic-user")
    discovery = registry.get(roles, namespace=None, name="system:discovery")
    discovery["rules"] = []
    discovery["metadata"]["annotations"][bootstrap.AUTOUPDATE] = "false"
    await registry.update(roles, discovery, namespace=None, name="system:discovery")
    await bootstrap.reconcile(registry)
    assert len(registry.get(roles, namespace=None, name="system:basic-user")["rules"]) == 2
    assert registry.get(roles, namespace=None, name="system:discovery")["rules"] == []
