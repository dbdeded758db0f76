"""How upstream reports a PATCH whose result it cannot decode into the kind's Go types.

A patch is applied to the stored object and the result decoded into Go structs. When that fails
(a field of the wrong type, or an unknown field under fieldValidation=Strict), upstream answers
422 Invalid with one cause on the field `patch`: its value is the patch itself for a strategic
merge patch (printed as Go's `%+v` prints a map) or the whole patched object for JSON and merge
patches (as JSON), and its detail the decoder's own words. kubectl prints that as
`The request is invalid: patch: Invalid value: "map[metadata:map[labels:invalid]]": cannot
restore map from string`, and scripts (kubectl's own test/cmd) look for those words.

`restore_error` gives the words of upstream's unstructured converter (the decoder of strategic
merge patches) for the first value of the wrong type; the other decoders' words are Go's
encoding/json ones, which name Go types we do not have, so those keep ours.
"""

from __future__ import annotations

import json
from typing import Any

from edgekube.api import apischema, errors

JSON = dict[str, Any]

# Types with their own JSON decoders in Go: their errors are not the converter's.
_OWN_DECODERS = frozenset({
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
})


def go_value(value: Any) -> str:
    """`value` (decoded JSON) as Go's fmt prints it with %+v: maps with sorted keys."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def patch_invalid(bad_value: str, detail: str) -> errors.APIError:
    """Upstream's `NewInvalid(GroupKind{}, "", field.Invalid("patch", bad_value, detail))`."""
    quoted = json.dumps(bad_value, ensure_ascii=False)  # Go's %q, near enough for printable text
    return errors.invalid("", "", [errors.Cause("patch", f"Invalid value: {quoted}: {detail}")])


def _kind(value: Any) -> str:
    """The Go kind of a decoded JSON value, as the converter names it."""
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def _go_scalar(schema: JSON) -> str | None:
    kind = schema.get("type")
    if kind == "string":
        return "string"
    if kind == "boolean":
        return "bool"
    if kind == "integer":
        return "int32" if schema.get("format") == "int32" else "int64"
    if kind == "number":
        return "float64"
    return None


def restore_error(schema: JSON | None, value: Any) -> str | None:
    """The unstructured converter's error for the first value of `value` that does not fit
    `schema` (depth first, fields in order), or None when everything fits."""
    name = apischema.ref_name(schema) if schema is not None else None
    s = apischema.resolve(schema)
    if value is None or s is None or name in _OWN_DECODERS or s.get("x-kubernetes-preserve-unknown-fields"):
        return None
    if s.get("format") == "int-or-string":
        return None
    props = s.get("properties")
    if isinstance(props, dict):
        if not isinstance(value, dict):
            return f"cannot restore struct from: {_kind(value)}"
        for key, item in value.items():
            found = restore_error(props[key], item) if key in props else None
            if found:
                return found
        return None
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        if not isinstance(value, dict):
            return f"cannot restore map from {_kind(value)}"
        for item in value.values():
            found = restore_error(extra, item)
            if found:
                return found
        return None
    if s.get("type") == "array":
        if not isinstance(value, list):
            return f"cannot restore slice from {_kind(value)}"
        items = s.get("items")
        for item in value if isinstance(items, dict) else []:
            found = restore_error(items, item)
            if found:
                return found
        return None
    want = _go_scalar(s)
    if want is None:
        return None
    if isinstance(value, dict | list):
        return f"unrecognized type: {want}"
    fits = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "float64": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(want, (isinstance(value, int) and not isinstance(value, bool))
          or (isinstance(value, float) and value.is_integer()))
    return None if fits else f"cannot convert {_kind(value)} to {want}"
