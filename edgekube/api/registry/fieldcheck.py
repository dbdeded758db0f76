"""Decoding checks for built-in kinds, from their upstream schema (`apischema`).

Upstream decodes a request body into Go structs: a field the struct does not have is an
"unknown field" (refused with fieldValidation=Strict, reported with Warn, dropped either way),
and a value of the wrong JSON type cannot be decoded at all (400). The same facts are in the
kind's OpenAPI definition, so this walks the object against it, at every depth:
`unknown field "spec.template.spec.containers[0].imagee"`.

Two more things Go's decoding does, and so this walk does too:
- `null` is the zero value: a struct field that is null is as good as absent (dropped here, so
  `spec: null` is an empty spec to defaulting and validation, not a crash), and a null map
  value or list element becomes its type's zero value (`""`, `0`, `false`, `{}`).
- an integer field has a Go type (the schema's `format`, int32 or int64): a number out of its
  range cannot be decoded, in upstream's words
  (`json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas
  of type int32`).
- a timestamp (metav1.Time, MicroTime) is decoded by time.Parse with RFC 3339: any other string
  cannot be decoded (and stored, it would stop every Go client, and our own controllers, that
  read the object).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from edgekube.api import apischema
from edgekube.api.patch import json_type

JSON = dict[str, Any]
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_TIMES = frozenset({"io.k8s.apimachinery.pkg.apis.meta.v1.Time", "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"})
# What Go's time.Parse(time.RFC3339, s) takes: upper-case T and Z, optional fractional seconds.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_OPEN = frozenset({
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
})
_SKIP_TOP = frozenset({"apiVersion", "kind"})
_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
_ZERO: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}


def check(schema: JSON, obj: JSON, *, prune: bool) -> tuple[list[str], list[str]]:
    """(unknown field paths, type errors) of `obj`; with `prune`, unknown fields are removed."""
    unknown: list[str] = []
    wrong: list[str] = []
    _object(schema, obj, "", unknown, wrong, prune, top=True, owner=str(obj.get("kind") or ""))
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


def _object(schema: JSON, value: JSON, path: str, unknown: list[str], wrong: list[str], prune: bool, *,
            top: bool = False, owner: str) -> None:
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
        if value[key] is None and not _is_open(prop):
            del value[key]  # JSON null decodes as the zero value: as good as absent
            continue
        _value(prop, value[key], sub, unknown, wrong, prune, owner=owner)


def _is_open(schema: JSON) -> bool:
    name, target = _target(schema)
    return target is None or name in _OPEN or bool(target.get("x-kubernetes-preserve-unknown-fields"))


def _zero(schema: JSON) -> Any:
    """The JSON form of a Go zero value, for a null map value or list element."""
    name, target = _target(schema)
    if target is None or name in _OPEN:
        return None
    if name == _QUANTITY:
        return "0"
    if target.get("type") == "object" or "properties" in target or target.get("type") == "array":
        return {} if target.get("type") != "array" else None
    return _ZERO.get(str(target.get("type")))


def _fill_nulls(schema: JSON, items: dict[Any, Any] | list[Any]) -> None:
    keys = range(len(items)) if isinstance(items, list) else list(items)
    for k in keys:
        if items[k] is None:
            items[k] = _zero(schema)


def _go_path(path: str) -> str:
    """A field path as Go's JSON errors give it: names only, no list indices."""
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _value(schema: JSON, value: Any, path: str, unknown: list[str], wrong: list[str], prune: bool, *, owner: str) -> None:
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
            _fill_nulls(extra, value)
            for k, v in value.items():
                _value(extra, v, f"{path}.{k}", unknown, wrong, prune, owner=owner)
        else:
            _object(target, value, path, unknown, wrong, prune, owner=(name or owner).rsplit(".", 1)[-1])
        return
    if want == "array":
        if not isinstance(value, list):
            wrong.append(f"{path}: expected an array, got {json_type(value)}")
            return
        items = target.get("items")
        if isinstance(items, dict):
            _fill_nulls(items, value)
            for i, v in enumerate(value):
                _value(items, v, f"{path}[{i}]", unknown, wrong, prune, owner=owner)
        return
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }.get(str(want), True)
    if not ok:
        wrong.append(f"{path}: expected {'a ' + str(want) if want != 'integer' else 'an integer'}, got {json_type(value)}")
        return
    if name in _TIMES and not _is_rfc3339(value):
        wrong.append(f'{path}: parsing time "{value}" as "2006-01-02T15:04:05Z07:00": not an RFC 3339 time')
        return
    bounds = _RANGES.get(str(target.get("format"))) if want == "integer" else None
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        wrong.append(f"json: cannot unmarshal number {value} into Go struct field {owner}.{_go_path(path)} "
                     f"of type {target['format']}")



def _is_rfc3339(text: str) -> bool:
    """Whether metav1.Time's decoder (time.Parse with RFC 3339) takes `text`: its shape, and a
    date and time that exist (no month 13, no 25 o'clock)."""
    if not _RFC3339.fullmatch(text):
        return False
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
