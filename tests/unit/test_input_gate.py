"""Client input that is not JSON never reaches the store (issue 13, points 1, 3, 4, 8, 9).

The pure functions (YAML read as upstream's sigs.k8s.io/yaml, the JSON gate, the int32/int64
formats, RE2 patterns, JSON patch bounds) and then the one gate in front of the store, driven
through a real Registry and Store with every write verb the in-process client has.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, jsontree, patch, protobuf, ssa
from edgekube.api.registry import crds, fieldcheck, resources, rest
from edgekube.store import store as store_mod

JSON = dict[str, Any]


def _bad_request(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(errors.APIError) as info:
        fn(*args, **kwargs)
    assert info.value.code == 400, info.value.message
    return info.value.message


# --- YAML as sigs.k8s.io/yaml reads it -----------------------------------------------------------


@pytest.mark.parametrize(("doc", "key"), [("data: {1: a}", "1"), ("data: {1.5: b}", "1.5"), ("data: {true: c}", "true"),
                                         ("metadata: {labels: {0x10: f}}", "0x10"), ("data: {1e3: e}", "1e3")])
def test_yaml_keys_that_are_not_strings_are_refused_with_how_to_quote_them(doc: str, key: str) -> None:
    # Issue 13: refused before any write (upstream's sigs.k8s.io/yaml would convert them).
    with pytest.raises(jsontree.YAMLError, match=f"map key '{key}' is a (number|boolean), not a string.*quote it"):
        jsontree.load_yaml(doc)
    assert jsontree.load_yaml('data: {"1": a}') == {"data": {"1": "a"}}


@pytest.mark.parametrize("doc", ["data: {~: a}", "data: {null: a}", "metadata: {labels: {? [1]\n  : x}}"])
def test_yaml_null_and_collection_keys_are_refused(doc: str) -> None:
    with pytest.raises(jsontree.YAMLError, match="unsupported map key"):
        jsontree.load_yaml(doc)


def test_yaml_values_that_are_not_json_are_converted_as_go_yaml_does() -> None:
    got = jsontree.load_yaml(
        "t: 2001-12-14t21:59:43.10-05:00\nd: 2002-12-14\nb: !!binary aGk=\ns: !!set {a, b}\n"
        "o: !!omap [{a: 1}, {b: 2}]\nu: !custom text\nsexa: 22:22\nbig: 99999999999999999999999\n"
    )
    assert got == {"t": "2001-12-14t21:59:43.10-05:00", "d": "2002-12-14", "b": "hi", "s": {"a": None, "b": None},
                   "o": [{"a": 1}, {"b": 2}], "u": "text", "sexa": "22:22", "big": 1e23}
    assert jsontree.find_problem(got, ints=True) is None
    msgpack.unpackb(msgpack.packb(got), strict_map_key=True)  # what every reader of the store does


@pytest.mark.parametrize("doc", ["a: .inf", "a: -.inf", "a: .nan"])
def test_yaml_non_finite_numbers_are_refused(doc: str) -> None:
    with pytest.raises(jsontree.YAMLError, match="unsupported value"):
        jsontree.load_yaml(doc)


def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def test_yaml_billion_laughs_is_refused_before_expansion() -> None:
    doc = _laughs(9)  # about 400 bytes; expanded, 430 million nodes
    assert len(doc) < 500
    with pytest.raises(jsontree.YAMLError, match="yaml: document contains excessive aliasing"):
        jsontree.load_yaml(doc)


def test_yaml_aliasing_within_go_yamls_ratio_still_cannot_expand_past_the_value_bound() -> None:
    doc = ("a: &a [" + ", ".join(["x"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 300) + "]\n"
           "c: [" + ", ".join(["y"] * 5000) + "]\n")  # 98% aliased: inside go-yaml's 99%
    with pytest.raises(jsontree.YAMLError, match="expands to more than"):
        jsontree.load_yaml(doc)


def test_yaml_modest_aliasing_is_kept_and_expanded_into_copies() -> None:
    got = jsontree.load_yaml("base: &b {x: 1}\none: *b\ntwo: *b")
    assert got == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}
    got["one"]["x"] = 2
    assert got["two"]["x"] == 1  # no shared containers reach the registry


def test_yaml_recursive_anchor_and_excessive_depth_are_refused() -> None:
    with pytest.raises(jsontree.YAMLError, match="contains itself"):
        jsontree.load_yaml("&a [*a]")
    with pytest.raises(jsontree.YAMLError, match="max depth"):
        jsontree.load_yaml("[" * 400 + "]" * 400)
    for past_the_parser in ("[" * 5000 + "]" * 5000, "- " * 5000 + "x"):  # libyaml's own bound: 1000
        with pytest.raises(jsontree.YAMLError, match="max depth of 128"):
            jsontree.load_yaml(past_the_parser)
    # Depth reached through aliases is bounded too.
    nested = "[" * 100 + "]" * 100
    with pytest.raises(jsontree.YAMLError, match="max depth"):
        jsontree.load_yaml(f"a: &a {nested}\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]")


# --- the gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "path"), [
    ({"data": {1: "a"}}, "data"),
    ({"metadata": {"labels": {None: "a"}}}, "metadata.labels"),
    ({"spec": {"x": [{"y": {True: 1}}]}}, "spec.x[0].y"),
    ({"spec": {1.5: 1}}, "spec"),
])
def test_gate_names_the_field_with_a_non_string_key(value: JSON, path: str) -> None:
    message = _bad_request(jsontree.check, value, where="w")
    assert message.startswith(f"w: {path}: map key ")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"x", {1, 2}, (1, 2), object()])
def test_gate_refuses_values_that_are_not_json(value: Any) -> None:
    assert "spec.v" in _bad_request(jsontree.check, {"spec": {"v": value}}, where="w")


def test_gate_bounds_depth_without_recursing_and_ints_to_64_bits() -> None:
    deep: JSON = {}
    cur = deep
    for _ in range(5000):  # far deeper than the Python stack would allow a recursive walk
        cur["a"] = {}
        cur = cur["a"]
    assert "nesting depth exceeds" in _bad_request(jsontree.check, deep, where="w")
    with pytest.raises(errors.APIError) as info:
        jsontree.check({"x": [0] * jsontree.MAX_VALUES}, where="w")
    assert info.value.code == 413
    jsontree.check({"n": 1 << 63}, where="w")  # ints are left to the kind's own checks first
    assert "out of range" in _bad_request(jsontree.check, {"n": 1 << 63}, where="w", ints=True)
    jsontree.check({"n": -(1 << 63)}, where="w", ints=True)


def test_size_limit_is_a_413_naming_the_object() -> None:
    big = {"metadata": {"name": "big"}, "data": {"a": "x" * (jsontree.MAX_OBJECT_BYTES + 1)}}
    with pytest.raises(errors.APIError) as info:
        jsontree.check_size(big, plural="configmaps", name="big")
    assert info.value.code == 413 and info.value.reason == "RequestEntityTooLarge"
    assert 'configmaps "big"' in info.value.message
    jsontree.check_size({"data": {"a": "x" * 1000}}, plural="configmaps", name="small")


# --- built-in schemas: int formats and nulls -----------------------------------------------------


def _deployment_schema() -> JSON:
    from edgekube.api import apischema

    schema = apischema.definition("io.k8s.api.apps.v1.Deployment")
    assert schema is not None
    return schema


@pytest.mark.parametrize(("replicas", "ok"), [(2**31 - 1, True), (2**31, False), (-(2**31), True), (-(2**31) - 1, False),
                                              (2**63, False)])
def test_int32_fields_are_bounded_with_upstreams_message(replicas: int, ok: bool) -> None:
    obj = {"kind": "Deployment", "spec": {"replicas": replicas}}
    _, wrong = fieldcheck.check(_deployment_schema(), obj, prune=False)
    if ok:
        assert wrong == []
    else:
        assert wrong == [f"json: cannot unmarshal number {replicas} into Go struct field DeploymentSpec.spec.replicas of type int32"]


def test_int64_fields_and_list_paths() -> None:
    obj = {"kind": "Deployment", "spec": {"template": {"spec": {
        "activeDeadlineSeconds": 2**63, "containers": [{"name": "c", "ports": [{"containerPort": 2**32}]}]}}}}
    _, wrong = fieldcheck.check(_deployment_schema(), obj, prune=False)
    assert sorted(wrong) == sorted([
        f"json: cannot unmarshal number {2**63} into Go struct field PodSpec.spec.template.spec.activeDeadlineSeconds of type int64",
        f"json: cannot unmarshal number {2**32} into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32",
    ])


def test_nulls_decode_as_go_zero_values() -> None:
    obj = {"kind": "Deployment", "spec": None, "metadata": {"labels": {"a": None}, "annotations": None}}
    _, wrong = fieldcheck.check(_deployment_schema(), obj, prune=False)
    assert wrong == []
    assert obj == {"kind": "Deployment", "metadata": {"labels": {"a": ""}}}


# --- CRD patterns in RE2 -------------------------------------------------------------------------


def _crd(pattern: str) -> JSON:
    return {"metadata": {"name": "things.ex.com"}, "spec": {
        "group": "ex.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": {"type": "object", "properties": {
                "v": {"type": "string", "pattern": pattern},
                "list": {"type": "array", "items": {"type": "string", "pattern": pattern}}}}}}}}]}}


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)b", r"a(?!b)", r"(?<=a)b"])
def test_patterns_go_would_refuse_are_refused_when_the_crd_is_written(pattern: str) -> None:
    causes = crds.validate(_crd(pattern), None)
    fields = sorted(c.field for c in causes)
    base = "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
    assert fields == [f"{base}.properties[list].items.pattern", f"{base}.properties[v].pattern"]
    assert all("must be a valid regular expression, but isn't: error parsing regexp: " in c.message for c in causes)


def test_invalid_pattern_message_is_upstreams() -> None:
    causes = crds.validate(_crd("+"), None)
    assert causes[0].message == ("Invalid value: \"+\": must be a valid regular expression, but isn't: "
                                 "error parsing regexp: missing argument to repetition operator: `+`")


def test_patterns_run_in_linear_time_with_go_semantics() -> None:
    schema = _crd(r"^(a+)+$")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # A backtracking engine takes minutes on this value; RE2 answers at once.
    causes = crds.validate_object(schema, {"spec": {"v": "a" * 40 + "!"}})
    assert [c.field for c in causes] == ["spec.v"]
    assert crds.validate_object(schema, {"spec": {"v": "a" * 40}}) == []
    # Go's `$` is the end of the text only; Python's also matches before a final newline.
    assert [c.field for c in crds.validate_object(schema, {"spec": {"v": "aaa\n"}})] == ["spec.v"]


def test_crd_integer_formats_are_enforced() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "format": "int32"}}}
    causes = crds.validate_object(schema, {"n": 2**31})
    assert [c.field for c in causes] == ["n"] and "integer(int32)" in causes[0].message
    assert crds.validate_object(schema, {"n": 2**31 - 1}) == []


# --- patches and protobuf ------------------------------------------------------------------------


def test_json_patch_operation_count_is_bounded_as_upstream() -> None:
    ops = [{"op": "test", "path": "/a", "value": 1}] * (patch.MAX_JSON_PATCH_OPS + 1)
    with pytest.raises(errors.APIError) as info:
        patch.json_patch({"a": 1}, ops)
    assert info.value.code == 413
    assert info.value.message == f"The allowed maximum operations in a JSON patch is 10000, got {len(ops)}"


def test_json_patch_copies_cannot_grow_an_object_without_bound() -> None:
    ops = [{"op": "add", "path": "/a", "value": ["x" * 10] * 1000}]
    ops += [{"op": "copy", "from": "/a", "path": f"/a/{i}"} for i in range(40)]  # doubles each time
    with pytest.raises(errors.APIError) as info:
        patch.json_patch({}, ops)
    assert info.value.code == 413 and "too large" in info.value.message


@pytest.mark.parametrize("content_type", [patch.MERGE_PATCH, patch.STRATEGIC_MERGE_PATCH, patch.JSON_PATCH])
def test_patch_bodies_nested_too_deep_are_refused(content_type: str) -> None:
    body = ('{"a":' * 300 + "1" + "}" * 300).encode()
    if content_type == patch.JSON_PATCH:
        body = b'[{"op":"add","path":"/x","value":' + body + b"}]"
    assert "nesting depth" in _bad_request(patch.apply_patch, content_type, {"metadata": {}}, body, gk="ConfigMap")


def test_protobuf_messages_nested_too_deep_are_a_decode_error() -> None:
    # JSONSchemaProps holds a JSONSchemaProps under `not`: nest it by the schema's field number.
    name = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    row = next(r for r in protobuf._schema()[name] if r[1] == "not")
    data = b""
    for _ in range(300):
        data = _varint(row[0] << 3 | 2) + _varint(len(data)) + data
    with pytest.raises(protobuf.DecodeError, match="nested deeper"):
        protobuf.decode_message(name, data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --- the registry's gate, every write verb -------------------------------------------------------


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[rest.Registry]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path, compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    reg = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork())
    await reg.ensure_system_namespaces()
    try:
        yield reg
    finally:
        await store.close()


_BAD_VALUES: list[tuple[str, Any]] = [
    ("int key", {1: "a"}), ("bool key", {True: "a"}), ("null key", {None: "a"}), ("float key", {1.5: "a"}),
    ("bytes value", {"a": b"x"}), ("nan value", {"a": float("nan")}),
]


@pytest.mark.parametrize(("what", "bad"), _BAD_VALUES, ids=[w for w, _ in _BAD_VALUES])
async def test_registry_refuses_non_json_from_every_write_verb(registry: rest.Registry, what: str, bad: Any) -> None:
    info = registry.catalog.lookup("", "v1", "configmaps")
    assert info is not None
    before = registry.store.revision

    async def expect_400(coro: Any) -> None:
        with pytest.raises(errors.APIError) as err:
            await coro
        assert err.value.code == 400, err.value.message

    await expect_400(registry.create(info, {"metadata": {"name": "c"}, "data": copy.deepcopy(bad)}, namespace="default"))
    await expect_400(registry.create(info, {"metadata": {"name": "c", "labels": copy.deepcopy(bad)}}, namespace="default"))
    assert registry.store.revision == before
    await registry.create(info, {"metadata": {"name": "ok"}, "data": {"a": "b"}}, namespace="default")
    written = registry.store.revision
    await expect_400(registry.update(info, {"metadata": {"name": "ok"}, "data": copy.deepcopy(bad)},
                                     namespace="default", name="ok"))

    def poison(obj: JSON) -> JSON:
        obj["data"] = copy.deepcopy(bad)
        return obj

    await expect_400(registry.patch(info, namespace="default", name="ok", apply=poison))
    await expect_400(registry.apply(info, {"metadata": {"name": "ok"}, "data": copy.deepcopy(bad)}, namespace="default",
                                    name="ok", force=True, options=rest.Options(field_manager="m")))
    assert registry.store.revision == written
    # Whatever is stored decodes as every reader decodes it.
    for item in registry.store.scan(info.key_prefix("default")).items:
        item.object()


async def test_registry_refuses_out_of_range_ints_and_oversized_objects(registry: rest.Registry) -> None:
    deps = registry.catalog.lookup("apps", "v1", "deployments")
    assert deps is not None
    dep = {"metadata": {"name": "d"}, "spec": {"replicas": 2**63, "selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(errors.APIError) as err:
        await registry.create(deps, dep, namespace="default")
    assert err.value.code == 400 and "of type int32" in err.value.message
    roles = registry.catalog.lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
    assert roles is not None
    await registry.create(roles, {"metadata": {"name": "grow"}, "rules": []}, namespace=None)

    def grow(obj: JSON) -> JSON:  # a kind with no size rule of its own: only the store's bound
        obj["rules"] = [{"apiGroups": [""], "resources": [f"r{i}" + "x" * 1000], "verbs": ["get"]} for i in range(2000)]
        return obj

    with pytest.raises(errors.APIError) as err:
        await registry.patch(roles, namespace=None, name="grow", apply=grow)
    assert err.value.code == 413, err.value.message
    assert registry.get(roles, namespace=None, name="grow").get("rules") in (None, [])


# --- every built-in kind: its integer fields are bounded by their format -------------------------


def _int_field(schema: JSON, seen: frozenset[str] = frozenset()) -> tuple[list[str], str] | None:
    """The path (field names; "[]" for a list element) and format of the first int32/int64 field."""
    from edgekube.api import apischema

    for field, prop in sorted((schema.get("properties") or {}).items()):
        if field in ("metadata", "status"):
            continue
        name = apischema.ref_name(prop) or apischema.ref_name((prop.get("allOf") or [{}])[0])
        target = apischema.definition(name) if name else prop
        if target is None or (name and name in seen):
            continue
        if target.get("type") == "integer" and target.get("format") in ("int32", "int64"):
            return [field], str(target["format"])
        items = target.get("items") if target.get("type") == "array" else None
        if isinstance(items, dict):
            item_name = apischema.ref_name(items)
            item = apischema.definition(item_name) if item_name else None
            if item is not None and item_name not in seen:
                found = _int_field(item, seen | {str(item_name)})
                if found:
                    return [field, "[]", *found[0]], found[1]
        elif "properties" in target:
            found = _int_field(target, seen | ({name} if name else set()))
            if found:
                return [field, *found[0]], found[1]
    return None


def _builtin_kinds_with_ints() -> list[tuple[Any, ...]]:
    out = []
    for info in resources.Catalog().all():
        schema = ssa.kind_schema(info.group, info.version, info.kind)
        found = _int_field(schema) if schema else None
        if found and ("create" in info.verbs or "update" in info.verbs):
            out.append((info.gk, schema, *found))
    return out


_INT_KINDS = _builtin_kinds_with_ints()


def test_the_int_sweep_covers_the_workload_kinds() -> None:
    assert {"Deployment.apps", "Pod", "Service", "Job.batch", "CronJob.batch"} <= {gk for gk, *_ in _INT_KINDS}


@pytest.mark.parametrize(("gk", "schema", "path", "fmt"), _INT_KINDS, ids=[k[0] for k in _INT_KINDS])
def test_every_builtin_kind_bounds_its_integer_fields(gk: str, schema: JSON, path: list[str], fmt: str) -> None:
    too_big = 2**31 if fmt == "int32" else 2**63
    obj: JSON = {"kind": gk.split(".")[0]}
    node: Any = obj
    for step, nxt in zip(path, [*path[1:], None], strict=True):
        if step == "[]":
            continue
        if nxt is None:
            node[step] = too_big
        elif nxt == "[]":
            node[step] = [{}]
            node = node[step][0]
        else:
            node[step] = {}
            node = node[step]
    _, wrong = fieldcheck.check(schema, obj, prune=False)
    assert any(f"cannot unmarshal number {too_big} into Go struct field" in w and w.endswith(f"of type {fmt}")
               for w in wrong), (gk, path, wrong)


def test_strategic_merge_of_long_lists_is_linear_and_keeps_semantics() -> None:
    from edgekube.api.registry import patchmeta

    n = 30000  # quadratic merging would take minutes here
    original = {"spec": {"containers": [{"name": f"c{i}", "image": "a"} for i in range(n)],
                         "finalizers": [f"f{i}" for i in range(n)]}}
    body = {"spec": {"containers": [{"name": f"c{i}", "image": "b"} for i in range(0, 2 * n, 2)]
                     + [{"name": "c1", "$patch": "delete"}],
                     "$deleteFromPrimitiveList/finalizers": [f"f{i}" for i in range(0, n, 2)]}}
    meta = patchmeta.meta_for("Pod")
    got = patch.strategic_merge_patch({"spec": original["spec"]}, body, meta=meta)
    containers = got["spec"]["containers"]
    assert len(containers) == n - 1 + n // 2
    assert containers[0] == {"name": "c0", "image": "b"} and containers[1] == {"name": "c2", "image": "b"}
    assert containers[2] == {"name": "c3", "image": "a"}
    assert got["spec"]["finalizers"][:2] == ["f1", "f3"]


async def test_large_yaml_bodies_are_decoded_off_the_event_loop() -> None:
    import asyncio

    from edgekube._cogs import offload
    from edgekube.api import negotiation

    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n" + "".join(
        f"  k{i}: value{i}\n" for i in range(20000))
    assert len(doc) > 200_000
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    start = ticks
    got = await negotiation.decode_body_async(doc.encode(), "application/yaml", offload=offload.Offload())
    during = ticks - start
    done = True
    await task
    assert len(got["data"]) == 20000
    # Decoded on the loop, the ticker could not have run at all while it lasted.
    assert during > 1


@pytest.mark.parametrize("text", ["1e999999999", "1e99999999999", "9" * 4000 + "Ei", "1e61", "-1e70"])
def test_quantities_too_large_to_compute_with_are_refused(text: str) -> None:
    from edgekube.api import quantity

    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)
    with pytest.raises(quantity.QuantityError):
        quantity.Quantity.of(text)


def test_tiny_and_large_but_sane_quantities_still_parse() -> None:
    from edgekube.api import quantity

    assert str(quantity.Quantity.of("1e-999999999")) == "1e-9"  # upstream rounds up to one nano
    assert quantity.parse("1e60") == 10**60


def test_without_re2_patterns_go_unenforced_and_say_so(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # armv7 has no google-re2 wheel: a backtracking engine must not take its place.
    monkeypatch.setattr(crds, "re2", None)
    crds.compile_pattern.cache_clear()
    crds._warn_no_re2.cache_clear()
    try:
        schema = _crd(r"^(a+)+$")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        with caplog.at_level("WARNING"):
            assert crds.validate_object(schema, {"spec": {"v": "a" * 40 + "!"}}) == []
        assert "not enforced" in caplog.text
        assert crds.validate(_crd(r"(a)\1"), None) == []
    finally:
        crds.compile_pattern.cache_clear()
        crds._warn_no_re2.cache_clear()


async def test_an_oversized_object_from_before_the_limit_can_still_be_deleted(registry: rest.Registry) -> None:
    roles = registry.catalog.lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
    assert roles is not None
    big = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": "old", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x/y"]},
           "rules": [{"apiGroups": [""], "resources": [f"r{i}" + "x" * 1000], "verbs": ["get"]} for i in range(2000)]}
    await registry.store.create(roles.key("old"), big)  # stored before the gate existed
    await registry.delete(roles, namespace=None, name="old")

    def release(obj: JSON) -> JSON:
        obj["metadata"]["finalizers"] = []
        return obj

    await registry.patch(roles, namespace=None, name="old", apply=release)
    with pytest.raises(errors.APIError) as err:
        registry.get(roles, namespace=None, name="old")
    assert err.value.code == 404


async def test_a_crd_version_without_a_name_is_invalid_not_a_500(registry: rest.Registry) -> None:
    # Found by the fuzz suite: the CRD's status was worked out before validation, from v["name"].
    info = registry.catalog.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert info is not None
    crd = {"metadata": {"name": "fuzz"}, "spec": {"group": "", "versions": [{"storage": True, "subresources": {}}]}}
    with pytest.raises(errors.APIError) as err:
        await registry.create(info, crd, namespace=None)
    assert err.value.code == 422, err.value.message
