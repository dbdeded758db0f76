"""The audit log (issue 15): a real `edgekube server` with an audit.k8s.io/v1 Policy, driven by
real kubectl (1.27, 1.33, 1.36) and raw HTTPS; every check reads the JSON lines the server wrote.

Events are written by a writer off the request path, so a test waits (bounded) for the line it
expects to appear; no check is about how long anything took.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support import usercert
from tests.support.waiting import until

pytestmark = pytest.mark.e2e

VERSIONS = ("1.27", "1.33", "1.36")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "rules": [
        {"level": "None", "resources": [{"group": "", "resources": ["secrets"]}]},
        {"level": "None", "nonResourceURLs": ["/readyz", "/healthz*", "/livez*"]},
        {"level": "RequestResponse", "namespaces": [f"rr-{v.replace('.', '')}" for v in VERSIONS] + ["rr-raw"],
         "omitManagedFields": True},
        {"level": "None", "users": ["quiet"]},
        {"level": "Metadata"},
    ],
}


def _server(root: Path, *, audit: dict[str, Any], policy: Any = POLICY, extra: dict[str, Any] | None = None) -> Server:
    policy_file = root / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({"audit": {"policy-file": str(policy_file), **audit}, **(extra or {})}))
    return Server(root / "data", extra=["--config", str(cfg)])


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("audited")
    srv = _server(root, audit={"log-path": str(root / "logs" / "audit.log")})
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _log_path(srv: Server) -> Path:
    cfg = yaml.safe_load((srv.data_dir.parent / "config.yaml").read_text())
    return Path(cfg["audit"]["log-path"])


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line whole JSON


def _wait_events(srv: Server, match: Any, *, count: int = 1, what: str = "audit events") -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        got = [e for e in _events(_log_path(srv)) if match(e)]
        return got if len(got) >= count else None

    return list(until(found, timeout=30, what=what))


def _ref(e: dict[str, Any]) -> dict[str, Any]:
    return dict(e.get("objectRef") or {})


def _check_common(e: dict[str, Any], *, version: str) -> None:
    assert e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1"
    assert UUID.match(e["auditID"]), e["auditID"]
    assert e["user"]["username"] == "kubernetes-admin"
    assert "system:masters" in e["user"]["groups"]
    assert e["sourceIPs"] == ["127.0.0.1"]
    assert e["userAgent"].startswith(f"kubectl-{version}/") or e["userAgent"].startswith("kubectl/"), e["userAgent"]
    assert MICRO_TIME.match(e["requestReceivedTimestamp"]) and MICRO_TIME.match(e["stageTimestamp"])
    assert e["stageTimestamp"] >= e["requestReceivedTimestamp"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_write_at_request_response(audited: Server, version: str) -> None:
    ns = f"rr-{version.replace('.', '')}"
    k = Kubectl(version, audited, ns)
    k.run("create", "namespace", ns, namespaced=False)
    k.run("create", "configmap", "made", "--from-literal=a=1")
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
                               "data": {"b": "2"}})
    k.run("apply", "-f", "-", input=manifest)
    k.run("apply", "-f", "-", input=manifest.replace("'2'", "'3'"))  # a second apply patches
    k.run("apply", "--server-side", "-f", "-", input=manifest.replace("applied", "ssa"))
    k.run("patch", "configmap", "made", "--type", "merge", "-p", '{"data":{"a":"patched"}}')
    k.run("get", "configmap", "made", "-o", "json")
    k.run("delete", "configmap", "made")
    k.run("create", "secret", "generic", "hidden", "--from-literal=p=w")
    assert k.run("get", "configmap", "absent", check=False).returncode != 0

    def of(verb: str, name: str, *, code: int | None = None) -> dict[str, Any]:
        got = _wait_events(audited, lambda e: e["verb"] == verb and _ref(e).get("namespace") == ns
                           and _ref(e).get("name") == name and e["stage"] == "ResponseComplete"
                           and (code is None or e["responseStatus"]["code"] == code), what=f"{verb} {name}")
        return got[-1]

    created = of("create", "made")
    _check_common(created, version=version)
    assert created["level"] == "RequestResponse"
    assert _ref(created) == {"resource": "configmaps", "namespace": ns, "name": "made", "apiVersion": "v1"}
    assert created["responseStatus"] == {"metadata": {}, "code": 201}
    assert created["requestObject"]["data"] == {"a": "1"}
    assert created["responseObject"]["metadata"]["uid"]
    assert "managedFields" not in created["responseObject"]["metadata"]  # omitManagedFields
    (received,) = _wait_events(audited, lambda e: e["auditID"] == created["auditID"] and e["stage"] == "RequestReceived")
    # Before the body is read the name of a created object is not known, as upstream's.
    assert _ref(received) == {"resource": "configmaps", "namespace": ns, "apiVersion": "v1"}
    assert "responseStatus" not in received and "requestObject" not in received
    assert received["requestReceivedTimestamp"] == created["requestReceivedTimestamp"]

    applied = of("create", "applied")
    assert applied["requestObject"]["data"] == {"b": "2"}
    assert applied["requestObject"]["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    reapplied = of("patch", "applied")
    assert reapplied["responseStatus"]["code"] == 200 and reapplied["responseObject"]["data"] == {"b": "3"}
    ssa = of("patch", "ssa")
    assert ssa["requestObject"]["data"] == {"b": "2"} and ssa["responseStatus"]["code"] == 201
    assert "fieldManager=kubectl" in ssa["requestURI"]

    patched = of("patch", "made")
    assert patched["requestObject"] == {"data": {"a": "patched"}}
    assert patched["responseObject"]["data"] == {"a": "patched"}

    got = of("get", "made", code=200)
    assert got["responseObject"]["data"] == {"a": "patched"} and "requestObject" not in got

    deleted = of("delete", "made")
    assert deleted["responseStatus"]["code"] == 200
    assert deleted["requestURI"] == f"/api/v1/namespaces/{ns}/configmaps/made"

    missing = of("get", "absent")
    status = missing["responseStatus"]
    assert status["code"] == 404 and status["reason"] == "NotFound" and status["status"] == "Failure"
    assert 'configmaps "absent" not found' in status["message"]
    assert missing["responseObject"]["kind"] == "Status" and missing["responseObject"]["code"] == 404

    # The None rule: the secret was created, and no line names it.
    assert k.json("get", "secret", "hidden")["metadata"]["name"] == "hidden"
    assert not [e for e in _events(_log_path(audited)) if _ref(e).get("resource") == "secrets"]


@pytest.mark.parametrize("version", VERSIONS)
def test_writes_at_metadata(audited: Server, version: str) -> None:
    ns = f"md-{version.replace('.', '')}"
    k = Kubectl(version, audited, ns)
    k.run("create", "namespace", ns, namespaced=False)
    k.run("create", "configmap", "plain", "--from-literal=a=1")
    k.run("get", "configmap", "plain")
    k.run("delete", "configmap", "plain")
    for verb in ("create", "get", "delete"):
        e = _wait_events(audited, lambda e, verb=verb: e["verb"] == verb and _ref(e).get("namespace") == ns
                         and e["stage"] == "ResponseComplete", what=verb)[-1]
        _check_common(e, version=version)
        assert e["level"] == "Metadata"
        assert _ref(e)["name"] == "plain"
        assert "requestObject" not in e and "responseObject" not in e
    ns_created = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("resource") == "namespaces"
                              and _ref(e).get("name") == ns and e["stage"] == "ResponseComplete")[-1]
    assert _ref(ns_created) == {"resource": "namespaces", "name": ns, "apiVersion": "v1"}


def test_in_process_writes_are_audited(audited: Server) -> None:
    """A Deployment made with kubectl: the controllers, in process, make its ReplicaSet and its
    pods, and those writes are in the log as writes over HTTP would be (no source IP, the
    component as user agent and as user: each component is a user of its own, as upstream's)."""
    k = Kubectl("1.36", audited, "inproc")
    k.run("create", "namespace", "inproc", namespaced=False)
    k.run("create", "deployment", "web", "--image=busybox", "--replicas=2")
    rs = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("resource") == "replicasets"
                      and _ref(e).get("namespace") == "inproc" and e["stage"] == "ResponseComplete",
                      what="the ReplicaSet's create")[-1]
    assert rs["userAgent"] == "edgekube-controller-manager" and "sourceIPs" not in rs
    assert rs["user"] == {"username": "system:kube-controller-manager", "groups": ["system:authenticated"]}
    assert rs["requestURI"] == "/apis/apps/v1/namespaces/inproc/replicasets"
    assert _ref(rs)["name"].startswith("web-") and rs["responseStatus"]["code"] == 201
    pods = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("resource") == "pods"
                        and _ref(e).get("namespace") == "inproc" and e["stage"] == "ResponseComplete",
                        count=2, what="the pods' creates")
    assert {e["userAgent"] for e in pods} == {"edgekube-controller-manager"}


