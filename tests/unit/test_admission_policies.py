"""ValidatingAdmissionPolicy with bindings, and CRD x-kubernetes-validations, through the real
registry with CEL (cel-python): refusals with upstream's texts, Warn and Audit actions, params,
transition rules, compile errors refused when written, and costs cut."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube.api import errors
from edgekube.api.registry import rest
from tests.support import registry as registry_support

JSON = dict[str, Any]
GROUP = "admissionregistration.k8s.io"


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[rest.Registry]:
    async with registry_support.opened(tmp_path / "db") as reg:
        yield reg


_info = registry_support.info


def _deploy(name: str, replicas: int, **labels: str) -> JSON:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


POLICY = {
    "apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "max-replicas"},
    "spec": {
        "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
        "variables": [{"name": "wanted", "expression": "object.spec.replicas"}],
        "validations": [
            {"expression": "variables.wanted <= 5"},
            {"expression": "object.metadata.name != 'forbidden'", "message": "that name is taken", "reason": "Forbidden"},
            {"expression": "!has(object.metadata.labels) || !('bad' in object.metadata.labels)",
             "messageExpression": "'label bad is not allowed on ' + object.metadata.name"},
        ],
    },
}


def _binding(name: str, actions: list[str], **spec: Any) -> JSON:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": "max-replicas", "validationActions": actions, **spec}}


async def test_a_policy_with_a_deny_binding_refuses_as_upstream(registry: rest.Registry) -> None:
    policies = _info(registry, GROUP, "validatingadmissionpolicies")
    stored = await registry.create(policies, copy.deepcopy(POLICY), namespace=None)
    assert stored["spec"]["failurePolicy"] == "Fail"
    assert stored["spec"]["matchConstraints"]["matchPolicy"] == "Equivalent"
    deployments = _info(registry, "apps", "deployments")
    await registry.create(deployments, _deploy("before", 9), namespace="default")  # no binding yet
    await registry.create(_info(registry, GROUP, "validatingadmissionpolicybindings"), _binding("deny", ["Deny"]), namespace=None)
    await registry.create(deployments, _deploy("small", 3), namespace="default")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(deployments, _deploy("big", 9), namespace="default")
    assert caught.value.code == 422 and caught.value.reason == "Invalid"
    assert caught.value.message == ('deployments.apps "big" is forbidden: ValidatingAdmissionPolicy \'max-replicas\' '
                                    "with binding 'deny' denied request: failed expression: variables.wanted <= 5")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(deployments, _deploy("forbidden", 1), namespace="default")
    assert caught.value.code == 403 and caught.value.message.endswith("denied request: that name is taken")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(deployments, _deploy("labelled", 1, bad="yes"), namespace="default")
    assert caught.value.message.endswith("denied request: label bad is not allowed on labelled")

    def scale(d: JSON) -> JSON:
        d["spec"]["replicas"] = 7
        return d

    with pytest.raises(errors.APIError):
        await registry.patch(deployments, namespace="default", name="small", apply=scale)


async def test_warn_and_audit_actions_and_params(registry: rest.Registry) -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["paramKind"] = {"apiVersion": "v1", "kind": "ConfigMap"}
    policy["spec"]["validations"] = [{"expression": "object.spec.replicas <= int(params.data.max)",
                                      "messageExpression": "'at most ' + params.data.max + ' replicas'"}]
    del policy["spec"]["variables"]
    await registry.create(_info(registry, GROUP, "validatingadmissionpolicies"), policy, namespace=None)
    await registry.create(_info(registry, "", "configmaps"), {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "limits", "namespace": "default"}, "data": {"max": "2"}}, namespace="default")
    await registry.create(_info(registry, GROUP, "validatingadmissionpolicybindings"),
                          _binding("warn", ["Warn", "Audit"], paramRef={"name": "limits", "parameterNotFoundAction": "Deny"}),
                          namespace=None)
    warnings = rest.Warnings()
    deployments = _info(registry, "apps", "deployments")
    await registry.create(deployments, _deploy("big", 3), namespace="default", warnings=warnings)
    assert warnings.messages == ["Validation failed for ValidatingAdmissionPolicy 'max-replicas' with binding 'warn': at most 2 replicas"]
    assert '"message":"at most 2 replicas"' in warnings.audit_annotations["validation.policy.admission.k8s.io/validation_failure"]
    # The param missing in another namespace: Deny refuses.
    await registry.create(_info(registry, "", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "other"}}, namespace=None)
    elsewhere = _deploy("x", 1)
    elsewhere["metadata"]["namespace"] = "other"
    with pytest.raises(errors.APIError) as caught:
        await registry.create(deployments, elsewhere, namespace="other")
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in caught.value.message


async def test_policies_that_do_not_compile_are_refused(registry: rest.Registry) -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["validations"] = [{"expression": "object.spec.replicas <="}, {"expression": "nothing.here"}]
    with pytest.raises(errors.APIError) as caught:
        await registry.create(_info(registry, GROUP, "validatingadmissionpolicies"), policy, namespace=None)
    assert caught.value.code == 422
    fields = {c["field"]: c["message"] for c in caught.value.details["causes"]}
    assert fields["spec.validations[1].expression"].endswith("compilation failed: undeclared reference to 'nothing'")
    assert "compilation failed: Syntax error" in fields["spec.validations[0].expression"]
    with pytest.raises(errors.APIError) as caught:
        await registry.create(_info(registry, GROUP, "validatingadmissionpolicybindings"),
                              _binding("both", ["Deny", "Warn"]), namespace=None)
    assert caught.value.code == 422


def _crd(rules: list[JSON], *, status_rules: list[JSON] | None = None) -> JSON:
    spec_schema: JSON = {"type": "object", "x-kubernetes-validations": rules, "properties": {
        "replicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}, "mode": {"type": "string"},
        "items": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self.size() <= 3", "message": "items are short"}]}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}}}]}}


def _widget(name: str, **spec: Any) -> JSON:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def test_crd_rules_refuse_objects_and_transition_rules_see_the_old_value(registry: rest.Registry) -> None:
    rules = [{"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
             {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable", "fieldPath": ".mode"},
             {"rule": "self.replicas >= 0", "messageExpression": "'replicas is ' + string(self.replicas)",
              "reason": "FieldValueForbidden"}]
    await registry.create(_info(registry, "apiextensions.k8s.io", "customresourcedefinitions"), _crd(rules), namespace=None)
    widgets = _info(registry, "example.com", "widgets")
    await registry.create(widgets, _widget("ok", replicas=1, maxReplicas=2, mode="a"), namespace="default")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(widgets, _widget("big", replicas=3, maxReplicas=2, mode="a"), namespace="default")
    assert caught.value.code == 422
    assert caught.value.message == 'Widget.example.com "big" is invalid: spec: Invalid value: "object": replicas must not exceed maxReplicas'
    with pytest.raises(errors.APIError) as caught:
        await registry.create(widgets, _widget("neg", replicas=-1, maxReplicas=2, mode="a"), namespace="default")
    assert caught.value.message.endswith("spec: Forbidden: replicas is -1")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(widgets, _widget("long", replicas=1, maxReplicas=2, mode="a", items=["ab", "abcd"]), namespace="default")
    assert caught.value.message.endswith('spec.items[1]: Invalid value: "string": items are short')

    def change_mode(w: JSON) -> JSON:
        w["spec"]["mode"] = "b"
        return w

    with pytest.raises(errors.APIError) as caught:
        await registry.patch(widgets, namespace="default", name="ok", apply=change_mode)
    assert caught.value.message.endswith('spec.mode: Invalid value: "object": mode is immutable')

    def scale(w: JSON) -> JSON:
        w["spec"]["replicas"] = 2
        return w

    await registry.patch(widgets, namespace="default", name="ok", apply=scale)


async def test_crd_rules_that_do_not_compile_refuse_the_crd_and_long_rules_are_cut(registry: rest.Registry) -> None:
    crds_info = _info(registry, "apiextensions.k8s.io", "customresourcedefinitions")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(crds_info, _crd([{"rule": "self.replicas <"}, {"rule": "other.x == 1"}]), namespace=None)
    assert caught.value.code == 422
    causes = caught.value.details["causes"]
    assert causes[0]["field"] == "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    assert "compilation failed" in causes[0]["message"]
    assert causes[1]["message"].endswith("compilation failed: undeclared reference to 'other'")
    heavy = [{"rule": "self.items.all(a, self.items.all(b, self.items.all(c, a + b + c != '')))"}]
    await registry.create(crds_info, _crd(heavy), namespace=None)
    widgets = _info(registry, "example.com", "widgets")
    with pytest.raises(errors.APIError) as caught:
        await registry.create(widgets, _widget("w", items=[str(i % 100) for i in range(200)]), namespace="default")
    assert caught.value.code == 422 and "call cost exceeds limit for rule" in caught.value.message
