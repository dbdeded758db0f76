"""Fuzzing the API with generated bodies and query parameters, against a real server (issue 13).

Hypothesis draws, for every creatable kind the server serves (and three custom kinds it adds,
with loose and strict schemas): a verb (POST, PUT, the three patch
types, server-side apply, DELETE with options, list and watch with query parameters, writes to
the kind's subresources: status, scale, binding, finalize), an
encoding (JSON, YAML, one of the patch media types; sometimes a lying Content-Encoding) and a
body built from the kind's own field names with arbitrary values (JSON values, YAML-only keys
and scalars, deep nesting, huge integers, nulls). Each answer must be:

- below 500: client input earns a 4xx Status (or a success), never the server's own error;
- prompt: the connection has a timeout, and a hang fails the run;
- survivable: the server process is still running after every request, and boots again on
  the same data dir at the end (what was stored can be read by every informer);
- bounded: its resident memory stays under a ceiling.

The run in `make test` is bounded (EDGEKUBE_FUZZ_EXAMPLES, 250 by default, a few tens of
seconds) and the same every time; `make fuzz` runs it long and random. A failure prints the
minimal request Hypothesis found.
"""

from __future__ import annotations

import collections
import json
import os
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekube.api import apischema
from tests.conftest import Server
from tests.support import fuzzkinds
from tests.support.apiclient import Api, connected, creatable_kinds

EXAMPLES = int(os.environ.get("EDGEKUBE_FUZZ_EXAMPLES", "250"))
RSS_CEILING_MIB = 600
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        yield client


@pytest.fixture(scope="module")
def kinds(api: Api) -> list[dict[str, Any]]:
    fuzzkinds.add_crds(api)
    found = creatable_kinds(api)
    for kind in found:
        group, _, version = kind["apiVersion"].rpartition("/")
        definition = apischema.kind_definition(group, version, kind["kind"])
        schema = apischema.definition(definition) if definition else None
        kind["fields"] = sorted((schema or {}).get("properties") or {"spec": {}})
        kind["schema"] = schema
    return found


# --- values --------------------------------------------------------------------------------------

_names = st.one_of(*[st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)] * 4,
                   st.text(alphabet=string.ascii_lowercase + string.digits + "-.", min_size=1, max_size=20))
_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, "", "0", "1Gi", "1.5", "-", "true", "null", "*", "1e999999999",
                     "1e-999999999", "9" * 100 + "Ei"]),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25,
)
# What only YAML can say: keys that are not strings, and scalars JSON has not.
_yaml_keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.booleans(), st.none(),
                       st.floats(allow_nan=False, allow_infinity=False))
_yaml_values = st.recursive(
    st.one_of(_scalars, st.just(float("inf")), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_yaml_keys, inner, max_size=4)),
    max_leaves=20,
)


# Values shaped by the kind's own schema, so that requests get past the decoding checks into
# defaulting, validation, admission and the controllers, with boundary values at every leaf.
# Mostly plausible values, so that most objects get through and deeper code runs; the rest at
# and past the boundaries (int32, int64, ports).
_BOUNDARY_INTS = st.sampled_from([2**31 - 1, 2**31, -(2**31), 2**63 - 1, 2**62, 65535, 65536, -1])
_INTS = st.one_of(*[st.integers(0, 10)] * 6, st.integers(1, 100000), _BOUNDARY_INTS)
_STRINGS = st.one_of(st.text(max_size=12), st.sampled_from(
    ["", "a", "0", "Always", "Never", "TCP", "None", "ClusterIP", "NodePort", "Exists", "In", "Equal", "NoExecute",
     "50%", "1Gi", "100m", "*", "-", "a/b", "kubernetes.io/x", "2026-01-01T00:00:00Z", "* * * * *", "@every 1s"]))
_QUANTITIES = st.one_of(st.sampled_from(["0", "1", "100m", "1Gi", "-1", "1e999999999", "0.0000000001", "1.5Ki", ""]),
                        st.integers(-2, 2**40))
