"""What a request asks to do, in the terms an authorizer decides on (upstream's
authorizer.Attributes): the user, and the request's RequestInfo (`api.reqattrs`).

Two builders give the same record: `from_info` adds the user to what `reqattrs` parsed from a
URL and method (upstream's RequestInfoFactory, from the path alone, before any routing, so
that a refused user learns nothing about which resources exist), and `for_resource` names an
in-process call (`LocalClient`). Everything downstream (the authorizer, the 403 message, the
access reviews) reads only this record, so HTTP and in-process requests are judged alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from edgekube.api import errors, reqattrs
from edgekube.api.auth import user as user_mod


class Attributes(NamedTuple):
    """A tuple, not a dataclass: made and hashed for every request (the gate's memo key), where
    a tuple's C construction and hash cost a fraction of a frozen dataclass's. The fields after
    `user` are `reqattrs.RequestInfo`'s, in its order."""

    user: user_mod.UserInfo
    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # the URL path (what a non-resource rule matches)

    def with_user(self, user: user_mod.UserInfo) -> Attributes:
        return self._replace(user=user)


def for_resource(user: user_mod.UserInfo, verb: str, *, group: str, resource: str, namespace: str | None = None,
                 name: str | None = None, subresource: str | None = None, version: str = "") -> Attributes:
    return Attributes(user=user, verb=verb, api_group=group, api_version=version, resource=resource,
                      subresource=subresource or "", namespace=namespace or "", name=name or "")


def non_resource(user: user_mod.UserInfo, verb: str, path: str) -> Attributes:
    return Attributes(user=user, verb=verb, resource_request=False, path=path)


def from_info(user: user_mod.UserInfo, info: reqattrs.RequestInfo) -> Attributes:
    return Attributes(user, *info)


def from_http(user: user_mod.UserInfo, *, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """Upstream's RequestInfoFactory.NewRequestInfo over (method, path, query), with the user."""
    return Attributes(user, *reqattrs.parse(method, path, query))


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
