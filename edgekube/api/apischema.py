"""The OpenAPI definitions of the built-in kinds: one source of truth for their shape.

`apischema_data` holds upstream's definitions as generated from the Go API types by
`tools/gen_apischema.py` (names, types, descriptions, required fields, strategic-merge keys,
list and map types for server-side apply), each compressed alone. This module decodes a
definition when it is first asked for and keeps it: the writes of a node's own components (its
Node, Lease, Pods, Events, the bootstrap RBAC policy) need a few dozen of the 542, and all of
them parsed at once held 1.8 MiB; the OpenAPI documents, when a client asks for them, decode
the rest. It answers:

- `definition(name)` and `closure(name)`: a schema and every schema it refers to, for the
  OpenAPI documents;
- `kind_definition(group, version, kind)`: the definition name of a served kind;
- `field_schema(schema, name)`: one property, with `$ref`s followed, for walkers (strategic
  merge metadata, server-side apply field sets, unknown-field checks).
"""

from __future__ import annotations

import base64
import functools
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from edgekube.api import apischema_data

JSON = dict[str, Any]
_REF = "#/definitions/"

# API group -> the Go package prefix upstream names its definitions after.
PACKAGES = {
    "": "io.k8s.api.core",
    "apps": "io.k8s.api.apps",
    "batch": "io.k8s.api.batch",
    "autoscaling": "io.k8s.api.autoscaling",
    "policy": "io.k8s.api.policy",
    "coordination.k8s.io": "io.k8s.api.coordination",
    "discovery.k8s.io": "io.k8s.api.discovery",
    "storage.k8s.io": "io.k8s.api.storage",
    "networking.k8s.io": "io.k8s.api.networking",
    "node.k8s.io": "io.k8s.api.node",
    "scheduling.k8s.io": "io.k8s.api.scheduling",
    "rbac.authorization.k8s.io": "io.k8s.api.rbac",
    "authentication.k8s.io": "io.k8s.api.authentication",
    "authorization.k8s.io": "io.k8s.api.authorization",
    "certificates.k8s.io": "io.k8s.api.certificates",
    "admissionregistration.k8s.io": "io.k8s.api.admissionregistration",
    "events.k8s.io": "io.k8s.api.events",
    "flowcontrol.apiserver.k8s.io": "io.k8s.api.flowcontrol",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
    "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration",
}


class Definitions(Mapping[str, JSON]):
    """Every definition by name, each decoded from `apischema_data` when first asked for."""

    def __init__(self) -> None:
        self._zdict = base64.b64decode(apischema_data.ZDICT)
        self._decoded: dict[str, JSON] = {}

    def __getitem__(self, name: str) -> JSON:
        found = self._decoded.get(name)
        if found is None:
            inflate = zlib.decompressobj(zdict=self._zdict)
            raw = inflate.decompress(base64.b64decode(apischema_data.PACKED[name])) + inflate.flush()
            found = self._decoded[name] = orjson.loads(raw)
        return found

    def __contains__(self, name: object) -> bool:
        return name in apischema_data.PACKED

    def __iter__(self) -> Iterator[str]:
        return iter(apischema_data.PACKED)

    def __len__(self) -> int:
        return len(apischema_data.PACKED)


@functools.cache
def definitions() -> Definitions:
    return Definitions()


def definition(name: str) -> JSON | None:
    return definitions().get(name)


def kind_definition(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind (`io.k8s.api.apps.v1.Deployment`), or None."""
    package = PACKAGES.get(group)
    if package is None:
        return None
    name = f"{package}.{version}.{kind}"
    return name if name in definitions() else None


def ref_name(schema: JSON) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        return ref[len(_REF) :]
    return None


def resolve(schema: JSON | None) -> JSON | None:
    """Follow `$ref`s (and single-element `allOf`s) to the schema they name."""
    seen = 0
    while schema is not None and seen < 16:
        name = ref_name(schema)
        if name is None:
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1:
                schema = all_of[0]
                seen += 1
                continue
            return schema
        schema = definitions().get(name)
        seen += 1
    return schema


def field_schema(schema: JSON | None, name: str) -> JSON | None:
    """The schema of property `name` of an object schema, with the property's own extensions
    (list type, merge keys) kept and its `$ref` left in place (use `resolve` to follow it)."""
    obj = resolve(schema)
    if obj is None:
        return None
    props = obj.get("properties")
    if isinstance(props, dict) and name in props:
        prop: JSON = props[name]
        return prop
    extra = obj.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    return None


def items_schema(schema: JSON | None) -> JSON | None:
    s = resolve(schema)
    if s is None:
        return None
    items = s.get("items")
    return items if isinstance(items, dict) else None


def closure(name: str) -> dict[str, JSON]:
    """`name` and every definition it refers to, transitively."""
    defs = definitions()
    out: dict[str, JSON] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in out or current not in defs:
            continue
        out[current] = defs[current]
        _collect_refs(defs[current], todo)
    return out


def _collect_refs(value: Any, into: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(_REF):
                into.append(v[len(_REF) :])
            else:
                _collect_refs(v, into)
    elif isinstance(value, list):
        for v in value:
            _collect_refs(v, into)


# The types whose OpenAPI 3 schema is a oneOf (their Go types' OpenAPIV3OneOfTypes), where the
# v2 definitions say "string": a port or a quantity may be sent and served as a number.
V3_ONE_OF: dict[str, tuple[str, ...]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": ("integer", "string"),
    "io.k8s.apimachinery.pkg.api.resource.Quantity": ("string", "number"),
}


def to_v3_definition(name: str, schema: JSON) -> JSON:
    """Definition `name` in OpenAPI 3 form (`to_v3`), oneOf types as upstream's v3 documents
    describe them."""
    out: JSON = to_v3(schema)
    types = V3_ONE_OF.get(name)
    if types is not None:
        out = {k: v for k, v in out.items() if k != "type"}
        out["oneOf"] = [{"type": t} for t in types]
    return out


def to_v3(value: Any) -> Any:
    """A v2 definition in OpenAPI 3 form: `#/components/schemas/` references, and a `$ref` with
    siblings (description, default) wrapped in `allOf`, since v3 ignores a `$ref`'s siblings."""
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):  # (JSONSchemaProps has a *property* named $ref)
            target = {"$ref": value["$ref"].replace(_REF, "#/components/schemas/")}
            rest = {k: to_v3(v) for k, v in value.items() if k != "$ref"}
            return {"allOf": [target], **rest} if rest else target
        return {k: to_v3(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_v3(v) for v in value]
    return value