_schema_cache: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def _from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    name = apischema.ref_name(schema) or apischema.ref_name((schema.get("allOf") or [{}])[0])
    target = apischema.definition(name) if name else schema
    if name is not None and (name, depth) in _schema_cache:
        return _schema_cache[(name, depth)]
    if target is None or depth > 7 or target.get("x-kubernetes-preserve-unknown-fields"):
        out: st.SearchStrategy[Any] = _json_values
    elif name and name.endswith("resource.Quantity"):
        out = _QUANTITIES
    elif name and name.endswith("intstr.IntOrString"):
        out = st.one_of(_INTS, _STRINGS)
    elif isinstance(target.get("properties"), dict):
        props = {k: _from_schema(v, depth + 1) for k, v in target["properties"].items()
                 if k != "managedFields" and not (depth == 0 and k in ("apiVersion", "kind"))}
        out = st.fixed_dictionaries({}, optional=props)
    elif target.get("type") == "object":
        extra = target.get("additionalProperties")
        out = st.dictionaries(st.text(max_size=10), _from_schema(extra, depth + 1) if isinstance(extra, dict) else _json_values,
                              max_size=3)
    elif target.get("type") == "array" and isinstance(target.get("items"), dict):
        out = st.lists(_from_schema(target["items"], depth + 1), max_size=3)
    else:
        out = {"string": _STRINGS, "integer": _INTS, "boolean": st.booleans(),
               "number": st.floats(allow_nan=False, allow_infinity=False)}.get(str(target.get("type")), _json_values)
    if name is not None:
        _schema_cache[(name, depth)] = out
    return out


