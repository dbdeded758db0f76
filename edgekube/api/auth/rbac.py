"""The RBAC authorizer: Roles, ClusterRoles and their bindings, indexed by subject.

Upstream's RBAC authorizer walks every ClusterRoleBinding and every RoleBinding of the namespace
for each request. Here the bindings are indexed once by subject (`user:<name>`, `group:<name>`;
a ServiceAccount subject is the user `system:serviceaccount:<ns>:<name>`), cluster-wide and per
namespace, and roles by name with their rules compiled to sets. A decision looks up the user's
name and each of its groups (a handful of dictionary reads), then matches the few rules those
grants point to; `authz.Gate` memoises the answer until the policy changes.

The index follows the store: it is loaded by a scan of the four kinds, then kept current by a
watch on each (the api layer sits below client/, so no informer), applying one event at a time
(a binding's old grants are dropped by its key, its new ones added). A dropped watch reloads.
Listeners (`on_change`) hear of every change: the gate forgets its memo, the aggregation of
ClusterRoles looks again.

Rule semantics are upstream's (rbac/v1 helpers): `*` matches any verb, group, resource or URL;
a resource `*/<sub>` matches that subresource of any resource; resourceNames, when given, limit
the names (so they never match a list or a create, which have none); a nonResourceURL ending in
`*` is a prefix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from edgekube.api.auth import attributes, authz
from edgekube.api.auth import user as user_mod
from edgekube.store import errors as store_errors
from edgekube.store import records
from edgekube.store import store as store_mod

JSON = dict[str, Any]
log = logging.getLogger(__name__)
GROUP = "rbac.authorization.k8s.io"
KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PolicyRule, its lists as sets for matching."""

    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    names: frozenset[str]
    urls: tuple[str, ...]
    source: JSON

    def allows(self, attrs: attributes.Attributes) -> bool:
        if attrs.verb not in self.verbs and "*" not in self.verbs:
            return False
        if not attrs.resource_request:
            return _url_matches(self.urls, attrs.path)
        if not self.resources:
            return False
        if attrs.api_group not in self.groups and "*" not in self.groups:
            return False
        if "*" not in self.resources:
            if attrs.subresource:
                combined = f"{attrs.resource}/{attrs.subresource}"
                if combined not in self.resources and f"*/{attrs.subresource}" not in self.resources:
                    return False
            elif attrs.resource not in self.resources:
                return False
        return not self.names or attrs.name in self.names


def _url_matches(urls: Iterable[str], path: str) -> bool:
    for url in urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def compile_rule(rule: Any) -> Rule | None:
    if not isinstance(rule, dict):
        return None
    return Rule(verbs=frozenset(_strings(rule.get("verbs"))), groups=frozenset(_strings(rule.get("apiGroups"))),
                resources=frozenset(_strings(rule.get("resources"))),
                names=frozenset(_strings(rule.get("resourceNames"))),
                urls=tuple(_strings(rule.get("nonResourceURLs"))), source=rule)


def compile_rules(rules: Any) -> tuple[Rule, ...]:
    return tuple(r for r in (compile_rule(x) for x in (rules if isinstance(rules, list) else [])) if r is not None)


@dataclasses.dataclass(frozen=True)
class Grant:
    """One subject of one binding: the role it is given, and how to name it in a reason."""

    binding_kind: str  # ClusterRoleBinding | RoleBinding
    binding: str
    namespace: str  # the RoleBinding's; "" for a ClusterRoleBinding
    role_kind: str  # ClusterRole | Role
    role: str
    subject: str  # upstream's describeSubject: `User "bob"`, `ServiceAccount "x/ns"`

    def describe(self) -> str:
        name = f"{self.binding}/{self.namespace}" if self.namespace else self.binding
        return f'{self.binding_kind} "{name}" of {self.role_kind} "{self.role}" to {self.subject}'


def subject_keys(user: user_mod.UserInfo) -> list[str]:
    return [f"user:{user.name}", *(f"group:{g}" for g in user.groups)]


