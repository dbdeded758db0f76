"""Escalation prevention for RBAC writes, as upstream's rbac REST storage does it.

Whoever may create Roles could otherwise write themselves any permission. So a write of a Role
or ClusterRole passes when its author is in `system:masters`, or may `escalate` that role, or
already holds every permission the role grants (in the role's namespace, or cluster-wide for a
ClusterRole); a ClusterRole with an `aggregationRule` (which can gather anything) needs full
authority. A write of a RoleBinding or ClusterRoleBinding passes when its author is in
`system:masters`, or may `bind` the role it refers to, or holds every permission of that role.
What the author lacks is listed in upstream's wording (`Covers`, `CompactRules`, `CompactString`
of rbac/v1 helpers), e.g.:

    user "bob" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not
    currently held:
    {APIGroups:[""], Resources:["secrets"], Verbs:["get"]}

A write that changes only what the garbage collector writes (ownerReferences, finalizers) is
never refused, as upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from edgekube.api import errors
from edgekube.api.auth import attributes, authz, rbac
from edgekube.api.auth import user as user_mod

JSON = dict[str, Any]
_ROLE_KINDS = {"Role.rbac.authorization.k8s.io": "roles", "ClusterRole.rbac.authorization.k8s.io": "clusterroles"}
_BINDING_KINDS = {"RoleBinding.rbac.authorization.k8s.io": "rolebindings",
                  "ClusterRoleBinding.rbac.authorization.k8s.io": "clusterrolebindings"}
FULL_AUTHORITY: list[JSON] = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                              {"verbs": ["*"], "nonResourceURLs": ["*"]}]
# Metadata the server or the garbage collector writes: changing only these is not a grant.
_GC_FIELDS = ("ownerReferences", "finalizers", "managedFields", "resourceVersion", "generation",
              "deletionTimestamp", "deletionGracePeriodSeconds")


def _lists(rule: JSON, key: str) -> list[str]:
    return [v for v in rule.get(key) or [] if isinstance(v, str)]


def breakdown(rule: JSON) -> list[JSON]:
    """One rule per (group, resource, verb[, name]) and per (url, verb)."""
    out: list[JSON] = []
    verbs, names = _lists(rule, "verbs"), _lists(rule, "resourceNames")
    for group in _lists(rule, "apiGroups"):
        for resource in _lists(rule, "resources"):
            for verb in verbs:
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                out.extend([{**base, "resourceNames": [n]} for n in names] if names else [base])
    for url in _lists(rule, "nonResourceURLs"):
        out.extend({"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs)
    return out


def _resources_cover(owner: list[str], wanted: list[str]) -> bool:
    if "*" in owner:
        return True
    for path in wanted:
        if path in owner:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in owner:
            return False
    return True


def _urls_cover(owner: list[str], wanted: list[str]) -> bool:
    return all(any(o == p or (o.endswith("*") and p.startswith(o.rstrip("*"))) for o in owner) for p in wanted)


def rule_covers(owner: JSON, sub: JSON) -> bool:
    ov, og, on = _lists(owner, "verbs"), _lists(owner, "apiGroups"), _lists(owner, "resourceNames")
    sn = _lists(sub, "resourceNames")
    return (("*" in ov or set(_lists(sub, "verbs")) <= set(ov))
            and ("*" in og or set(_lists(sub, "apiGroups")) <= set(og))
            and _resources_cover(_lists(owner, "resources"), _lists(sub, "resources"))
            and _urls_cover(_lists(owner, "nonResourceURLs"), _lists(sub, "nonResourceURLs"))
            and (not on or (bool(sn) and set(sn) <= set(on))))


def uncovered(owner: Sequence[JSON], wanted: Iterable[JSON]) -> list[JSON]:
    """The simple rules of `wanted` that no rule of `owner` covers (upstream's Covers)."""
    return [sub for rule in wanted for sub in breakdown(rule) if not any(rule_covers(o, sub) for o in owner)]


def compact(rules: list[JSON]) -> list[JSON]:
    """Simple rules on one group and resource (and at most one name) merged into one per verb
    list, as upstream's CompactRules."""
    merged: dict[tuple[str, str, str | None], JSON] = {}
    out: list[JSON] = []
    for rule in rules:
        groups, resources, names = _lists(rule, "apiGroups"), _lists(rule, "resources"), _lists(rule, "resourceNames")
        if len(groups) == 1 and len(resources) == 1 and len(names) <= 1 and not rule.get("nonResourceURLs"):
            key = (groups[0], resources[0], names[0] if names else None)
            if key in merged:
                merged[key]["verbs"] = [*merged[key]["verbs"], *(v for v in _lists(rule, "verbs")
                                                                 if v not in merged[key]["verbs"])]
                continue
            merged[key] = {**rule, "verbs": list(_lists(rule, "verbs"))}
            out.append(merged[key])
        else:
            out.append(rule)
    return out


def _go_strings(values: list[str]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def compact_string(rule: JSON) -> str:
    parts = [f"{label}:{_go_strings(_lists(rule, key))}" for label, key in
             (("APIGroups", "apiGroups"), ("Resources", "resources"), ("NonResourceURLs", "nonResourceURLs"),
              ("ResourceNames", "resourceNames"), ("Verbs", "verbs")) if _lists(rule, key)]
    return "{" + ", ".join(parts) + "}"


def not_held(user: user_mod.UserInfo, missing: list[JSON]) -> str:
    lines = sorted({compact_string(r) for r in compact(missing)})
    return (f'user "{user.name}" (groups={_go_strings(list(user.groups))}) is attempting to grant RBAC permissions '
            "not currently held:\n" + "\n".join(lines))


def _only_gc_changes(obj: JSON, old: JSON | None) -> bool:
    if old is None:
        return False

    def without(o: JSON) -> JSON:
        meta = {k: v for k, v in (o.get("metadata") or {}).items() if k not in _GC_FIELDS}
        return {**{k: v for k, v in o.items() if k not in ("metadata", "status")}, "metadata": meta}

    return without(obj) == without(old)


class Escalation:
    """The write check `authz.Gate.check_write` runs for RBAC kinds."""

    def __init__(self, gate: authz.Gate, resolver: authz.Authorizer, *, index: rbac.RBAC) -> None:
        self._gate = gate
        self._resolver = resolver  # rules a user holds (RBAC alone: system:masters is let through first)
        self._rbac = index

    def __call__(self, user: user_mod.UserInfo, gk: str, obj: JSON, old: JSON | None) -> None:
        plural = _ROLE_KINDS.get(gk) or _BINDING_KINDS.get(gk)
        if plural is None or user_mod.SYSTEM_MASTERS in user.groups or _only_gc_changes(obj, old):
            return
        meta = obj.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        if gk in _ROLE_KINDS:
            self._check_role(user, plural, obj, name=name, namespace=namespace)
        else:
            self._check_binding(user, plural, obj, name=name, namespace=namespace)

    def _missing(self, user: user_mod.UserInfo, namespace: str, wanted: list[JSON]) -> list[JSON]:
        held = self._resolver.rules_for(user, namespace)
        return uncovered([*held.resource_rules, *held.non_resource_rules], wanted)

    def _check_role(self, user: user_mod.UserInfo, plural: str, obj: JSON, *, name: str, namespace: str) -> None:
        escalate = attributes.for_resource(user, "escalate", group=rbac.GROUP, resource=plural, namespace=namespace,
                                           name=name, version="*")
        if self._gate.decide(escalate).allowed:
            return
        rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        missing = self._missing(user, namespace, rules)
        if missing:
            raise errors.forbidden_object(plural, name, not_held(user, missing), group=rbac.GROUP)
        if obj.get("aggregationRule") and self._missing(user, namespace, FULL_AUTHORITY):
            raise errors.forbidden_object(plural, name, "must have cluster-admin privileges to use the aggregationRule",
                                          group=rbac.GROUP)

    def _check_binding(self, user: user_mod.UserInfo, plural: str, obj: JSON, *, name: str, namespace: str) -> None:
        ref = obj.get("roleRef") or {}
        kind, role = str(ref.get("kind") or ""), str(ref.get("name") or "")
        role_plural = "clusterroles" if kind == "ClusterRole" else "roles"
        bind = attributes.for_resource(user, "bind", group=rbac.GROUP, resource=role_plural, namespace=namespace,
                                       name=role, version="*")
        if self._gate.decide(bind).allowed:
            return
        rules = self._rbac.index.role_rules((kind, role), namespace)
        if rules is None:
            raise errors.forbidden_object(plural, name, rbac.missing_role(kind or "Role", role), group=rbac.GROUP)
        missing = self._missing(user, namespace, [r.source for r in rules])
        if missing:
            raise errors.forbidden_object(plural, name, not_held(user, missing), group=rbac.GROUP)