@st.composite
def _shaped(draw: st.DrawFn, kind: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = draw(_from_schema(kind["schema"]))
    obj.update({"apiVersion": kind["apiVersion"], "kind": kind["kind"]})
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    obj["metadata"] = {**meta, "name": draw(_names)}
    obj["metadata"].pop("namespace", None)
    return obj


def _rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in n+1 draws. (Hypothesis favours small integers and the first of a
    sampled list, so `integers(0, n) == 0` would be true far more often than that.)"""
    return st.sampled_from([False] * n + [True])


def _deep(levels: int) -> Any:
    value: Any = "x"
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


@st.composite
def _object(draw: st.DrawFn, kind: dict[str, Any], *, yaml_values: bool) -> dict[str, Any]:
    values = _yaml_values if yaml_values else _json_values
    obj: dict[str, Any] = {"apiVersion": kind["apiVersion"], "kind": kind["kind"],
                           "metadata": {"name": draw(_names)}}
    if draw(st.booleans()):
        obj["metadata"]["labels"] = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    for field in draw(st.lists(st.sampled_from(kind["fields"]), max_size=3, unique=True)):
        obj[field] = draw(values)
    if draw(_rarely(20)):
        obj[draw(st.sampled_from(kind["fields"]))] = _deep(draw(st.sampled_from([50, 130, 300])))
    if draw(_rarely(10)):
        obj = draw(values) if draw(st.booleans()) else obj
    return obj


def _encode(obj: Any, *, as_yaml: bool) -> str:
    if as_yaml:
        return yaml.safe_dump(obj)
    return json.dumps(obj, allow_nan=False)


# --- requests ------------------------------------------------------------------------------------


@st.composite
def _request(draw: st.DrawFn, kinds: list[dict[str, Any]]) -> tuple[str, str, bytes | str | None, dict[str, str]]:
    kind = draw(st.sampled_from(kinds))
    verb = draw(st.sampled_from(["POST", "PUT", "PATCH", "APPLY", "DELETE", "LIST", "WATCH", "SUBRESOURCE"]))
    writable = [s for s in kind["subresources"] if s in ("status", "scale", "binding", "finalize", "eviction")]
    if verb == "SUBRESOURCE" and not writable:
        verb = "PUT"
    name = draw(st.sampled_from(["fuzz", "fuzz-2"]))
    item = f"{kind['path']}/{name}"
    headers: dict[str, str] = {"Content-Type": "application/json"}
    body: bytes | str | None = None
    as_yaml = draw(st.booleans())
    if verb in ("POST", "PUT", "APPLY"):
        if kind["schema"] is not None and draw(st.booleans()):
            obj: Any = draw(_shaped(kind))
        else:
            obj = draw(_object(kind, yaml_values=as_yaml or verb == "APPLY"))
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) and not draw(_rarely(3)):
            obj["metadata"]["name"] = name
        yaml_body = as_yaml or verb == "APPLY"
        try:
            body = _encode(obj, as_yaml=yaml_body)
        except (ValueError, TypeError):
            body = yaml.safe_dump(obj)
            yaml_body = True
        if verb == "APPLY":
            headers["Content-Type"] = "application/apply-patch+yaml"
            path = item + "?fieldManager=fuzz" + draw(st.sampled_from(["", "&force=true", "&force=maybe"]))
            method = "PATCH"
        else:
            headers["Content-Type"] = "application/yaml" if yaml_body else "application/json"
            path, method = (kind["path"], "POST") if verb == "POST" else (item, "PUT")
    elif verb == "SUBRESOURCE":
        sub = draw(st.sampled_from(writable))
        method = "POST" if sub in ("binding", "eviction") else draw(st.sampled_from(["PUT", "PATCH"]))
        shaped = sub == "status" and kind["schema"] is not None and draw(st.booleans())
        obj = draw(_shaped(kind)) if shaped else draw(_object(kind, yaml_values=False))
        if sub in ("binding", "eviction", "scale") and isinstance(obj, dict):
            obj.update(draw(st.dictionaries(st.sampled_from(["target", "spec", "status", "deleteOptions"]),
                                            _json_values, max_size=2)))
        body = json.dumps(obj)
        if method == "PATCH":
            headers["Content-Type"] = draw(st.sampled_from(PATCH_TYPES[1:]))
        path = f"{item}/{sub}"
    elif verb == "PATCH":
        content_type = draw(st.sampled_from(PATCH_TYPES))
        headers["Content-Type"] = content_type
        if content_type == PATCH_TYPES[0]:
            ops = draw(st.lists(st.fixed_dictionaries({
                "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
                "path": st.sampled_from(["/spec", "/metadata/labels", "/metadata/labels/a", "/", "", "/x/-", "/spec/0"]),
            }, optional={"value": _json_values, "from": st.sampled_from(["/spec", "/metadata", "/nope"])}), max_size=5))
            body = json.dumps(ops)
        else:
            shaped = kind["schema"] is not None and draw(st.booleans())
            body = json.dumps(draw(_shaped(kind)) if shaped else draw(_object(kind, yaml_values=False)))
        path, method = item, "PATCH"
    elif verb == "DELETE":
        options = draw(st.dictionaries(
            st.sampled_from(["gracePeriodSeconds", "propagationPolicy", "preconditions", "orphanDependents", "dryRun"]),
            _json_values, max_size=3))
        body = json.dumps(options)
        query = draw(st.sampled_from(["", "?gracePeriodSeconds=x", "?propagationPolicy=Nope", "?dryRun=All"]))
        path, method = item + query, "DELETE"
    else:
        params = draw(st.dictionaries(
            st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                             "resourceVersionMatch", "timeoutSeconds", "allowWatchBookmarks", "sendInitialEvents"]),
            st.one_of(st.text(alphabet=string.printable, max_size=40),
                      st.sampled_from(["a in (b)", "a!=", "!a", "metadata.name=x", "x=y", "-1", "0", "1",
                                       "a notin (", ",,", "a==b,c", "spec.nodeName="])), max_size=3))
        if verb == "WATCH":
            params["watch"] = "1"
            params["timeoutSeconds"] = "1"
        path, method = kind["path"] + ("?" + urlencode(params) if params else ""), "GET"
    if body is not None and draw(_rarely(15)):
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate"]))
    return method, path, body, headers


def test_fuzz_requests_never_crash_hang_or_5xx(server: Server, api: Api, kinds: list[dict[str, Any]]) -> None:
    recent: collections.deque[str] = collections.deque(maxlen=5)
    answered: collections.Counter[int] = collections.Counter()

    # Derandomized (the same requests every run) unless EDGEKUBE_FUZZ_SEED=random (`make fuzz`);
    # no example database, so nothing is written into the work tree.
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("EDGEKUBE_FUZZ_SEED") != "random",
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(st.data())
    def one(data: st.DataObject) -> None:
        method, path, body, headers = data.draw(_request(kinds))
        content_type = headers.pop("Content-Type")
        recent.append(f"{method} {path} {content_type} {headers} {body!r}"[:500])
        try:
            status, answer = api.call(method, path, body, content_type=content_type, headers=headers)
        except TimeoutError:
            # A hang may be this request's or an earlier one's still holding the server.
            raise AssertionError("no answer in time; the last requests were:\n" + "\n".join(recent)) from None
        answered[status] += 1
        assert server.proc is not None and server.proc.poll() is None, f"server died on {method} {path}:\n{server.log()}"
        assert status < 500, f"{method} {path} {headers} -> {status}: {answer}\nbody: {body!r}"[:3000]

    one()
    print(f"fuzz: {sum(answered.values())} requests answered {dict(sorted(answered.items()))}")  # shown with -s
    assert server.rss_mib() < RSS_CEILING_MIB
    # Whatever the run stored, every reader decodes it: the node boots again on it.
    assert server.stop() == 0
    server.start()
    assert api.call("GET", "/api/v1/namespaces")[0] == 200
