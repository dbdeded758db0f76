"""Timestamps are decoded as upstream decodes them, on every kind and every write verb (issue 13).

Found by the schemathesis run over `/openapi/v3` (tests/fuzz/test_fuzz_openapi.py): a
metav1.Time or MicroTime field holding any string was stored (`spec.acquireTime: garbage` on a
Lease, `spec.template.metadata.creationTimestamp: garbage` on a Deployment, `status.startTime:
nope` on a Pod's status), where upstream's decoder (time.Parse with RFC 3339) refuses the body
with a 400. Stored, such an object stops every Go client that reads it, and the controllers of
this server that parse the field. (Timestamps the server sets itself, an object's own
creationTimestamp, are overwritten and never stored as sent.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edgekube.api import apischema
from edgekube.api.registry import resources
from tests.conftest import Server
from tests.support.apiclient import Api, collection_path, connected

BAD = ["garbage", "", "2026-13-01T00:00:00Z", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "1"]
_TIMES = {"io.k8s.apimachinery.pkg.apis.meta.v1.Time", "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"}


def _ref(schema: dict[str, Any]) -> str | None:
    name = apischema.ref_name(schema)
    if name is None and isinstance(schema.get("allOf"), list) and schema["allOf"]:
        name = apischema.ref_name(schema["allOf"][0])
    return name


def _time_path(schema: dict[str, Any], path: list[str], depth: int = 0) -> list[str] | None:
    """The first path (through objects, not lists) from a kind to a timestamp that a client
    writes and the server stores: not the object's own metadata (the server sets those) nor
    its status (dropped on create)."""
    name = _ref(schema)
    if name in _TIMES:
        return path
    target = apischema.definition(name) if name else schema
    if not target or depth > 6:
        return None
    for key, sub in sorted((target.get("properties") or {}).items()):
        if depth == 0 and key in ("metadata", "status"):
            continue
        found = _time_path(sub, [*path, key], depth + 1) if isinstance(sub, dict) else None
        if found:
            return found
    return None


def _with_time_paths() -> list[tuple[resources.ResourceInfo, list[str]]]:
    out = []
    for info in resources.Catalog().all():
        definition = apischema.kind_definition(info.group, info.version, info.kind)
        path = _time_path(apischema.definition(definition) or {}, []) if definition and "create" in info.verbs else None
        if path:
            out.append((info, path))
    return out


# Lease and Event (their own timestamps), and every workload kind (its template's metadata).
WITH_TIMES = _with_time_paths()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        yield client


def test_the_sweep_finds_the_kinds_with_timestamps() -> None:
    kinds = {info.gk for info, _ in WITH_TIMES}
    assert {"Lease.coordination.k8s.io", "Event", "Deployment.apps", "CronJob.batch"} <= kinds, kinds


@pytest.mark.parametrize(("info", "path"), WITH_TIMES, ids=[f"{i.gk}/{i.version}" for i, _ in WITH_TIMES])
def test_a_timestamp_that_is_not_rfc3339_is_400_on_every_kind(api: Api, info: resources.ResourceInfo,
                                                               path: list[str]) -> None:
    for value in BAD:
        body: dict[str, Any] = {"apiVersion": info.api_version, "kind": info.kind, "metadata": {"name": "stamp"}}
        node = body
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        status, answer = api.json("POST", collection_path(info), body)
        assert status == 400 and answer["kind"] == "Status", (value, answer)
        assert ".".join(path) in answer["message"] and "RFC 3339" in answer["message"], answer


def test_lease_micro_times_on_every_write_verb(api: Api) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    good = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "times"},
            "spec": {"acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:01.5+02:00"}}
    for value in BAD:
        bad = {**good, "spec": {**good["spec"], "acquireTime": value}}
        status, answer = api.json("POST", path, bad)
        assert status == 400 and "spec.acquireTime" in answer["message"], (value, answer)
    assert api.json("POST", path, good)[0] == 201
    for value in BAD:
        status, answer = api.json("PUT", f"{path}/times", {**good, "spec": {"renewTime": value}})
        assert status == 400, (value, answer)
        status, answer = api.call("PATCH", f"{path}/times", json.dumps({"spec": {"renewTime": value}}),
                                  content_type="application/merge-patch+json")
        assert 400 <= status < 500, (value, answer)  # (upstream: a patch that does not decode is a 422)
        status, answer = api.call("PATCH", f"{path}/times?fieldManager=t",
                                  f"apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: times}}\n"
                                  f"spec: {{renewTime: {json.dumps(value)}}}\n", content_type="application/apply-patch+yaml")
        assert 400 <= status < 500, (value, answer)
    status, body = api.call("GET", f"{path}/times")
    assert body["spec"] == good["spec"], body


def test_status_timestamps_are_decoded_on_status_writes(api: Api) -> None:
    path = "/api/v1/namespaces/default/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "times"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert api.json("POST", path, pod)[0] == 201
    for status_body in ({"startTime": "nope"},
                        {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]}):
        status, answer = api.json("PUT", f"{path}/times/status", {**pod, "status": status_body})
        assert status == 400 and "RFC 3339" in answer["message"], answer
        status, answer = api.call("PATCH", f"{path}/times/status", json.dumps({"status": status_body}),
                                  content_type="application/merge-patch+json")
        assert 400 <= status < 500 and "RFC 3339" in answer["message"], answer
    status, body = api.call("GET", f"{path}/times")
    assert "startTime" not in body.get("status", {}), body
