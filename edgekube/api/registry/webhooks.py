"""Admission webhooks: Validating- and MutatingWebhookConfiguration, as kube-apiserver calls them.

For every create, update and delete the registry asks `Webhooks` which webhooks match the
request (upstream's generic webhook matcher):

- `rules`: operations, API groups, versions, resources (`*`, `pods/*`, `*/status`, `pods/status`)
  and scope; with matchPolicy Equivalent (the default) a rule naming another served version of
  the same group and resource matches too (`autoscaling/v1` and `v2` HorizontalPodAutoscalers);
- `namespaceSelector` on the labels of the object's namespace (of the namespace itself for a
  Namespace), `objectSelector` on the labels of the object or the old object, `matchConditions`
  in CEL (on the offload worker, see `cel`);
- the admission configuration kinds themselves are never sent to webhooks (upstream's rule: a
  broken webhook could otherwise never be removed).

Writes to a subresource are requests of their own, as upstream's: `pods/status` or
`deployments/scale` match rules that name them, never a rule naming `pods` alone. A `status`
write shows the whole object; a `scale` write shows autoscaling/v1 Scales (`Call.object_kind`),
which no version conversion touches and which a mutating webhook patches as they are.

Each matching webhook gets an `admission.k8s.io/v1` AdmissionReview (uid, kind, resource,
subResource, requestKind, name, namespace, operation, userInfo from `Options.user`, object,
oldObject, dryRun, options) over HTTPS, to its `url` or to its Service, which the registry
resolves to a ready endpoint (the Service's port to its target port through its Endpoints); the
server's certificate is checked against `caBundle` (the system roots when empty) and, for a
Service, for the name `<service>.<namespace>.svc` as upstream. The call has the webhook's
`timeoutSeconds` (10 by default, 30 at most); an error or a timeout is refused as upstream's 500
`failed calling webhook` under failurePolicy Fail (the default) and ignored under Ignore. A
webhook that answers `allowed: false` refuses the request with its status, upstream's
`admission webhook "<name>" denied the request: <message>`, its code kept when 400 or more.

Mutating webhooks run one after another in name order after the registry's defaults; their
JSONPatch is applied to the object, which is defaulted again. A webhook with reinvocationPolicy
IfNeeded is called a second time when a webhook after it changed the object. Validating webhooks
run in parallel after the registry's own validation. Dry runs reach only webhooks whose
sideEffects are None or NoneOnDryRun (any other is refused, 400, as upstream). Warnings join the
response's `Warning` headers; audit annotations are kept as `<webhook name>/<key>`.

Nothing blocks the loop: calls are aiohttp requests on one pooled session, at most
`max_in_flight` at once; the configurations are decoded only when they changed (`chain`).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import jsonpatch
import orjson

from edgekube._cogs import offload as offload_mod
from edgekube.api import errors, labels
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import admissionconfig, cel, conversions, defaults, resources
from edgekube.store import store as store_mod

JSON = dict[str, Any]
log = logging.getLogger(__name__)

GROUP = "admissionregistration.k8s.io"
DEFAULT_TIMEOUT = admissionconfig.DEFAULT_TIMEOUT
MAX_TIMEOUT = 30
# A webhook's answer is read up to this size (a patched object is at most a request's size):
# a broken webhook must not fill the memory.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_NO_SIDE_EFFECTS_ON_DRY_RUN = frozenset({"None", "NoneOnDryRun"})


@dataclasses.dataclass(frozen=True)
class Call:
    """What the chain knows of one request (see `chain.Request`)."""

    info: resources.ResourceInfo
    operation: str
    name: str
    namespace: str
    subresource: str | None
    user: user_mod.UserInfo | None
    dry_run: bool
    old: JSON | None
    options: JSON | None
    object_kind: tuple[str, str, str] | None = None  # see `chain.Request.object_kind`


@dataclasses.dataclass(frozen=True)
class Hook:
    """One webhook of a configuration, defaulted as upstream's SetDefaults_*Webhook."""

    configuration: str
    spec: JSON
    mutating: bool

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "")


