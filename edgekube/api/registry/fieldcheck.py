"""Decoding checks for built-in kinds, from their upstream schema (`apischema`).

Upstream decodes a request body into Go structs: a field the struct does not have is an
"unknown field" (refused with fieldValidation=Strict, reported with Warn, dropped either way),
and a value of the wrong JSON type cannot be decoded at all (400). The same facts are in the
kind's OpenAPI definition, so this walks the object against it, at every depth:
`unknown field "spec.template.spec.containers[0].imagee"`.
"""

from __future__ import annotations

from typing import Any

from edgekube.api import apischema
from edgekube.api.patch import json_type

JSON = dict[str, Any]
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_OPEN = frozenset({
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
})
_SKIP_TOP = frozenset({"apiVersion", "kind"})


def check(schema: JSON, obj: JSON, *, prune: bool) -> tuple[list[str], list[str]]:
    """(unknown field paths, type errors) of `obj`; with `prune`, unknown fields are removed."""
    unknown: list[str] = []
    wrong: list[str] = []
    _object(schema, obj, "", unknown, wrong, prune, top=True)
    return unknown, wrong


def _target(schema: JSON) -> tuple[str | None, JSON | None]:
    name = apischema.ref_name(schema)
    if name is None:
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            name = apischema.ref_name(all_of[0])
    if name is not None:
        return name, apischema.definition(name)
    return None, schema


def _object(schema: JSON, value: JSON, path: str, unknown: list[str], wrong: list[str], prune: bool, *, top: bool = False) -> None:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return
    for key in list(value):
        if top and key in _SKIP_TOP:
            continue
        sub = f"{path}.{key}" if path else key
        prop = props.get(key)
        if prop is None:
            unknown.append(sub)
            if prune:
                del value[key]
            continue
        _value(prop, value[key], sub, unknown, wrong, prune)


def _value(schema: JSON, value: Any, path: str, unknown: list[str], wrong: list[str], prune: bool) -> None:
    if value is None:
        return  # JSON null decodes as the zero value
    name, target = _target(schema)
    if target is None or name in _OPEN or target.get("x-kubernetes-preserve-unknown-fields"):
        return
    if name == _QUANTITY:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            wrong.append(f"{path}: quantities must be a string or a number")
        return
    want = target.get("type")
    if target.get("format") == "int-or-string":
        if not isinstance(value, str | int) or isinstance(value, bool):
            wrong.append(f"{path}: must be an integer or a string")
        return
    if want == "object" or "properties" in target:
        if not isinstance(value, dict):
            wrong.append(f"{path}: expected an object, got {json_type(value)}")
            return
        extra = target.get("additionalProperties")
        if isinstance(extra, dict):
            for k, v in value.items():
                _value(extra, v, f"{path}.{k}", unknown, wrong, prune)
        else:
            _object(target, value, path, unknown, wrong, prune)
        return
    if want == "array":
        if not isinstance(value, list):
            wrong.append(f"{path}: expected an array, got {json_type(value)}")
            return
        items = target.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _value(items, v, f"{path}[{i}]", unknown, wrong, prune)
        return
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }.get(str(want), True)
    if not ok:
        wrong.append(f"{path}: expected {'a ' + str(want) if want != 'integer' else 'an integer'}, got {json_type(value)}")

