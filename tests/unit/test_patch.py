"""PATCH semantics: JSON patch, merge patch and strategic merge patch on realistic objects."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from edgekube.api import apischema, errors, patch
from edgekube.api.registry import decoding, patchmeta

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "frontend"},
            "finalizers": ["example.com/cleanup", "example.com/audit"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "info"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]},
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                    "tolerations": [{"key": "edge", "operator": "Exists"}],
                },
            },
        },
    }


def smp(original: dict[str, Any], body: Any, *, gk: str = "Deployment.apps") -> dict[str, Any]:
    return patch.apply_patch(SMP, original, orjson.dumps(body), gk=gk)


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def no_directives(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not k.startswith("$") and no_directives(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_directives(v) for v in value)
    return True


# --- strategic merge patch ----------------------------------------------------------------------


def test_image_patch_by_container_name_keeps_other_containers_and_env() -> None:
    original = deployment()
    before = copy.deepcopy(original)
    out = smp(original, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}})
    web, sidecar = containers(out)
    assert web["image"] == "nginx:1.26"
    assert web["env"] == [{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "info"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert sidecar == {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]}
    assert original == before, "the original must not be mutated"


def test_env_merges_by_name_updating_and_appending() -> None:
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "LOG", "value": "debug"}, {"name": "NEW", "value": "1"}]},
    ]}}}}
    out = smp(deployment(), body)
    assert containers(out)[0]["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "LOG", "value": "debug"},
        {"name": "NEW", "value": "1"},
    ]


def test_env_element_delete_and_null_field_removal() -> None:
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "MODE", "$patch": "delete"}], "ports": None},
    ]}}}}
    web = containers(smp(deployment(), body))[0]
    assert web["env"] == [{"name": "LOG", "value": "info"}]
    assert "ports" not in web


def test_patch_delete_removes_a_container() -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    out = smp(deployment(), body)
    assert [c["name"] for c in containers(out)] == ["web"]
    assert no_directives(out)


def test_patch_replace_element_replaces_the_whole_list() -> None:
    body = {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "only", "image": "alpine"},
    ]}}}}
    assert containers(smp(deployment(), body)) == [{"name": "only", "image": "alpine"}]


def test_patch_replace_on_a_map_drops_unnamed_keys() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "app": "api"}}})
    assert out["metadata"]["labels"] == {"app": "api"}


def test_patch_delete_on_a_map_removes_it() -> None:
    out = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}}})
    assert "strategy" not in out["spec"]
    assert out["spec"]["replicas"] == 2


def test_set_element_order_as_kubectl_apply_sends_it() -> None:
    # kubectl apply after the user swapped the containers and bumped one image.
    body = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
            "containers": [{"image": "nginx:1.27", "name": "web"}],
        }}},
    }
    out = smp(deployment(), body)
    assert [c["name"] for c in containers(out)] == ["sidecar", "web"]
    assert containers(out)[1]["image"] == "nginx:1.27"
    assert containers(out)[1]["env"][0]["name"] == "MODE"
    assert no_directives(out)


def test_set_element_order_puts_unlisted_server_items_after_in_original_order() -> None:
    original = deployment()
    containers(original).append({"name": "injected", "image": "proxy"})
    body = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "new"}],
        "containers": [{"name": "new", "image": "x"}],
    }}}}
    names = [c["name"] for c in containers(smp(original, body))]
    assert names == ["sidecar", "new", "web", "injected"]


def test_set_element_order_reorders_a_list_the_patch_does_not_touch() -> None:
    body = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}
    assert [c["name"] for c in containers(smp(deployment(), body))] == ["sidecar", "web"]


def test_finalizers_union_keeps_original_order_then_new() -> None:
    out = smp(deployment(), {"metadata": {"finalizers": ["example.com/new", "example.com/cleanup"]}})
    assert out["metadata"]["finalizers"] == ["example.com/cleanup", "example.com/audit", "example.com/new"]


def test_delete_from_primitive_list_removes_finalizer() -> None:
    body = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/cleanup"]}}
    out = smp(deployment(), body)
    assert out["metadata"]["finalizers"] == ["example.com/audit"]
    assert no_directives(out)


def test_retain_keys_switching_to_recreate_drops_rolling_update() -> None:
    body = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}}
    out = smp(deployment(), body)
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_without_explicit_null_still_clears_other_fields() -> None:
    out = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_rejects_a_patch_setting_an_unlisted_field() -> None:
    body = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}}}
    with pytest.raises(errors.APIError) as exc:
        smp(deployment(), body)
    assert exc.value.code == 422
    assert "rollingUpdate" in exc.value.message


def test_volume_retain_keys_switches_source() -> None:
    body = {"spec": {"template": {"spec": {"volumes": [
        {"name": "cache", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cfg"}},
    ]}}}}
    vols = smp(deployment(), body)["spec"]["template"]["spec"]["volumes"]
    assert vols == [{"name": "cache", "configMap": {"name": "cfg"}}]


def test_list_without_strategy_is_replaced() -> None:
    body = {"spec": {"template": {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}}}
    out = smp(deployment(), body)
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    sidecar_args = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "args": ["true"]}]}}}}
    assert containers(smp(deployment(), sidecar_args))[1]["args"] == ["true"]


def test_unknown_kind_replaces_lists_atomically() -> None:
    obj = {"spec": {"items": [{"name": "a", "v": 1}, {"name": "b"}]}}
    out = smp(obj, {"spec": {"items": [{"name": "a", "v": 2}]}}, gk="Widget.example.com")
    assert out["spec"]["items"] == [{"name": "a", "v": 2}]


def test_null_deletes_key_and_directives_in_new_values_do_not_leak() -> None:
    body = {"metadata": {"labels": {"tier": None}}, "spec": {"paused": True, "template": {"spec": {
        "containers": [{"name": "extra", "image": "x", "env": [{"name": "A", "value": "1", "$patch": "merge"}]}],
    }}}}
    out = smp(deployment(), body)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["spec"]["paused"] is True
    assert containers(out)[2] == {"name": "extra", "image": "x", "env": [{"name": "A", "value": "1"}]}
    assert no_directives(out)


def test_pod_spec_metadata_is_shared_across_workloads() -> None:
    pod = patchmeta.meta_for("Pod")
    cron = patchmeta.meta_for("CronJob.batch")
    assert pod is not None and cron is not None
    pod_spec = pod.child("spec")
    cron_pod_spec = cron.child("spec").child("jobTemplate").child("spec").child("template").child("spec")  # type: ignore[union-attr]
    assert pod_spec is cron_pod_spec
    assert pod_spec is not None and pod_spec.child("containers").merge_key == "name"  # type: ignore[union-attr]
    assert patchmeta.meta_for("Service").child("spec").child("ports").merge_key == "port"  # type: ignore[union-attr]
    assert patchmeta.meta_for("Scale.autoscaling") is not None
    assert patchmeta.meta_for("Widget.example.com") is None


def test_service_ports_merge_by_port() -> None:
    svc = {"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, gk="Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_node_status_conditions_merge_by_type() -> None:
    node = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}
    body = {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "Hostname", "address": "edge1"}]}}
    out = smp(node, body, gk="Node")
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]
    assert [a["type"] for a in out["status"]["addresses"]] == ["InternalIP", "Hostname"]


def test_merge_list_element_without_merge_key_is_bad_request() -> None:
    with pytest.raises(errors.APIError) as exc:
        smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
    assert exc.value.code == 400
    assert "name" in exc.value.message and "containers" in exc.value.message


def test_unknown_patch_directive_is_bad_request() -> None:
    with pytest.raises(errors.APIError) as exc:
        smp(deployment(), {"metadata": {"$patch": "explode"}})
    assert exc.value.code == 400
    assert "explode" in exc.value.message


# --- merge patch --------------------------------------------------------------------------------


def test_merge_patch_null_deletes_and_lists_replace() -> None:
    original = deployment()
    before = copy.deepcopy(original)
    body = {"metadata": {"labels": {"tier": None, "new": "x"}, "finalizers": ["only"]}, "spec": {"strategy": None}}
    out = patch.apply_patch(MERGE, original, orjson.dumps(body), gk="Deployment.apps")
    assert out["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert out["metadata"]["finalizers"] == ["only"]
    assert "strategy" not in out["spec"]
    assert original == before


def test_merge_patch_nested_new_map_drops_nulls() -> None:
    out = patch.merge_patch({"a": 1}, {"b": {"c": None, "d": 2}})
    assert out == {"a": 1, "b": {"d": 2}}


# --- JSON patch ---------------------------------------------------------------------------------


def jp(original: dict[str, Any], ops: Any) -> dict[str, Any]:
    return patch.apply_patch(JSONP, original, orjson.dumps(ops), gk="Deployment.apps")


def test_json_patch_add_replace_remove() -> None:
    original = deployment()
    before = copy.deepcopy(original)
    out = jp(original, [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/labels/env", "value": "staging"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "web"},
    ])
    assert out["spec"]["replicas"] == 5
    assert out["metadata"]["labels"]["env"] == "staging"
    assert [c["name"] for c in containers(out)] == ["web"]
    assert original == before


def test_json_patch_test_failure_is_422_invalid() -> None:
    with pytest.raises(errors.APIError) as exc:
        jp(deployment(), [{"op": "test", "path": "/spec/replicas", "value": 3},
                          {"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert (exc.value.code, exc.value.reason) == (422, "Invalid")
    assert "operation 0 (test /spec/replicas)" in exc.value.message


def test_json_patch_missing_path_is_422_naming_the_operation() -> None:
    with pytest.raises(errors.APIError) as exc:
        jp(deployment(), [{"op": "add", "path": "/metadata/labels/x", "value": "y"},
                          {"op": "remove", "path": "/spec/nothing"}])
    assert exc.value.code == 422
    assert "operation 1 (remove /spec/nothing)" in exc.value.message


def test_json_patch_replacing_the_root_with_a_scalar_is_422() -> None:
    with pytest.raises(errors.APIError) as exc:
        jp(deployment(), [{"op": "replace", "path": "", "value": 3}])
    assert exc.value.code == 422


@pytest.mark.parametrize("ops", [
    {"op": "add", "path": "/a", "value": 1},
    [{"path": "/a", "value": 1}],
    [{"op": "frobnicate", "path": "/a"}],
    [{"op": "add", "path": "/a"}],
    ["add"],
])
def test_malformed_json_patch_is_400(ops: Any) -> None:
    with pytest.raises(errors.APIError) as exc:
        jp(deployment(), ops)
    assert exc.value.code == 400


# --- dispatch -----------------------------------------------------------------------------------


def test_malformed_body_is_400_error_decoding_patch() -> None:
    with pytest.raises(errors.APIError) as exc:
        patch.apply_patch(SMP, deployment(), b"{not json", gk="Deployment.apps")
    assert exc.value.code == 400
    assert exc.value.message.startswith("error decoding patch")


def test_content_type_parameters_are_ignored() -> None:
    out = patch.apply_patch(MERGE + "; charset=utf-8", {"a": 1}, b'{"b": 2}', gk="ConfigMap")
    assert out == {"a": 1, "b": 2}


def test_apply_patch_yaml_is_415_naming_server_side_apply() -> None:
    with pytest.raises(errors.APIError) as exc:
        patch.apply_patch("application/apply-patch+yaml", deployment(), b"kind: Deployment", gk="Deployment.apps")
    assert exc.value.code == 415
    assert "server-side apply" in exc.value.message


def test_unknown_media_type_is_415_listing_supported() -> None:
    with pytest.raises(errors.APIError) as exc:
        patch.apply_patch("text/plain", deployment(), b"{}", gk="Deployment.apps")
    assert exc.value.code == 415
    for media in (SMP, MERGE, JSONP):
        assert media in exc.value.message


def test_merge_patch_body_must_be_an_object() -> None:
    with pytest.raises(errors.APIError) as exc:
        patch.apply_patch(MERGE, deployment(), b"[1, 2]", gk="Deployment.apps")
    assert exc.value.code == 400


def test_undecodable_patches_in_upstreams_words() -> None:
    pod = {"type": "object", "$ref": "#/definitions/" + str(apischema.kind_definition("", "v1", "Pod"))}
    assert decoding.go_value({"spec": {"b": [1, 2.5, None], "a": True}, "metadata": {"labels": "x"}}) == \
        "map[metadata:map[labels:x] spec:map[a:true b:[1 2.5 <nil>]]]"
    assert decoding.restore_error(pod, {"metadata": {"labels": "invalid"}}) == "cannot restore map from string"
    assert decoding.restore_error(pod, {"spec": "x"}) == "cannot restore struct from: string"
    assert decoding.restore_error(pod, {"spec": {"containers": {}}}) == "cannot restore slice from map"
    assert decoding.restore_error(pod, {"spec": {"containers": [{"ports": [{"containerPort": "80"}]}]}}) == \
        "cannot convert string to int32"
    assert decoding.restore_error(pod, {"spec": {"containers": [{"resources": {"limits": {"cpu": 1}}}]}}) is None
    err = decoding.patch_invalid("map[a:b]", "cannot restore map from string")
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message == ' "" is invalid: patch: Invalid value: "map[a:b]": cannot restore map from string'
    assert err.status()["details"] == {"causes": [{"reason": "FieldValueInvalid", "field": "patch",
                                                   "message": 'Invalid value: "map[a:b]": cannot restore map from string'}]}
