"""The kubelet's service account tokens for projected volumes, asked for and rotated (upstream's
pkg/kubelet/token manager).

A pod's projected `serviceAccountToken` source is filled with a token from the TokenRequest API
(`serviceaccounts/<sa>/token`, through the kubelet's client, the same call an agent makes over
HTTPS), bound to the pod (name and uid), with the source's audience (none: the API's) and
expirationSeconds. Tokens are kept per (pod uid, account, audience, lifetime) and asked for
again, as upstream's manager does, once 80% of their life has passed (less a jitter of up to
10 s) or 24 hours after they were issued, whichever comes first; `refresh_in` says when the next
one is due so the pod's worker wakes for it. The volume writer then swaps the new token in
atomically (`volumes.write_atomic`), so a reader never sees half a token. `forget` drops a
finished pod's tokens.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections.abc import Mapping
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.client import local

JSON = dict[str, Any]
MAX_TTL_SECONDS = 24 * 3600.0
MAX_JITTER_SECONDS = 10.0
DEFAULT_EXPIRATION_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class _Token:
    token: str
    refresh_at: float  # epoch seconds


class TokenManager:
    def __init__(self, client: local.LocalClient, *, clock: clock_mod.Clock) -> None:
        self._client = client
        self._clock = clock
        self._tokens: dict[tuple[str, str, str, int], _Token] = {}

    async def get(self, pod: Mapping[str, Any], *, audience: str, expiration_seconds: int) -> str:
        """A valid token of the pod's account bound to the pod; raises the API's error."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        key = (uid, account, audience, expiration_seconds)
        now = self._clock.now().timestamp()
        held = self._tokens.get(key)
        if held is not None and now < held.refresh_at:
            return held.token
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": expiration_seconds,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"), "uid": uid}}}
        answer = await self._client.create_subresource("v1", "ServiceAccount", name=account,
                                                       namespace=str(meta.get("namespace") or "default"),
                                                       subresource="token", body=body)
        status = answer.get("status") or {}
        lifetime = float((answer.get("spec") or {}).get("expirationSeconds") or expiration_seconds)
        expires = _epoch(status.get("expirationTimestamp"), default=now + lifetime)
        issued = expires - lifetime
        jitter = random.uniform(0, MAX_JITTER_SECONDS)
        refresh_at = min(issued + MAX_TTL_SECONDS, expires - lifetime * 0.2) - jitter
        self._tokens[key] = _Token(str(status.get("token") or ""), refresh_at)
        return self._tokens[key].token

    def refresh_in(self, uid: str) -> float | None:
        """Seconds until the next of the pod's tokens is due for a refresh (None: it has none)."""
        due = [t.refresh_at for k, t in self._tokens.items() if k[0] == uid]
        return max(0.0, min(due) - self._clock.now().timestamp()) if due else None

    def forget(self, uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == uid]:
            del self._tokens[key]


def sources(pod: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(audience, expirationSeconds) of every serviceAccountToken source of the pod's projected
    volumes, as the kubelet must fetch them before writing the volumes."""
    out: list[tuple[str, int]] = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        projected = vol.get("projected") if isinstance(vol, Mapping) else None
        for source in (projected or {}).get("sources") or []:
            sat = source.get("serviceAccountToken") if isinstance(source, Mapping) else None
            if isinstance(sat, Mapping):
                out.append(token_key(sat))
    return out


def token_key(source: Mapping[str, Any]) -> tuple[str, int]:
    exp = source.get("expirationSeconds")
    return (str(source.get("audience") or ""),
            exp if isinstance(exp, int) and not isinstance(exp, bool) else DEFAULT_EXPIRATION_SECONDS)


def _epoch(stamp: Any, *, default: float) -> float:
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
