"""Admission through real kubectl (1.27, 1.33, 1.36): PodSecurity refusing a privileged pod with
upstream's message and warning by label, a real HTTPS webhook server (this test's own CA)
refusing an object and a mutating one adding a label, failurePolicy with the server down, a
ValidatingAdmissionPolicy refusing, and a CRD's x-kubernetes-validations (with a transition rule).

Every webhook configuration and policy here selects only the test's own namespace, so the
module's shared server is not disturbed for the other tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support import webhook as webhook_support

pytestmark = pytest.mark.e2e
VERSIONS = ["1.27", "1.33", "1.36"]
JSON = dict[str, Any]


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def k(request: pytest.FixtureRequest, server: Server) -> Iterator[Kubectl]:
    version = request.param
    ns = f"{request.node.originalname.removeprefix('test_').replace('_', '-')[:40]}-{version.replace('.', '')}"
    kubectl = Kubectl(version, server, ns)
    kubectl.run("create", "namespace", ns, namespaced=False)
    yield kubectl
    kubectl.run("delete", "namespace", ns, "--wait=false", namespaced=False, check=False)


def _apply(k: Kubectl, obj: JSON, *, check: bool = True, verb: str = "create") -> Any:
    return k.run(verb, "-f", "-", input=json.dumps(obj), check=check)


def _pod(name: str, **security: Any) -> JSON:
    container: JSON = {"name": "c", "image": "busybox"}
    if security:
        container["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def test_pod_security_restricted_refuses_a_privileged_pod(k: Kubectl) -> None:
    k.run("label", "namespace", k.ns, "pod-security.kubernetes.io/enforce=restricted", namespaced=False)
    proc = _apply(k, _pod("priv", privileged=True), check=False)
    assert proc.returncode != 0
    assert ('Error from server (Forbidden): error when creating "STDIN": pods "priv" is forbidden: '
            'violates PodSecurity "restricted:latest": privileged (container "c" must not set securityContext.privileged=true), '
            'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
            'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
            'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
            'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
            ) in proc.stderr
    ok = _pod("ok", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]}, runAsNonRoot=True,
              seccompProfile={"type": "RuntimeDefault"})
    _apply(k, ok)
    # A stricter label over a namespace with pods that would fail it warns, naming them.
    k.run("label", "namespace", k.ns, "pod-security.kubernetes.io/enforce=privileged", "--overwrite", namespaced=False)
    _apply(k, _pod("rooty"))
    proc = k.run("label", "namespace", k.ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite", namespaced=False)
    assert f'Warning: existing pods in namespace "{k.ns}" violate the new PodSecurity enforce level "restricted:latest"' in proc.stderr
    assert "Warning: rooty: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile" in proc.stderr


def test_pod_security_warn_label_shows_the_warning(k: Kubectl) -> None:
    k.run("label", "namespace", k.ns, "pod-security.kubernetes.io/warn=baseline", namespaced=False)
    pod = _pod("hostnet")
    pod["spec"]["hostNetwork"] = True
    proc = _apply(k, pod)
    assert 'Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)' in proc.stderr
    assert "pod/hostnet created" in proc.stdout
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                  "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]}}}}
    proc = _apply(k, deploy)
    assert 'Warning: would violate PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)' in proc.stderr


def _hooks_config(kind: str, name: str, namespace: str, client: JSON, **extra: Any) -> JSON:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": [{"name": f"{name}.example.com", "clientConfig": client, "sideEffects": "None",
                          "admissionReviewVersions": ["v1"],
                          "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                          "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["configmaps"]}], **extra}]}


def _decide(req: JSON) -> JSON:
    """Stamps what is not stamped yet (the mutating call), refuses `bad` once stamped (the
    validating call, which sees the mutated object)."""
    stamped = "stamped" in (req["object"]["metadata"].get("labels") or {})
    if stamped and req["object"]["metadata"]["name"] == "bad":
        return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "no bad names here"}}
    if not stamped:
        return webhook_support.patch_response([{"op": "add", "path": "/metadata/labels", "value": {"stamped": "yes"}}]
                                              if not req["object"]["metadata"].get("labels") else
                                              [{"op": "add", "path": "/metadata/labels/stamped", "value": "yes"}])
    return {"allowed": True, "warnings": ["seen by the webhook"]}


def test_webhooks_refuse_mutate_and_fail_closed(k: Kubectl, tmp_path: Path) -> None:
    server = webhook_support.WebhookServer(tmp_path / "tls", decide=_decide)
    names = [f"v{k.version.replace('.', '')}", f"m{k.version.replace('.', '')}", f"d{k.version.replace('.', '')}"]
    try:
        with webhook_support.Threaded(server):
            client = {"url": server.url(), "caBundle": server.ca_bundle}
            _apply(k, _hooks_config("ValidatingWebhookConfiguration", names[0], k.ns, client), verb="apply")
            _apply(k, _hooks_config("MutatingWebhookConfiguration", names[1], k.ns, client), verb="apply")
            table = k.out("get", "validatingwebhookconfigurations", names[0], namespaced=False)
            assert table.split("\n")[0].split() == ["NAME", "WEBHOOKS", "AGE"] and table.split("\n")[1].split()[:2] == [names[0], "1"]
            proc = _apply(k, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}}, check=False)
            assert proc.returncode != 0
            assert ('Error from server (Forbidden): error when creating "STDIN": admission webhook "'
                    + names[0] + '.example.com" denied the request: no bad names here') in proc.stderr
            proc = k.run("create", "configmap", "good", "--from-literal=a=b")
            assert "seen by the webhook" in proc.stderr
            assert k.json("get", "configmap", "good")["metadata"]["labels"] == {"stamped": "yes"}
            review = next(r["request"] for r in server.reviews if r["request"]["name"] == "good")
            assert review["userInfo"]["username"] and review["namespace"] == k.ns
        # The server is gone: failurePolicy Fail (the default) refuses, Ignore lets writes through.
        k.run("delete", "mutatingwebhookconfiguration", names[1], namespaced=False)
        proc = _apply(k, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "down"}}, check=False)
        assert proc.returncode != 0
        assert ('Error from server (InternalError): error when creating "STDIN": Internal error occurred: failed calling webhook '
                f'"{names[0]}.example.com": failed to call webhook: Post "{server.url()}?timeout=10s": '
                f"dial tcp 127.0.0.1:{server.port}: connect: connection refused") in proc.stderr
        ignoring = _hooks_config("ValidatingWebhookConfiguration", names[0], k.ns, {"url": server.url(), "caBundle": server.ca_bundle},
                                 failurePolicy="Ignore")
        _apply(k, ignoring, verb="apply")
        k.run("create", "configmap", "through")
    finally:
        for kind, name in (("validatingwebhookconfiguration", names[0]), ("mutatingwebhookconfiguration", names[1])):
            k.run("delete", kind, name, "--ignore-not-found", namespaced=False, check=False)


def test_a_validating_admission_policy_refuses(k: Kubectl) -> None:
    suffix = k.version.replace(".", "")
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": f"replicas-{suffix}"},
              "spec": {"matchConstraints": {
                  "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k.ns}},
                  "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                     "resources": ["deployments"]}]},
                  "validations": [{"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas here"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": f"replicas-{suffix}"},
               "spec": {"policyName": f"replicas-{suffix}", "validationActions": ["Deny"]}}
    try:
        _apply(k, policy, verb="apply")
        _apply(k, binding, verb="apply")
        assert k.out("get", "validatingadmissionpolicy", f"replicas-{suffix}", namespaced=False).split("\n")[0].split() == \
            ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"]
        k.run("create", "deployment", "small", "--image=busybox", "--replicas=2")
        proc = k.run("create", "deployment", "big", "--image=busybox", "--replicas=9", check=False)
        assert proc.returncode != 0
        assert ('deployments.apps "big" is forbidden: ValidatingAdmissionPolicy '
                f"'replicas-{suffix}' with binding 'replicas-{suffix}' denied request: at most 5 replicas here") in proc.stderr
        # As upstream: `kubectl scale` writes `deployments/scale`, which a policy naming
        # `deployments` alone does not match; one naming the subresource sees the Scale.
        k.run("scale", "deployment", "small", "--replicas=8")
        k.run("scale", "deployment", "small", "--replicas=2")
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        rules[0]["resources"].append("deployments/scale")
        rules[0]["operations"] = ["CREATE", "UPDATE"]
        _apply(k, policy, verb="apply")
        proc = k.run("scale", "deployment", "small", "--replicas=8", check=False)
        assert proc.returncode != 0
        assert (f"ValidatingAdmissionPolicy 'replicas-{suffix}' with binding 'replicas-{suffix}' denied request: "
                "at most 5 replicas here") in proc.stderr
        assert k.json("get", "deployment", "small")["spec"]["replicas"] == 2
    finally:
        k.run("delete", "validatingadmissionpolicybinding", f"replicas-{suffix}", "--ignore-not-found", namespaced=False, check=False)
        k.run("delete", "validatingadmissionpolicy", f"replicas-{suffix}", "--ignore-not-found", namespaced=False, check=False)


def test_crd_validation_rules_refuse_and_transition_rules_hold(k: Kubectl) -> None:
    suffix = k.version.replace(".", "")
    group = f"rules{suffix}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"gadgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {
                            "type": "object",
                            "x-kubernetes-validations": [
                                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
                                {"rule": "self.size == oldSelf.size", "message": "size is immutable"}],
                            "properties": {"replicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
                                           "size": {"type": "string"}}}}}}}]}}
    bad_crd = json.loads(json.dumps(crd))
    bad_crd["metadata"]["name"] = f"widgets.{group}"
    bad_crd["spec"]["names"] = {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"}
    bad_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.replicas <"}]
    try:
        proc = _apply(k, bad_crd, check=False)
        assert proc.returncode != 0 and "compilation failed" in proc.stderr
        _apply(k, crd)
        k.run("wait", "--for=condition=Established", f"crd/gadgets.{group}", "--timeout=30s", namespaced=False)
        gadget = {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g"},
                  "spec": {"replicas": 3, "maxReplicas": 2, "size": "s"}}
        proc = _apply(k, gadget, check=False)
        assert proc.returncode != 0
        assert 'The Gadget "g" is invalid: spec: Invalid value: "object": replicas must not exceed maxReplicas' in proc.stderr
        gadget["spec"]["replicas"] = 1
        _apply(k, gadget)
        proc = k.run("patch", "gadget", "g", "--type=merge", "-p", '{"spec":{"size":"l"}}', check=False)
        assert proc.returncode != 0 and "size is immutable" in proc.stderr
        k.run("patch", "gadget", "g", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    finally:
        k.run("delete", "crd", f"gadgets.{group}", "--ignore-not-found", "--wait=false", namespaced=False, check=False)


def test_pod_security_defaults_and_exemptions_come_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("pod-security:\n  enforce: baseline\n  exempt-namespaces: [kube-system, relaxed]\n")
    srv = Server(tmp_path / "data", extra=["--config", str(config)])
    srv.start()
    try:
        k = Kubectl("1.36", srv, "default")
        pod = _pod("hostnet")
        pod["spec"]["hostNetwork"] = True
        proc = _apply(k, pod, check=False)
        assert proc.returncode != 0
        assert 'pods "hostnet" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)' in proc.stderr
        k.run("create", "namespace", "relaxed", namespaced=False)
        k.ns = "relaxed"
        _apply(k, pod)
        # A namespace's own label still wins over the default.
        k.run("create", "namespace", "open", namespaced=False)
        k.run("label", "namespace", "open", "pod-security.kubernetes.io/enforce=privileged", namespaced=False)
        k.ns = "open"
        _apply(k, pod)
    finally:
        srv.close()


def _webhook(name: str, url: str, ca: str, namespace: str, resources: list[str], *, group: str = "",
             version: str = "v1", operations: tuple[str, ...] = ("UPDATE",)) -> JSON:
    return {"name": name, "clientConfig": {"url": url, "caBundle": ca}, "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "rules": [{"operations": list(operations), "apiGroups": [group], "apiVersions": [version],
                       "resources": resources}]}


def _configuration(kind: str, name: str, *hooks: JSON) -> JSON:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": list(hooks)}


def _stamp_status(req: JSON) -> JSON:
    if (req["object"].get("status") or {}).get("message"):
        return {"allowed": True}
    return webhook_support.patch_response([{"op": "add", "path": "/status/message", "value": "stamped by webhook"}])


def _refuse_evil_status(req: JSON) -> JSON:
    if (req["object"].get("status") or {}).get("reason") == "Evil":
        return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "no evil status"}}
    return {"allowed": True, "warnings": ["status seen"]}


def _three_means_four(req: JSON) -> JSON:
    if req["object"]["spec"].get("replicas") == 3:
        return webhook_support.patch_response([{"op": "replace", "path": "/spec/replicas", "value": 4}])
    return {"allowed": True}


def _at_most_five(req: JSON) -> JSON:
    if req["object"]["spec"].get("replicas", 0) > 5:
        return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "at most 5 replicas by scale"}}
    return {"allowed": True, "warnings": ["scale seen"]}


def _allow(req: JSON) -> JSON:
    return {"allowed": True}


def test_subresource_writes_reach_the_webhooks_that_name_them(k: Kubectl, tmp_path: Path) -> None:
    """As kube-apiserver: a write to `pods/status` or `deployments/scale` (PUT or PATCH, kubectl
    and the Python client) is admitted as an UPDATE of that subresource: webhooks whose rules
    name it are called (a Scale for `scale`, with its old Scale), their patch applied and their
    refusal honoured; webhooks whose rules name only `pods` or `deployments` are not called."""
    routes = {"/pods-status-m": _stamp_status, "/pods-status-v": _refuse_evil_status, "/pods": _allow,
              "/scale-m": _three_means_four, "/scale-v": _at_most_five, "/deployments": _allow}
    server = webhook_support.WebhookServer(tmp_path / "tls", decide=_allow, routes=routes)
    suffix = k.version.replace(".", "")
    names = {"m": f"sub-m-{suffix}", "v": f"sub-v-{suffix}"}
    try:
        with webhook_support.Threaded(server):
            url, ca = server.url, server.ca_bundle
            _apply(k, _configuration(
                "MutatingWebhookConfiguration", names["m"],
                _webhook("a-status.example.com", url("/pods-status-m"), ca, k.ns, ["pods/status"]),
                _webhook("b-pods.example.com", url("/pods"), ca, k.ns, ["pods"], operations=("CREATE", "UPDATE")),
                _webhook("c-scale.example.com", url("/scale-m"), ca, k.ns, ["deployments/scale"], group="apps"),
                _webhook("d-deployments.example.com", url("/deployments"), ca, k.ns, ["deployments"], group="apps",
                         operations=("CREATE", "UPDATE"))), verb="apply")
            _apply(k, _configuration(
                "ValidatingWebhookConfiguration", names["v"],
                _webhook("status.example.com", url("/pods-status-v"), ca, k.ns, ["pods/status"]),
                _webhook("scale.example.com", url("/scale-v"), ca, k.ns, ["deployments/scale"], group="apps")),
                verb="apply")
            _apply(k, _pod("p"))
            _apply(k, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                                "template": {"metadata": {"labels": {"a": "b"}},
                                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})

            # Status through kubectl (PATCH of /status): stamped by the mutating webhook.
            proc = k.run("patch", "pod", "p", "--subresource=status", "--type=merge", "-p", '{"status":{"reason":"Tested"}}')
            assert "Warning: status seen" in proc.stderr
            status = k.json("get", "pod", "p")["status"]
            assert (status.get("reason"), status.get("message")) == ("Tested", "stamped by webhook")
            # (The scheduler's own status writes may have come first: they are admitted too.)
            review = next(r["request"] for p, r in zip(server.paths, server.reviews, strict=True)
                          if p == "/pods-status-m" and r["request"]["object"]["status"].get("reason") == "Tested")
            assert (review["operation"], review["subResource"], review["requestSubResource"]) == ("UPDATE", "status", "status")
            assert review["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
            assert review["resource"] == {"group": "", "version": "v1", "resource": "pods"}
            assert review["name"] == "p" and review["namespace"] == k.ns
            assert "reason" not in (review["oldObject"].get("status") or {}) and review["object"]["status"]["reason"] == "Tested"
            proc = k.run("patch", "pod", "p", "--subresource=status", "--type=merge", "-p", '{"status":{"reason":"Evil"}}',
                         check=False)
            assert proc.returncode != 0
            assert 'admission webhook "status.example.com" denied the request: no evil status' in proc.stderr

            # Status through the Python client: PUT and PATCH of /status.
            api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(k.server.kubeconfig)))
            pod = api.read_namespaced_pod("p", k.ns)
            pod.status.message = None
            pod.status.reason = "Replaced"
            out = api.replace_namespaced_pod_status("p", k.ns, pod)
            assert (out.status.reason, out.status.message) == ("Replaced", "stamped by webhook")
            with pytest.raises(ApiException) as err:
                api.patch_namespaced_pod_status("p", k.ns, {"status": {"reason": "Evil"}})
            assert err.value.status == 403 and "no evil status" in str(err.value.body)

            # Scale through kubectl and the Python client: the webhooks see a Scale.
            k.run("scale", "deployment", "d", "--replicas=3")
            assert k.json("get", "deployment", "d")["spec"]["replicas"] == 4
            review = server.reviews[server.paths.index("/scale-m")]["request"]
            assert (review["operation"], review["subResource"], review["requestSubResource"]) == ("UPDATE", "scale", "scale")
            assert review["kind"] == review["requestKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            assert review["resource"] == review["requestResource"] == {"group": "apps", "version": "v1", "resource": "deployments"}
            assert review["object"]["kind"] == review["oldObject"]["kind"] == "Scale"
            assert (review["oldObject"]["spec"]["replicas"], review["object"]["spec"]["replicas"]) == (1, 3)
            proc = k.run("scale", "deployment", "d", "--replicas=9", check=False)
            assert proc.returncode != 0
            assert 'admission webhook "scale.example.com" denied the request: at most 5 replicas by scale' in proc.stderr
            apps = k8s.AppsV1Api(api.api_client)
            assert apps.patch_namespaced_deployment_scale("d", k.ns, {"spec": {"replicas": 2}}).spec.replicas == 2
            with pytest.raises(ApiException) as err:
                apps.replace_namespaced_deployment_scale(
                    "d", k.ns, {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d"},
                                "spec": {"replicas": 7}})
            assert err.value.status == 403 and "at most 5 replicas by scale" in str(err.value.body)

            # Webhooks naming the resource alone saw its creates, never a subresource write.
            for path in ("/pods", "/deployments"):
                seen = [r["request"] for p, r in zip(server.paths, server.reviews, strict=True) if p == path]
                assert seen and all("subResource" not in r for r in seen), (path, seen)
    finally:
        k.run("delete", "mutatingwebhookconfiguration", names["m"], "--ignore-not-found", namespaced=False, check=False)
        k.run("delete", "validatingwebhookconfiguration", names["v"], "--ignore-not-found", namespaced=False, check=False)


def test_admission_warnings_reach_the_client_on_delete(k: Kubectl, tmp_path: Path) -> None:
    """A validating webhook's `warnings` and a ValidatingAdmissionPolicy's Warn action on a DELETE
    (and on each object of a deletecollection) come back as `Warning` headers, as on writes:
    kubectl prints them."""
    suffix = k.version.replace(".", "")
    server = webhook_support.WebhookServer(tmp_path / "tls", decide=lambda req: {
        "allowed": True, "warnings": [f"webhook saw the delete of {req['oldObject']['metadata']['name']}"]})
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": f"keep-{suffix}"},
              "spec": {"matchConstraints": {
                  "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k.ns}},
                  "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"],
                                     "resources": ["configmaps"]}]},
                  "validations": [{"expression": "oldObject.metadata.name.startsWith('tmp')",
                                   "messageExpression": "'deleting ' + oldObject.metadata.name + ' is noted'"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": f"keep-{suffix}"},
               "spec": {"policyName": f"keep-{suffix}", "validationActions": ["Warn"]}}
    name = f"del-{suffix}"
    try:
        with webhook_support.Threaded(server):
            _apply(k, _configuration("ValidatingWebhookConfiguration", name, _webhook(
                "delete.example.com", server.url(), server.ca_bundle, k.ns, ["configmaps"], operations=("DELETE",))),
                verb="apply")
            _apply(k, policy, verb="apply")
            _apply(k, binding, verb="apply")
            for cm in ("keep", "other", "more"):
                k.run("create", "configmap", cm)
            proc = k.run("delete", "configmap", "keep")
            assert "Warning: webhook saw the delete of keep" in proc.stderr
            assert (f"Warning: Validation failed for ValidatingAdmissionPolicy 'keep-{suffix}' with binding "
                    f"'keep-{suffix}': deleting keep is noted") in proc.stderr
            # deletecollection: each object's warnings, in one response.
            api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(k.server.kubeconfig)))
            resp = api.delete_collection_namespaced_config_map(k.ns, _preload_content=False)
            warning = resp.headers.get("Warning") or ""
            assert '299 - "webhook saw the delete of other"' in warning
            assert '299 - "webhook saw the delete of more"' in warning
            assert "deleting more is noted" in warning
    finally:
        k.run("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", namespaced=False, check=False)
        k.run("delete", "validatingadmissionpolicybinding", f"keep-{suffix}", "--ignore-not-found", namespaced=False,
              check=False)
        k.run("delete", "validatingadmissionpolicy", f"keep-{suffix}", "--ignore-not-found", namespaced=False, check=False)
