"""Discovery documents: legacy lists, aggregated lists, Accept negotiation, /version."""

from __future__ import annotations

import re

import orjson
import pytest

from edgekube.api import discovery
from edgekube.api.registry import resources

# What client-go sends on /api and /apis (discovery_client.go), by release.
ACCEPT_1_27 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
ACCEPT_1_30 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
ACCEPT_NOPEER = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer," + ACCEPT_1_30


@pytest.fixture
def catalog() -> resources.Catalog:
    return resources.Catalog()


def test_version_info_git_version_is_semver_with_kube_core() -> None:
    info = discovery.version_info()
    # apimachinery's semantic-version grammar, build metadata included.
    semver = r"^v(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
    m = re.match(semver, info["gitVersion"])
    assert m, info["gitVersion"]
    assert (m.group(1), m.group(2)) == (info["major"], info["minor"])
    assert re.match(r"^[a-z0-9]+/[a-z0-9]+$", info["platform"])
    for key in ("gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler"):
        assert info[key]


def test_core_versions_names_v1_and_server_address() -> None:
    doc = discovery.core_versions(server_address="10.0.0.1:6443")
    assert doc["kind"] == "APIVersions"
    assert doc["versions"] == ["v1"]
    assert doc["serverAddressByClientCIDRs"][0]["serverAddress"] == "10.0.0.1:6443"


def test_group_list_has_every_named_group_with_preferred_version(catalog: resources.Catalog) -> None:
    doc = discovery.api_group_list(catalog)
    names = {g["name"] for g in doc["groups"]}
    assert names == {i.group for i in catalog.all() if i.group}
    for g in doc["groups"]:
        assert g["preferredVersion"] in g["versions"]
        assert all(v["groupVersion"] == f"{g['name']}/{v['version']}" for v in g["versions"])


def test_api_group_for_known_and_unknown_group(catalog: resources.Catalog) -> None:
    apps = discovery.api_group(catalog, "apps")
    assert apps is not None
    assert apps["kind"] == "APIGroup" and apps["preferredVersion"]["groupVersion"] == "apps/v1"
    assert discovery.api_group(catalog, "nope.example.com") is None
    assert discovery.api_group(catalog, "") is None  # the core group is at /api, not /apis/


def test_every_catalog_resource_is_in_its_resource_list(catalog: resources.Catalog) -> None:
    for info in catalog.all():
        doc = discovery.api_resource_list(catalog, info.group, info.version)
        assert doc is not None
        assert doc["groupVersion"] == info.group_version
        by_name = {r["name"]: r for r in doc["resources"]}
        entry = by_name[info.plural]
        assert entry["kind"] == info.kind
        assert entry["namespaced"] == info.namespaced
        assert entry["singularName"] == info.singular
        assert entry["verbs"] == list(info.verbs)
        assert entry.get("shortNames", []) == list(info.short_names)
        assert entry["storageVersionHash"]
        for sub in info.subresources:
            assert f"{info.plural}/{sub}" in by_name, f"{info.plural}/{sub} missing"


def test_subresource_kinds_and_verbs_match_upstream(catalog: resources.Catalog) -> None:
    core = discovery.api_resource_list(catalog, "", "v1")
    apps = discovery.api_resource_list(catalog, "apps", "v1")
    assert core is not None and apps is not None
    core_by = {r["name"]: r for r in core["resources"]}
    apps_by = {r["name"]: r for r in apps["resources"]}
    scale = apps_by["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert scale["verbs"] == ["get", "patch", "update"]
    assert core_by["pods/status"]["kind"] == "Pod" and "group" not in core_by["pods/status"]
    assert core_by["pods/binding"] == {
        "name": "pods/binding", "singularName": "", "namespaced": True, "kind": "Binding", "verbs": ["create"],
    }
    assert core_by["namespaces/finalize"]["verbs"] == ["update"]


def test_unserved_group_version_has_no_resource_list(catalog: resources.Catalog) -> None:
    assert discovery.api_resource_list(catalog, "apps", "v1beta1") is None


def test_storage_version_hash_is_stable_and_distinct(catalog: resources.Catalog) -> None:
    hashes = [discovery.storage_version_hash(i) for i in catalog.all()]
    assert hashes == [discovery.storage_version_hash(i) for i in resources.Catalog().all()]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (ACCEPT_1_27, "v2beta1"),
        (ACCEPT_1_30, "v2"),
        (ACCEPT_NOPEER, "v2"),
        ("application/json", None),
        ("", None),
        ("*/*", None),
        # Parameter order does not matter, only the values.
        ("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io", "v2"),
        # A version we do not serve falls through to the next acceptable entry.
        ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json", None),
        # Protobuf aggregated discovery is not served; the JSON entry after it is.
        (
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            "v2beta1",
        ),
        # Plain JSON listed first wins over an aggregated form listed later.
        ("application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", None),
        # Table requests are not discovery requests.
        ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", None),
    ],
)
def test_negotiate_discovery(accept: str, expected: str | None) -> None:
    assert discovery.negotiate_discovery(accept) == expected


