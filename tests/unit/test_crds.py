"""CRD validation and status, and custom objects against their structural schema."""

from __future__ import annotations

import datetime
from typing import Any

import yaml

from edgekube.api.registry import crds
from tests.conftest import REPO

CRD: dict[str, Any] = yaml.safe_load((REPO / "tests" / "data" / "crontab-crd.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crd_validation_names_the_fields() -> None:
    crds.defaults(CRD)
    assert crds.validate(CRD, None) == []
    assert CRD["spec"]["names"]["listKind"] == "CronTabList"
    bad = yaml.safe_load(yaml.safe_dump(CRD))
    bad["metadata"]["name"] = "wrong.example.com"
    bad["spec"]["scope"] = "Galaxy"
    bad["spec"]["versions"][1]["storage"] = True
    fields = [c.field for c in crds.validate(bad, None)]
    assert fields == ["metadata.name", "spec.scope", "spec.versions"]
    changed = yaml.safe_load(yaml.safe_dump(CRD))
    changed["spec"]["group"] = "other.example.com"
    changed["metadata"]["name"] = "crontabs.other.example.com"
    assert "spec.group" in [c.field for c in crds.validate(changed, CRD)]


def test_crd_status_and_served_versions() -> None:
    st = crds.status(CRD, now="2026-01-01T00:00:00Z", accepted=True)
    assert [(c["type"], c["status"]) for c in st["conditions"]] == [("NamesAccepted", "True"), ("Established", "True")]
    served = crds.served(CRD)
    assert [(s.version, s.storage_version, s.status, s.scale is not None) for s in served] == [
        ("v1", "v1", True, True), ("v1beta1", "v1", False, False)]
    refused = crds.status(CRD, now="x", accepted=False, conflict='"crontabs" is already in use')
    assert refused["conditions"][0]["status"] == "False" and refused["acceptedNames"] == {}


def test_pruning_defaults_and_validation() -> None:
    obj = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "a"},
           "spec": {"cronSpec": "* * * * *", "junk": 1}, "top": True}
    assert crds.unknown_fields(SCHEMA, obj) == ["spec.junk", "top"]
    crds.prune(SCHEMA, obj)
    crds.apply_defaults(SCHEMA, obj)
    assert obj["spec"] == {"cronSpec": "* * * * *", "replicas": 1} and "top" not in obj
    assert crds.validate_object(SCHEMA, obj) == []
    obj["spec"]["replicas"] = "two"
    obj["spec"]["cronSpec"] = "nope"
    causes = {c.field: c.message for c in crds.validate_object(SCHEMA, obj)}
    assert "must be of type integer" in causes["spec.replicas"]
    assert "should match" in causes["spec.cronSpec"]
    preserved = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    free = {"metadata": {"name": "b"}, "anything": {"goes": [1, 2]}}
    crds.prune(preserved, free)
    assert free["anything"] == {"goes": [1, 2]}


def test_jsonpath_and_printer_cells() -> None:
    obj = {"spec": {"replicas": 3, "tags": ["a", "b"]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}}
    assert crds.jsonpath(obj, ".spec.replicas") == [3]
    assert crds.jsonpath(obj, ".spec.tags[1]") == ["b"]
    assert crds.jsonpath(obj, '.status.conditions[?(@.type=="Synced")].status') == ["False"]
    assert crds.jsonpath(obj, ".status.conditions[*].type") == ["Ready", "Synced"]
    assert crds.jsonpath(obj, ".spec.missing") == []
    now = datetime.datetime.now(datetime.UTC)
    assert crds.printer_cell(obj, {"jsonPath": ".spec.tags", "type": "string"}, now) == '["a","b"]'
    assert crds.printer_cell(obj, {"jsonPath": ".spec.nothing", "type": "string"}, now) is None
