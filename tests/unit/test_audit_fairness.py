"""The audit policy's matching and checks, the request attributes it reads, the log file's
rotation and torn-line repair, and the order in which fairness hands out seats."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edgekube.api import audit, errors, fairness, reqattrs
from edgekube.api.auth import user as user_mod


def attrs(method: str, path: str, **query: str) -> reqattrs.RequestInfo:
    return reqattrs.parse(method, path, query)


@pytest.mark.parametrize(("method", "path", "query", "want"), [
    ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, ("watch", "", "pods", "", "ns", "")),
    ("GET", "/api/v1/watch/namespaces/ns/pods/p", {}, ("watch", "", "pods", "", "ns", "p")),
    ("GET", "/api/v1/namespaces/ns/pods", {"fieldSelector": "metadata.name==p"}, ("list", "", "pods", "", "ns", "p")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, ("get", "", "pods", "log", "ns", "p")),
    ("POST", "/apis/apps/v1/namespaces/ns/deployments", {}, ("create", "apps", "deployments", "", "ns", "")),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {}, ("update", "apps", "deployments", "scale", "ns", "d")),
    ("DELETE", "/api/v1/namespaces/ns/configmaps", {}, ("deletecollection", "", "configmaps", "", "ns", "")),
    ("PATCH", "/api/v1/nodes/n1/status", {}, ("patch", "", "nodes", "status", "", "n1")),
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "namespaces", "finalize", "ns", "ns")),
])
def test_request_attributes_as_upstream_reads_them(method: str, path: str, query: dict[str, str],
                                                    want: tuple[str, ...]) -> None:
    a = reqattrs.parse(method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


def test_non_resource_requests_and_long_running() -> None:
    for path in ("/healthz", "/api", "/apis/apps", "/api/v1", "/apis/apps/v1", "/version"):
        a = attrs("GET", path)
        assert not a.resource_request and a.verb == "get" and a.path == path
    assert attrs("POST", "/metrics").verb == "post"
    assert attrs("GET", "/api/v1/pods", watch="1").long_running
    assert attrs("GET", "/api/v1/namespaces/n/pods/p/log").long_running
    assert attrs("POST", "/api/v1/namespaces/n/pods/p/exec").long_running
    assert not attrs("GET", "/api/v1/namespaces/n/pods").long_running
    assert not attrs("GET", "/api/v1/namespaces/n/pods/p").long_running


def policy(*rules: dict[str, Any], **top: Any) -> audit.Policy:
    return audit.parse_policy({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": list(rules), **top},
                              where="test")


ALICE = user_mod.authenticated("alice", groups=["devs"])
BOB = user_mod.authenticated("bob")


def level(p: audit.Policy, a: reqattrs.RequestInfo, user: user_mod.UserInfo | None = ALICE) -> str:
    return audit.LEVELS[p.decide(a, user).level]


def test_the_first_matching_rule_wins() -> None:
    p = policy(
        {"level": "None", "users": ["bob"]},
        {"level": "RequestResponse", "userGroups": ["devs"], "verbs": ["create"],
         "resources": [{"group": "", "resources": ["configmaps"]}]},
        {"level": "Request", "resources": [{"group": "", "resources": ["pods/log", "*/status"]}]},
        {"level": "Metadata", "resources": [{"group": "apps", "resources": ["deployments/*"]}]},
        {"level": "Request", "resources": [{"group": "", "resources": ["secrets"], "resourceNames": ["s1"]}]},
        {"level": "Metadata", "namespaces": ["kube-system", ""]},
        {"level": "Request", "nonResourceURLs": ["/healthz*", "/version"]},
    )
    create_cm = attrs("POST", "/api/v1/namespaces/ns/configmaps")
    assert level(p, create_cm) == "RequestResponse"
    assert level(p, create_cm, BOB) == "None"  # bob's rule comes first
    assert level(p, create_cm, None) == "None"  # no user: user and group rules do not match
    assert level(p, attrs("GET", "/api/v1/namespaces/ns/configmaps/c")) == "None"  # verb not matched
    assert level(p, attrs("GET", "/api/v1/namespaces/ns/pods/p/log")) == "Request"
    assert level(p, attrs("PUT", "/api/v1/namespaces/ns/pods/p/status")) == "Request"
    assert level(p, attrs("GET", "/api/v1/namespaces/ns/pods/p")) == "None"
    assert level(p, attrs("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale")) == "Metadata"
    # `deployments/*` is the resource with any subresource or none, as upstream matches it.
    assert level(p, attrs("GET", "/apis/apps/v1/namespaces/ns/deployments/d")) == "Metadata"
    assert level(p, attrs("GET", "/apis/apps/v1/namespaces/ns/replicasets/d")) == "None"
    assert level(p, attrs("GET", "/api/v1/namespaces/ns/secrets/s1")) == "Request"
    assert level(p, attrs("GET", "/api/v1/namespaces/ns/secrets/s2")) == "None"
    assert level(p, attrs("GET", "/api/v1/namespaces/kube-system/pods/p")) == "Metadata"
    assert level(p, attrs("GET", "/api/v1/nodes/n1")) == "Metadata"  # "" is cluster-scoped
    assert level(p, attrs("GET", "/healthz/ping")) == "Request"
    assert level(p, attrs("GET", "/version")) == "Request"
    assert level(p, attrs("GET", "/versions")) == "None"


def test_stages_and_managed_fields_combine() -> None:
    p = policy({"level": "Metadata", "verbs": ["get"], "omitStages": ["ResponseStarted"], "omitManagedFields": False},
               {"level": "Request"}, omitStages=["RequestReceived"], omitManagedFields=True)
    got = p.decide(attrs("GET", "/api/v1/nodes/n"), ALICE)
    assert got.omit_stages == {"RequestReceived", "ResponseStarted"} and got.omit_managed_fields is False
    other = p.decide(attrs("POST", "/api/v1/nodes"), ALICE)
    assert other.omit_stages == {"RequestReceived"} and other.omit_managed_fields is True


@pytest.mark.parametrize(("doc", "message"), [
    ({"rules": [{"level": "Everything"}]}, "test: rules[0].level: must be one of None, Metadata, Request, "
                                            "RequestResponse, got 'Everything'"),
    ({"rules": []}, "test: rules: a policy needs at least one rule"),
    ({"rules": [{"level": "None", "verb": ["get"]}]}, "test: rules[0]: unknown field 'verb'"),
    ({"rules": [{"level": "None", "nonResourceURLs": ["/x"], "namespaces": ["a"]}]},
     "rules cannot apply to both regular resources and non-resource URLs"),
    ({"rules": [{"level": "None", "nonResourceURLs": ["healthz"]}]}, "must begin with a '/' character"),
    ({"rules": [{"level": "None", "nonResourceURLs": ["/a*b"]}]}, "must be the final character"),
    ({"rules": [{"level": "None", "resources": [{"resourceNames": ["x"]}]}]},
     "using resourceNames requires at least one resource"),
    ({"rules": [{"level": "None", "omitStages": ["Done"]}]}, "unknown stage 'Done'"),
    ({"kind": "Other", "rules": [{"level": "None"}]}, "must be kind Policy of apiVersion audit.k8s.io/v1"),
])
def test_a_bad_policy_is_refused_with_what_is_wrong(doc: dict[str, Any], message: str) -> None:
    full = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", **doc}
    with pytest.raises(audit.PolicyError) as failed:
        audit.parse_policy(full, where="test")
    assert message in str(failed.value)


def _settings(path: Path, **kw: Any) -> audit.LogSettings:
    return audit.LogSettings(**{"path": path, "max_size_mb": 1, "max_backups": 2, "max_age_days": 0,
                                "buffer_size": 10, **kw})


def test_rotation_keeps_the_newest_backups(tmp_path: Path) -> None:
    f = audit.LogFile(_settings(tmp_path / "audit.log"))
    f.open()
    line = b'{"x":"' + b"y" * 300_000 + b'"}\n'
    for _ in range(12):
        f.write(line)
    f.close()
    backups = f.backups()
    assert len(backups) == 2 and all(b.name.startswith("audit-") and b.suffix == ".log" for b in backups)
    for p in [*backups, tmp_path / "audit.log"]:
        assert p.stat().st_size <= 1024 * 1024
        assert all(json.loads(x) for x in p.read_bytes().splitlines())


def test_a_torn_last_line_is_cut_when_the_log_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    f = audit.LogFile(_settings(path))
    f.open()
    f.write(b'{"d":4}\n')
    f.close()
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"d":4}\n'


# --- fairness ----------------------------------------------------------------------------------

def test_levels_by_user() -> None:
    f = fairness.Fairness(fairness.Settings(40, 4, 16, 5.0))
    assert f.classify(user_mod.authenticated("system:node:n1", groups=["system:nodes"])).name == "system"
    assert f.classify(user_mod.authenticated("system:kube-scheduler")).name == "system"
    assert f.classify(user_mod.authenticated("system:serviceaccount:kube-system:x")).name == "workload-high"
    assert f.classify(user_mod.authenticated("system:serviceaccount:apps:x")).name == "global-default"
    assert f.classify(user_mod.authenticated("kubernetes-admin", groups=["system:masters"])).name == "global-default"
    assert f.classify(None).name == "global-default"
    assert {n: lv.seats for n, lv in f.levels.items()} == {"system": 12, "workload-high": 8, "global-default": 20}


async def settle() -> None:
    """Let the woken requests run (a seat handed over takes a few turns of the loop)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_freed_seat_goes_to_the_flow_holding_fewest() -> None:
    async def scenario() -> list[str]:
        lv = fairness.Level("global-default", seats=2, schema="global-default", per_flow=3, max_queued=10)
        served: list[str] = []

        async def request(flow: str) -> None:
            await lv.acquire(flow, wait=60)
            served.append(flow)

        await lv.acquire("noisy", wait=60)
        await lv.acquire("noisy", wait=60)  # both seats held by the noisy flow
        waiting = [asyncio.create_task(request(f)) for f in ("noisy", "noisy", "alice", "noisy", "bob")]
        await asyncio.sleep(0)
        assert lv.queued == 5
        with pytest.raises(errors.APIError) as full:  # its queue is full: refused at once
            await lv.acquire("noisy", wait=60)
        assert full.value.code == 429 and full.value.headers == {"Retry-After": "1"}
        assert full.value.status()["reason"] == "TooManyRequests"
        lv.release("noisy")
        await settle()
        assert served == ["alice"]  # holding nothing, while the noisy flow holds a seat
        lv.release("noisy")
        await settle()
        assert served == ["alice", "bob"]  # new to the level: before the noisy flow, served last
        lv.release("alice")
        lv.release("bob")
        await settle()
        lv.release("noisy")
        await asyncio.gather(*waiting)
        return served

    served = asyncio.run(scenario())
    # alice and bob, holding nothing, come before the noisy flow's earlier requests.
    assert served[:2] == ["alice", "bob"]
    assert sorted(served[2:]) == ["noisy"] * 3


