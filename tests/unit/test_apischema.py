"""The built-in kinds' OpenAPI definitions: each decoded alone, when first asked for."""

from __future__ import annotations

from edgekube.api import apischema, apischema_data


def test_a_definition_is_decoded_when_asked_for_and_all_decode() -> None:
    defs = apischema.Definitions()
    name = apischema.kind_definition("apps", "v1", "Deployment")
    assert name == "io.k8s.api.apps.v1.Deployment" and name in defs
    deployment = defs[name]
    assert deployment["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    assert defs[name] is deployment  # kept
    assert len(defs._decoded) == 1  # nothing else was parsed
    assert "io.k8s.api.apps.v1.NoSuchKind" not in defs and defs.get("io.k8s.api.apps.v1.NoSuchKind") is None
    everything = dict(defs)
    assert len(everything) == apischema_data.DEFINITION_COUNT
    assert all(isinstance(d, dict) and ("type" in d or "properties" in d or "description" in d)
               for d in everything.values())
    pod_closure = apischema.closure("io.k8s.api.core.v1.Pod")
    assert "io.k8s.api.core.v1.Container" in pod_closure and "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in pod_closure
