"""OpenAPI v3 index and documents, v2 document, hashes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edgekube.api import openapi
from edgekube.api.registry import resources


@pytest.fixture
def catalog() -> resources.Catalog:
    return resources.Catalog()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return out + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_index_paths_are_exactly_the_served_documents(catalog: resources.Catalog) -> None:
    index = openapi.v3_index(catalog)
    expected = {f"apis/{i.group}/{i.version}" if i.group else "api/v1" for i in catalog.all()}
    assert set(index["paths"]) == expected
    for path, entry in index["paths"].items():
        doc = openapi.v3_document(catalog, path)
        assert doc is not None
        url = entry["serverRelativeURL"]
        assert url == f"/openapi/v3/{path}?hash={openapi.content_hash(doc)}"


def test_unknown_group_versions_have_no_document(catalog: resources.Catalog) -> None:
    for path in ("apis/apps/v2", "apis/nope/v1", "api/v2", "apis/apps", "api", ""):
        assert openapi.v3_document(catalog, path) is None


def test_hash_is_upper_hex_sha512_and_etag_is_quoted(catalog: resources.Catalog) -> None:
    doc = openapi.v3_document(catalog, "api/v1")
    assert doc is not None
    h = openapi.content_hash(doc)
    assert len(h) == 128 and h == h.upper() and int(h, 16) >= 0
    assert openapi.etag(doc) == f'"{h}"'
    # Stable across rebuilds, different across documents.
    assert openapi.content_hash(openapi.v3_document(catalog, "api/v1") or {}) == h
    assert openapi.content_hash(openapi.v3_document(catalog, "apis/apps/v1") or {}) != h


def test_every_kind_has_a_schema_named_like_upstream_with_its_gvk(catalog: resources.Catalog) -> None:
    for info in catalog.all():
        doc = openapi.v3_document(catalog, "api/v1" if not info.group else f"apis/{info.group}/{info.version}")
        assert doc is not None
        schemas = doc["components"]["schemas"]
        name = openapi.schema_name(info.group, info.version, info.kind)
        schema = schemas[name]
        assert schema[openapi.GVK_EXT] == [{"group": info.group, "version": info.version, "kind": info.kind}]
        props = schema["properties"]
        assert {"apiVersion", "kind", "metadata"} <= set(props)
        assert props["metadata"]["allOf"][0]["$ref"].endswith(openapi.OBJECT_META)
        assert schemas[openapi.schema_name(info.group, info.version, info.list_kind)][openapi.GVK_EXT][0]["kind"] == info.list_kind


def test_schema_names_follow_upstream_packages() -> None:
    assert openapi.schema_name("", "v1", "Pod") == "io.k8s.api.core.v1.Pod"
    assert openapi.schema_name("apps", "v1", "Deployment") == "io.k8s.api.apps.v1.Deployment"
    assert openapi.schema_name("rbac.authorization.k8s.io", "v1", "Role") == "io.k8s.api.rbac.v1.Role"
    assert openapi.schema_name("stable.example.com", "v1", "CronTab") == "com.example.stable.v1.CronTab"


def test_object_meta_schema_describes_the_usual_fields(catalog: resources.Catalog) -> None:
    doc = openapi.v3_document(catalog, "api/v1")
    assert doc is not None
    meta = doc["components"]["schemas"][openapi.OBJECT_META]["properties"]
    for field in ("name", "namespace", "labels", "annotations", "ownerReferences", "finalizers", "uid"):
        assert field in meta
    assert meta["labels"]["additionalProperties"]["type"] == "string"
    assert "Map of string keys and values" in meta["labels"]["description"]  # upstream's own words


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in schema:
            schema = schemas[schema["$ref"].removeprefix("#/components/schemas/")]
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def test_built_in_kinds_have_upstreams_full_schemas(catalog: resources.Catalog) -> None:
    doc = openapi.v3_document(catalog, "api/v1")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]["properties"]
    spec = _resolve(schemas, pod["spec"])
    assert spec["required"] == ["containers"]
    container = _resolve(schemas, spec["properties"]["containers"]["items"])
    assert container["required"] == ["name"] and container["properties"]["image"]["type"] == "string"
    cm = schemas["io.k8s.api.core.v1.ConfigMap"]["properties"]
    assert {"data", "binaryData", "immutable"} <= set(cm)
    secret = schemas["io.k8s.api.core.v1.Secret"]["properties"]
    assert {"data", "stringData", "type"} <= set(secret)
    assert secret["data"]["additionalProperties"] == {"type": "string", "format": "byte"}


def test_containers_carry_patch_merge_key_and_list_map_keys(catalog: resources.Catalog) -> None:
    doc = openapi.v3_document(catalog, "api/v1")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    spec = _resolve(schemas, schemas["io.k8s.api.core.v1.Pod"]["properties"]["spec"])
    containers = spec["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    container = _resolve(schemas, containers["items"])
    assert container["properties"]["env"]["x-kubernetes-patch-merge-key"] == "name"
    ports = _resolve(schemas, schemas["io.k8s.api.core.v1.ServiceSpec"])["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "port"  # strategic merge: port alone
    assert ports["x-kubernetes-list-map-keys"] == ["port", "protocol"]  # apply: both


def _patch_ops(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [item["patch"] for item in doc["paths"].values() if "patch" in item]


def test_every_patch_op_has_field_validation_so_kubectl_skips_client_validation(catalog: resources.Catalog) -> None:
    for path in openapi.group_version_paths(catalog):
        doc = openapi.v3_document(catalog, path)
        assert doc is not None
        kinds_with_patch = set()
        for op in _patch_ops(doc):
            assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"])
            kinds_with_patch.add(op[openapi.GVK_EXT]["kind"])
        assert {i.kind for i in catalog.all() if openapi._gv_path(i) == path and "patch" in i.verbs} <= kinds_with_patch


def test_built_in_kinds_offer_strategic_merge(catalog: resources.Catalog) -> None:
    # kubectl apply computes strategic patches from OpenAPI only when PATCH accepts them; the
    # built-in kinds' schemas carry upstream's patch metadata, so they do.
    for path in openapi.group_version_paths(catalog):
        doc = openapi.v3_document(catalog, path)
        assert doc is not None
        for op in _patch_ops(doc):
            content = op["requestBody"]["content"]
            assert "application/strategic-merge-patch+json" in content, op["operationId"]
            assert "application/merge-patch+json" in content


def test_partial_schema_builder_does_not_offer_strategic_merge(catalog: resources.Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(openapi.SCHEMA_BUILDERS, "ConfigMap", openapi.default_schema)
    doc = openapi.v3_document(catalog, "api/v1")
    assert doc is not None
    cm_patch = doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in cm_patch["requestBody"]["content"]
    pod_patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in pod_patch["requestBody"]["content"]


def test_paths_carry_actions_and_gvks_like_upstream(catalog: resources.Catalog) -> None:
    doc = openapi.v3_document(catalog, "apis/apps/v1")
    assert doc is not None
    paths = doc["paths"]
    coll = paths["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert coll["get"][openapi.ACTION_EXT] == "list"
    assert coll["post"][openapi.ACTION_EXT] == "post"
    assert coll["delete"][openapi.ACTION_EXT] == "deletecollection"
    assert coll["post"]["operationId"] == "createAppsV1NamespacedDeployment"
    item = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert {m for m in item if m != "parameters"} == {"get", "put", "patch", "delete"}
    assert item["patch"][openapi.GVK_EXT] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["put"][openapi.GVK_EXT] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    status = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]
    assert status["patch"][openapi.GVK_EXT]["kind"] == "Deployment"
    assert "/apis/apps/v1/deployments" in paths  # list across namespaces
    core = openapi.v3_document(catalog, "api/v1")
    assert core is not None
    assert "/api/v1/namespaces/{name}" in core["paths"]  # cluster-scoped: no namespace segment
    assert core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"][openapi.GVK_EXT]["kind"] == "Binding"


def test_v3_refs_all_resolve_and_documents_serialise(catalog: resources.Catalog) -> None:
    for path in openapi.group_version_paths(catalog):
        doc = openapi.v3_document(catalog, path)
        assert doc is not None
        assert doc["openapi"].startswith("3.")
        orjson.loads(openapi.to_json(doc))
        schemas = doc["components"]["schemas"]
        for r in _refs(doc):
            assert r.startswith("#/components/schemas/")
            assert r.removeprefix("#/components/schemas/") in schemas, (path, r)


def test_v2_document_has_definitions_with_gvk_and_resolving_refs(catalog: resources.Catalog) -> None:
    doc = openapi.v2_document(catalog)
    orjson.dumps(doc)
    assert doc["swagger"] == "2.0"
    defs = doc["definitions"]
    for info in catalog.all():
        name = openapi.schema_name(info.group, info.version, info.kind)
        assert defs[name][openapi.GVK_EXT][0]["kind"] == info.kind
    for r in _refs(doc):
        assert r.startswith("#/definitions/") and r.removeprefix("#/definitions/") in defs, r
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "application/merge-patch+json" in op["consumes"]
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"])
    assert op["parameters"][0]["in"] == "body"


def test_custom_kind_without_known_fields_stays_open() -> None:
    cat = resources.Catalog()
    cat.add(resources.ResourceInfo(
        group="stable.example.com", version="v1", kind="CronTab", plural="crontabs",
        singular="crontab", namespaced=True,
    ))
    doc = openapi.v3_document(cat, "apis/stable.example.com/v1")
    assert doc is not None
    schema = doc["components"]["schemas"]["com.example.stable.v1.CronTab"]
    assert schema[openapi.PRESERVE] is True
    assert "apis/stable.example.com/v1" in openapi.v3_index(cat)["paths"]
