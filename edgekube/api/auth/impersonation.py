"""Impersonation: `kubectl --as=bob --as-group=g --as-uid=u`, as upstream's WithImpersonation.

The headers `Impersonate-User`, `Impersonate-Group` (repeated), `Impersonate-Uid` and
`Impersonate-Extra-<key>` ask to act as another user. Each thing asked for is one authorization
of the verb `impersonate` by the real user, on:
- `users` (name: the user) or, for `system:serviceaccount:<ns>:<name>`, `serviceaccounts` in
  `<ns>` (name: `<name>`), in the core group;
- `groups` (name: the group), core group;
- `uids` (name: the uid) and `userextras/<key>` (name: the value), group
  `authentication.k8s.io`.
The first refusal is upstream's 403 naming that resource. Once all are allowed the request
continues as the impersonated user: the groups asked for (a service account, without groups,
gets its fixed ones), plus `system:authenticated` unless a group says otherwise (anonymous gets
`system:unauthenticated`).
Groups, extras or a uid without a user is a malformed request (upstream answers it with a 500;
it is the client's fault, so here it is a 400 with the same text).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Protocol

from edgekube.api import errors
from edgekube.api.auth import attributes, authz
from edgekube.api.auth import user as user_mod

USER = "Impersonate-User"
GROUP = "Impersonate-Group"
UID = "Impersonate-Uid"
EXTRA_PREFIX = "impersonate-extra-"
_AUTHN = "authentication.k8s.io"


class Headers(Protocol):
    """What impersonation reads of a request's headers (aiohttp's multidict, case-insensitive)."""

    def get(self, key: str, default: str) -> str: ...

    def getall(self, key: str, default: list[str]) -> list[str]: ...

    def __iter__(self) -> Iterator[str]: ...


def impersonate(requestor: user_mod.UserInfo, headers: Headers, *, gate: authz.Gate) -> user_mod.UserInfo:
    """The user the request acts as (the requestor when no impersonation is asked for)."""
    name = headers.get(USER, "")
    groups_asked = headers.getall(GROUP, [])
    uid = headers.get(UID, "")
    extra: dict[str, list[str]] = {}
    for header in headers:
        if header.lower().startswith(EXTRA_PREFIX):
            key = urllib.parse.unquote(header[len(EXTRA_PREFIX):].lower())
            extra.setdefault(key, []).extend(headers.getall(header, []))
    if not (name or groups_asked or uid or extra):
        return requestor
    checks: list[attributes.Attributes] = []
    groups: list[str] = []
    if name:
        sa = name.split(":") if name.startswith(user_mod.SERVICE_ACCOUNT_PREFIX) else []
        if len(sa) == 4 and sa[2] and sa[3]:
            checks.append(attributes.for_resource(requestor, "impersonate", group="", version="v1",
                                                  resource="serviceaccounts", namespace=sa[2], name=sa[3]))
            if not groups_asked:
                groups = list(user_mod.service_account_groups(sa[2]))
        else:
            checks.append(attributes.for_resource(requestor, "impersonate", group="", version="v1", resource="users",
                                                  name=name))
    for group in groups_asked:
        checks.append(attributes.for_resource(requestor, "impersonate", group="", version="v1", resource="groups",
                                              name=group))
        groups.append(group)
    for key, values in extra.items():
        checks.extend(attributes.for_resource(requestor, "impersonate", group=_AUTHN, version="v1",
                                              resource="userextras", subresource=key, name=v) for v in values)
    if uid:
        checks.append(attributes.for_resource(requestor, "impersonate", group=_AUTHN, version="v1", resource="uids",
                                              name=uid))
    if not name:
        raise errors.bad_request(f"requested {_describe(checks)} without impersonating a user")
    for check in checks:
        gate.check(check)
    if name != user_mod.ANONYMOUS:
        if user_mod.AUTHENTICATED not in groups and user_mod.UNAUTHENTICATED not in groups:
            groups.append(user_mod.AUTHENTICATED)
    elif user_mod.UNAUTHENTICATED not in groups:
        groups.append(user_mod.UNAUTHENTICATED)
    return user_mod.UserInfo(name=name, uid=uid, groups=tuple(groups),
                             extra=tuple(sorted((k, tuple(v)) for k, v in extra.items())))


def _describe(checks: list[attributes.Attributes]) -> str:
    """Upstream prints the ObjectReferences it built; a readable list of the same things."""
    return "[" + " ".join(f"{c.resource}{'/' + c.subresource if c.subresource else ''}={c.name}" for c in checks) + "]"
