"""The identity of a request, as upstream's `user.Info`: a name, a uid, groups and extra values.

Every authenticated request carries one (`handlers.USER_KEY` on the HTTP request, and
`rest.Options.user` into the registry, where admission and the access reviews read it). A
request made in process by edgekube's own components carries the identity of that component
(`LocalClient(user=...)`); `None` in `Options` means the registry's own internal work (boot
reconciles, migrations), which no authorizer or admission webhook ever sees.

The groups `system:authenticated` / `system:unauthenticated` are added here, once, as upstream's
authentication union does, so that every consumer (RBAC, reviews, audit, webhooks) sees the same
list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

SYSTEM_MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


@dataclasses.dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    # Sorted (key, values) pairs: hashable and comparable, unlike a dict.
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Upstream's authentication/v1 UserInfo (`SelfSubjectReview.status.userInfo`, the
        `userInfo` of an AdmissionReview, an audit event's `user`): empty fields left out."""
        out: dict[str, Any] = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out

    @property
    def extra_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.extra)


def authenticated(name: str, *, groups: Iterable[str] = (), uid: str = "",
                  extra: Mapping[str, Iterable[str]] | None = None) -> UserInfo:
    """A user an authenticator vouched for, with `system:authenticated` added (once) unless it
    is anonymous, as upstream's union of authenticators does."""
    out = list(dict.fromkeys(groups))
    if name != ANONYMOUS and AUTHENTICATED not in out:
        out.append(AUTHENTICATED)
    return UserInfo(name=name, uid=uid, groups=tuple(out),
                    extra=tuple(sorted((k, tuple(v)) for k, v in (extra or {}).items())))


def anonymous() -> UserInfo:
    return UserInfo(name=ANONYMOUS, groups=(UNAUTHENTICATED,))


def service_account_name(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}")
