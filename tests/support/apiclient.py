"""A raw HTTPS client for a test server: exact bytes in, status and body out.

The real clients (kubectl, the Python client) refuse to send malformed bodies, which is what the
input tests need to send; this one sends whatever it is given, over one kept-alive connection
(reopened when the server closed it), with the admin's client certificate.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any

from edgekube.api.registry import resources
from tests.conftest import Server


class Api:
    def __init__(self, server: Server, *, timeout: float = 60) -> None:
        self._server = server
        self._timeout = timeout
        self._ctx = server.admin_context()
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, path: str, body: bytes | str | None = None, *,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, body as JSON when it is JSON, else bytes)."""
        data = body.encode() if isinstance(body, str) else body
        hdrs = {"Content-Type": content_type, **(headers or {})}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection("127.0.0.1", self._server.port, context=self._ctx,
                                                         timeout=self._timeout)
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                # A kept-alive connection the server had closed: once more on a new one.
                self.close()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self.close()  # a timeout or anything else leaves the connection mid-request
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, obj: Any, **kwargs: Any) -> tuple[int, Any]:
        return self.call(method, path, json.dumps(obj), **kwargs)


def collection_path(info: resources.ResourceInfo, *, namespace: str = "default") -> str:
    """The URL path of a kind's collection: in `namespace` when the kind is namespaced."""
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    return f"{base}/namespaces/{namespace}/{info.plural}" if info.namespaced else f"{base}/{info.plural}"


def creatable_kinds(api: Api) -> list[dict[str, Any]]:
    """Every served resource with the create verb, in every served version, from discovery:
    {"path": collection path in `default` or cluster-wide, "apiVersion", "kind", "plural",
    "namespaced", "verbs", "subresources" (status, scale, binding, ...)}."""
    status, groups = api.call("GET", "/apis")
    assert status == 200
    versions = ["/api/v1"] + [f"/apis/{v['groupVersion']}" for g in groups["groups"] for v in g["versions"]]
    out: list[dict[str, Any]] = []
    for gv in versions:
        status, doc = api.call("GET", gv)
        assert status == 200, (gv, doc)
        subresources: dict[str, list[str]] = {}
        for r in doc["resources"]:
            if "/" in r["name"]:
                parent, sub = r["name"].split("/", 1)
                subresources.setdefault(parent, []).append(sub)
        for r in doc["resources"]:
            if "/" in r["name"] or "create" not in r["verbs"]:
                continue
            api_version = doc["groupVersion"]
            prefix = f"{gv}/namespaces/default/" if r["namespaced"] else f"{gv}/"
            out.append({"path": prefix + r["name"], "apiVersion": api_version, "kind": r["kind"],
                        "plural": r["name"], "namespaced": r["namespaced"], "verbs": r["verbs"],
                        "subresources": sorted(subresources.get(r["name"], []))})
    return out



@contextlib.contextmanager
def connected(server: Server) -> Iterator[Api]:
    client = Api(server)
    try:
        yield client
    finally:
        client.close()
