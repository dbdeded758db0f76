"""What a request asks for, read from its method, path and query as upstream's RequestInfo is.

Authorization (`auth.attributes`), the audit policy (rules by verb, resource, namespace,
non-resource URL), the audit event (verb, objectRef) and fairness (which requests are
long-running) all need the same few facts about a request before any handler has parsed it.
They are read here, once per request, from the URL alone (so that a refused user learns
nothing about which resources exist), with upstream's `RequestInfoFactory` rules
(apiserver/pkg/endpoints/request):

- `/api/<v>/...` and `/apis/<group>/<v>/...` with at least a resource are resource requests;
  anything else (`/healthz`, `/version`, `/api`, `/apis/<group>`, `/apis/<group>/<v>`) is a
  non-resource request whose verb is the lower-case HTTP method and whose `path` is what a
  rule's `nonResourceURLs` match.
- the verb: `get` (GET, HEAD), `create`, `update`, `patch`, `delete`, else the lower-case
  method; a GET without a name is `list`, or `watch` with `watch=true` (not `0`/`false`) or the
  legacy `/watch/` prefix; a DELETE without a name is `deletecollection`; `/proxy/` is the
  `proxy` verb. `/watch` or `/proxy` with nothing after them names no resource: a 400 (upstream
  cannot build its RequestInfo either).
- `namespaces/<ns>/<resource>/...` names the namespace; `namespaces/<ns>` itself (and its
  `status` and `finalize`) is the Namespace object, whose namespace is its own name.
- a list or watch whose field selector requires `metadata.name=<n>` (or `==`, never `!=`)
  names the object, unless the name could not be a path segment (`.`, `..`, `/`, `%`).

`of` keeps the result on the request, and `Parser` remembers the last few hundred distinct
URLs, so a client repeating a request (a controller's GET, a probe) pays a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from aiohttp import web

from edgekube.api import errors

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_SPECIAL_VERBS = frozenset({"watch", "proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# Upstream's long-running check (kube-apiserver's LongRunningRequestCheck): these verbs and
# subresources hold their request open for as long as they stream.
_LONG_VERBS = frozenset({"watch", "proxy"})
_LONG_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
# Names upstream's path.IsValidPathSegmentName refuses, when taken from a field selector.
_BAD_NAMES = frozenset({".", ".."})
_REMEMBERED = 512  # distinct (method, URL) pairs kept by a Parser


class RequestInfo(NamedTuple):
    """A tuple: made for most requests, and hashed by the authorizer's memo (`auth.attributes`
    adds the user in front of these fields)."""

    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def long_running(self) -> bool:
        return self.resource_request and (self.verb in _LONG_VERBS or self.subresource in _LONG_SUBRESOURCES)


KEY: web.RequestKey[RequestInfo] = web.RequestKey("request-info", RequestInfo)


def of(request: web.Request) -> RequestInfo:
    """The request's info, parsed once and kept on the request (the server's `Parser` has
    usually put it there first)."""
    found = request.get(KEY)
    if found is None:
        found = request[KEY] = parse(request.method, request.path, request.query)
    return found


class Parser:
    """`parse`, remembered per (method, path and query) for the last few hundred URLs."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], RequestInfo] = {}

    def of(self, request: web.Request) -> RequestInfo:
        """The request's info, parsed once and kept on the request (where `of` finds it)."""
        found = request.get(KEY)
        if found is None:
            key = (request.method, request.raw_path)
            found = self._known.get(key)
            if found is None:
                found = parse(request.method, request.path, request.query)
                if len(self._known) >= _REMEMBERED:
                    self._known.clear()
                self._known[key] = found
            request[KEY] = found
        return found


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Upstream's RequestInfoFactory.NewRequestInfo over (method, path, query); a 400 for a
    `/watch` or `/proxy` that names no resource."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return RequestInfo(verb=method.lower(), resource_request=False, path=path)
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            raise errors.bad_request(f"unable to determine kind and namespace from url, {path}")
        verb, rest = rest[0], rest[1:]
    else:
        verb = _VERBS.get(method, method.lower())
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _watch_flag(query.get("watch")) else "list"
        selected = _selected_name(query.get("fieldSelector", ""))
        if selected and selected not in _BAD_NAMES and "/" not in selected and "%" not in selected:
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(verb=verb, api_group=group, api_version=version, resource=resource,
                       subresource=subresource, namespace=namespace, name=name, path=path)


def _watch_flag(value: str | None) -> bool:
    return value is not None and value.lower() not in ("false", "0")


def _selected_name(selector: str) -> str:
    """The name a field selector requires exactly (`metadata.name=x` or `==`), else ""."""
    found = ""
    for term in selector.split(","):
        key, eq, value = term.partition("==") if "==" in term else term.partition("=")
        if eq and not key.endswith("!") and key.strip() == "metadata.name":
            found = value.strip()
    return found