# --- matching -------------------------------------------------------------------------------

def _one_of(values: Any, want: str) -> bool:
    return isinstance(values, list) and ("*" in values or want in values)


def _resource_matches(patterns: Any, resource: str, subresource: str | None) -> bool:
    """`pods`, `pods/status`, `pods/*`, `*`, `*/status`, `*/*` (upstream's Matcher.resource)."""
    for p in patterns if isinstance(patterns, list) else []:
        res, _, sub = str(p).partition("/")
        if res in ("*", resource) and sub in ("*", subresource or ""):
            return True
    return False


def rule_matches(rule: Mapping[str, Any], *, operation: str, group: str, version: str, resource: str,
                 subresource: str | None, namespaced: bool) -> bool:
    """One RuleWithOperations against a request (upstream's rules.Matcher)."""
    if not _one_of(rule.get("operations"), operation):
        return False
    if not _one_of(rule.get("apiGroups"), group) or not _one_of(rule.get("apiVersions"), version):
        return False
    scope = rule.get("scope") or "*"
    if (scope == "Cluster" and namespaced) or (scope == "Namespaced" and not namespaced):
        return False
    return _resource_matches(rule.get("resources"), resource, subresource)


def _selector_matches(selector: Any, label_sets: Sequence[Mapping[str, str] | None]) -> bool:
    if not selector:
        return True
    sel = labels.from_label_selector(selector)
    return any(sel.matches(ls or {}) for ls in label_sets)


# --- the dispatcher -------------------------------------------------------------------------