@pytest.mark.parametrize("version", ["v2", "v2beta1"])
def test_discovery_content_type_carries_gvk_params(version: str) -> None:
    ct = discovery.discovery_content_type(version)
    media, *params = ct.split(";")
    assert media == "application/json"
    assert dict(p.split("=", 1) for p in params) == {
        "g": "apidiscovery.k8s.io", "v": version, "as": "APIGroupDiscoveryList",
    }
    # What we send back is what a client asking for it would negotiate.
    assert discovery.negotiate_discovery(ct) == version


@pytest.mark.parametrize("version", ["v2", "v2beta1"])
def test_aggregated_core_and_named_groups_cover_the_catalog(catalog: resources.Catalog, version: str) -> None:
    core = discovery.aggregated(catalog, core=True, version=version)
    apis = discovery.aggregated(catalog, core=False, version=version)
    for doc in (core, apis):
        assert doc["kind"] == "APIGroupDiscoveryList"
        assert doc["apiVersion"] == f"apidiscovery.k8s.io/{version}"
        orjson.dumps(doc)
    assert len(core["items"]) == 1 and "name" not in core["items"][0]["metadata"]
    assert all(item["metadata"]["name"] for item in apis["items"])
    seen: dict[tuple[str, str, str], dict[str, object]] = {}
    for doc in (core, apis):
        for item in doc["items"]:
            group = item["metadata"].get("name", "")
            for v in item["versions"]:
                assert v["freshness"] == "Current"
                for r in v["resources"]:
                    seen[(group, v["version"], r["resource"])] = r
    assert set(seen) == {(i.group, i.version, i.plural) for i in catalog.all()}
    for info in catalog.all():
        r = seen[(info.group, info.version, info.plural)]
        assert r["responseKind"] == {"group": "", "version": "", "kind": info.kind}
        assert r["scope"] == ("Namespaced" if info.namespaced else "Cluster")
        assert r["singularResource"] == info.singular
        assert r["verbs"] == list(info.verbs)
        subs = {s["subresource"]: s for s in r.get("subresources", [])}  # type: ignore[attr-defined]
        assert set(subs) == set(info.subresources)
    deploy = seen[("apps", "v1", "deployments")]
    scale = {s["subresource"]: s for s in deploy["subresources"]}["scale"]  # type: ignore[attr-defined]
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert scale["verbs"] == ["get", "patch", "update"]


def test_aggregated_rejects_unknown_version(catalog: resources.Catalog) -> None:
    with pytest.raises(ValueError, match="v3"):
        discovery.aggregated(catalog, core=False, version="v3")


def test_extra_catalog_resource_appears_everywhere() -> None:
    cat = resources.Catalog()
    cat.add(resources.ResourceInfo(
        group="stable.example.com", version="v1", kind="CronTab", plural="crontabs",
        singular="crontab", namespaced=True, short_names=("ct",), subresources=("status", "scale"),
    ))
    assert "stable.example.com" in {g["name"] for g in discovery.api_group_list(cat)["groups"]}
    lst = discovery.api_resource_list(cat, "stable.example.com", "v1")
    assert lst is not None
    assert {r["name"] for r in lst["resources"]} == {"crontabs", "crontabs/status", "crontabs/scale"}
    agg = discovery.aggregated(cat, core=False, version="v2")
    names = [item["metadata"]["name"] for item in agg["items"]]
    assert "stable.example.com" in names