def _subject(subject: Any, namespace: str) -> tuple[str, str] | None:
    """(index key, description) of a binding's subject; None for one that names no one."""
    if not isinstance(subject, dict):
        return None
    kind, name = subject.get("kind"), subject.get("name")
    if not isinstance(name, str) or not name:
        return None
    if kind == "User":
        return f"user:{name}", f'User "{name}"'
    if kind == "Group":
        return f"group:{name}", f'Group "{name}"'
    if kind == "ServiceAccount":
        sa_ns = subject.get("namespace") or namespace
        if not isinstance(sa_ns, str) or not sa_ns:
            return None
        return f"user:{user_mod.service_account_name(sa_ns, name)}", f'ServiceAccount "{name}/{sa_ns}"'
    return None


def _split_key(key: str) -> tuple[str, str, str]:
    """(plural, namespace, name) of a stored RBAC key (`/<group>/<plural>/[<ns>/]<name>`)."""
    parts = key.strip("/").split("/")
    if len(parts) == 4:
        return parts[1], parts[2], parts[3]
    return parts[1], "", parts[-1]


class Index:
    """The RBAC objects, as the authorizer reads them."""

    def __init__(self) -> None:
        self.cluster_roles: dict[str, tuple[Rule, ...]] = {}
        # What aggregation reads of each ClusterRole (its name, labels, aggregationRule and
        # rules), not the whole object: managedFields and the rest would be kept for nothing.
        self.cluster_role_objects: dict[str, JSON] = {}
        self.roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.cluster_grants: dict[str, list[Grant]] = {}
        self.namespace_grants: dict[tuple[str, str], list[Grant]] = {}
        self._by_binding: dict[str, list[tuple[str, str, Grant]]] = {}  # key -> (namespace, subject key, grant)

    def put(self, key: str, obj: JSON) -> None:
        plural, namespace, name = _split_key(key)
        if plural == "clusterroles":
            self.cluster_roles[name] = compile_rules(obj.get("rules"))
            meta = obj.get("metadata") or {}
            kept: JSON = {"metadata": {"name": meta.get("name", name), "labels": meta.get("labels") or {}},
                          "rules": obj.get("rules") or []}
            if "aggregationRule" in obj:
                kept["aggregationRule"] = obj["aggregationRule"]
            self.cluster_role_objects[name] = kept
        elif plural == "roles":
            self.roles[(namespace, name)] = compile_rules(obj.get("rules"))
        elif plural in ("rolebindings", "clusterrolebindings"):
            self.remove(key)
            ref = obj.get("roleRef") or {}
            role_kind, role = ref.get("kind"), ref.get("name")
            if role_kind not in ("Role", "ClusterRole") or not isinstance(role, str):
                return
            if plural == "clusterrolebindings" and role_kind != "ClusterRole":
                return
            entries: list[tuple[str, str, Grant]] = []
            binding_kind = "RoleBinding" if namespace else "ClusterRoleBinding"
            for subject in obj.get("subjects") or []:
                found = _subject(subject, namespace)
                if found is None:
                    continue
                grant = Grant(binding_kind, name, namespace, role_kind, role, found[1])
                entries.append((namespace, found[0], grant))
                if namespace:
                    self.namespace_grants.setdefault((namespace, found[0]), []).append(grant)
                else:
                    self.cluster_grants.setdefault(found[0], []).append(grant)
            self._by_binding[key] = entries

    def remove(self, key: str) -> None:
        plural, namespace, name = _split_key(key)
        if plural == "clusterroles":
            self.cluster_roles.pop(name, None)
            self.cluster_role_objects.pop(name, None)
        elif plural == "roles":
            self.roles.pop((namespace, name), None)
        else:
            for ns, subject, grant in self._by_binding.pop(key, []):
                table: Any = self.namespace_grants if ns else self.cluster_grants
                where = (ns, subject) if ns else subject
                grants = table.get(where)
                if grants is not None:
                    grants.remove(grant)
                    if not grants:
                        del table[where]

    def grants(self, user: user_mod.UserInfo, namespace: str) -> Iterator[Grant]:
        """The grants that apply to `user`: cluster-wide, then those of `namespace`."""
        keys = subject_keys(user)
        for k in keys:
            yield from self.cluster_grants.get(k, ())
        if namespace:
            for k in keys:
                yield from self.namespace_grants.get((namespace, k), ())

    def role_rules(self, grant_or_ref: Grant | tuple[str, str], namespace: str) -> tuple[Rule, ...] | None:
        """The rules of a grant's role (or of a (kind, name) roleRef in `namespace`); None when
        the role does not exist."""
        kind, name = (grant_or_ref.role_kind, grant_or_ref.role) if isinstance(grant_or_ref, Grant) else grant_or_ref
        if kind == "ClusterRole":
            return self.cluster_roles.get(name)
        return self.roles.get((namespace, name))