class Webhooks:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog, objects: Callable[[str], list[JSON]],
                 namespace_labels: Callable[[str], Mapping[str, str] | None], offload: offload_mod.Offload,
                 max_in_flight: int = 32) -> None:
        self._store = store
        self._offload = offload
        self._namespace_labels = namespace_labels
        self._catalog = catalog
        self._objects = objects
        self._cache: dict[str, tuple[list[JSON], list[Hook]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[bytes, ssl.SSLContext] = {}
        self._slots = asyncio.Semaphore(max_in_flight)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def hooks(self, plural: str) -> list[Hook]:
        """The webhooks of every stored configuration of `plural`, in name order (worked out
        again only when the configurations changed: `objects` answers the same list until then)."""
        configs = self._objects(plural)
        cached = self._cache.get(plural)
        if cached is not None and cached[0] is configs:
            return cached[1]
        mutating = plural == "mutatingwebhookconfigurations"
        found: list[Hook] = []
        for cfg in configs:
            for spec in cfg.get("webhooks") or []:
                if isinstance(spec, dict):
                    spec = copy.deepcopy(spec)
                    admissionconfig.default_webhook(spec, mutating=mutating)
                    found.append(Hook(str(cfg["metadata"]["name"]), spec, mutating))
        self._cache[plural] = (configs, found)
        return found

    def _matching_version(self, hook: Hook, call: Call) -> resources.ResourceInfo | None:
        """The served version a webhook's rules match for this request: the request's own, or
        with matchPolicy Equivalent another version of the same group and resource."""
        info = call.info
        candidates = [info]
        if hook.spec.get("matchPolicy") == "Equivalent":
            candidates += [i for i in self._catalog.all()
                           if i.group == info.group and i.plural == info.plural and i.version != info.version]
        for candidate in candidates:
            for rule in hook.spec.get("rules") or []:
                if isinstance(rule, dict) and rule_matches(
                        rule, operation=call.operation, group=candidate.group, version=candidate.version,
                        resource=candidate.plural, subresource=call.subresource, namespaced=info.namespaced):
                    return candidate
        return None

    def _matches(self, hook: Hook, call: Call, obj: JSON | None) -> resources.ResourceInfo | None:
        matched = self._matching_version(hook, call)
        if matched is None:
            return None
        objects = [o for o in (obj, call.old) if o is not None]
        label_sets = [(o.get("metadata") or {}).get("labels") for o in objects]
        ns_selector = hook.spec.get("namespaceSelector")
        if call.info.gk == "Namespace":
            if not _selector_matches(ns_selector, label_sets):
                return None
        elif call.namespace and ns_selector:
            ns_labels = self._namespace_labels(call.namespace)
            if not _selector_matches(ns_selector, [ns_labels or {}]):
                return None
        if not _selector_matches(hook.spec.get("objectSelector"), label_sets):
            return None
        return matched

    async def _conditions(self, hook: Hook, call: Call, obj: JSON | None) -> bool:
        """The webhook's matchConditions (CEL, off the loop); an error fails closed under
        failurePolicy Fail (upstream's 403 naming the webhook) and skips it under Ignore."""
        conditions = [c for c in hook.spec.get("matchConditions") or [] if isinstance(c, dict)]
        if not conditions:
            return True
        try:
            return await self._offload.always(conditions_hold, conditions, call, obj)
        except (cel.EvalError, cel.CostExceeded, ValueError) as exc:
            if hook.spec.get("failurePolicy") == "Ignore":
                return False
            raise errors.forbidden_object(call.info.plural, call.name, f'failed calling webhook "{hook.name}": {exc}',
                                          group=call.info.group) from None

    def relevant(self, call: Call) -> bool:
        return call.info.group != GROUP

    # --- mutating ---------------------------------------------------------------------------

    async def mutate(self, call: Call, obj: JSON, *, warnings: list[str], audit: dict[str, str]) -> None:
        if not self.relevant(call):
            return
        hooks = self.hooks("mutatingwebhookconfigurations")  # by configuration name, then listed order
        if not hooks:
            return
        called: list[tuple[int, Hook, resources.ResourceInfo]] = []
        last_changed_by = -1
        for index, hook in enumerate(hooks):
            matched = self._matches(hook, call, obj)
            if matched is None or not await self._conditions(hook, call, obj):
                continue
            called.append((index, hook, matched))
            if await self._mutate_once(hook, matched, call, obj, warnings=warnings, audit=audit, round_=0, index=index):
                last_changed_by = index
        if last_changed_by < 0:
            return
        # Reinvocation: once, for each IfNeeded webhook called before the last change.
        for index, hook, matched in called:
            if hook.spec.get("reinvocationPolicy") == "IfNeeded" and index < last_changed_by:
                await self._mutate_once(hook, matched, call, obj, warnings=warnings, audit=audit, round_=1, index=index)

    async def _mutate_once(self, hook: Hook, matched: resources.ResourceInfo, call: Call, obj: JSON, *,
                           warnings: list[str], audit: dict[str, str], round_: int, index: int) -> bool:
        response = await self._call(hook, matched, call, obj)
        if response is None:
            return False
        self._collect(hook, response, warnings=warnings, audit=audit)
        if not response.get("allowed"):
            raise _denied(hook.name, response.get("status"))
        patch = response.get("patch")
        if not patch:
            return False
        if response.get("patchType") is None:
            raise _call_failed(hook, "webhook returned response.patch but not response.patchType")
        if response.get("patchType") != "JSONPatch":
            raise _call_failed(hook, f'unsupported patch type "{response.get("patchType")}"')
        try:
            operations = orjson.loads(base64.b64decode(patch))
            view = self._view(matched, call, obj)
            patched = jsonpatch.apply_patch(view, operations)
        except (ValueError, TypeError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise errors.internal(f'failed to apply the patch of admission webhook "{hook.name}": {exc}') from None
        if not isinstance(patched, dict):
            raise errors.internal(f'the patch of admission webhook "{hook.name}" did not leave an object')
        stored = self._from_view(matched, call, patched)
        if stored == obj:
            return False
        if call.info.custom is None and call.object_kind is None:
            defaults.apply(call.info.gk, stored)
        obj.clear()
        obj.update(stored)
        audit[f"mutation.webhook.admission.k8s.io/round_{round_}_index_{index}"] = orjson.dumps(
            {"configuration": hook.configuration, "webhook": hook.name, "mutated": True}).decode()
        return True

    # --- validating -------------------------------------------------------------------------

    async def validate(self, call: Call, obj: JSON | None, *, warnings: list[str], audit: dict[str, str]) -> None:
        if not self.relevant(call):
            return
        matched = [(h, m) for h in self.hooks("validatingwebhookconfigurations")
                   if (m := self._matches(h, call, obj)) is not None and await self._conditions(h, call, obj)]
        if not matched:
            return
        results = await asyncio.gather(*(self._call(h, m, call, obj) for h, m in matched), return_exceptions=True)
        refusal: BaseException | None = None
        for (hook, _), result in zip(matched, results, strict=True):
            if isinstance(result, BaseException):
                refusal = refusal or result
                continue
            if result is None:
                continue
            self._collect(hook, result, warnings=warnings, audit=audit)
            if not result.get("allowed"):
                refusal = refusal or _denied(hook.name, result.get("status"))
        if refusal is not None:
            raise refusal

    # --- one call ---------------------------------------------------------------------------

    def _view(self, matched: resources.ResourceInfo, call: Call, obj: JSON) -> JSON:
        """The object as the webhook's matched version shows it (a subresource's own kind, a
        Scale, has one version: as it is)."""
        out = copy.deepcopy(obj)
        if call.object_kind is not None:
            return out
        if matched.custom is not None:
            out["apiVersion"] = matched.api_version
            return out
        return conversions.from_storage(matched.gk, matched.version, out)

    def _from_view(self, matched: resources.ResourceInfo, call: Call, obj: JSON) -> JSON:
        if call.object_kind is not None:
            return obj
        if matched.custom is not None:
            obj["apiVersion"] = call.info.api_version
            return obj
        return conversions.to_storage(matched.gk, matched.version, obj)

    def _review(self, hook: Hook, matched: resources.ResourceInfo, call: Call, obj: JSON | None, uid: str) -> JSON:
        info = call.info
        kind, request_kind = _kind(call, matched), _kind(call, info)
        request: JSON = {
            "uid": uid,
            "kind": kind,
            "resource": {"group": matched.group, "version": matched.version, "resource": matched.plural},
            "requestKind": request_kind,
            "requestResource": {"group": info.group, "version": info.version, "resource": info.plural},
            "name": call.name,
            "operation": call.operation,
            "userInfo": (call.user or user_mod.UserInfo(name="")).to_json(),
            "object": self._view(matched, call, obj) if obj is not None else None,
            "oldObject": self._view(matched, call, call.old) if call.old is not None else None,
            "dryRun": call.dry_run,
            "options": call.options or _options(call.operation),
        }
        if call.subresource:
            request["subResource"] = call.subresource
            request["requestSubResource"] = call.subresource
        if call.namespace:
            request["namespace"] = call.namespace
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}

    async def _call(self, hook: Hook, matched: resources.ResourceInfo, call: Call, obj: JSON | None) -> JSON | None:
        """The webhook's AdmissionResponse; None when it failed and its failurePolicy is Ignore."""
        if call.dry_run and hook.spec.get("sideEffects") not in _NO_SIDE_EFFECTS_ON_DRY_RUN:
            raise errors.bad_request(f'admission webhook "{hook.name}" does not support dry run')
        uid = str(uuid.uuid4())
        try:
            return await self._post(hook, self._review(hook, matched, call, obj, uid), uid)
        except errors.APIError as exc:
            if hook.spec.get("failurePolicy") == "Ignore" and exc.code == 500:
                log.warning("admission webhook %s failed and is ignored (failurePolicy Ignore): %s", hook.name, exc.message)
                return None
            raise

    async def _post(self, hook: Hook, review: JSON, uid: str) -> JSON:
        timeout = max(1, min(int(hook.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT), MAX_TIMEOUT))
        url, server_name = self._target(hook)
        context = self._context(hook)
        target = f"{url}{'&' if '?' in url else '?'}timeout={timeout}s"
        async with self._slots:
            try:
                session = self._client()
                async with session.post(target, data=orjson.dumps(review), ssl=context, server_hostname=server_name,
                                        headers={"Content-Type": "application/json", "Accept": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    body = await _read_bounded(hook, resp)
                    if resp.status != 200:
                        raise _call_failed(hook, f"failed to call webhook: the server responded with the status code {resp.status}: {body[:512]!r}")
            except TimeoutError:
                raise _call_failed(hook, f'failed to call webhook: Post "{target}": context deadline exceeded') from None
            except (aiohttp.ClientError, OSError) as exc:
                raise _call_failed(hook, f'failed to call webhook: Post "{target}": {_dial_error(exc)}') from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _call_failed(hook, f"received invalid webhook response: {exc}") from None
        response = answer.get("response") if isinstance(answer, dict) else None
        if not isinstance(response, dict):
            raise _call_failed(hook, "received invalid webhook response: the AdmissionReview has no response")
        if answer.get("apiVersion") != "admission.k8s.io/v1" or answer.get("kind") != "AdmissionReview":
            raise _call_failed(hook, f'expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {answer.get("apiVersion")}, Kind={answer.get("kind")}')
        if response.get("uid") != uid:
            raise _call_failed(hook, f'expected response.uid="{uid}", got "{response.get("uid")}"')
        return response

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30))
        return self._session

    def _context(self, hook: Hook) -> ssl.SSLContext:
        bundle = (hook.spec.get("clientConfig") or {}).get("caBundle") or ""
        try:
            pem = base64.b64decode(bundle) if bundle else b""
        except ValueError:
            raise _call_failed(hook, "caBundle is not base64") from None
        context = self._contexts.get(pem)
        if context is None:
            context = ssl.create_default_context()
            if pem:
                try:
                    context = ssl.create_default_context(cadata=pem.decode())
                except (ssl.SSLError, ValueError) as exc:
                    raise _call_failed(hook, f"caBundle holds no usable certificate: {exc}") from None
            self._contexts[pem] = context
        return context

    def _target(self, hook: Hook) -> tuple[str, str | None]:
        """The URL to post to and the TLS server name to verify (None: the URL's host)."""
        config = hook.spec.get("clientConfig") or {}
        if config.get("url"):
            return str(config["url"]), None
        service = config.get("service")
        if not isinstance(service, dict):
            raise _call_failed(hook, "the webhook has neither a url nor a service")
        namespace, name = str(service.get("namespace") or ""), str(service.get("name") or "")
        ip, port = self._endpoint(hook, namespace, name, int(service.get("port") or 443))
        host = f"[{ip}]" if ":" in ip else ip
        path = str(service.get("path") or "")
        if path and not path.startswith("/"):
            path = "/" + path
        return f"https://{host}:{port}{path}", f"{name}.{namespace}.svc"

    def _endpoint(self, hook: Hook, namespace: str, name: str, port: int) -> tuple[str, int]:
        """A ready address of the Service and the target port behind its `port`."""
        svc_info = self._catalog.lookup("", "v1", "services")
        ep_info = self._catalog.lookup("", "v1", "endpoints")
        assert svc_info is not None and ep_info is not None
        svc_item = self._store.get(svc_info.key(name, namespace))
        if svc_item is None:
            raise _call_failed(hook, f'failed to call webhook: service "{name}" not found')
        svc_ports = [p for p in (svc_item.object().get("spec") or {}).get("ports") or [] if isinstance(p, dict)]
        svc_port = next((p for p in svc_ports if p.get("port") == port), None)
        if svc_port is None:
            raise _call_failed(hook, f'failed to call webhook: service "{namespace}/{name}" has no port {port}')
        ep_item = self._store.get(ep_info.key(name, namespace))
        for subset in ((ep_item.object().get("subsets") if ep_item is not None else None) or []):
            addresses = [a for a in subset.get("addresses") or [] if isinstance(a, dict) and a.get("ip")]
            ports = [p for p in subset.get("ports") or [] if isinstance(p, dict)]
            wanted = next((p for p in ports if p.get("name", "") == svc_port.get("name", "")), None)
            if addresses and wanted is not None:
                return str(addresses[0]["ip"]), int(wanted.get("port") or 0)
        raise _call_failed(hook, f'failed to call webhook: no endpoints available for service "{name}"')

    def _collect(self, hook: Hook, response: JSON, *, warnings: list[str], audit: dict[str, str]) -> None:
        warnings.extend(str(w) for w in response.get("warnings") or [] if w)
        for key, value in (response.get("auditAnnotations") or {}).items():
            audit[f"{hook.name}/{key}"] = str(value)


async def _read_bounded(hook: Hook, resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _call_failed(hook, f"failed to call webhook: the response is larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _dial_error(exc: BaseException) -> str:
    """A failed connection as Go's net/http words it (what users search for), with Python's
    detail where Go's words do not fit."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: x509: {exc.certificate_error.__class__.__name__}: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"dial tcp {where}: connect: connection refused"
        return f"dial tcp {where}: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__


def _kind(call: Call, info: resources.ResourceInfo) -> JSON:
    """The admitted object's kind: the resource's (in the version `info` serves), or the
    subresource's own (`scale`: autoscaling/v1 Scale, whichever version of the resource)."""
    if call.object_kind is not None:
        group, version, kind = call.object_kind
        return {"group": group, "version": version, "kind": kind}
    return {"group": info.group, "version": info.version, "kind": info.kind}


def request_variable(call: Call) -> JSON:
    """`request` as CEL expressions see it (upstream's admission request)."""
    info = call.info
    return {
        "kind": _kind(call, info),
        "resource": {"group": info.group, "version": info.version, "resource": info.plural},
        "subResource": call.subresource or "",
        "requestKind": _kind(call, info),
        "requestResource": {"group": info.group, "version": info.version, "resource": info.plural},
        "name": call.name, "namespace": call.namespace, "operation": call.operation,
        "userInfo": call.user.to_json() if call.user is not None else {"username": ""},
        "dryRun": call.dry_run, "options": call.options or {},
    }


def conditions_hold(conditions: list[JSON], call: Call, obj: JSON | None) -> bool:
    """A webhook's matchConditions, all true (pure: runs on the offload worker); raises
    cel.EvalError, cel.CostExceeded or ValueError."""
    values = {"object": obj, "oldObject": call.old, "request": request_variable(call)}
    for cond in conditions:
        program = cel.compile(str(cond.get("expression") or ""), variables=cel.ADMISSION_VARIABLES)
        if cel.truthy(program.evaluate(values)) is not True:
            return False
    return True


def _options(operation: str) -> JSON:
    kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}.get(operation, "")
    return {"kind": kind, "apiVersion": "meta.k8s.io/v1"} if kind else {}


def _call_failed(hook: Hook, why: str) -> errors.APIError:
    """upstream's ErrCallingWebhook as the 500 InternalError it becomes under failurePolicy Fail."""
    message = f'failed calling webhook "{hook.name}": {why}'
    out = errors.internal(message)
    out.details = {"causes": [{"message": message}]}
    return out


def _denied(name: str, status: Any) -> errors.APIError:
    """upstream's webhook ToStatusErr: the webhook's own status, its message prefixed."""
    status = status if isinstance(status, dict) else {}
    code = status.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 400
    denied_by = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied_by}: {status['reason']}"
    else:
        message = f"{denied_by} without explanation"
    details = status.get("details") if isinstance(status.get("details"), dict) else None
    return errors.APIError(code, str(status.get("reason") or ""), message, details=details)
