"""What the server answers matches what its `/openapi/v3` documents say (issue 13).

Found by the schemathesis run over `/openapi/v3` (tests/fuzz/test_fuzz_openapi.py):
- the v3 documents described IntOrString and Quantity as strings, as the v2 ones do, while
  upstream's v3 documents say `oneOf: [integer, string]` and `oneOf: [string, number]`: the
  `kubernetes` Service (targetPort 6443, a number) did not match its own schema;
- the reviews (SelfSubjectAccessReview, ...) echoed whatever the client sent, unknown fields and
  values of the wrong types in metadata included, where upstream decodes the body into its type;
  a SelfSubjectRulesReview sent without a spec was answered without one, which its schema
  requires (upstream: a 400 without a namespace, else a new object); owner references sent with
  a review came back without the fields their schema requires.

- a ControllerRevision without data was stored (201), though its schema requires data and
  upstream refuses it ("data is mandatory").

Each is checked as a class: every object the server lists, and every minimal object it accepts,
of every kind, validates against its kind's schema in the served document; every review answers
only its type's fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from edgekube.api.registry import resources
from tests.conftest import Server
from tests.support.apiclient import Api, collection_path, connected

ONE_OF = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": [{"type": "integer"}, {"type": "string"}],
    "io.k8s.apimachinery.pkg.api.resource.Quantity": [{"type": "string"}, {"type": "number"}],
}


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        yield client


def _documents(api: Api) -> dict[str, dict[str, Any]]:
    status, index = api.call("GET", "/openapi/v3")
    assert status == 200, index
    out = {}
    for gv, entry in index["paths"].items():
        status, doc = api.call("GET", entry["serverRelativeURL"])
        assert status == 200, (gv, doc)
        out[gv] = doc
    return out


def test_int_or_string_and_quantity_are_one_of_in_v3_and_strings_in_v2(api: Api) -> None:
    seen = set()
    for gv, doc in _documents(api).items():
        for name, one_of in ONE_OF.items():
            schema = doc["components"]["schemas"].get(name)
            if schema is not None:
                seen.add(name)
                assert schema.get("oneOf") == one_of and "type" not in schema, (gv, name, schema)
    assert seen == set(ONE_OF)
    status, v2 = api.call("GET", "/openapi/v2", headers={"Accept": "application/json"})
    assert status == 200
    for name in ONE_OF:  # Swagger 2.0 has no oneOf
        assert v2["definitions"][name]["type"] == "string" and "oneOf" not in v2["definitions"][name], name


def test_every_listed_object_matches_its_served_schema(api: Api) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "conform"}, "spec": {"containers": [{
        "name": "c", "image": "i", "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": 0.5, "memory": 1024}}}]}}  # quantities sent as numbers
    assert api.json("POST", "/api/v1/namespaces/default/pods", pod)[0] == 201
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "conform"},
           "spec": {"ports": [{"name": "a", "port": 80, "targetPort": 8080}, {"name": "b", "port": 81, "targetPort": "web"}]}}
    assert api.json("POST", "/api/v1/namespaces/default/services", svc)[0] == 201
    checked = 0
    for gv, doc in _documents(api).items():
        base = "/" + gv
        for path, item in doc["paths"].items():
            get = item.get("get")
            if (get is None or "{" in path or get.get("x-kubernetes-action") != "list"
                    or not path.startswith(base)):
                continue
            ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            validator = jsonschema_rs.Draft4Validator({"$ref": ref, "components": doc["components"]},
                                                      validate_formats=False)
            status, body = api.call("GET", path)
            assert status == 200, (path, body)
            errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
            assert not errors, (path, errors[:5])
            checked += len(body["items"])
    assert checked > 20  # the bootstrap objects, the pod and the service above


_CREATABLE = [i for i in resources.Catalog().all() if "create" in i.verbs and i.verbs != ("create",)]


@pytest.mark.parametrize("info", _CREATABLE, ids=[f"{i.gk}/{i.version}" for i in _CREATABLE])
def test_a_minimal_object_is_refused_or_matches_its_schema(api: Api, info: resources.ResourceInfo) -> None:
    """A kind whose validation missed a field its schema requires stored objects that no client
    can decode as the schema says (a ControllerRevision without data: upstream's 'data is
    mandatory')."""
    gv = f"apis/{info.group}/{info.version}" if info.group else f"api/{info.version}"
    path = collection_path(info)
    status, body = api.json("POST", path, {"metadata": {"name": "minimal"}})
    if status != 201:
        assert status == 422 and body["kind"] == "Status", body
        return
    doc = _documents(api)[gv]
    template = path.replace("/namespaces/default/", "/namespaces/{namespace}/")
    ref = doc["paths"][template]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    validator = jsonschema_rs.Draft4Validator({"$ref": ref, "components": doc["components"]}, validate_formats=False)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (info.gk, errors)


def test_a_controller_revision_keeps_its_data(api: Api) -> None:
    path = "/apis/apps/v1/namespaces/default/controllerrevisions"
    status, body = api.json("POST", path, {"metadata": {"name": "rev"}, "data": {"a": 1}, "revision": -1})
    assert status == 422 and "revision: Invalid value: -1: must be greater than or equal to 0" in body["message"], body
    assert api.json("POST", path, {"metadata": {"name": "rev"}, "data": {"a": 1}, "revision": 1})[0] == 201
    status, body = api.call("PATCH", f"{path}/rev", '{"data": {"a": 2}}', content_type="application/merge-patch+json")
    assert status == 422 and "data: Invalid value" in body["message"] and "field is immutable" in body["message"], body
    status, body = api.call("PATCH", f"{path}/rev", '{"revision": 2}', content_type="application/merge-patch+json")
    assert status == 200 and body["revision"] == 2 and body["data"] == {"a": 1}, body


@pytest.mark.parametrize(("path", "body"), [
    ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
     {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "junk": 1}}, "junk": {"a": 1}}),
    ("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {"spec": {"namespace": "default", "junk": 1}, "junk": 1}),
    ("/apis/authentication.k8s.io/v1/selfsubjectreviews", {"junk": [1], "metadata": {"junk": True}}),
])
def test_reviews_answer_only_their_types_fields(api: Api, path: str, body: dict[str, Any]) -> None:
    status, answer = api.json("POST", path, body)
    assert status == 201, answer
    assert "junk" not in answer and "junk" not in answer["metadata"], answer
    assert "junk" not in (answer.get("spec") or {}).get("resourceAttributes", {}), answer
    wrong = {**body, "metadata": {"labels": {"a": 5}}}
    status, answer = api.json("POST", path, wrong)
    assert status == 400 and answer["kind"] == "Status" and "metadata.labels.a" in answer["message"], answer


