"""HTTP handlers for `/api` and `/apis`: parse the path, call the registry, render the answer.

Kubernetes URLs have a small grammar, parsed here rather than by a route table because the same
prefix serves discovery, collections, objects, subresources and the legacy `/watch/` form:

    /api/v1 | /apis/<group>/<version>                       resource list (discovery)
      /<plural>                                             collection (all namespaces)
      /<plural>/<name>[/<subresource>]                      cluster-scoped object
      /namespaces/<ns>/<plural>[/<name>[/<subresource>]]    namespaced
      /watch/...                                            legacy watch of the above

Handlers stay thin: semantics live in `registry.rest`, so the in-process client gets the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from edgekube.api import (
    apischema,
    discovery,
    errors,
    negotiation,
    patch,
    podlogs,
    reviews,
    tables,
    watchstream,
)
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import decoding, fieldcheck, resources, rest

# The authenticated user of a request ({"name", "groups"}), set by the auth middleware.
USER_KEY: web.RequestKey[user_mod.UserInfo] = web.RequestKey("user", user_mod.UserInfo)
# The authenticated user of an impersonating request (USER_KEY then holds the one it acts as):
# audit's `user` beside its `impersonatedUser`.
# The audit annotations admission adds to a write (filled in as it runs, refusals included),
# for the audit log's events of the request.
ADMISSION_AUDIT_KEY: web.RequestKey[dict[str, str]] = web.RequestKey("admission-audit", dict)
IMPERSONATOR_KEY: web.RequestKey[user_mod.UserInfo] = web.RequestKey("impersonator", user_mod.UserInfo)
JSON = dict[str, Any]

_SCALE = "io.k8s.api.autoscaling.v1.Scale"
_SUB_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create"}  # method -> verb on a subresource


def _typed(body: JSON, definition: str) -> JSON:
    """A body that is not a stored kind (DeleteOptions, Binding, Scale), decoded as upstream
    decodes it into its Go struct: a wrong type is a 400, unknown fields are dropped."""
    _, wrong = fieldcheck.check(apischema.definition(definition) or {}, body, prune=True)
    if wrong:
        raise errors.bad_request(f"{definition.rsplit('.', 1)[-1]} cannot be decoded: " + "; ".join(wrong))
    return body


@dataclasses.dataclass(frozen=True)
class Target:
    info: resources.ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None,
                  content_type: str = "application/json") -> web.Response:
    # A newline ends the body, as upstream's encoder writes it (tools compare the bytes).
    return web.Response(body=orjson.dumps(body) + b"\n", status=status, content_type=None,
                        headers={"Content-Type": content_type, **(headers or {})})


# Past this size an answer goes out in pieces of this size, each a yield to the event loop: TLS
# encrypts what is written in one go, and 15 MB (a list of 5,000 pods) would take tens of ms.
_SEND_PIECE = 256 * 1024


# A list answer of this many objects or more has its pieces freed on the offload worker once
# sent (thousands of bytes objects: milliseconds of the loop's time when its frame ended).
_LET_GO_ITEMS = 1000


def _render_and_let_go(render: Callable[[JSON], bytes], held: list[JSON]) -> bytes:
    try:
        return render(held[0])
    finally:
        held.clear()


async def send_json(request: web.Request, parts: list[bytes], *, status: int = 200,
                    headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """A JSON answer made of `parts` (concatenated); a large one written in pieces."""
    size = sum(len(p) for p in parts)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if size <= _SEND_PIECE:
        return web.Response(body=b"".join(parts), status=status, content_type=None, headers=all_headers)
    response = web.StreamResponse(status=status, headers=all_headers)
    response.content_length = size
    await response.prepare(request)
    batch: list[bytes] = []
    batched = 0

    async def flush() -> None:
        nonlocal batch, batched
        await response.write(b"".join(batch))
        batch, batched = [], 0
        await asyncio.sleep(0)  # a write yields only when the socket's buffer is full

    for part in parts:
        if len(part) > _SEND_PIECE:
            for at in range(0, len(part), _SEND_PIECE):
                batch.append(part[at:at + _SEND_PIECE])
                await flush()
            continue
        batch.append(part)
        batched += len(part)
        if batched >= _SEND_PIECE:
            await flush()
    if batch:
        await flush()
    await response.write_eof()
    return response


def _separated(items: list[bytes], separator: bytes) -> list[bytes]:
    out = [separator] * (2 * len(items) - 1) if items else []
    out[::2] = items
    return out


def _q(request: web.Request, name: str, default: str = "") -> str:
    return request.query.get(name, default)


def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter as upstream's parameter codec reads it: false when absent,
    "false" (any case) or "0"; true for any other value, the empty one included."""
    value = request.query.get(name)
    return value is not None and value != "0" and value.lower() != "false"