def test_a_request_that_waits_too_long_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> fairness.Level:
        lv = fairness.Level("global-default", seats=1, schema="global-default", per_flow=3, max_queued=10)
        await lv.acquire("a", wait=60)
        with pytest.raises(errors.APIError) as late:
            await lv.acquire("b", wait=0.01)
        assert late.value.code == 429
        lv.release("a")
        return lv

    lv = asyncio.run(scenario())
    assert (lv.queued, lv.executing, lv.rejected) == (0, 0, {"queue-full": 0, "time-out": 1})


def test_the_example_policy_loads() -> None:
    p = audit.load_policy(Path(__file__).resolve().parents[2] / "configs" / "audit-policy.yaml")
    assert level(p, attrs("GET", "/readyz")) == "None"
    assert level(p, attrs("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n")) == "None"
    assert level(p, attrs("POST", "/api/v1/namespaces/ns/secrets")) == "Metadata"
    assert level(p, attrs("GET", "/apis/apps/v1/deployments")) == "Metadata"
    created = p.decide(attrs("POST", "/apis/apps/v1/namespaces/ns/deployments"), ALICE)
    assert audit.LEVELS[created.level] == "Request" and created.omit_managed_fields
    assert created.omit_stages == {"RequestReceived"}


def test_impersonation_and_annotations_from_inner_steps(tmp_path: Path) -> None:
    """The hooks the authorization step uses: the user that authentication set is the event's
    `user`; a different user on the request when it is answered (impersonation replaced it) is
    its `impersonatedUser`; `annotate` adds annotations. A plain-HTTP app with the server's real
    filter chain (a static token, a gate that allows everything, impersonation included)."""
    from aiohttp import test_utils, web

    from edgekube.api import filters, server
    from edgekube.api.auth import authn, authz

    log = tmp_path / "audit.log"
    auditor = audit.Auditor(policy({"level": "Metadata"}), settings=_settings(log))
    auditor.open()

    async def get_pod(request: web.Request) -> web.Response:
        audit.annotate(request, "authorization.k8s.io/decision", "allow")
        return web.json_response({"kind": "Pod"})

    async def scenario() -> list[int]:
        chain = filters.Filters(authenticators=[authn.StaticTokens({"alice": ("alice", ["devs"])})],
                                auditor=auditor, flowcontrol=fairness.Fairness(fairness.Settings(0, 0, 0, 1.0)),
                                gate=authz.Gate(authz.AllowAll()))
        app = web.Application(middlewares=[server.error_middleware, chain.middleware])
        app.on_response_prepare.append(auditor.on_response_prepare)
        app.router.add_get("/api/v1/namespaces/ns/pods/p", get_pod)
        writer = asyncio.create_task(auditor.run(), name="audit-writer")
        codes = []
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            for headers in ({"Authorization": "Bearer alice", "Impersonate-User": "bob"}, {}):
                r = await client.get("/api/v1/namespaces/ns/pods/p", headers=headers)
                assert r.headers["Audit-Id"]
                codes.append(r.status)
        writer.cancel()
        await auditor.close()
        return codes

    assert asyncio.run(scenario()) == [200, 401]
    events = [json.loads(x) for x in log.read_text().splitlines()]
    complete, received, unauthenticated = (
        next(e for e in events if e["stage"] == "ResponseComplete"),
        next(e for e in events if e["stage"] == "RequestReceived"),
        next(e for e in events if e.get("responseStatus", {}).get("code") == 401))
    assert complete["user"] == {"username": "alice", "groups": ["devs", "system:authenticated"]}
    assert complete["impersonatedUser"] == {"username": "bob", "groups": ["system:authenticated"]}
    assert complete["annotations"] == {"authorization.k8s.io/decision": "allow"}
    assert "impersonatedUser" not in received and "annotations" not in received  # before impersonation ran
    assert unauthenticated["user"] == {} and unauthenticated["stage"] == "ResponseStarted"
    assert complete["objectRef"] == {"resource": "pods", "namespace": "ns", "name": "p", "apiVersion": "v1"}


