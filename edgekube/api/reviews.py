"""Access reviews: the create-only resources that answer "may I?" and "who am I?".

`kubectl auth can-i` creates a SelfSubjectAccessReview (`--list`: a SelfSubjectRulesReview),
`kubectl auth whoami` a SelfSubjectReview; other components ask about someone else with a
SubjectAccessReview (cluster-wide) or a LocalSubjectAccessReview (in one namespace). Nothing is
stored: the answer comes back in the object's status. The answers come from the registry's gate
(`auth.authz`), the very decision a request with those attributes gets, so they are truthful:
`allowed`, `denied` (an explicit deny), and the authorizer's `reason` (RBAC names the binding
that allowed it).

A SubjectAccessReview's user is taken as given (its groups are not completed with
`system:authenticated`), as upstream's.
"""

from __future__ import annotations

import copy
from typing import Any

from edgekube.api import errors
from edgekube.api.auth import attributes, authz
from edgekube.api.auth import user as user_mod

JSON = dict[str, Any]
_GROUP = "authorization.k8s.io"
_ACCESS = ("SelfSubjectAccessReview", "SubjectAccessReview", "LocalSubjectAccessReview")


def review(gk: str, body: JSON, *, user: user_mod.UserInfo | None, gate: authz.Gate, namespace: str | None = None) -> JSON:
    """The answer to a review. The access reviews answer the object sent with its status filled
    in, as upstream's do (minus what only a stored object has: nothing owns a review, and no
    manager's fields are kept); the rules and self reviews answer a new object, as upstream's."""
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        meta.pop("ownerReferences", None)
    kind, _, group = gk.partition(".")
    asker = user or user_mod.anonymous()
    if group == _GROUP and kind in _ACCESS:
        spec = out.get("spec")
        if not isinstance(spec, dict):
            spec = out["spec"] = {}
        subject = _subject(kind, spec, asker)
        attrs = _attributes(kind, spec, subject, namespace=namespace)
        decision = gate.decide(attrs)
        status: JSON = {"allowed": decision.allowed}
        if decision.denied:
            status["denied"] = True
        if decision.reason:
            status["reason"] = decision.reason
        if decision.error:
            status["evaluationError"] = decision.error
        out["status"] = status
        return out
    if gk == "SelfSubjectRulesReview.authorization.k8s.io":
        spec = out.get("spec")
        if not isinstance(spec, dict) or not spec.get("namespace"):
            raise errors.bad_request("no namespace on request")
        rules = gate.authorizer.rules_for(asker, str(spec["namespace"]))
        status = {"resourceRules": [_resource_rule(r) for r in rules.resource_rules],
                  "nonResourceRules": [_non_resource_rule(r) for r in rules.non_resource_rules],
                  "incomplete": rules.incomplete}
        if rules.error:
            status["evaluationError"] = rules.error
        # The Go type's spec is not omitempty: the new object answers an empty one.
        return {"metadata": {}, "spec": {}, "status": status}
    if gk == "SelfSubjectReview.authentication.k8s.io":
        return {"metadata": {}, "status": {"userInfo": asker.to_json()}}
    raise errors.not_found_path()


def _invalid(kind: str, field: str, message: str, reason: str = "FieldValueInvalid") -> errors.APIError:
    return errors.invalid(kind, "", [errors.Cause(field, message, reason)], group=_GROUP)


def _subject(kind: str, spec: JSON, asker: user_mod.UserInfo) -> user_mod.UserInfo:
    if kind == "SelfSubjectAccessReview":
        return asker
    name, groups = spec.get("user") or "", spec.get("groups") or []
    if not name and not groups:
        raise _invalid(kind, "spec.user", 'Invalid value: "": at least one of user or group must be specified')
    extra = spec.get("extra") or {}
    return user_mod.UserInfo(name=str(name), uid=str(spec.get("uid") or ""),
                             groups=tuple(str(g) for g in groups if isinstance(g, str)),
                             extra=tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in extra.items()
                                                if isinstance(v, list))) if isinstance(extra, dict) else ())


def _attributes(kind: str, spec: JSON, subject: user_mod.UserInfo, *, namespace: str | None) -> attributes.Attributes:
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if not resource and not non_resource:
        raise _invalid(kind, "spec.resourceAttributes",
                       "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                       "FieldValueRequired")
    if resource and non_resource:
        raise _invalid(kind, "spec.nonResourceAttributes",
                       "Invalid value: \"null\": cannot be specified in combination with resourceAttributes")
    if kind == "LocalSubjectAccessReview":
        if non_resource:
            raise _invalid(kind, "spec.nonResourceAttributes", "Invalid value: \"null\": disallowed on this kind of request")
        if not namespace or (isinstance(resource, dict) and resource.get("namespace", "") != namespace):
            raise errors.bad_request(f"spec.resourceAttributes.namespace must match namespace: {namespace or ''}")
    if isinstance(non_resource, dict):
        return attributes.non_resource(subject, str(non_resource.get("verb") or ""), str(non_resource.get("path") or ""))
    r = resource if isinstance(resource, dict) else {}
    return attributes.for_resource(subject, str(r.get("verb") or ""), group=str(r.get("group") or ""),
                                   version=str(r.get("version") or ""), resource=str(r.get("resource") or ""),
                                   subresource=str(r.get("subresource") or ""), namespace=str(r.get("namespace") or ""),
                                   name=str(r.get("name") or ""))


def _resource_rule(rule: JSON) -> JSON:
    out: JSON = {"verbs": list(rule.get("verbs") or [])}
    for key in ("apiGroups", "resources", "resourceNames"):
        if rule.get(key):
            out[key] = list(rule[key])
    return out


def _non_resource_rule(rule: JSON) -> JSON:
    return {"verbs": list(rule.get("verbs") or []), "nonResourceURLs": list(rule.get("nonResourceURLs") or [])}