def test_audit_id_header_unauthenticated_and_watch(audited: Server, tmp_path: Path) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", audited.port, context=audited.admin_context(), timeout=30)
    conn.request("GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
                 headers={"Audit-ID": "chosen-by-the-client"})
    resp = conn.getresponse()
    resp.read()
    assert resp.getheader("Audit-Id") == "chosen-by-the-client"
    stages = _wait_events(audited, lambda e: e["auditID"] == "chosen-by-the-client", count=3, what="watch stages")
    assert [e["stage"] for e in stages] == ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    assert {e["verb"] for e in stages} == {"watch"}
    assert stages[1]["responseStatus"]["code"] == 200
    conn.request("GET", "/version")
    resp = conn.getresponse()
    resp.read()
    assert UUID.match(resp.getheader("Audit-Id") or "")
    conn.close()

    # No credentials: a 401, audited as upstream's failed authentication (no user, ResponseStarted).
    anon = ssl.create_default_context(cafile=str(audited.ca))
    with pytest.raises(urllib.request.HTTPError) as refused:
        urllib.request.urlopen(f"{audited.url}/api/v1/namespaces/default/pods", context=anon, timeout=10)
    audit_id = refused.value.headers["Audit-Id"]
    assert refused.value.code == 401 and UUID.match(audit_id)
    (event,) = _wait_events(audited, lambda e: e["auditID"] == audit_id, what="the 401's event")
    assert event["stage"] == "ResponseStarted" and event["user"] == {}
    assert event["responseStatus"] == {"metadata": {}, "message": "Authentication failed, no credentials provided",
                                       "code": 401}
    assert event["verb"] == "list" and _ref(event)["resource"] == "pods"

    # Another user, matched by a `users` rule of level None: nothing written for it.
    quiet = usercert.issue(audited, "quiet", groups=("audit-testers",), into=tmp_path)
    usercert.grant(audited, group="audit-testers", cluster_role="view",
                   probe={"verb": "list", "resource": "configmaps", "namespace": "default"})
    req = urllib.request.Request(f"{audited.url}/api/v1/namespaces/default/configmaps", headers={"Audit-ID": "q-1"})
    with urllib.request.urlopen(req, context=quiet.context(), timeout=10) as r:
        assert r.status == 200 and r.headers["Audit-Id"] == "q-1"
    _wait_events(audited, lambda e: e["auditID"] == "chosen-by-the-client", count=3)
    assert not [e for e in _events(_log_path(audited)) if e["auditID"] == "q-1"]


