"""What a request asks for, read from its method, path and query as upstream's RequestInfo is.

The audit policy (rules by verb, resource, namespace, non-resource URL), the audit event (verb,
objectRef) and fairness (which requests are long-running) all need the same few facts about a
request before any handler has parsed it. They are read here once per request from the URL
alone, with upstream's `RequestInfoFactory` rules (apiserver/pkg/endpoints/request), and kept
on the request (`of` caches them), so every middleware that asks pays for one parse:

- `/api/<v>/...` and `/apis/<group>/<v>/...` with at least a resource are resource requests;
  anything else (`/healthz`, `/version`, `/api`, `/apis/<group>`) is a non-resource request
  whose verb is the lower-case HTTP method.
- the verb: `get` (GET, HEAD), `create`, `update`, `patch`, `delete`; a GET without a name is
  `list`, or `watch` with `watch=true` or the legacy `/watch/` prefix; a DELETE without a name
  is `deletecollection`; `/proxy/` is the `proxy` verb.
- `namespaces/<ns>/<resource>/...` names the namespace; `namespaces/<ns>` itself (and its
  `status` and `finalize`) is the Namespace object, whose namespace is its own name, as
  upstream's.
- a list or watch with the field selector `metadata.name=<name>` names the object.

The authorization work reads the same attributes; where it keeps its own RequestInfo, `of`
is the one place to point at it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from aiohttp import web

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# Upstream's long-running check (kube-apiserver's LongRunningRequestCheck): these verbs and
# subresources hold their request open for as long as they stream.
_LONG_VERBS = frozenset({"watch", "proxy"})
_LONG_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def long_running(self) -> bool:
        return self.resource_request and (self.verb in _LONG_VERBS or self.subresource in _LONG_SUBRESOURCES)


KEY: web.RequestKey[Attributes] = web.RequestKey("attributes", Attributes)


def of(request: web.Request) -> Attributes:
    """The request's attributes, parsed once and kept on the request."""
    found = request.get(KEY)
    if found is None:
        found = parse(request.method, request.path, request.query)
        request[KEY] = found
    return found


def _flag(value: str | None) -> bool:
    return value is not None and value != "0" and value.lower() != "false"


def parse(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    parts = [p for p in path.split("/") if p]
    non_resource = Attributes(verb=method.lower(), path=path, resource_request=False)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _VERBS.get(method, method.lower())
    if rest[0] in ("watch", "proxy"):
        if len(rest) < 2:
            return non_resource
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _flag(query.get("watch")) else "list"
    if not name and verb in ("list", "watch"):
        for term in (query.get("fieldSelector") or "").split(","):
            key, sep, value = term.partition("=")
            if sep and key.strip() == "metadata.name":
                name = value.removeprefix("=").strip()  # `=` and `==` both ask for equality
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, path=path, resource_request=True, api_group=group, api_version=version,
                      resource=resource, subresource=subresource, namespace=namespace, name=name)