def test_audit_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    ids, other = audit.AuditIds(), audit.AuditIds()
    made = [ids.next() for _ in range(2000)] + [other.next() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made[:3] + made[-3:]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_one_parse_serves_authorization_audit_and_fairness() -> None:
    """The request info is upstream's: a `/watch` naming nothing is a 400; `!=` and names that
    cannot be a path segment select no object; an unknown method's verb is the method."""
    with pytest.raises(errors.APIError) as refused:
        reqattrs.parse("GET", "/api/v1/watch", {})
    assert refused.value.code == 400
    assert attrs("GET", "/api/v1/namespaces/n/pods", fieldSelector="metadata.name!=p").name == ""
    assert attrs("GET", "/api/v1/namespaces/n/pods", fieldSelector="metadata.name=..").name == ""
    assert attrs("OPTIONS", "/api/v1/namespaces/n/pods").verb == "options"
    parser = reqattrs.Parser()
    from aiohttp import test_utils

    first = test_utils.make_mocked_request("GET", "/api/v1/namespaces/n/pods?watch=1")
    again = test_utils.make_mocked_request("GET", "/api/v1/namespaces/n/pods?watch=1")
    assert parser.of(first) is parser.of(again) is reqattrs.of(again)
    assert parser.of(first).verb == "watch" and parser.of(first).long_running


def test_a_url_naming_no_resource_is_a_400_with_its_audit_id(tmp_path: Path) -> None:
    """Upstream sets the audit ID in its outermost audit filter, before the request info that
    `/api/v1/watch` fails: the 400 still carries an `Audit-Id`."""
    from aiohttp import test_utils, web

    from edgekube.api import filters, server
    from edgekube.api.auth import authn, authz

    async def scenario() -> tuple[int, str, dict[str, Any]]:
        auditor = audit.Auditor(None, settings=None)
        chain = filters.Filters(authenticators=[authn.StaticTokens({"alice": ("alice", [])})], auditor=auditor,
                                flowcontrol=fairness.Fairness(fairness.Settings(0, 0, 0, 1.0)),
                                gate=authz.Gate(authz.AllowAll()))
        app = web.Application(middlewares=[server.error_middleware, chain.middleware])
        app.on_response_prepare.append(auditor.on_response_prepare)
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            r = await client.get("/api/v1/watch", headers={"Authorization": "Bearer alice"})
            return r.status, r.headers.get("Audit-Id", ""), await r.json()

    code, audit_id, body = asyncio.run(scenario())
    assert code == 400 and body["reason"] == "BadRequest" and audit_id
    assert "unable to determine kind and namespace from url" in body["message"]
