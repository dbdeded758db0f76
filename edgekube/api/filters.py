"""Upstream's handler chain (kube-apiserver's DefaultBuildHandlerChain) as one middleware.

Every request passes, in this order:
1. audit's start (`audit.Auditor.received`): the audit ID (`Audit-Id` on every answer, as
   upstream's outermost audit filter sets it) and the time received;
2. the request's info (`reqattrs`): what it asks for, read from its URL alone, once; a URL that
   names no resource after `/watch` or `/proxy` is a 400 here, before authentication;
3. authentication (`auth.authn`): a client certificate signed by the cluster CA (TLS verified
   it at the handshake; its user is remembered by subject), else a bearer token offered to each
   token authenticator; the health, version and issuer-discovery paths stay open, as upstream's
   public-info role allows. A refusal is a 401, audited as upstream's failed authentication;
4. audit (`Auditor.observe`): the policy decision and the request's events, around everything
   below, so that refusals further in (403, 429) are audited;
5. impersonation (`auth.impersonation`): the user the request acts as, when each thing it asks
   to impersonate is allowed (audit records both users);
6. fairness (`fairness`): a seat in the request's priority level, queued fairly per user;
7. authorization: the request's info and the acting user put to the registry's gate
   (`auth.authz.Gate`), the same one the in-process client asks.

One middleware rather than one per step: each aiohttp middleware is a wrapper and a coroutine
per request, and on a small GET the seven of them cost more than the steps themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from edgekube.api import audit, errors, fairness, handlers, reqattrs
from edgekube.api.auth import attributes, authn, authz, impersonation, satokens
from edgekube.api.auth import user as user_mod

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/",
                    # Service account issuer discovery: readable by anyone, so that relying
                    # parties can check tokens (upstream's system:service-account-issuer-discovery).
                    satokens.OIDC_CONFIG_PATH, satokens.JWKS_PATH})
_PROBE_CHECKS = ("/healthz/", "/livez/", "/readyz/")  # a single check of a probe


class Filters:
    def __init__(self, *, authenticators: Sequence[authn.TokenAuthenticator], auditor: audit.Auditor,
                 flowcontrol: fairness.Fairness, gate: authz.Gate) -> None:
        self._authenticators = authenticators
        self._auditor = auditor
        self._fairness = flowcontrol
        self._gate = gate
        self._infos = reqattrs.Parser()
        self._certificates = authn.Certificates()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = self._auditor.received(request)
        info = self._infos.of(request)
        path = request.path
        if path not in PUBLIC and not path.startswith(_PROBE_CHECKS):
            try:
                request[handlers.USER_KEY] = self._authenticate(request)
            except errors.APIError as err:
                if err.code == 401:
                    self._auditor.unauthenticated(request, ctx)
                raise
        if self._auditor.enabled:
            return await self._auditor.observe(request, ctx, lambda r: self._admitted(r, handler, info))
        return await self._admitted(request, handler, info)

    def _authenticate(self, request: web.Request) -> user_mod.UserInfo:
        transport = request.transport
        if transport is not None:
            found = self._certificates.user(transport.get_extra_info("peercert"))
            if found is not None:
                return found
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        # The scheme in any case, as upstream's bearertoken authenticator reads it (the Python
        # client's in-cluster config sends "bearer <token>").
        if scheme.lower() == "bearer" and credentials.strip():
            return authn.from_token(credentials.strip(), authenticators=self._authenticators)
        raise errors.unauthorized()

    async def _admitted(self, request: web.Request, handler: Handler,
                        info: reqattrs.RequestInfo) -> web.StreamResponse:
        """Impersonation, fairness, authorization, then the handler."""
        user = request.get(handlers.USER_KEY)  # None: the public paths
        if user is not None:
            acting = impersonation.impersonate(user, request.headers, gate=self._gate)
            if acting is not user:
                request[handlers.IMPERSONATOR_KEY] = user
                request[handlers.USER_KEY] = user = acting
        level = self._fairness.level_for(request.path, user, info)  # None: takes no seat
        flow = user.name if user is not None else user_mod.ANONYMOUS  # the user it acts as
        if level is not None and not level.try_start(flow):
            await self._fairness.acquire(level, flow)
        try:
            if user is not None:
                self._gate.check(attributes.from_info(user, info))
            return await handler(request)
        finally:
            if level is not None:
                level.release(flow)
