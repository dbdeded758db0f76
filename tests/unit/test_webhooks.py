"""Admission webhooks through the real registry, against a real HTTPS webhook server on 127.0.0.1
(its own CA, the caBundle checked): refusals with upstream's texts, JSONPatch mutations with
reinvocation, failurePolicy with the server down, timeouts, selectors, rules, dry run, a Service
resolved to its endpoint, and the configurations' own defaults and validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube.api import errors
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import rest
from tests.support import registry as registry_support
from tests.support import webhook as webhook_support

JSON = dict[str, Any]
GROUP = "admissionregistration.k8s.io"


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[rest.Registry]:
    async with registry_support.opened(tmp_path / "db") as reg:
        yield reg


_info = registry_support.info


def _hook(name: str, client: JSON, **extra: Any) -> JSON:
    return {"name": name, "clientConfig": client, "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["configmaps"]}], **extra}


async def _configure(reg: rest.Registry, kind: str, *hooks: JSON, name: str = "cfg") -> JSON:
    plural = kind.lower() + "s"
    obj = {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": {"name": name}, "webhooks": list(hooks)}
    return await reg.create(_info(reg, GROUP, plural), obj, namespace=None)


def _cm(name: str = "cm", **labels: str) -> JSON:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "data": {"k": "v"}}


async def _server(tmp_path: Path, decide: webhook_support.Decide, **kw: Any) -> webhook_support.WebhookServer:
    return await webhook_support.WebhookServer(tmp_path / "hook-tls", decide=decide, **kw).start()


async def test_a_validating_webhook_refuses_with_its_message_and_sees_the_request(registry: rest.Registry, tmp_path: Path) -> None:
    def decide(req: JSON) -> JSON:
        if req["object"]["metadata"]["name"] == "bad":
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "no bad names"},
                    "warnings": ["looked at it"]}
        return {"allowed": True, "warnings": ["fine by me"], "auditAnnotations": {"seen": "yes"}}

    server = await _server(tmp_path, decide)
    try:
        cfg = await _configure(registry, "ValidatingWebhookConfiguration",
                               _hook("deny.example.com", {"url": server.url(), "caBundle": server.ca_bundle}))
        hook = cfg["webhooks"][0]  # upstream's defaults
        assert (hook["failurePolicy"], hook["matchPolicy"], hook["timeoutSeconds"]) == ("Fail", "Equivalent", 10)
        assert hook["namespaceSelector"] == {} and hook["rules"][0]["scope"] == "*"
        cms = _info(registry, "", "configmaps")
        warnings = rest.Warnings()
        alice = user_mod.authenticated("alice", groups=["devs"])
        await registry.create(cms, _cm("good"), namespace="default", warnings=warnings,
                              options=rest.Options(user=alice))
        assert warnings.messages == ["fine by me"]
        assert warnings.audit_annotations == {"deny.example.com/seen": "yes"}
        req = server.reviews[-1]["request"]
        assert server.reviews[-1]["apiVersion"] == "admission.k8s.io/v1"
        assert req["operation"] == "CREATE" and req["name"] == "good" and req["namespace"] == "default"
        assert req["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
        assert req["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
        assert req["userInfo"]["username"] == "alice" and "devs" in req["userInfo"]["groups"]
        assert req["object"]["data"] == {"k": "v"} and req["oldObject"] is None and req["dryRun"] is False
        assert req["options"]["kind"] == "CreateOptions"
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("bad"), namespace="default")
        assert caught.value.code == 403
        assert caught.value.message == 'admission webhook "deny.example.com" denied the request: no bad names'
        assert registry.store.get(cms.key("bad", "default")) is None

        # Updates carry the old object; other kinds never reach the webhook.
        def relabel(cm: JSON) -> JSON:
            cm["metadata"]["labels"] = {"x": "y"}
            return cm

        await registry.patch(cms, namespace="default", name="good", apply=relabel)
        assert server.reviews[-1]["request"]["operation"] == "UPDATE"
        assert server.reviews[-1]["request"]["oldObject"]["metadata"]["name"] == "good"
        seen = len(server.reviews)
        await registry.create(_info(registry, "", "secrets"), {"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "s", "namespace": "default"}}, namespace="default")
        assert len(server.reviews) == seen
    finally:
        await server.stop()


async def test_a_mutating_webhook_adds_a_label_and_is_reinvoked_if_needed(registry: rest.Registry, tmp_path: Path) -> None:
    def decide(req: JSON) -> JSON:
        labels = req["object"]["metadata"].get("labels") or {}
        if req["object"]["metadata"]["name"].startswith("two") and "second" not in labels and "first" in labels:
            return webhook_support.patch_response([{"op": "add", "path": "/metadata/labels/second", "value": "yes"}])
        if "first" not in labels:
            return webhook_support.patch_response([{"op": "add", "path": "/metadata/labels/first", "value": "yes"}])
        return {"allowed": True}

    server = await _server(tmp_path, decide)
    try:
        client = {"url": server.url(), "caBundle": server.ca_bundle}
        await _configure(registry, "MutatingWebhookConfiguration",
                         _hook("a.example.com", client, reinvocationPolicy="IfNeeded"), _hook("b.example.com", client))
        cms = _info(registry, "", "configmaps")
        warnings = rest.Warnings()
        out = await registry.create(cms, _cm("one", keep="me"), namespace="default", warnings=warnings)
        assert out["metadata"]["labels"] == {"keep": "me", "first": "yes"}
        stored = registry.get(cms, namespace="default", name="one")
        assert stored["metadata"]["labels"] == {"keep": "me", "first": "yes"}
        assert warnings.audit_annotations["mutation.webhook.admission.k8s.io/round_0_index_0"].startswith('{"configuration":"cfg"')
        # b adds "second" after a ran: a (IfNeeded) is called again, once.
        before = len(server.reviews)
        out = await registry.create(cms, _cm("two"), namespace="default")
        assert out["metadata"]["labels"] == {"first": "yes", "second": "yes"}
        assert len(server.reviews) - before == 3
    finally:
        await server.stop()


async def test_failure_policy_with_the_server_down_and_timeouts(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": True}, delay=2.5)
    dead = "https://127.0.0.1:1/hook"
    cms = _info(registry, "", "configmaps")
    try:
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("ignore.example.com", {"url": dead}, failurePolicy="Ignore"), name="ignore")
        await registry.create(cms, _cm("ignored"), namespace="default")  # Ignore: the write goes through
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("fail.example.com", {"url": dead}), name="fail")
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("refused"), namespace="default")
        assert caught.value.code == 500 and caught.value.reason == "InternalError"
        assert caught.value.message == (
            'Internal error occurred: failed calling webhook "fail.example.com": failed to call webhook: '
            'Post "https://127.0.0.1:1/hook?timeout=10s": dial tcp 127.0.0.1:1: connect: connection refused')
        await registry.delete(_info(registry, GROUP, "validatingwebhookconfigurations"), namespace=None, name="fail")
        await registry.create(cms, _cm("after"), namespace="default")
        # A slow webhook past its timeout: refused under Fail, in about its timeout.
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("slow.example.com", {"url": server.url(), "caBundle": server.ca_bundle}, timeoutSeconds=1),
                         name="slow")
        started = asyncio.get_running_loop().time()
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("slow"), namespace="default")
        assert asyncio.get_running_loop().time() - started < 2.4
        assert caught.value.code == 500 and caught.value.message.endswith(': context deadline exceeded')
        assert "?timeout=1s" in caught.value.message
    finally:
        await server.stop()


async def test_a_wrong_ca_bundle_is_a_failed_call(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": True})
    other = webhook_support.WebhookServer(tmp_path / "other-tls", decide=lambda r: {"allowed": True})
    try:
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("tls.example.com", {"url": server.url(), "caBundle": other.ca_bundle}))
        with pytest.raises(errors.APIError) as caught:
            await registry.create(_info(registry, "", "configmaps"), _cm(), namespace="default")
        assert caught.value.code == 500 and "tls: failed to verify certificate: x509: " in caught.value.message
        assert "certificate verify failed" in caught.value.message
        assert server.reviews == []
    finally:
        await server.stop()


async def test_selectors_rules_scope_and_dry_run(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": False, "status": {"message": "nope"}})
    try:
        client = {"url": server.url(), "caBundle": server.ca_bundle}
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("sel.example.com", client, objectSelector={"matchLabels": {"guarded": "yes"}},
                               namespaceSelector={"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                                        "operator": "In", "values": ["default"]}]}))
        cms = _info(registry, "", "configmaps")
        await registry.create(cms, _cm("free"), namespace="default")  # objectSelector does not match
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("guarded", guarded="yes"), namespace="default")
        assert caught.value.code == 400  # a webhook's status below 400 is made 400
        assert caught.value.message == 'admission webhook "sel.example.com" denied the request: nope'
        # Another namespace: the namespaceSelector does not match.
        await registry.create(_info(registry, "", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "other"}}, namespace=None)
        other = _cm("guarded", guarded="yes")
        other["metadata"]["namespace"] = "other"
        await registry.create(cms, other, namespace="other")
        # Dry runs reach webhooks without side effects, and are refused by them too.
        with pytest.raises(errors.APIError):
            await registry.create(cms, _cm("dry", guarded="yes"), namespace="default", options=rest.Options(dry_run=True))
        assert server.reviews[-1]["request"]["dryRun"] is True
    finally:
        await server.stop()


async def test_deletes_reach_webhooks_that_ask_for_them(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": req["operation"] != "DELETE",
                                                  "status": {"code": 403, "message": "keep it"}})
    try:
        cms = _info(registry, "", "configmaps")
        await registry.create(cms, _cm("kept"), namespace="default")
        hook = _hook("del.example.com", {"url": server.url(), "caBundle": server.ca_bundle})
        hook["rules"][0]["operations"] = ["DELETE"]
        hook["rules"][0]["resources"] = ["*"]
        hook["rules"][0]["scope"] = "Namespaced"
        await _configure(registry, "ValidatingWebhookConfiguration", hook)
        with pytest.raises(errors.APIError) as caught:
            await registry.delete(cms, namespace="default", name="kept")
        assert caught.value.code == 403
        req = server.reviews[-1]["request"]
        assert req["operation"] == "DELETE" and req["object"] is None and req["oldObject"]["metadata"]["name"] == "kept"
        assert registry.store.get(cms.key("kept", "default")) is not None
        # Cluster-scoped objects are out of a Namespaced rule's scope.
        await registry.create(_info(registry, "", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "gone"}}, namespace=None)
        await registry.delete(_info(registry, "", "namespaces"), namespace=None, name="gone")
    finally:
        await server.stop()


async def test_a_service_is_resolved_to_its_endpoint(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": False, "status": {"message": "via the service"}})
    try:
        await registry.create(_info(registry, "", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "hooks"}}, namespace=None)
        await registry.create(_info(registry, "", "services"), {"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "hook", "namespace": "hooks"},
                              "spec": {"ports": [{"name": "https", "port": 443, "targetPort": server.port}]}}, namespace="hooks")
        await registry.create(_info(registry, "", "endpoints"), {"apiVersion": "v1", "kind": "Endpoints",
                              "metadata": {"name": "hook", "namespace": "hooks"},
                              "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                           "ports": [{"name": "https", "port": server.port}]}]}, namespace="hooks")
        await _configure(registry, "ValidatingWebhookConfiguration", _hook(
            "svc.example.com", {"service": {"namespace": "hooks", "name": "hook", "path": "/validate"},
                                "caBundle": server.ca_bundle}))
        with pytest.raises(errors.APIError) as caught:
            await registry.create(_info(registry, "", "configmaps"), _cm(), namespace="default")
        assert caught.value.message == 'admission webhook "svc.example.com" denied the request: via the service'
    finally:
        await server.stop()


async def test_configurations_are_validated_as_upstream(registry: rest.Registry) -> None:
    with pytest.raises(errors.APIError) as caught:
        await _configure(registry, "ValidatingWebhookConfiguration",
                         {"name": "short", "clientConfig": {"url": "http://x/"}, "timeoutSeconds": 31,
                          "admissionReviewVersions": ["v1"]})
    assert caught.value.code == 422
    messages = [c["message"] for c in caught.value.details["causes"]]
    fields = [c["field"] for c in caught.value.details["causes"]]
    assert "webhooks[0].name" in fields and "webhooks[0].sideEffects" in fields
    assert 'Invalid value: "short": should be a domain with at least three segments separated by dots' in messages
    assert "Invalid value: 31: the timeout value must be between 1 and 30 seconds" in messages
    assert """Invalid value: "http://x/": 'https' is the only allowed URL scheme""" in messages


async def test_match_conditions_choose_the_requests_a_webhook_sees(registry: rest.Registry, tmp_path: Path) -> None:
    server = await _server(tmp_path, lambda req: {"allowed": False, "status": {"message": "conditions matched"}})
    try:
        conditions = [{"name": "not-system", "expression": "!request.userInfo.username.startsWith('system:')"},
                      {"name": "flagged", "expression": "has(object.metadata.labels) && 'check' in object.metadata.labels"}]
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("cond.example.com", {"url": server.url(), "caBundle": server.ca_bundle},
                               matchConditions=conditions))
        cms = _info(registry, "", "configmaps")
        bob = rest.Options(user=user_mod.authenticated("bob"))
        await registry.create(cms, _cm("plain"), namespace="default", options=bob)
        await registry.create(cms, _cm("system", check="yes"), namespace="default",
                              options=rest.Options(user=user_mod.authenticated("system:kube-scheduler")))
        assert server.reviews == []
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("flagged", check="yes"), namespace="default", options=bob)
        assert caught.value.message.endswith("denied the request: conditions matched")
        # An expression that fails at run time fails closed (failurePolicy Fail).
        await registry.delete(_info(registry, GROUP, "validatingwebhookconfigurations"), namespace=None, name="cfg")
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("broken.example.com", {"url": server.url(), "caBundle": server.ca_bundle},
                               matchConditions=[{"name": "x", "expression": "object.data.missing == 'y'"}]))
        with pytest.raises(errors.APIError) as caught:
            await registry.create(cms, _cm("any"), namespace="default", options=bob)
        assert caught.value.code == 403
        assert caught.value.message == ('configmaps "any" is forbidden: failed calling webhook "broken.example.com": '
                                        "no such key: missing")
    finally:
        await server.stop()


async def test_an_oversized_answer_is_a_failed_call(registry: rest.Registry, tmp_path: Path) -> None:
    big = "x" * (9 * 1024 * 1024)
    server = await _server(tmp_path, lambda req: {"allowed": True, "warnings": [big]})
    try:
        await _configure(registry, "ValidatingWebhookConfiguration",
                         _hook("big.example.com", {"url": server.url(), "caBundle": server.ca_bundle}))
        with pytest.raises(errors.APIError) as caught:
            await registry.create(_info(registry, "", "configmaps"), _cm(), namespace="default")
        assert caught.value.code == 500 and "the response is larger than 8388608 bytes" in caught.value.message
    finally:
        await server.stop()
