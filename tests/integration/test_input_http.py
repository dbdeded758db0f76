"""Malformed client input over HTTP, for every creatable kind and every write verb (issue 13).

One request must never brick the node: each body below used to be stored (and then made every
informer, and every later boot, fail), or answered 500. Each class is sent to every creatable
kind the server serves and through POST, PUT, the three patch types and server-side apply, and
the server must answer a 4xx Status, keep serving, and boot again afterwards on the same data.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from edgekube.api.registry import resources
from tests.conftest import Server
from tests.support.apiclient import Api, collection_path, connected, creatable_kinds

YAML = "application/yaml"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        yield client


# Every creatable built-in kind, known at collection time, so each is a test case of its own.
CREATABLE = [i for i in resources.Catalog().all() if "create" in i.verbs]
KIND_IDS = [f"{i.gk}/{i.version}" for i in CREATABLE]


def test_the_sweep_covers_what_discovery_serves(api: Api) -> None:
    served = {(k["apiVersion"], k["kind"]) for k in creatable_kinds(api)}
    assert served <= {(i.api_version, i.kind) for i in CREATABLE}
    assert len(CREATABLE) >= 30


def _deep_json(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def _assert_client_error(status: int, body: Any, *, what: str) -> None:
    assert 400 <= status < 500, (what, status, body)
    assert isinstance(body, dict) and body.get("kind") == "Status", (what, body)


# The classes of bad input, as YAML documents for one kind (`{head}` is apiVersion/kind/name).
_BAD_YAML = {
    "null key in labels": "{head}  labels: {{~: a}}\n",
    "null key in spec": "{head}spec: {{~: a}}\n",
    "nested 400 levels": "{head}spec: " + "[" * 400 + "]" * 400 + "\n",
    "billion laughs": "{head}spec:\n  a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"  {chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)),
    "infinity": "{head}spec: {{x: .inf}}\n",
}


def _head(info: resources.ResourceInfo, name: str) -> str:
    return f"apiVersion: {info.api_version}\nkind: {info.kind}\nmetadata:\n  name: {name}\n"


# Each kind with each of its write verbs (the create-only reviews have POST alone).
_WRITES = [(info, verb) for info in CREATABLE for verb, needs in (("POST", "create"), ("PUT", "update"), ("APPLY", "patch"))
           if needs in info.verbs]


@pytest.mark.parametrize(("info", "verb"), _WRITES, ids=[f"{i.gk}/{i.version}-{v}" for i, v in _WRITES])
def test_every_kind_refuses_bad_bodies_on_every_write_verb(api: Api, info: resources.ResourceInfo, verb: str) -> None:
    name = "bad-input"
    path = collection_path(info)
    for what, template in _BAD_YAML.items():
        doc = template.format(head=_head(info, name))
        if verb == "POST":
            status, body = api.call("POST", path, doc, content_type=YAML)
        elif verb == "PUT":
            status, body = api.call("PUT", f"{path}/{name}", doc, content_type=YAML)
        else:
            status, body = api.call("PATCH", f"{path}/{name}?fieldManager=t", doc, content_type=APPLY)
        _assert_client_error(status, body, what=f"{verb} {info.kind} {what}")
    head_json = json.dumps({"apiVersion": info.api_version, "kind": info.kind, "metadata": {"name": name}})
    deep = head_json[:-1] + ', "spec": ' + _deep_json(300) + "}"
    method, target = ("POST", path) if verb == "POST" else ("PUT", f"{path}/{name}")
    if verb != "APPLY":
        status, body = api.call(method, target, deep)
        _assert_client_error(status, body, what=f"{verb} {info.kind} JSON nested 300 levels")


@pytest.mark.parametrize("info", CREATABLE, ids=KIND_IDS)
def test_null_top_level_fields_are_never_a_500(api: Api, info: resources.ResourceInfo) -> None:
    path = collection_path(info)
    for field in ("spec", "metadata", "status", "data", "rules", "subsets", "webhooks", "template", "roleRef"):
        name = f"null-{field}"
        body: dict[str, Any] = {"apiVersion": info.api_version, "kind": info.kind, "metadata": {"name": name}, field: None}
        if field == "metadata":
            body["metadata"] = None
        status, answer = api.json("POST", path, body)
        assert status < 500, (info.kind, field, answer)
        if status < 300 and "delete" in info.verbs and isinstance(answer, dict):
            created = (answer.get("metadata") or {}).get("name")
            if created:
                api.call("DELETE", f"{path}/{created}")


def test_yaml_keys_that_are_not_strings_are_refused_and_the_node_still_boots(server: Server, api: Api) -> None:
    """Issue 13's first find: `data: {1: a}` was stored, then no informer could read it and the
    server stopped at every boot. Number and boolean keys (in data, in labels; by POST, PUT and
    apply) are a 400 naming the field and line before any write; quoted, they are fine."""
    path = "/api/v1/namespaces/default/configmaps"
    for keys in ("data: {1: a}", "data: {2.5: b}", "data: {false: c}", "metadata: {name: keys, labels: {1: a}}\ndata: {}"):
        doc = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keys}}\n{keys}\n"
        doc = doc.replace("metadata: {name: keys}\nmetadata:", "metadata:")
        status, body = api.call("POST", path, doc, content_type=YAML)
        assert status == 400 and "not a string" in body["message"] and "quote it" in body["message"], (keys, body)
        assert api.call("GET", f"{path}/keys")[0] == 404
    doc = ('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keys\n  labels: {"1": a}\n'
           'data: {"1": a, when: 2001-01-01, raw: !!binary aGk=}\n')
    status, body = api.call("POST", path, doc, content_type=YAML)
    assert status == 201, body
    assert body["data"] == {"1": "a", "when": "2001-01-01", "raw": "hi"}
    status, body = api.call("PUT", f"{path}/keys", doc.replace('data: {"1": a', "data: {1: a"), content_type=YAML)
    assert status == 400, body
    status, body = api.call("PATCH", f"{path}/keys?fieldManager=t",
                            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys}\ndata: {3: d}\n", content_type=APPLY)
    assert status == 400 and "data" in body["message"], body
    # What was stored decodes for every reader: the informers start, and the node boots again.
    assert server.stop() == 0
    server.start()
    status, body = api.call("GET", f"{path}/keys")
    assert status == 200 and body["data"] == {"1": "a", "when": "2001-01-01", "raw": "hi"}


def test_patches_cannot_store_what_posts_cannot(api: Api) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    assert api.json("POST", path, {"metadata": {"name": "target"}, "data": {"a": "b"}})[0] == 201
    deep = json.loads(_deep_json(200))
    bodies = {
        PATCH_TYPES[0]: json.dumps([{"op": "add", "path": "/metadata/annotations", "value": deep}]),
        PATCH_TYPES[1]: json.dumps({"metadata": {"annotations": deep}}),
        PATCH_TYPES[2]: json.dumps({"metadata": {"annotations": deep}}),
    }
    for content_type, patch_body in bodies.items():
        status, body = api.call("PATCH", f"{path}/target", patch_body, content_type=content_type)
        _assert_client_error(status, body, what=content_type)
    ops = [{"op": "test", "path": "/data/a", "value": "b"}] * 10001
    status, body = api.call("PATCH", f"{path}/target", json.dumps(ops), content_type=PATCH_TYPES[0])
    assert status == 413, body
    status, body = api.call("GET", f"{path}/target")
    assert body["data"] == {"a": "b"} and "annotations" not in body["metadata"]


def test_a_patch_that_grows_an_object_past_the_store_limit_is_413(api: Api) -> None:
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    rule = {"apiGroups": [""], "resources": ["x" * 1000], "verbs": ["get"]}
    assert api.json("POST", path, {"metadata": {"name": "grows"}, "rules": [rule] * 1000})[0] == 201
    grow = [{"op": "copy", "from": "/rules/0", "path": "/rules/-"}] * 600  # 1 MB -> 1.6 MB
    status, body = api.call("PATCH", f"{path}/grows", json.dumps(grow), content_type=PATCH_TYPES[0])
    assert status == 413 and body["reason"] == "RequestEntityTooLarge", body
    status, body = api.call("PATCH", f"{path}/grows", json.dumps({"rules": [rule] * 1600}), content_type=PATCH_TYPES[1])
    assert status == 413, body
    assert len(api.call("GET", f"{path}/grows")[1]["rules"]) == 1000


def test_integers_out_of_range_are_refused_with_upstreams_message(api: Api) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"}, "spec": {
        "replicas": 2**63, "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    status, body = api.json("POST", "/apis/apps/v1/namespaces/default/deployments", dep)
    assert status == 400, body
    assert body["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
                               "number 9223372036854775808 into Go struct field DeploymentSpec.spec.replicas of type int32")
    dep["spec"]["replicas"] = 1
    assert api.json("POST", "/apis/apps/v1/namespaces/default/deployments", dep)[0] == 201
    status, body = api.call("PATCH", "/apis/apps/v1/namespaces/default/deployments/big", json.dumps({"spec": {"replicas": 2**31}}),
                            content_type=PATCH_TYPES[1])
    # As upstream: a patch whose result does not decode is a 422 on the field `patch`.
    assert status == 422 and "of type int32" in body["message"], body
    status, body = api.json("PUT", "/apis/apps/v1/namespaces/default/deployments/big/scale",
                            {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "big"}, "spec": {"replicas": 2**40}})
    assert 400 <= status < 500, body
    assert api.call("GET", "/apis/apps/v1/namespaces/default/deployments/big")[1]["spec"]["replicas"] == 1


def test_delete_options_of_the_wrong_types_are_400(api: Api) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    assert api.json("POST", path, {"metadata": {"name": "del"}})[0] == 201
    for options in ({"gracePeriodSeconds": "x"}, {"preconditions": "y"}, {"propagationPolicy": 3}, {"dryRun": "All"},
                    {"orphanDependents": "maybe"}):
        status, body = api.json("DELETE", f"{path}/del", options)
        _assert_client_error(status, body, what=str(options))
    assert api.call("GET", f"{path}/del")[0] == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_body_that_is_not_its_content_encoding_is_400(api: Api, encoding: str) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    status, body = api.call("POST", path, b"this is not compressed", headers={"Content-Encoding": encoding})
    _assert_client_error(status, body, what=encoding)
    for broken in (b"", b"{}\n", b"[]\n", gzip.compress(b'{"metadata": {}}')[:-6]):
        status, body = api.call("POST", path, broken, content_type="application/yaml", headers={"Content-Encoding": encoding})
        _assert_client_error(status, body, what=f"{encoding} {broken!r}")
    data = json.dumps({"metadata": {"name": f"enc-{encoding}"}}).encode()
    real = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    assert api.call("POST", path, real, headers={"Content-Encoding": encoding})[0] == 201
    bomb = gzip.compress(b" " * (64 << 20)) if encoding == "gzip" else zlib.compress(b" " * (64 << 20))
    assert len(bomb) < 200_000
    status, body = api.call("POST", path, bomb, headers={"Content-Encoding": encoding})
    assert status == 413, body
    status, body = api.call("POST", path, real, headers={"Content-Encoding": "br"})
    assert status == 415 and body["kind"] == "Status", body


def _crd(pattern: str) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "redos.ex.com"}, "spec": {
                "group": "ex.com", "scope": "Namespaced", "names": {"plural": "redos", "kind": "Redo"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object", "properties": {
                        "v": {"type": "string", "pattern": pattern}, "n": {"type": "integer", "format": "int32"}}}}}}}]}}


def test_crd_patterns_are_re2(api: Api) -> None:
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    status, body = api.json("POST", crds, _crd(r"(a)\1"))
    assert status == 422, body
    assert "must be a valid regular expression, but isn't: error parsing regexp: invalid escape sequence" in body["message"]
    status, body = api.json("POST", crds, _crd(r"^(a+)+$"))
    assert status == 201, body
    path = "/apis/ex.com/v1/namespaces/default/redos"
    for _ in range(50):  # the CRD is served once established
        status, _ = api.call("GET", path)
        if status == 200:
            break
    # With a backtracking engine this request holds the server for hours.
    status, body = api.json("POST", path, {"apiVersion": "ex.com/v1", "kind": "Redo", "metadata": {"name": "r"},
                                           "spec": {"v": "a" * 40 + "!"}})
    assert status == 422 and "should match" in body["message"], body
    status, body = api.json("POST", path, {"apiVersion": "ex.com/v1", "kind": "Redo", "metadata": {"name": "r"},
                                           "spec": {"v": "aaa", "n": 2**31}})
    assert status == 422 and "integer(int32)" in body["message"], body
    status, body = api.call("POST", path, "apiVersion: ex.com/v1\nkind: Redo\nmetadata: {name: k}\nspec: {v: a, 7: x}\n",
                            content_type=YAML)
    assert status in (201, 400), body  # pruned or refused, never stored with an int key
    assert api.call("DELETE", f"{crds}/redos.ex.com")[0] == 200


def test_server_still_boots_after_all_of_the_above(server: Server, api: Api) -> None:
    assert server.stop() == 0
    server.start()
    status, body = api.call("GET", "/api/v1/namespaces/default/configmaps")
    assert status == 200, body


def test_subresource_bodies_of_the_wrong_types_are_400(api: Api) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sub"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert api.json("POST", "/api/v1/namespaces/default/pods", pod)[0] == 201
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sub"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert api.json("POST", "/apis/apps/v1/namespaces/default/deployments", dep)[0] == 201
    assert api.json("POST", "/api/v1/namespaces", {"metadata": {"name": "sub-ns"}})[0] == 201
    cases = [
        ("POST", "/api/v1/namespaces/default/pods/sub/binding", {"target": "node-1"}),
        ("POST", "/api/v1/namespaces/default/pods/sub/binding", {"metadata": "x", "target": {"name": "n"}}),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments/sub/scale", {"spec": "3"}),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments/sub/scale", {"metadata": [], "spec": {"replicas": 1}}),
        ("PUT", "/api/v1/namespaces/sub-ns/finalize", {"metadata": {"name": "sub-ns"}, "spec": "x"}),
        ("PUT", "/api/v1/namespaces/sub-ns/finalize", {"metadata": {"name": "sub-ns"}, "spec": {"finalizers": "x"}}),
        ("PUT", "/api/v1/namespaces/default/pods/sub/status", {"metadata": {"name": "sub"}, "status": "x"}),
    ]
    for method, path, body in cases:
        status, answer = api.json(method, path, body)
        _assert_client_error(status, answer, what=f"{method} {path} {body}")
    status, answer = api.call("PATCH", "/apis/apps/v1/namespaces/default/deployments/sub/scale",
                              json.dumps({"spec": {"replicas": "many"}}), content_type=PATCH_TYPES[1])
    _assert_client_error(status, answer, what="scale patch")


def test_int64_grace_periods_are_not_a_500(api: Api) -> None:
    path = "/api/v1/namespaces/default/pods"
    for name, grace in (("grace-a", 30), ("grace-b", 2**62)):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "nodeName": "nowhere", "terminationGracePeriodSeconds": grace, "containers": [{"name": "c", "image": "i"}]}}
        assert api.json("POST", path, pod)[0] == 201
    status, body = api.call("DELETE", f"{path}/grace-a?gracePeriodSeconds=99999999999999")
    assert status == 200 and body["metadata"]["deletionGracePeriodSeconds"] == 2**31 - 1, body
    status, body = api.call("DELETE", f"{path}/grace-b")
    assert status == 200 and body["metadata"]["deletionTimestamp"], body


def test_scale_of_a_custom_object_whose_spec_is_not_an_object(api: Api) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "loose.ex.com"}, "spec": {
               "group": "ex.com", "scope": "Namespaced", "names": {"plural": "loose", "kind": "Loose"},
               "versions": [{"name": "v1", "served": True, "storage": True,
                             "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.r",
                                                                      "statusReplicasPath": ".status.r"}},
                             "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                 "spec": {"x-kubernetes-int-or-string": True}}}}}]}}
    assert api.json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    path = "/apis/ex.com/v1/namespaces/default/loose"
    for _ in range(50):
        if api.call("GET", path)[0] == 200:
            break
    assert api.json("POST", path, {"apiVersion": "ex.com/v1", "kind": "Loose", "metadata": {"name": "o"}, "spec": 5})[0] == 201
    status, body = api.call("GET", f"{path}/o/scale")
    assert status == 200 and body["spec"]["replicas"] == 0, body
    status, body = api.json("PUT", f"{path}/o/scale", {"spec": {"replicas": 3}})
    assert status == 422 and ".spec is not an object" in body["message"], body
    assert api.call("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/loose.ex.com")[0] == 200
