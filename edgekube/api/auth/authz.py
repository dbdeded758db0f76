"""Authorization: the `Authorizer` Protocol, the chain of authorizers, and the one gate every
request passes.

Upstream asks its authorizers in order (here: the `system:masters` group, then RBAC) and the
first that allows or denies decides; "no opinion" from all of them is a refusal. The same chain
answers the access reviews (`reviews.py`) and the escalation checks (`escalation.py`), so what
`kubectl auth can-i` says is what the server does.

`Gate` is the single enforcement point: the HTTP middleware (server.py) hands it the attributes
parsed from the URL, and `LocalClient` the attributes of its call, and both get the same
decision and the same 403. A request without a user (`None`: the registry's own work at boot)
never reaches it. Decisions are memoised per attributes until the policy changes
(`Gate.policy_changed`), so a request pays a dictionary lookup, not a walk of the bindings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgekube.api.auth import attributes
from edgekube.api.auth import user as user_mod

JSON = dict[str, Any]
_CACHE_LIMIT = 8192  # distinct decisions kept between policy changes (a few hundred bytes each)


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    denied: bool = False  # an explicit deny (ends the chain), as opposed to no opinion
    error: str = ""  # what went wrong evaluating (a binding to a missing role)


NO_OPINION = Decision(allowed=False)


@dataclasses.dataclass(frozen=True)
class Rules:
    """What a user may do in a namespace (SelfSubjectRulesReview's status), in upstream's
    rbac/v1 PolicyRule shapes."""

    resource_rules: list[JSON]
    non_resource_rules: list[JSON]
    incomplete: bool = False
    error: str = ""


def everything() -> Rules:
    return Rules([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                 [{"verbs": ["*"], "nonResourceURLs": ["*"]}])


class Authorizer(Protocol):
    def authorize(self, attrs: attributes.Attributes) -> Decision:
        """Allow, deny or no opinion on one request."""
        ...

    def rules_for(self, user: user_mod.UserInfo, namespace: str) -> Rules:
        """Every rule that applies to `user` in `namespace` (cluster-wide ones included)."""
        ...


class Privileged:
    """Members of these groups may do everything (upstream's privileged-groups authorizer for
    `system:masters`, ahead of RBAC, so that no policy mistake locks the administrator out)."""

    def __init__(self, groups: Sequence[str] = (user_mod.SYSTEM_MASTERS,)) -> None:
        self._groups = frozenset(groups)

    def authorize(self, attrs: attributes.Attributes) -> Decision:
        if self._groups.intersection(attrs.user.groups):
            return Decision(allowed=True)
        return NO_OPINION

    def rules_for(self, user: user_mod.UserInfo, namespace: str) -> Rules:
        # Not a rule resolver upstream either: an administrator's rules review lists what RBAC
        # gives it (`cluster-admin`), once.
        return Rules([], [])


class AllowAll:
    """Every request allowed: a registry built without a policy (unit tests, tools)."""

    def authorize(self, attrs: attributes.Attributes) -> Decision:
        return Decision(allowed=True)

    def rules_for(self, user: user_mod.UserInfo, namespace: str) -> Rules:
        return everything()


class Chain:
    """Authorizers asked in turn: the first allow or deny decides (upstream's union)."""

    def __init__(self, authorizers: Sequence[Authorizer]) -> None:
        self._authorizers = tuple(authorizers)

    def authorize(self, attrs: attributes.Attributes) -> Decision:
        errors: list[str] = []
        for one in self._authorizers:
            decision = one.authorize(attrs)
            if decision.allowed or decision.denied:
                return decision
            if decision.reason:
                errors.append(decision.reason)
        return Decision(allowed=False, reason="; ".join(errors)) if errors else NO_OPINION

    def rules_for(self, user: user_mod.UserInfo, namespace: str) -> Rules:
        resource: list[JSON] = []
        non_resource: list[JSON] = []
        incomplete = False
        errors: list[str] = []
        for one in self._authorizers:
            found = one.rules_for(user, namespace)
            resource.extend(found.resource_rules)
            non_resource.extend(found.non_resource_rules)
            incomplete = incomplete or found.incomplete
            if found.error:
                errors.append(found.error)
        return Rules(resource, non_resource, incomplete, "; ".join(errors))


class Gate:
    """The one place where requests are allowed or refused (see the module's docstring)."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        self._cache: dict[attributes.Attributes, Decision] = {}
        # Called with (user, group kind, object, old object) on writes of RBAC objects: the
        # escalation check (escalation.py), installed by whoever wires the policy.
        self.write_checks: list[Callable[[user_mod.UserInfo, str, JSON, JSON | None], None]] = []

    def decide(self, attrs: attributes.Attributes) -> Decision:
        found = self._cache.get(attrs)
        if found is None:
            found = self.authorizer.authorize(attrs)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[attrs] = found
        return found

    def check(self, attrs: attributes.Attributes) -> None:
        """Raise upstream's 403 unless `attrs` are allowed."""
        decision = self.decide(attrs)
        if not decision.allowed:
            raise attributes.forbidden(attrs, decision.reason)

    def policy_changed(self) -> None:
        """Forget memoised decisions (a role, a binding or the chain changed)."""
        self._cache.clear()

    def check_write(self, user: user_mod.UserInfo | None, gk: str, obj: JSON, old: JSON | None) -> None:
        """The checks some kinds need on the object written (escalation of RBAC objects)."""
        if user is None:
            return
        for check in self.write_checks:
            check(user, gk, obj, old)
