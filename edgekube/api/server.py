"""The API server: one aiohttp application over TLS.

Middleware order matters and is deliberate:
1. the listener's (api/listener.py): it sees every request being served (a connection with a
   request in flight is not idle);
2. errors: every failure, ours or aiohttp's, leaves as a Kubernetes `Status` with the right code
   (a client never sees an HTML error page or a bare 500);
3. the filter chain (api/filters.py): the request's info, audit, authentication, impersonation,
   fairness and authorization, in upstream's order, as one middleware.

Nothing listens without TLS: `serve` takes an SSL context and refuses to start without one.
Connections are accepted by `listener` (a cap; handshake, request-head and send deadlines) and
idle ones closed by aiohttp's keep-alive timer.
Authentication lives in `auth.authn` (certificates, then each token authenticator in turn),
authorization in `auth.authz` and `auth.rbac`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from edgekube.api import (
    audit,
    discovery,
    errors,
    fairness,
    filters,
    handlers,
    listener,
    openapi,
    openapi_pb,
    podlogs,
)
from edgekube.api.auth import authn, satokens, tokenreview
from edgekube.api.registry import rest
from edgekube.store import errors as store_errors

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

USER_KEY = handlers.USER_KEY


def _status_response(err: errors.APIError) -> web.Response:
    resp = web.Response(
        body=orjson.dumps(err.status()) + b"\n",
        status=err.code,
        headers={"Content-Type": "application/json", **err.headers},
    )
    if err.headers.get("Connection") == "close":
        resp.force_close()  # as the header says, whatever is left of the request (a slow body)
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.APIError as err:
        return _status_response(err)
    except store_errors.CorruptRecordError as exc:
        # A stored object that cannot be decoded: the server's fault, named, never a crash.
        return _status_response(rest.damaged(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        return _status_response(errors.request_too_large(exc.max_size if hasattr(exc, "max_size") else 0))
    except web.HTTPNotFound:
        return _status_response(errors.not_found_path())
    except web.HTTPMethodNotAllowed as exc:
        return _status_response(errors.method_not_allowed(exc.method, request.path))
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        reason = exc.reason.replace(" ", "") or "Unknown"
        return _status_response(errors.APIError(exc.status_code, reason, exc.text or exc.reason))
    except (ConnectionResetError, OSError) as exc:
        log.debug("client went away: %s", exc)
        raise
    except Exception as exc:
        log.exception("internal error serving %s %s", request.method, request.path)
        return _status_response(errors.internal(f"{type(exc).__name__}: {exc}"))


class ApiServer:
    def __init__(
        self,
        registry: rest.Registry,
        *,
        max_body: int,
        watch_timeout: int,
        bookmark_interval: float,
        authenticators: Sequence[authn.TokenAuthenticator],
        server_address: str,
        ready: Callable[[], bool],
        limits: listener.Limits,
        body_timeout: float,
        logs: podlogs.LogSource | None = None,
        service_accounts: satokens.ServiceAccountTokens | None = None,
        auditor: audit.Auditor | None = None,
        flowcontrol: fairness.Fairness | None = None,
    ) -> None:
        self._registry = registry
        self._service_accounts = service_accounts
        self.auditor = auditor or audit.Auditor(None, settings=None)
        self.fairness = flowcontrol or fairness.Fairness(fairness.Settings(0, 0, 0, 1.0))
        api_audiences = service_accounts.settings.audiences if service_accounts is not None else ()

        def token_review(body: dict[str, Any]) -> dict[str, Any]:
            return tokenreview.review(body, authenticators=authenticators, api_audiences=api_audiences)

        self.connections = listener.Connections(limits)
        self._handlers = handlers.Handlers(
            registry,
            max_body=max_body,
            body_timeout=body_timeout,
            watch_timeout=watch_timeout,
            bookmark_interval=bookmark_interval,
            server_address=server_address,
            logs=logs,
            token_review=token_review,
        )
        self._ready = ready
        self._openapi_v2: bytes | None = None
        self._openapi_v2_pb: bytes | None = None
        self._openapi_generation = -1
        self._openapi_v3: dict[str, tuple[bytes, str]] = {}
        # aiohttp enforces the size of bodies it reads; one byte over our limit lets us tell.
        self.app = web.Application(
            middlewares=[self.connections.middleware, error_middleware, filters.Filters(
                authenticators=authenticators, auditor=self.auditor, flowcontrol=self.fairness,
                gate=registry.gate).middleware],
            client_max_size=max_body + 1,
            # Request bodies are inflated by the handlers (negotiation.decode_content), not by
            # aiohttp's parser, which could hang a connection on a body that is not its encoding.
            handler_args={"max_field_size": 16384, "auto_decompress": False},
        )
        self.app.on_response_prepare.append(self.auditor.on_response_prepare)
        r = self.app.router
        r.add_get("/metrics", self._metrics)
        r.add_get("/healthz", self._health)
        r.add_get("/livez", self._health)
        r.add_get("/readyz", self._readyz)
        r.add_get("/version", self._version)
        r.add_get(satokens.OIDC_CONFIG_PATH, self._openid_configuration)
        r.add_get(satokens.JWKS_PATH, self._jwks)
        r.add_get("/openapi/v2", self._openapi_v2_handler)
        r.add_get("/openapi/v3", self._openapi_v3_index)
        r.add_get("/openapi/v3/{path:.+}", self._openapi_v3_doc)
        # `[\s\S]`, not `.`: a path whose names hold a newline (%0A) is still the API's to answer
        # (a 400 for its query, a 404 naming the object), not the router's bare 404.
        r.add_route("*", "/api", self._handlers.handle)
        r.add_route("*", r"/api/{tail:[\s\S]*}", self._handlers.handle)
        r.add_route("*", "/apis", self._handlers.handle)
        r.add_route("*", r"/apis/{tail:[\s\S]*}", self._handlers.handle)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: the audit log's and fairness's counters, upstream's names."""
        lines = [*self.auditor.metrics(), *self.fairness.metrics()]
        return web.Response(body=("\n".join(lines) + "\n").encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self._ready():
            return web.Response(text="not ready", status=503, content_type="text/plain")
        return web.Response(text="ok", content_type="text/plain")

    async def _version(self, request: web.Request) -> web.Response:
        return handlers.json_response(discovery.version_info())

    async def _openid_configuration(self, request: web.Request) -> web.Response:
        if self._service_accounts is None:
            raise errors.not_found_path()
        return handlers.json_response(self._service_accounts.openid_configuration(),
                                      headers={"Cache-Control": "public, max-age=3600"})

    async def _jwks(self, request: web.Request) -> web.Response:
        if self._service_accounts is None:
            raise errors.not_found_path()
        return handlers.json_response(self._service_accounts.jwks(), content_type="application/jwk-set+json",
                                      headers={"Cache-Control": "public, max-age=3600"})

    def _openapi_fresh(self) -> None:
        """Drop cached OpenAPI documents once the served resources changed (a CRD came or went)."""
        generation = self._registry.catalog.generation
        if generation != self._openapi_generation:
            self._openapi_v2 = None
            self._openapi_v2_pb = None
            self._openapi_v3.clear()
            self._openapi_generation = generation

    async def _openapi_v2_handler(self, request: web.Request) -> web.Response:
        """JSON, or gnostic protobuf for the kubectl releases (<= 1.28) that accept nothing else."""
        self._openapi_fresh()
        accept = request.headers.get("Accept", "")
        pb_at = min((accept.find(t) for t in openapi_pb.ACCEPT_TYPES if t in accept), default=-1)
        json_at = min((accept.find(t) for t in ("application/json", "*/*", "application/*") if t in accept), default=-1)
        wants_json = not accept or json_at >= 0
        if pb_at >= 0 and (json_at < 0 or pb_at < json_at):
            if self._openapi_v2_pb is None:
                self._openapi_v2_pb = openapi_pb.document(openapi.v2_document(self._registry.catalog))
            return web.Response(body=self._openapi_v2_pb, headers={"Content-Type": openapi_pb.MEDIA_TYPE})
        if not wants_json:
            raise errors.APIError(406, "NotAcceptable", f"only application/json and {openapi_pb.MEDIA_TYPE} are served")
        if self._openapi_v2 is None:
            self._openapi_v2 = orjson.dumps(openapi.v2_document(self._registry.catalog))
        return web.Response(body=self._openapi_v2, headers={"Content-Type": "application/json"})

    async def _openapi_v3_index(self, request: web.Request) -> web.Response:
        return handlers.json_response(openapi.v3_index(self._registry.catalog))

    async def _openapi_v3_doc(self, request: web.Request) -> web.Response:
        """A group-version's document; immutable when asked for by the hash the index gives."""
        self._openapi_fresh()
        path = request.match_info["path"]
        cached = self._openapi_v3.get(path)
        if cached is None:
            doc = openapi.v3_document(self._registry.catalog, path)
            if doc is None:
                raise errors.not_found_path()
            cached = (openapi.to_json(doc), openapi.etag(doc))
            self._openapi_v3[path] = cached
        body, tag = cached
        pinned = request.query.get("hash") == tag.strip('"')
        headers = {
            "ETag": tag,
            "Cache-Control": "public, immutable" if pinned else "no-cache, private",
        }
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": "application/json"})


async def serve(api: ApiServer, *, host: str, port: int, ssl_context: ssl.SSLContext | None,
                idle_timeout: float) -> web.AppRunner:
    """Serve `api` over TLS; a connection waiting `idle_timeout` seconds for a request is closed
    (aiohttp's keep-alive timer, which never runs while a request is being served)."""
    if ssl_context is None:
        raise RuntimeError("refusing to serve the API without TLS")
    runner = web.AppRunner(api.app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           keepalive_timeout=idle_timeout)
    await runner.setup()
    site = listener.Site(runner, api.connections, host=host, port=port, ssl_context=ssl_context)
    await site.start()
    return runner

