"""OpenAPI over HTTP: the v3 index and pinned documents, v2 as JSON or gnostic protobuf."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from tests.conftest import Server


def _get(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    ctx.load_cert_chain(str(server.data_dir / "tls" / "admin.crt"), str(server.data_dir / "tls" / "admin.key"))
    req = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_v3_index_and_pinned_documents(server: Server) -> None:
    code, _, body = _get(server, "/openapi/v3")
    assert code == 200
    paths = json.loads(body)["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1"} <= set(paths)
    url = paths["apis/apps/v1"]["serverRelativeURL"]
    code, headers, body = _get(server, url)
    assert code == 200 and headers["Cache-Control"] == "public, immutable"
    assert headers["ETag"] == f'"{url.rsplit("hash=", 1)[1]}"'
    doc = json.loads(body)
    post = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]
    assert post["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    code, _, body = _get(server, url, {"If-None-Match": headers["ETag"]})
    assert code == 304 and body == b""
    code, headers, _ = _get(server, "/openapi/v3/apis/apps/v1")
    assert code == 200 and headers["Cache-Control"] == "no-cache, private"
    code, _, body = _get(server, "/openapi/v3/apis/nope/v1")
    assert code == 404 and json.loads(body)["kind"] == "Status"


def test_v2_json_protobuf_and_not_acceptable(server: Server) -> None:
    code, headers, body = _get(server, "/openapi/v2")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["swagger"] == "2.0"
    code, headers, body = _get(server, "/openapi/v2",
                               {"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert code == 200
    assert headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    assert body.startswith(b"\x0a\x032.0")  # field 1 (swagger), length 3, "2.0"
    assert b"x-kubernetes-group-version-kind" in body
    code, _, body = _get(server, "/openapi/v2", {"Accept": "text/html"})
    assert code == 406 and json.loads(body)["reason"] == "NotAcceptable"
