"""Access reviews: the create-only resources that answer "may I?" and "who am I?".

`kubectl auth can-i` creates a SelfSubjectAccessReview (`--list`: a SelfSubjectRulesReview),
`kubectl auth whoami` a SelfSubjectReview. Nothing is stored: the answer comes back in the
object's status. RBAC objects are stored but not enforced yet (a later issue), so every
authenticated user may do everything, and the answers say so.
"""

from __future__ import annotations

import copy
from typing import Any

from edgekube.api import errors
from edgekube.api.auth import user as user_mod

JSON = dict[str, Any]
REASON = "edgekube does not enforce RBAC yet: every authenticated user may do everything"


def review(gk: str, body: JSON, *, user: user_mod.UserInfo | None) -> JSON:
    """The answer to a review. The access reviews answer the object sent with its status filled
    in, as upstream's do (minus what only a stored object has: nothing owns a review, and no
    manager's fields are kept); the rules and self reviews answer a new object, as upstream's."""
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        meta.pop("ownerReferences", None)
    if gk in ("SelfSubjectAccessReview.authorization.k8s.io", "SubjectAccessReview.authorization.k8s.io",
              "LocalSubjectAccessReview.authorization.k8s.io"):
        spec = out.get("spec")
        if not isinstance(spec, dict) or not (spec.get("resourceAttributes") or spec.get("nonResourceAttributes")):
            raise errors.invalid(out.get("kind", "SubjectAccessReview"), "", [errors.Cause(
                "spec.resourceAttributes", "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                "FieldValueRequired")], group="authorization.k8s.io")
        out["status"] = {"allowed": user is not None, "reason": REASON if user is not None else "not authenticated"}
        return out
    if gk == "SelfSubjectRulesReview.authorization.k8s.io":
        spec = out.get("spec")
        if not isinstance(spec, dict) or not spec.get("namespace"):
            raise errors.bad_request("no namespace on request")
        # The Go type's spec is not omitempty: the new object answers an empty one.
        return {"metadata": {}, "spec": {}, "status": {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }}
    if gk == "SelfSubjectReview.authentication.k8s.io":
        return {"metadata": {}, "status": {"userInfo": (user or user_mod.anonymous()).to_json()}}
    raise errors.not_found_path()
