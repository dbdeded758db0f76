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
        proc = k.run("scale", "deployment", "small", "--replicas=8", check=False)
        assert proc.returncode != 0 and "at most 5 replicas here" in proc.stderr
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