def test_a_review_answers_no_managed_fields(api: Api) -> None:
    """What a client claims about field managers is not echoed (FieldsV1 would take any JSON)."""
    body = {"metadata": {"managedFields": [{"manager": "x", "operation": "Apply", "fieldsV1": 10299}]}}
    status, answer = api.json("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body)
    assert status == 201 and "managedFields" not in answer["metadata"], answer


def test_a_rules_review_needs_a_namespace_and_answers_a_new_object(api: Api) -> None:
    """As upstream's REST: no namespace is a 400; the answer is a new object whose (not
    omitempty) spec is empty, as the schema requires one."""
    path = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    for body in ({}, {"spec": None}, {"spec": {"namespace": ""}}):
        status, answer = api.json("POST", path, body)
        assert status == 400 and answer["message"] == "no namespace on request", answer
    body = {"metadata": {"ownerReferences": [{"name": "x"}], "labels": {"a": "b"}}, "spec": {"namespace": "default"}}
    status, answer = api.json("POST", path, body)
    assert status == 201 and answer["spec"] == {} and answer["metadata"] == {}, answer
    assert answer["status"]["resourceRules"], answer


def test_an_access_review_answers_no_owner_references(api: Api) -> None:
    body = {"metadata": {"ownerReferences": [{"name": "x"}], "labels": {"a": "b"}},
            "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}
    status, answer = api.json("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body)
    assert status == 201 and answer["metadata"] == {"labels": {"a": "b"}}, answer
