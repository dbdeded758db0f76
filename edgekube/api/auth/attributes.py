"""What a request asks to do, in the terms an authorizer decides on (upstream's RequestInfo and
authorizer.Attributes).

Two builders give the same record: `from_http` parses a URL and method exactly as upstream's
RequestInfoFactory does (from the path alone, before any routing, so that a refused user learns
nothing about which resources exist), and `for_resource` names an in-process call
(`LocalClient`). Everything downstream (the authorizer, the 403 message, the access reviews)
reads only this record, so HTTP and in-process requests are judged alike.

Parsing rules kept from upstream:
- paths with fewer than three parts under `/api` (two plus the group under `/apis`) are
  non-resource requests (`/api`, `/apis/apps/v1`, `/openapi/v2`, `/version`): the verb is the
  lower-cased method and the path is what a rule's `nonResourceURLs` match;
- `/namespaces/<ns>/...` sets the namespace, also for the Namespace object itself
  (`/api/v1/namespaces/foo` is resource `namespaces`, name `foo`, in namespace `foo`) and its
  `status` and `finalize` subresources;
- GET (and HEAD) on a collection is `list`, or `watch` with `?watch=1`/`/watch/` prefix; a
  `fieldSelector` of `metadata.name=<n>` names the object; DELETE on a collection is
  `deletecollection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from edgekube.api import errors
from edgekube.api.auth import user as user_mod

_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# The characters upstream's path.IsValidPathSegmentName refuses in a name taken from a selector.
_BAD_NAMES = frozenset({".", ".."})


class Attributes(NamedTuple):
    """A tuple, not a dataclass: made and hashed for every request (the gate's memo key), where
    a tuple's C construction and hash cost a fraction of a frozen dataclass's."""

    user: user_mod.UserInfo
    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # a non-resource request's URL path

    def with_user(self, user: user_mod.UserInfo) -> Attributes:
        return self._replace(user=user)


def for_resource(user: user_mod.UserInfo, verb: str, *, group: str, resource: str, namespace: str | None = None,
                 name: str | None = None, subresource: str | None = None, version: str = "") -> Attributes:
    return Attributes(user=user, verb=verb, api_group=group, api_version=version, resource=resource,
                      subresource=subresource or "", namespace=namespace or "", name=name or "")


def non_resource(user: user_mod.UserInfo, verb: str, path: str) -> Attributes:
    return Attributes(user=user, verb=verb, resource_request=False, path=path)


def from_http(user: user_mod.UserInfo, *, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """Upstream's RequestInfoFactory.NewRequestInfo over (method, path, query)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return non_resource(user, method.lower(), path)
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            raise errors.bad_request(f"unable to determine kind and namespace from url, {path}")
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
                rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _watch_flag(query) else "list"
        selected = _selected_name(query.get("fieldSelector", ""))
        if selected and selected not in _BAD_NAMES and "/" not in selected and "%" not in selected:
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user=user, verb=verb, api_group=group, api_version=version, resource=resource,
                      subresource=subresource, namespace=namespace, name=name)


def _watch_flag(query: Mapping[str, str]) -> bool:
    value = query.get("watch")
    return value is not None and value.lower() not in ("false", "0")


def _selected_name(selector: str) -> str:
    """The name a field selector requires exactly (`metadata.name=x` or `==`), else ""."""
    found = ""
    for term in selector.split(","):
        key, eq, value = term.partition("==") if "==" in term else term.partition("=")
        if eq and not key.endswith("!") and key.strip() == "metadata.name":
            found = value.strip()
    return found


def describe(attrs: Attributes) -> str:
    """Upstream's forbiddenMessage: who cannot do what, where."""
    who = attrs.user.name
    if not attrs.resource_request:
        return f'User "{who}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if attrs.namespace:
        return (f'User "{who}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
                f'in the namespace "{attrs.namespace}"')
    return f'User "{who}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" at the cluster scope'


def forbidden(attrs: Attributes, reason: str = "") -> errors.APIError:
    """The 403 upstream's responsewriters.Forbidden writes: NewForbidden over the request's
    group and resource, with its name, and the message above (and the authorizer's reason)."""
    message = describe(attrs) + (f": {reason}" if reason else "")
    group, resource = (attrs.api_group, attrs.resource) if attrs.resource_request else ("", "")
    if not resource:
        return errors.APIError(403, "Forbidden", f"forbidden: {message}", details={})
    if attrs.name:
        return errors.forbidden_object(resource, attrs.name, message, group=group)
    details = {"group": group, "kind": resource} if group else {"kind": resource}
    return errors.APIError(403, "Forbidden", f"{errors.qualified(resource, group)} is forbidden: {message}",
                           details=details)