async def _burst(srv: Server, *, count: int, namespace: str) -> list[int]:
    ctx = srv.admin_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=count)) as s:
        async def one(i: int) -> int:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"burst-{i}"}, "data": {"i": str(i)}}
            async with s.post(f"{srv.url}/api/v1/namespaces/{namespace}/configmaps", json=body) as r:
                await r.read()
                return r.status
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def metric(srv: Server, name: str, *, context: ssl.SSLContext | None = None) -> float:
    """One sample of /metrics, `name` with its labels as written."""
    req = urllib.request.Request(f"{srv.url}/metrics")
    with urllib.request.urlopen(req, context=context or srv.admin_context(), timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_a_burst_of_creates_is_audited_whole(audited: Server) -> None:
    Kubectl("1.36", audited, "rr-raw").run("create", "namespace", "rr-raw", namespaced=False)
    statuses = asyncio.run(_burst(audited, count=100, namespace="rr-raw"))
    assert statuses == [201] * 100
    done = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("namespace") == "rr-raw"
                        and e["stage"] == "ResponseComplete" and _ref(e)["resource"] == "configmaps"
                        and _ref(e).get("name", "").startswith("burst-"), count=100, what="100 create events")
    assert sorted(_ref(e)["name"] for e in done) == sorted(f"burst-{i}" for i in range(100))
    assert all(e["requestObject"]["data"] == {"i": e["objectRef"]["name"].split("-")[1]} for e in done)
    assert metric(audited, 'apiserver_audit_error_total{plugin="buffered"}') == 0


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    srv = _server(tmp_path, audit={"log-path": str(tmp_path / "logs" / "audit.log"), "log-buffer-size": 1},
                  policy={"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "RequestResponse"}]})
    srv.start()
    try:
        statuses = asyncio.run(_burst(srv, count=100, namespace="default"))
        assert statuses == [201] * 100  # every write answered, whatever the log could take
        dropped = metric(srv, 'apiserver_audit_error_total{plugin="buffered"}')
        assert dropped > 0
    finally:
        srv.close()
    written = _events(tmp_path / "logs" / "audit.log")  # whole lines only (json.loads of each)
    assert len(written) < 2 * 100


def test_rotation_keeps_at_most_maxbackup_files(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "audit.log"
    srv = _server(tmp_path, audit={"log-path": str(log), "log-maxsize": 1, "log-maxbackup": 2},
                  policy={"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "RequestResponse"}]})
    srv.start()
    try:
        api = urllib.request.build_opener(urllib.request.HTTPSHandler(context=srv.admin_context()))
        for i in range(24):  # about 400 KB of events each: a dozen rotations of 1 MB
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}"},
                               "data": {"blob": "x" * 200_000}}).encode()
            req = urllib.request.Request(f"{srv.url}/api/v1/namespaces/default/configmaps", data=body,
                                         headers={"Content-Type": "application/json"})
            with api.open(req, timeout=30) as r:
                assert r.status == 201
    finally:
        srv.close()  # what was queued is written at stop
    backups = sorted(p for p in log.parent.iterdir() if p != log)
    assert len(backups) == 2, backups
    assert all(re.fullmatch(r"audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log", p.name) for p in backups)
    lines = [e for p in [*backups, log] for e in _events(p)]  # whole JSON lines in every file
    names = {_ref(e)["name"] for e in lines if e["verb"] == "create" and e["stage"] == "ResponseComplete"}
    assert "big-23" in names and "big-0" not in names  # the newest kept, the oldest rotated away
    # Rotated between lines, even inside one batch of the writer: no file passes the size limit
    # by more than one event (about 400 KB here).
    assert all(p.stat().st_size <= (1 << 20) + 500_000 for p in [*backups, log]), [p.stat().st_size for p in backups]


def test_an_unwritable_log_or_a_bad_policy_stops_the_boot(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log's directory should be")
    (tmp_path / "a").mkdir()
    srv = _server(tmp_path / "a", audit={"log-path": str(blocker / "audit.log")})
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        srv.start(timeout=30)
    assert f"audit log {blocker / 'audit.log'}: cannot be opened for writing: {blocker} is not a directory" in str(failed.value)

    (tmp_path / "b").mkdir()
    bad = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Everything"}]}
    srv = _server(tmp_path / "b", audit={}, policy=bad)
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        srv.start(timeout=30)
    assert "rules[0].level: must be one of None, Metadata, Request, RequestResponse, got 'Everything'" in str(failed.value)


def test_a_log_that_fails_at_run_time_is_logged_and_counted_never_blocking(tmp_path: Path) -> None:
    # /dev/full: opened fine at boot, every write then fails with ENOSPC (a full disk).
    srv = _server(tmp_path, audit={"log-path": "/dev/full"},
                  policy={"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]})
    srv.start()
    try:
        assert asyncio.run(_burst(srv, count=20, namespace="default")) == [201] * 20
        until(lambda: metric(srv, 'apiserver_audit_error_total{plugin="log"}') >= 40, timeout=30,
              what="the failed events counted")
        assert metric(srv, "apiserver_audit_event_total") == 0
    finally:
        srv.close()
    assert "audit log /dev/full: cannot write (No space left on device)" in srv.log()


def test_admission_annotations_reach_the_audit_log(audited: Server) -> None:
    """PodSecurity's `audit` mode is an annotation on the write's audit event, as upstream's
    (`pod-security.kubernetes.io/audit-violations`), for a pod it lets in and one enforce refuses."""
    k = Kubectl("1.36", audited, "psa-audit")
    k.run("create", "namespace", "psa-audit", namespaced=False)
    k.run("label", "namespace", "psa-audit", "pod-security.kubernetes.io/audit=restricted", namespaced=False)
    k.run("run", "loose", "--image=busybox", "--restart=Never")
    (created,) = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("name") == "loose"
                              and _ref(e).get("namespace") == "psa-audit" and e["stage"] == "ResponseComplete",
                              what="the pod's create")
    violations = created["annotations"]["pod-security.kubernetes.io/audit-violations"]
    assert violations.startswith('would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false')
    k.run("label", "namespace", "psa-audit", "pod-security.kubernetes.io/enforce=baseline", namespaced=False)
    refused = k.run("run", "priv", "--image=busybox", "--restart=Never", "--privileged", check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "baseline:latest": privileged' in refused.stderr
    (denied,) = _wait_events(audited, lambda e: e["verb"] == "create" and _ref(e).get("name") == "priv"
                             and _ref(e).get("namespace") == "psa-audit" and e["stage"] == "ResponseComplete",
                             what="the refused pod's create")
    assert denied["responseStatus"]["code"] == 403
    assert "privileged" in denied["annotations"]["pod-security.kubernetes.io/audit-violations"]