def missing_role(kind: str, name: str) -> str:
    return f'{kind.lower()}.{GROUP} "{name}" not found'


class RBAC:
    """The authorizer over an `Index` that follows the store."""

    def __init__(self, store: store_mod.Store, *, prefixes: Mapping[str, str]) -> None:
        self._store = store
        self._prefixes = dict(prefixes)  # plural -> store key prefix
        self.index = Index()
        self.on_change: list[Callable[[str], None]] = []  # called with the plural that changed
        self._since = 0  # the revision the index was loaded at: `run` watches from there

    # --- the authorizer ----------------------------------------------------------------------

    def authorize(self, attrs: attributes.Attributes) -> authz.Decision:
        index = self.index
        errors: list[str] = []
        for grant in index.grants(attrs.user, attrs.namespace):
            rules = index.role_rules(grant, grant.namespace)
            if rules is None:
                errors.append(missing_role(grant.role_kind, grant.role))
                continue
            for rule in rules:
                if rule.allows(attrs):
                    return authz.Decision(allowed=True, reason=f"RBAC: allowed by {grant.describe()}")
        if not errors:
            return authz.NO_OPINION
        joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        return authz.Decision(allowed=False, reason=f"RBAC: {joined}", error=joined)

    def rules_for(self, user: user_mod.UserInfo, namespace: str) -> authz.Rules:
        resource: list[JSON] = []
        non_resource: list[JSON] = []
        errors: list[str] = []
        for grant in self.index.grants(user, namespace):
            rules = self.index.role_rules(grant, grant.namespace)
            if rules is None:
                errors.append(missing_role(grant.role_kind, grant.role))
                continue
            for rule in rules:
                (non_resource if rule.urls and not rule.resources else resource).append(rule.source)
        return authz.Rules(resource, non_resource, incomplete=bool(errors), error="; ".join(errors))

    # --- following the store -----------------------------------------------------------------

    def load(self) -> int:
        """Build the index from the store; the revision to watch from."""
        index = Index()
        revision = self._store.revision
        for prefix in self._prefixes.values():
            for item, obj in self._store.objects(self._store.scan(prefix).items, reader="the RBAC index"):
                index.put(item.key, obj)
        self.index = index
        self._since = revision
        self._changed("*")
        return revision

    def apply(self, ev: records.Event) -> None:
        if ev.type is records.EventType.DELETED:
            self.index.remove(ev.key)
        else:
            self.index.put(ev.key, ev.object())
        self._changed(_split_key(ev.key)[0])

    def _changed(self, plural: str) -> None:
        for listener in self.on_change:
            listener(plural)

    async def run(self) -> None:
        """Keep the index current: a watch per kind, and a reload whenever one ends."""
        since = self._since if self._since else self.load()
        while True:
            queue: asyncio.Queue[records.Event | None] = asyncio.Queue()
            watchers = []
            try:
                for prefix in self._prefixes.values():
                    watchers.append(await self._store.watch(prefix, since=since))
            except store_errors.CompactedError:
                for w in watchers:
                    w.close()
                since = self.load()
                continue
            pumps = [asyncio.create_task(_pump(w, queue), name=f"rbac/watch{w.prefix}") for w in watchers]
            try:
                while (ev := await queue.get()) is not None:
                    try:
                        self.apply(ev)
                    except store_errors.CorruptRecordError as exc:
                        self._store.damage.note(exc, reader="the RBAC index")
            finally:
                for task in pumps:
                    task.cancel()
                for w in watchers:
                    w.close()
                await asyncio.gather(*pumps, return_exceptions=True)
            log.info("an RBAC watch ended (dropped); reloading the index")
            await asyncio.sleep(0.1)
            since = self.load()


async def _pump(watcher: Any, queue: asyncio.Queue[records.Event | None]) -> None:
    """Move one watcher's events to the shared queue; None when it ends."""
    try:
        while (ev := await watcher.next()) is not None:
            queue.put_nowait(ev)
    finally:
        queue.put_nowait(None)
