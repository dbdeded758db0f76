"""TokenReview (authentication.k8s.io/v1, create only): "whose token is this?", for other components.

Upstream's REST (pkg/registry/authentication/tokenreview): the token is run through the same
authenticators as a request's bearer token, with the audiences the review asks for (the API's
own when it names none). An authenticator that knows audiences (service account tokens,
`AudienceAware`) checks them itself; the others stand for the API's audiences only, and answer
nothing when the review asks for audiences the API does not have (upstream's
audAgnosticTokenAuthenticator). The answer echoes the spec and says `authenticated`, the user
(upstream's authentication/v1 UserInfo), the audiences the token is good for, or the error as
upstream words it (`[invalid bearer token, <reason>]`). A review never fails because the token
does: only a missing token is a 400.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from edgekube.api import errors
from edgekube.api.auth import authn

JSON = dict[str, Any]
INVALID = "invalid bearer token"


@runtime_checkable
class AudienceAware(Protocol):
    """An authenticator that checks a token's audiences against the ones asked for."""

    def review(self, token: str, audiences: Iterable[str]) -> Any:
        """An object with `.user` and `.audiences`, or None when the token is not of this kind;
        raises an exception whose message is the reason for one it refuses."""
        ...


def review(body: JSON, *, authenticators: Sequence[authn.TokenAuthenticator], api_audiences: Sequence[str]) -> JSON:
    out = copy.deepcopy(body)
    spec = out.get("spec")
    if not isinstance(spec, dict) or not spec.get("token"):
        raise errors.bad_request("token is required for TokenReview")
    token = str(spec["token"])
    wanted = [str(a) for a in spec.get("audiences") or []] or list(api_audiences)
    meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
    out["metadata"] = {k: v for k, v in (meta or {}).items() if k in ("name", "generateName")} | {"creationTimestamp": None}
    status: JSON = {"user": {}}
    try:
        found = _authenticate(token, wanted, authenticators=authenticators, api_audiences=api_audiences)
    except Exception as exc:  # the reason the token was refused, whatever raised it
        reason = exc.message if isinstance(exc, errors.APIError) else str(exc)
        if isinstance(exc, errors.APIError) and exc.__cause__ is not None:
            reason = str(exc.__cause__)
        status["error"] = f"[{INVALID}, {reason}]"
        found = None
    if found is None:
        status.setdefault("error", INVALID)
    else:
        user, audiences = found
        status = {"authenticated": True, "user": user.to_json(), "audiences": list(audiences)}
    out["status"] = status
    return out


def _authenticate(token: str, wanted: Sequence[str], *, authenticators: Sequence[authn.TokenAuthenticator],
                  api_audiences: Sequence[str]) -> tuple[Any, Sequence[str]] | None:
    for authenticator in authenticators:
        if isinstance(authenticator, AudienceAware):
            verified = authenticator.review(token, wanted)
            if verified is not None:
                return verified.user, verified.audiences
            continue
        implicit = [a for a in api_audiences if a in wanted]
        if api_audiences and not implicit:
            continue
        user = authenticator.authenticate_token(token)
        if user is not None:
            return user, implicit
    return None
