"""Query parameters and routes as upstream's API server reads them, for every kind (issue 13).

Found by the schemathesis run over `/openapi/v3` (tests/fuzz/test_fuzz_openapi.py); each is a
class, checked here on every kind the catalog serves:

- integer query parameters (limit, timeoutSeconds, gracePeriodSeconds, tailLines, ...) are read
  as Go's `strconv.ParseInt(s, 10, 64)`: `1.5`, `true`, ` 1`, `1_0`, non-ASCII digits and values
  past int64 are a 400 on every verb that takes them (a list ignored its timeoutSeconds, a
  deletecollection its limit, and 2^70 passed as a grace period);
- boolean query parameters (watch, allowWatchBookmarks, sendInitialEvents) are true for any
  value but "false" and "0", as upstream's parameter codec reads them (`watch=yes` listed);
- the cluster-wide path of a namespaced kind (`/api/v1/configmaps`) lists and watches only: a
  DELETE there deleted the kind's objects in every namespace;
- every path the OpenAPI documents declare is routed: `namespaces/<name>/status` and
  `namespaces/<name>/finalize` answered 404; and a subresource answers 405 to the verbs it
  does not serve;
- a PATCH's media type is checked before anything else: an unknown one is a 415, not the 404 of
  a missing object;
- a name holding a newline (`%0A`) reached no handler (the router's pattern stopped at it): the
  router's bare 404 came before the 400 for the query, and the 404 did not name the object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from edgekube.api.registry import resources
from tests.conftest import Server
from tests.support.apiclient import Api, collection_path, connected

NS = "routes"
CATALOG = [i for i in resources.Catalog().all() if i.verbs != ("create",)]


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        assert client.json("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})[0] == 201
        yield client


def _base(info: resources.ResourceInfo) -> str:
    return f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"


def _collection(info: resources.ResourceInfo) -> str:
    return collection_path(info, namespace=NS)


def _ids(infos: list[resources.ResourceInfo]) -> list[str]:
    return [f"{i.gk}/{i.version}" for i in infos]


def _status(status: int, body: Any, code: int, *, what: str) -> None:
    assert status == code, (what, status, body)
    assert isinstance(body, dict) and body.get("kind") == "Status" and body.get("code") == code, (what, body)


# Not integers to Go: a fraction, a word, an exponent, a space, Python's digit separator,
# non-ASCII digits (Arabic-Indic, superscript), a sign alone, and both ends past int64.
_NOT_GO_INTS = ["1.5", "true", "1e3", " 1", "1_0", "\u0663", "\u00b2", "+", str(2**63), str(-(2**63) - 1)]
_LISTED = [i for i in CATALOG if "list" in i.verbs]


@pytest.mark.parametrize("info", _LISTED, ids=_ids(_LISTED))
def test_integer_list_parameters_are_go_integers(api: Api, info: resources.ResourceInfo) -> None:
    path = _collection(info)
    for param in ("limit", "timeoutSeconds"):
        for value in _NOT_GO_INTS:
            query = f"{param}={quote(value, safe='')}"
            status, body = api.call("GET", f"{path}?{query}")
            _status(status, body, 400, what=f"list {query}")
            status, body = api.call("GET", f"{path}?watch=1&{query}")
            _status(status, body, 400, what=f"watch {query}")
            if "deletecollection" in info.verbs:
                status, body = api.call("DELETE", f"{path}?{query}")
                _status(status, body, 400, what=f"deletecollection {query}")
    for good in ("%2B2", "-1", "0", "", str(2**63 - 1)):
        status, body = api.call("GET", f"{path}?limit={good}&timeoutSeconds={good}")
        assert status == 200 and body["kind"] == info.list_kind, (good, body)


_DELETED = [i for i in CATALOG if "delete" in i.verbs]


@pytest.mark.parametrize("info", _DELETED, ids=_ids(_DELETED))
def test_a_grace_period_that_is_no_int64_is_400_before_the_object_is_looked_up(api: Api, info: resources.ResourceInfo) -> None:
    for value in ("1.5", str(2**70), "\u0663"):
        for name in ("missing", "a%0Aname"):  # a newline in a name is the API's to answer, not the router's
            status, body = api.call("DELETE", f"{_collection(info)}/{name}?gracePeriodSeconds={quote(value)}")
            _status(status, body, 400, what=f"{name} {value}")
    if "get" in info.verbs:
        status, body = api.call("GET", f"{_collection(info)}/a%0Aname")
        _status(status, body, 404, what="GET a newline name")
        assert body["details"]["name"] == "a\nname", body


def test_pod_log_integer_parameters_are_go_integers(api: Api) -> None:
    for query in (f"tailLines={quote(chr(0x663))}", f"limitBytes={2**64}", "sinceSeconds=1_0"):
        status, body = api.call("GET", f"/api/v1/namespaces/{NS}/pods/missing/log?{query}")
        _status(status, body, 400, what=query)


def _events(raw: Any) -> list[dict[str, Any]]:
    assert isinstance(raw, bytes | dict), raw
    if isinstance(raw, dict):  # one event only: the client parsed it as JSON
        return [raw]
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def test_boolean_query_parameters_are_true_unless_false_or_0(api: Api) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"
    assert api.json("POST", path, {"metadata": {"name": "flag"}})[0] == 201
    for truthy in ("yes", "TRUE", "t", "2", ""):
        status, raw = api.call("GET", f"{path}?watch={truthy}&timeoutSeconds=1&fieldSelector=metadata.name%3Dflag")
        assert status == 200, (truthy, raw)
        events = _events(raw)
        assert [e.get("type") for e in events] == ["ADDED"], (truthy, events)
    for falsy in ("false", "FALSE", "False", "0"):
        status, body = api.call("GET", f"{path}?watch={falsy}")
        assert status == 200 and body["kind"] == "ConfigMapList", (falsy, body)
    status, raw = api.call("GET", f"{path}?watch=1&timeoutSeconds=1&allowWatchBookmarks=yes&sendInitialEvents=on"
                                  "&resourceVersionMatch=NotOlderThan&fieldSelector=metadata.name%3Dflag")
    assert status == 200, raw
    events = _events(raw)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"], events  # initial events, then their end
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


_NAMESPACED = [i for i in CATALOG if i.namespaced and "list" in i.verbs]


@pytest.mark.parametrize("info", _NAMESPACED, ids=_ids(_NAMESPACED))
def test_the_cluster_wide_path_of_a_namespaced_kind_only_lists(api: Api, info: resources.ResourceInfo) -> None:
    cluster_wide = f"{_base(info)}/{info.plural}"
    for method in ("DELETE", "PUT", "PATCH", "POST"):
        status, body = api.call(method, cluster_wide, "{}", content_type="application/merge-patch+json"
                                if method == "PATCH" else "application/json")
        _status(status, body, 405, what=f"{method} {cluster_wide}")
    assert api.call("GET", cluster_wide)[0] == 200


def test_a_delete_on_the_cluster_wide_path_deletes_nothing(api: Api) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"
    assert api.json("POST", path, {"metadata": {"name": "survivor"}})[0] == 201
    status, body = api.call("DELETE", "/api/v1/configmaps")
    _status(status, body, 405, what="DELETE /api/v1/configmaps")
    assert api.call("GET", f"{path}/survivor")[0] == 200
    assert api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt")[0] == 200


def test_namespace_status_and_finalize_are_served(api: Api) -> None:
    assert api.json("POST", "/api/v1/namespaces", {"metadata": {"name": "fin"}})[0] == 201
    status, body = api.call("GET", "/api/v1/namespaces/fin/status")
    assert status == 200 and body["kind"] == "Namespace" and body["metadata"]["name"] == "fin", body
    assert body["spec"]["finalizers"] == ["kubernetes"], body
    status, body = api.call("PATCH", "/api/v1/namespaces/fin/status", json.dumps({"metadata": {"labels": {"a": "b"}}}),
                            content_type="application/merge-patch+json")
    assert status == 200 and body["metadata"]["labels"]["a"] == "b", body
    status, body = api.json("PUT", "/api/v1/namespaces/fin/finalize",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fin"}, "spec": {"finalizers": []}})
    assert status == 200 and "finalizers" not in body.get("spec", {}), body
    # finalize is PUT only; a subresource answers 405 to the verbs it does not serve.
    for method in ("GET", "PATCH", "POST", "DELETE"):
        status, body = api.call(method, "/api/v1/namespaces/fin/finalize", "{}",
                                content_type="application/merge-patch+json" if method == "PATCH" else "application/json")
        _status(status, body, 405, what=f"{method} namespaces/fin/finalize")
    for method in ("POST", "DELETE"):
        status, body = api.call(method, "/api/v1/namespaces/fin/status", "{}")
        _status(status, body, 405, what=f"{method} namespaces/fin/status")
    # A namespaced resource of the same name still wins (`namespaces/fin/pods` is the pods of fin).
    status, body = api.call("GET", "/api/v1/namespaces/fin/pods")
    assert status == 200 and body["kind"] == "PodList", body


_PATCHED = [i for i in CATALOG if "patch" in i.verbs]


@pytest.mark.parametrize("info", _PATCHED, ids=_ids(_PATCHED))
def test_a_patch_type_is_checked_before_the_object(api: Api, info: resources.ResourceInfo) -> None:
    targets = [f"{_collection(info)}/missing"] + [f"{_collection(info)}/missing/{s}" for s in info.subresources
                                                  if s in ("status", "scale")]
    for target in targets:
        for content_type in ("text/plain", "application/json", "application/yaml", ""):
            status, body = api.call("PATCH", target, "{}", content_type=content_type)
            _status(status, body, 415, what=f"PATCH {target} {content_type!r}")
