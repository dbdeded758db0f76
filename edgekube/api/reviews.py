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

JSON = dict[str, Any]
REASON = "edgekube does not enforce RBAC yet: every authenticated user may do everything"


def review(gk: str, body: JSON, *, user: JSON | None) -> JSON:
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    if isinstance(meta, dict):  # the server owns managedFields, and keeps none for what it never stores
        meta.pop("managedFields", None)
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
        out.setdefault("spec", {})  # not omitempty in the Go type: always in the answer, as its schema requires
        out["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
        return out
    if gk == "SelfSubjectReview.authentication.k8s.io":
        info: JSON = {"username": (user or {}).get("name", "")}
        if (user or {}).get("groups"):
            info["groups"] = [*user["groups"], "system:authenticated"] if user else []
        out["status"] = {"userInfo": info}
        return out
    raise errors.not_found_path()
