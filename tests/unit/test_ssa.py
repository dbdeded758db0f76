"""Server-side apply and managedFields against upstream's schemas (apps/v1 Deployment)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from edgekube.api import ssa

JSON = dict[str, Any]
SCHEMA = ssa.kind_schema("apps", "v1", "Deployment")
NOW = "2026-01-01T00:00:00Z"


def _deploy(**spec: Any) -> JSON:
    base: JSON = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "web", "image": "busybox:1", "ports": [{"containerPort": 80}]}]}}},
    }
    base["spec"].update(spec)
    return base


def _apply(live: JSON | None, config: JSON, manager: str = "alice", force: bool = False) -> JSON:
    obj, managed = ssa.apply(live, config, manager=manager, api_version="apps/v1", schema=SCHEMA, force=force, now=NOW)
    obj["metadata"]["managedFields"] = managed
    return obj


def _update(old: JSON, new: JSON, manager: str) -> JSON:
    new = copy.deepcopy(new)
    new["metadata"]["managedFields"] = ssa.track_update(old, new, manager=manager, api_version="apps/v1", schema=SCHEMA, now=NOW)
    return new


def _owned(obj: JSON, manager: str) -> set[str]:
    for entry in obj["metadata"]["managedFields"]:
        if entry["manager"] == manager:
            return {ssa.render_path(p) for p in ssa.from_fields_v1(entry["fieldsV1"])}
    return set()


def test_apply_creates_and_records_what_was_applied() -> None:
    obj = _apply(None, _deploy(replicas=2))
    assert obj["spec"]["replicas"] == 2
    entry = obj["metadata"]["managedFields"][0]
    assert entry["manager"] == "alice" and entry["operation"] == "Apply" and entry["fieldsType"] == "FieldsV1"
    owned = _owned(obj, "alice")
    assert ".spec.replicas" in owned
    assert ".spec.selector" in owned  # LabelSelector is an atomic struct: owned whole
    assert '.spec.template.spec.containers[name="web"].image' in owned
    assert '.spec.template.spec.containers[name="web"].ports[containerPort=80,protocol="TCP"]' in owned
    assert not any(p.startswith(".metadata.name") for p in owned)


def test_fields_dropped_from_the_config_are_removed_when_owned_alone() -> None:
    live = _apply(None, _deploy(replicas=2, minReadySeconds=5))
    config = _deploy(replicas=2)
    out = _apply(live, config)
    assert "minReadySeconds" not in out["spec"]
    assert ".spec.minReadySeconds" not in _owned(out, "alice")


def test_fields_another_manager_owns_stay() -> None:
    live = _apply(None, _deploy(replicas=2, minReadySeconds=5))
    live = _apply(live, _deploy(minReadySeconds=5), manager="bob")  # bob co-owns minReadySeconds
    out = _apply(live, _deploy(replicas=2))
    assert out["spec"]["minReadySeconds"] == 5
    assert ".spec.minReadySeconds" in _owned(out, "bob")


def test_changing_a_field_another_manager_owns_is_a_conflict() -> None:
    live = _apply(None, _deploy(replicas=2))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 3
    live = _update(live, scaled, "kubectl-scale")
    assert ".spec.replicas" in _owned(live, "kubectl-scale")
    assert ".spec.replicas" not in _owned(live, "alice")  # an update takes ownership
    with pytest.raises(ssa.ConflictError) as err:
        _apply(live, _deploy(replicas=5))
    assert str(err.value) == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    # Same value: no conflict, shared ownership.
    shared = _apply(live, _deploy(replicas=3))
    assert ".spec.replicas" in _owned(shared, "alice") and ".spec.replicas" in _owned(shared, "kubectl-scale")
    # Force: the applier takes the field away.
    forced = _apply(live, _deploy(replicas=5), force=True)
    assert forced["spec"]["replicas"] == 5
    assert ".spec.replicas" in _owned(forced, "alice")
    assert ".spec.replicas" not in _owned(forced, "kubectl-scale")


def test_lists_merge_by_their_keys_and_defaults_fill_key_fields() -> None:
    live = _apply(None, _deploy())
    # The stored object carries the defaulted protocol; the config does not: same element.
    live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = "TCP"
    config = _deploy()
    config["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:2"})
    out = _apply(live, config)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "side"]
    assert containers[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    # A controller adds an env var to "web"; alice re-applies without it: it stays (bob's).
    with_env = copy.deepcopy(out)
    with_env["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    with_env = _update(out, with_env, "bob")
    again = _apply(with_env, config)
    assert again["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    # alice drops the "side" container: gone.
    final = _apply(again, _deploy())
    assert [c["name"] for c in final["spec"]["template"]["spec"]["containers"]] == ["web"]


def test_update_tracks_changes_and_removals() -> None:
    created = copy.deepcopy(_deploy(replicas=1))
    created["metadata"]["managedFields"] = ssa.track_update(None, created, manager="kubectl-create", api_version="apps/v1", schema=SCHEMA, now=NOW)
    assert ".spec.replicas" in _owned(created, "kubectl-create")
    edited = copy.deepcopy(created)
    edited["spec"]["replicas"] = 4
    del edited["metadata"]["labels"]
    edited = _update(created, edited, "kubectl-edit")
    assert _owned(edited, "kubectl-edit") == {".spec.replicas"}
    assert ".spec.replicas" not in _owned(edited, "kubectl-create")
    assert not any(p.startswith(".metadata.labels") for p in _owned(edited, "kubectl-create"))
    # An update that changes nothing keeps managedFields as they were.
    same = _update(edited, copy.deepcopy(edited), "someone")
    assert same["metadata"]["managedFields"] == edited["metadata"]["managedFields"]


def test_fields_v1_round_trip() -> None:
    paths = ssa.field_set(_deploy(replicas=1), SCHEMA)
    encoded = ssa.to_fields_v1(paths)
    assert encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']["."] == {}
    assert ssa.from_fields_v1(encoded) == paths


def test_untyped_objects_are_tracked_as_maps() -> None:
    cr = {"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"size": 1, "tags": ["a"]}}
    obj, managed = ssa.apply(None, cr, manager="m", api_version="x/v1", schema=None, force=False, now=NOW)
    paths = {ssa.render_path(p) for p in ssa.from_fields_v1(managed[0]["fieldsV1"])}
    assert paths == {".spec.size", ".spec.tags"}
    obj["metadata"]["managedFields"] = managed
    out, _ = ssa.apply(obj, {**cr, "spec": {"size": 2}}, manager="m", api_version="x/v1", schema=None, force=False, now=NOW)
    assert out["spec"] == {"size": 2}


def _client_side_applied(config: JSON) -> JSON:
    """What `kubectl apply` (client-side) leaves: the object, owned by its manager, and the
    configuration in the last-applied annotation."""
    obj = copy.deepcopy(config)
    obj["metadata"]["annotations"] = {ssa.LAST_APPLIED: json.dumps(config) + "\n"}
    return _update({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}, obj, "kubectl-client-side-apply")


def test_kubectl_takes_over_what_its_client_side_apply_set() -> None:
    live = _client_side_applied(_deploy(replicas=2))
    changed = _deploy(replicas=3)
    # Another manager conflicts, as with any owner.
    with pytest.raises(ssa.ConflictError):
        _apply(live, changed, manager="not-kubectl")
    out = _apply(live, changed, manager="kubectl")
    assert out["spec"]["replicas"] == 3
    assert "f:replicas" not in str(_owned(out, "kubectl-client-side-apply"))
    # The annotation follows the configuration kubectl applied (Go's JSON, a newline).
    assert out["metadata"]["annotations"][ssa.LAST_APPLIED].endswith('"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},'
                                                                     '"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":'
                                                                     '[{"image":"busybox:1","name":"web","ports":[{"containerPort":80}]}]}}}}\n')


def test_only_fields_unchanged_since_the_client_side_apply_are_taken() -> None:
    live = _client_side_applied(_deploy(replicas=2))
    live = _update(live, {**live, "spec": {**live["spec"], "replicas": 5}}, "hpa")  # someone else changed it since
    with pytest.raises(ssa.ConflictError) as exc:
        _apply(live, _deploy(replicas=3), manager="kubectl")
    assert [c.manager for c in exc.value.conflicts] == ["hpa"]