def _list_options(request: web.Request) -> int | None:
    """The integer parameters of ListOptions, decoded (a 400 when not integers) for every verb
    that takes them, as upstream decodes the whole ListOptions before serving a list, a watch
    or a deletecollection; the limit, which only a list uses."""
    errors.int_query(request.query, "timeoutSeconds")
    return errors.int_query(request.query, "limit")


class Handlers:
    def __init__(self, registry: rest.Registry, *, max_body: int, watch_timeout: int, bookmark_interval: float,
                 server_address: str, body_timeout: float = 60.0, logs: podlogs.LogSource | None = None,
                 token_review: Callable[[JSON], JSON] | None = None) -> None:
        self._registry = registry
        self._catalog = registry.catalog
        self._max_body = max_body
        self._body_timeout = body_timeout  # seconds for a whole body once the head arrived
        self._watch_timeout = watch_timeout
        self._bookmark_interval = bookmark_interval
        self._server_address = server_address
        self._logs = logs  # where pods/log reads container logs (the kubelet's files)
        self._token_review = token_review  # TokenReview, through the server's authenticators
        self._watch_lines = watchstream.SharedLines()  # large events, encoded once for all watches

    # --- routing -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            raise errors.not_found_path()
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery_root(request, core=True)
            group, version, rest_parts = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return self._discovery_root(request, core=False)
            if len(parts) == 2:
                doc = discovery.api_group(self._catalog, parts[1])
                if doc is None:
                    raise errors.not_found_path()
                self._only_get(request)
                return json_response(doc)
            group, version, rest_parts = parts[1], parts[2], parts[3:]
        else:
            raise errors.not_found_path()
        if not rest_parts:
            self._only_get(request)
            doc = discovery.api_resource_list(self._catalog, group, version)
            if doc is None:
                raise errors.not_found_path()
            return json_response(doc)
        target = self._parse(group, version, rest_parts)
        return await self._dispatch(request, target)

    def _only_get(self, request: web.Request) -> None:
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(request.method, request.path)

    def _discovery_root(self, request: web.Request, *, core: bool) -> web.Response:
        self._only_get(request)
        wanted = discovery.negotiate_discovery(request.headers.get("Accept", ""))
        if wanted is not None:
            return json_response(
                discovery.aggregated(self._catalog, core=core, version=wanted),
                content_type=discovery.discovery_content_type(wanted),
                headers={"Vary": "Accept"},
            )
        if core:
            return json_response(discovery.core_versions(server_address=self._server_address), headers={"Vary": "Accept"})
        return json_response(discovery.api_group_list(self._catalog), headers={"Vary": "Accept"})

    def _parse(self, group: str, version: str, parts: list[str]) -> Target:
        legacy_watch = False
        if parts and parts[0] == "watch":
            legacy_watch = True
            parts = parts[1:]
        namespace: str | None = None
        if len(parts) == 3 and parts[0] == "namespaces" and self._catalog.lookup(group, version, parts[2]) is None:
            # /api/v1/namespaces/<name>/<sub>: a subresource of the Namespace itself (status,
            # finalize), as no resource is named like one of its subresources.
            pass
        elif len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        elif len(parts) == 2 and parts[0] == "namespaces":
            # /api/v1/namespaces/<name>: the namespace object itself.
            pass
        if not parts:
            raise errors.not_found_path()
        plural = parts[0]
        info = self._catalog.lookup(group, version, plural)
        if info is None:
            raise errors.not_found_path()
        if namespace is not None and not info.namespaced:
            raise errors.not_found_path()
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if len(parts) > 3:
            raise errors.not_found_path()
        if sub is not None and sub not in info.subresources:
            raise errors.not_found_path()
        return Target(info=info, namespace=namespace, name=name, subresource=sub, legacy_watch=legacy_watch)

    async def _dispatch(self, request: web.Request, t: Target) -> web.StreamResponse:
        m = request.method
        if t.info.verbs == ("create",):
            if m != "POST" or t.name is not None:
                raise errors.method_not_allowed(m, t.info.plural)
            body = await self._decode(await self._body(request), request.headers.get("Content-Type", ""))
            definition = apischema.kind_definition(t.info.group, t.info.version, t.info.kind)
            if definition is not None:  # decoded into its type: nothing of the client's echoed but the type's fields
                body = _typed(body, definition)
            if t.info.gk == "TokenReview.authentication.k8s.io" and self._token_review is not None:
                out = self._token_review(body)
            else:
                out = reviews.review(t.info.gk, body, user=request.get(USER_KEY), gate=self._registry.gate,
                                     namespace=t.namespace)
            out["apiVersion"], out["kind"] = t.info.api_version, t.info.kind
            return json_response(out, status=201)
        if t.name is None:
            if m == "GET":
                if t.legacy_watch or _flag(request, "watch"):
                    return await self._watch(request, t)
                return await self._list(request, t)
            if m == "POST":
                if t.info.namespaced and t.namespace is None:
                    raise errors.method_not_allowed(m, t.info.plural)
                return await self._create(request, t)
            if m == "DELETE" and "deletecollection" in t.info.verbs and not (t.info.namespaced and t.namespace is None):
                # A namespaced kind's cluster-wide path (`/api/v1/pods`) lists and watches only,
                # as upstream routes it: a DELETE there is a 405, never a sweep of every namespace.
                return await self._delete_collection(request, t)
            raise errors.method_not_allowed(m, t.info.plural)
        if t.info.namespaced and t.namespace is None:
            raise errors.not_found_path()
        if t.legacy_watch:
            return await self._watch(request, t)
        if t.subresource is not None and _SUB_VERBS.get(m) not in discovery.subresource_info(t.info, name=t.subresource).verbs:
            # Each subresource serves the verbs discovery lists for it (namespaces/finalize is
            # PUT only): anything else is a 405, as upstream routes them.
            raise errors.method_not_allowed(m, f"{t.info.plural}/{t.subresource}")
        if t.subresource == "binding":
            if m != "POST":
                raise errors.method_not_allowed(m, "pods/binding")
            return await self._bind(request, t)
        if t.subresource == "scale":
            return await self._scale(request, t)
        if t.subresource == "token":
            return await self._token(request, t)
        if t.subresource == "log":
            assert t.namespace is not None and t.name is not None
            return await podlogs.serve(request, registry=self._registry, info=t.info, namespace=t.namespace,
                                       name=t.name, source=self._logs)
        if m == "GET":
            if _flag(request, "watch"):
                return await self._watch(request, t)
            return await self._get(request, t)
        if m == "PUT":
            return await self._update(request, t)
        if m == "PATCH":
            return await self._patch(request, t)
        if m == "DELETE" and t.subresource is None:
            return await self._delete(request, t)
        raise errors.method_not_allowed(m, f"{t.info.plural}/{t.subresource or ''}")

    async def _token(self, request: web.Request, t: Target) -> web.Response:
        """serviceaccounts/<name>/token (POST only): a TokenRequest, answered by the token issuer."""
        assert t.namespace is not None and t.name is not None
        body = await self._decode(await self._body(request), request.headers.get("Content-Type", ""))
        body = _typed(body, "io.k8s.api.authentication.v1.TokenRequest")
        out = await self._registry.create_subresource(t.info, namespace=t.namespace, name=t.name,
                                                      subresource="token", body=body, options=self._options(request))
        return json_response(out, status=201)

    # --- helpers -----------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._max_body:
            raise errors.request_too_large(self._max_body)
        try:
            async with asyncio.timeout(self._body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise errors.request_too_large(self._max_body) from None
        except TimeoutError:
            # A body trickled in slowly holds the handler: refused as the client's fault, and the
            # connection is not reused (aiohttp drains or drops what is left of the body).
            raise errors.body_timeout(self._body_timeout) from None
        if len(body) > self._max_body:
            raise errors.request_too_large(self._max_body)
        # aiohttp's own decompression is off (server.py): a body that lies about its encoding
        # could leave its parser waiting; here it is a plain 400, and a bomb a 413.
        return negotiation.decode_content(body, request.headers.get("Content-Encoding", ""), limit=self._max_body)

    async def _decode(self, body: bytes, content_type: str, *, kind: str = "") -> JSON:
        return await negotiation.decode_body_async(body, content_type, kind=kind, offload=self._registry.offload)

    def _options(self, request: web.Request, *, cost: int = 0) -> rest.Options:
        dry = request.query.getall("dryRun", [])
        for d in dry:
            if d != "All":
                raise errors.bad_request(f'Invalid dry run value: "{d}": supported values: "All"')
        fv = _q(request, "fieldValidation") or "Strict"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f'fieldValidation: invalid value "{fv}": must be one of Ignore, Warn, Strict')
        manager = _q(request, "fieldManager") or None
        if manager is not None and len(manager) > 128:
            raise errors.bad_request("fieldManager: Too long: may not be more than 128 bytes")
        applying = request.method == "PATCH" and negotiation.media_type(request.headers.get("Content-Type", "")) == patch.APPLY_PATCH
        if manager is None and not applying:
            # As upstream: a write without fieldManager is recorded under its user agent's name.
            manager = request.headers.get("User-Agent", "").split("/", 1)[0][:128] or None
        return rest.Options(dry_run=bool(dry), field_validation=fv, field_manager=manager, cost=cost,
                            user=request.get(USER_KEY))

    def _render(self, request: web.Request, t: Target, obj: JSON, *, status: int = 200,
                warnings: rest.Warnings | None = None) -> web.Response:
        return web.Response(body=self._renderer(request, t)(obj), status=status, content_type=None,
                            headers={"Content-Type": "application/json", **_warning_headers(warnings)})

    def _renderer(self, request: web.Request, t: Target) -> Callable[[JSON], bytes]:
        """How an object is answered to `request`: as itself or as a Table (pure: may run off
        the event loop)."""
        version = negotiation.wants_table(request.headers.get("Accept", ""))
        include = _q(request, "includeObject") or "Metadata"

        def render(obj: JSON) -> bytes:
            obj = rest.present(t.info, obj)
            if version is not None:
                table = tables.to_table(t.info.gk, [obj], include_object=include, printer=tables.printer_for_info(t.info))
                table["apiVersion"] = f"meta.k8s.io/{version}"
                obj = table
            # A newline ends the body, as upstream's encoder writes it (tools compare the bytes).
            return orjson.dumps(obj) + b"\n"

        return render

    # --- verbs -------------------------------------------------------------------------------

    async def _get(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        body = await self._registry.read(t.info, namespace=t.namespace, name=t.name, render=self._renderer(request, t))
        return await send_json(request, [body])

    async def _list(self, request: web.Request, t: Target) -> web.StreamResponse:
        negotiation.check_acceptable(request.headers.get("Accept", ""))
        limit = _list_options(request)
        version = negotiation.wants_table(request.headers.get("Accept", ""))
        include = _q(request, "includeObject") or "Metadata"
        printer = tables.printer_for_info(t.info) or tables.printer_for(t.info.gk)
        when = datetime.datetime.now(datetime.UTC)

        # Each object is rendered to its JSON bytes on the offload worker as it is read (see
        # Registry.list_rendered), and the answer is those bytes between a head and a tail.
        def render(obj: JSON) -> bytes:
            if version is None:
                return orjson.dumps(obj)
            return orjson.dumps(tables.row(obj, printer=printer, when=when, include_object=include))

        result = await self._registry.list_rendered(
            t.info,
            namespace=t.namespace,
            label_selector=_q(request, "labelSelector"),
            field_selector=_q(request, "fieldSelector"),
            limit=limit,
            continue_token=_q(request, "continue") or None,
            render=render,
        )
        list_meta: JSON = {"resourceVersion": result.resource_version}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if version is not None:
            tables.check_include_object(include)
            head = tables.table_head([], printer=printer, list_meta=list_meta)
            head["apiVersion"] = f"meta.k8s.io/{version}"
            field = b"rows"
        else:
            head = {"kind": t.info.list_kind, "apiVersion": t.info.api_version, "metadata": list_meta}
            field = b"items"
        # orjson.dumps of the whole dict, with the list last, in pieces: `{...,"items":[a,b]}`.
        opening = orjson.dumps(head)[:-1] + b',"' + field + b'":['
        items = result.items
        del result
        parts = [opening, *_separated(items, b","), b"]}\n"]
        try:
            return await send_json(request, parts)
        finally:
            if len(items) >= _LET_GO_ITEMS:
                self._registry.offload.let_go(parts)
                self._registry.offload.let_go(items)

    # Writes: the request's objects live in the `_with` methods' frames, gone by the time the
    # answer is made, except those `held` for it (the answer's object first, then the decoded
    # body), which `_answer` lets go of on the offload worker when they are large: freeing a
    # large object takes milliseconds too. The collector is paused meanwhile for a large body.

    async def _create(self, request: web.Request, t: Target) -> web.StreamResponse:
        raw = await self._body(request)
        with self._registry.offload.collector_paused(len(raw)):
            held, warnings = await self._create_with(request, t, raw)
            return await self._answer(request, t, held, status=201, warnings=warnings)

    async def _create_with(self, request: web.Request, t: Target, raw: bytes) -> tuple[list[JSON], rest.Warnings]:
        body = await self._decode(raw, request.headers.get("Content-Type", ""), kind=t.info.kind)
        warnings = _warnings(request)
        obj = await self._registry.create(t.info, body, namespace=t.namespace,
                                          options=self._options(request, cost=len(raw)), warnings=warnings)
        return [obj, body], warnings

    async def _update(self, request: web.Request, t: Target) -> web.StreamResponse:
        raw = await self._body(request)
        with self._registry.offload.collector_paused(len(raw)):
            if t.subresource == "finalize":
                body = await self._decode(raw, request.headers.get("Content-Type", ""), kind=t.info.kind)
                return await self._finalize(request, t, _typed(body, "io.k8s.api.core.v1.Namespace"))
            held, status, warnings = await self._update_with(request, t, raw)
            return await self._answer(request, t, held, status=status, warnings=warnings)

    async def _update_with(self, request: web.Request, t: Target, raw: bytes) -> tuple[list[JSON], int, rest.Warnings]:
        assert t.name is not None
        body = await self._decode(raw, request.headers.get("Content-Type", ""), kind=t.info.kind)
        warnings = _warnings(request)
        obj, created = await self._registry.update(
            t.info, body, namespace=t.namespace, name=t.name, subresource=t.subresource,
            options=self._options(request, cost=len(raw)), warnings=warnings,
        )
        return [obj, body], 201 if created else 200, warnings

    async def _answer(self, request: web.Request, t: Target, held: list[JSON], *, status: int,
                      warnings: rest.Warnings) -> web.StreamResponse:
        offload = self._registry.offload
        render = self._renderer(request, t)
        if not offload.heavy_value(held[0]):
            data = render(held[0])
        else:  # rendered there (some 8 ms of a large object's answer on the loop before), and freed
            data = await offload.always(_render_and_let_go, render, held)
        return await send_json(request, [data], status=status, headers=_warning_headers(warnings))

    async def _finalize(self, request: web.Request, t: Target, body: JSON) -> web.Response:
        assert t.name is not None
        finalizers = (body.get("spec") or {}).get("finalizers") or []

        def set_finalizers(ns: JSON) -> JSON:
            ns.setdefault("spec", {})["finalizers"] = finalizers
            if not finalizers:
                ns["spec"].pop("finalizers")
            return ns

        obj = await self._registry.patch(t.info, namespace=None, name=t.name, apply=set_finalizers,
                                         options=self._options(request))
        if not finalizers and (obj.get("metadata") or {}).get("deletionTimestamp"):
            obj, _ = await self._registry.delete(t.info, namespace=None, name=t.name)
        return self._render(request, t, obj)

    async def _patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        body = await self._body(request)
        with self._registry.offload.collector_paused(len(body)):
            held, status, warnings = await self._patch_with(request, t, body)
            return await self._answer(request, t, held, status=status, warnings=warnings)

    async def _patch_with(self, request: web.Request, t: Target, body: bytes) -> tuple[list[JSON], int, rest.Warnings]:
        assert t.name is not None
        content_type = negotiation.media_type(request.headers.get("Content-Type", ""))
        _patch_type(content_type)
        warnings = _warnings(request)
        gk = t.info.gk

        if content_type == patch.APPLY_PATCH:
            config = await self._decode(body, "application/yaml")
            force = _q(request, "force")
            if force not in ("", "true", "false"):
                raise errors.bad_request(f'force: invalid value "{force}": must be true or false')
            obj, created = await self._registry.apply(
                t.info, config, namespace=t.namespace, name=t.name, force=force == "true",
                subresource=t.subresource, options=self._options(request, cost=len(body)), warnings=warnings,
            )
            return [obj, config], 201 if created else 200, warnings

        def apply(current: JSON) -> JSON:
            return patch.apply_patch(content_type, current, body, gk=gk)

        def shown_as(patched: JSON) -> str:
            # Upstream names the patch of a strategic merge patch, else the patched object.
            if content_type == patch.STRATEGIC_MERGE_PATCH:
                return decoding.go_value(orjson.loads(body))
            return orjson.dumps(patched).decode()

        obj = await self._registry.patch(
            t.info, namespace=t.namespace, name=t.name, apply=apply, subresource=t.subresource,
            options=self._options(request, cost=len(body)), warnings=warnings, shown_as=shown_as, pure=True,
        )
        return [obj], 200, warnings

    async def _delete_options(self, request: web.Request, body: bytes) -> rest.DeleteOptions:
        opts: JSON = {}
        if body.strip():
            opts = await self._decode(body, request.headers.get("Content-Type", "application/json"))
            _typed(opts, "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        grace = errors.int_query(request.query, "gracePeriodSeconds")
        if grace is None and opts.get("gracePeriodSeconds") is not None:
            grace = int(opts["gracePeriodSeconds"])
        policy = _q(request, "propagationPolicy") or opts.get("propagationPolicy")
        orphan = _q(request, "orphanDependents") or opts.get("orphanDependents")
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        pre = opts.get("preconditions") or {}
        dry = request.query.getall("dryRun", []) or opts.get("dryRun") or []
        return rest.DeleteOptions(
            grace_period_seconds=grace,
            propagation_policy=policy,
            precondition_uid=pre.get("uid"),
            precondition_resource_version=pre.get("resourceVersion"),
            dry_run=bool(dry),
            user=request.get(USER_KEY),
        )

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        options = await self._delete_options(request, await self._body(request))
        warnings = _warnings(request)
        obj, deleted = await self._registry.delete(t.info, namespace=t.namespace, name=t.name, options=options,
                                                   warnings=warnings)
        if deleted and not t.info.returns_deleted_object:
            meta = obj.get("metadata") or {}
            # StatusDetails in its Go field order; Kind holds the resource, as upstream's.
            details: JSON = {"name": meta.get("name"), **({"group": t.info.group} if t.info.group else {}),
                             "kind": t.info.plural, "uid": meta.get("uid")}
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
                                 headers=_warning_headers(warnings))
        return self._render(request, t, obj, warnings=warnings)

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        _list_options(request)
        options = await self._delete_options(request, await self._body(request))
        warnings = _warnings(request)
        items = await self._registry.delete_collection(
            t.info, namespace=t.namespace, label_selector=_q(request, "labelSelector"),
            field_selector=_q(request, "fieldSelector"), options=options, warnings=warnings,
        )
        return json_response({"kind": t.info.list_kind, "apiVersion": t.info.api_version,
                              "metadata": {"resourceVersion": str(self._registry.store.revision)}, "items": items},
                             headers=_warning_headers(warnings))

    async def _bind(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None and t.namespace is not None
        body = await self._decode(await self._body(request), request.headers.get("Content-Type", ""))
        await self._registry.bind(namespace=t.namespace, name=t.name, binding=_typed(body, "io.k8s.api.core.v1.Binding"),
                                  options=self._options(request))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201)

    async def _scale(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        m = request.method
        if m == "GET":
            obj = self._registry.get(t.info, namespace=t.namespace, name=t.name)
            return json_response(self._registry.scale_of(t.info, obj))
        warnings = _warnings(request)
        if m == "PUT":
            body = await self._decode(await self._body(request), request.headers.get("Content-Type", ""))
            scale = await self._registry.set_scale(t.info, namespace=t.namespace, name=t.name, scale=_typed(body, _SCALE),
                                                   options=self._options(request), warnings=warnings)
            return json_response(scale, headers=_warning_headers(warnings))
        if m == "PATCH":
            content_type = negotiation.media_type(request.headers.get("Content-Type", ""))
            _patch_type(content_type)
            raw = await self._body(request)
            current = self._registry.get(t.info, namespace=t.namespace, name=t.name)
            scale = self._registry.scale_of(t.info, current)
            scale["metadata"].pop("resourceVersion", None)
            patched = patch.apply_patch(content_type, scale, raw, gk="Scale.autoscaling")
            scale = await self._registry.set_scale(t.info, namespace=t.namespace, name=t.name,
                                                   scale=_typed(patched, _SCALE), options=self._options(request),
                                                   warnings=warnings)
            return json_response(scale, headers=_warning_headers(warnings))
        raise errors.method_not_allowed(m, f"{t.info.plural}/scale")

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        field_selector = _q(request, "fieldSelector")
        if t.name is not None:
            name_sel = f"metadata.name={t.name}"
            field_selector = f"{field_selector},{name_sel}" if field_selector else name_sel
        label_selector = _q(request, "labelSelector")
        accept = await self._registry.offload.run(rest.selector_cost(label_selector, field_selector),
                                                  self._registry.matcher, t.info, label_selector=label_selector,
                                                  field_selector=field_selector)
        _list_options(request)
        timeout = errors.int_query(request.query, "timeoutSeconds")
        spec = watchstream.WatchSpec(
            info=t.info,
            namespace=t.namespace,
            resource_version=_q(request, "resourceVersion"),
            accept=accept,
            timeout=float(timeout) if timeout is not None and timeout > 0 else float(self._watch_timeout),
            bookmarks=_flag(request, "allowWatchBookmarks"),
            bookmark_interval=self._bookmark_interval,
            send_initial_events=_flag(request, "sendInitialEvents"),
            table_version=negotiation.wants_table(request.headers.get("Accept", "")),
            include_object=_q(request, "includeObject") or "Metadata",
        )
        return await watchstream.serve(request, self._registry, spec, shared=self._watch_lines)


def _patch_type(content_type: str) -> None:
    """A PATCH's media type is checked first, as upstream does: an unknown one is a 415 whether
    or not the object exists (and before its body is read)."""
    if content_type not in (*patch.SUPPORTED, patch.APPLY_PATCH):
        raise errors.unsupported_media_type(content_type, [*patch.SUPPORTED, patch.APPLY_PATCH])


def _warnings(request: web.Request) -> rest.Warnings:
    """A write's warnings; its audit annotations are the request's (see ADMISSION_AUDIT_KEY)."""
    warnings = rest.Warnings()
    request[ADMISSION_AUDIT_KEY] = warnings.audit_annotations
    return warnings


def _warning_headers(warnings: rest.Warnings | None) -> dict[str, str]:
    if warnings is None or not warnings.messages:
        return {}
    # One header may carry several comma-separated warnings (RFC 7234 warn-values); the same text
    # once (upstream's recorder drops repeats: a write retried after a conflict admits it again).
    text = ", ".join('299 - "' + m.replace('"', '\\"') + '"' for m in dict.fromkeys(warnings.messages))
    return {"Warning": text}
