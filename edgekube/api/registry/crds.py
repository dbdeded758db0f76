"""CustomResourceDefinitions: what a CRD serves, and the structural-schema rules for its objects.

- `served(crd)`: one `CustomResource` per served version of a CRD that is accepted; the registry
  turns each into a `ResourceInfo` in the catalog, so discovery, OpenAPI, the REST verbs and
  watch serve custom kinds like built-in ones.
- `defaults(crd)`, `validate(crd, old)`, `status(crd)`: the CRD object itself (upstream's
  apiextensions defaults and validation; NamesAccepted and Established conditions).
- `prune`, `apply_defaults`, `validate_object`: a custom object against its version's
  `openAPIV3Schema`: unknown fields dropped unless `x-kubernetes-preserve-unknown-fields`,
  `default`s filled in, types, required fields, enums, bounds, patterns and formats checked.
- `jsonpath`: the subset of kubectl's JSONPath used by `additionalPrinterColumns` and the scale
  subresource's paths.

`pattern`s are Go regular expressions upstream (RE2: linear in the input, no backreferences or
lookaround). Python's `re` backtracks, so one pattern with nested quantifiers and a 30-character
value could hold the event loop for minutes: patterns are compiled and run by RE2 (google-re2),
and a pattern RE2 cannot compile is refused when the CRD is written, in upstream's words. Where
no RE2 build exists for the platform (armv7 has no wheel), patterns are checked for nothing
rather than run by a backtracking engine, and the server logs that once.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson

try:
    import re2
except ImportError:  # pragma: no cover - platforms without a google-re2 wheel
    re2 = None

from edgekube.api.errors import Cause
from edgekube.api.registry import crdrules

JSON = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_VERSION = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
log = logging.getLogger(__name__)
# Schema keywords that hold subschemas: by name, in a list, or as the schema itself.
_SUB_BY_NAME = ("properties", "patternProperties", "definitions", "dependencies")
_SUB_LISTS = ("allOf", "anyOf", "oneOf")
_SUB_ONE = ("items", "additionalProperties", "additionalItems", "not")


class PatternError(ValueError):
    pass


# RE2's error texts where Go's regexp/syntax words the same error differently.
_GO_REGEXP_ERRORS = {
    "no argument for repetition operator": "missing argument to repetition operator",
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "trailing \\": "trailing backslash at end of expression",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid named capture group": "invalid named capture",
    "pattern too large - compile failed": "expression too large",
}


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """A compiled RE2 pattern (Go's regexp syntax and linear-time matching), or None where this
    platform has no RE2; PatternError with RE2's words for a pattern Go would refuse."""
    if re2 is None:
        _warn_no_re2()
        return None
    options = re2.Options()
    options.log_errors = False  # refusals are answered to the client, not printed on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else str(exc)
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        # RE2 says "no argument for repetition operator: +", Go's regexp (whose words upstream
        # answers) "missing argument to repetition operator: `+`".
        what, sep, fragment = text.rpartition(": ")
        if not sep:
            what = text
        what = _GO_REGEXP_ERRORS.get(what, what)
        raise PatternError(f"{what}: `{fragment}`" if sep else what) from None


@functools.cache
def _warn_no_re2() -> None:
    log.warning("no RE2 regular-expression engine on this platform (google-re2): CRD `pattern` "
                "constraints are not enforced")


def _pattern_causes(schema: Any, path: str) -> list[Cause]:
    """Every `pattern` of a CRD schema that Go's regexp would not compile."""
    out: list[Cause] = []
    stack: list[tuple[Any, str]] = [(schema, path)]
    while stack:
        node, where = stack.pop()
        if not isinstance(node, dict):
            continue
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                compile_pattern(pattern)
            except PatternError as exc:
                out.append(Cause(f"{where}.pattern", f"Invalid value: {orjson.dumps(pattern).decode()}: must be a valid "
                                 f"regular expression, but isn't: error parsing regexp: {exc}"))
        for key in _SUB_BY_NAME:
            subs = node.get(key)
            if isinstance(subs, dict):
                stack.extend((v, f"{where}.{key}[{k}]") for k, v in subs.items())
        for key in _SUB_LISTS:
            subs = node.get(key)
            if isinstance(subs, list):
                stack.extend((v, f"{where}.{key}[{i}]") for i, v in enumerate(subs))
        for key in _SUB_ONE:
            stack.append((node.get(key), f"{where}.{key}"))
    return out


@dataclasses.dataclass(frozen=True)
class CustomResource:
    """One served version of a CRD."""

    crd_name: str
    group: str
    version: str
    storage_version: str
    kind: str
    plural: str
    singular: str
    list_kind: str
    namespaced: bool
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    schema: JSON | None = dataclasses.field(compare=False, hash=False)
    printer_columns: tuple[JSON, ...] = dataclasses.field(default=(), compare=False, hash=False)
    status: bool = False
    scale: JSON | None = dataclasses.field(default=None, compare=False, hash=False)


# --- the CRD object -------------------------------------------------------------------------


def defaults(crd: JSON) -> None:
    spec = crd.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    names = spec.setdefault("names", {})
    if isinstance(names, dict):
        kind = names.get("kind")
        if isinstance(kind, str) and kind:
            names.setdefault("singular", kind.lower())
            names.setdefault("listKind", kind + "List")
    conversion = spec.setdefault("conversion", {})
    if isinstance(conversion, dict):
        conversion.setdefault("strategy", "None")
    meta = crd.setdefault("metadata", {})
    finalizers = meta.get("finalizers") or []
    if CLEANUP_FINALIZER not in finalizers and not meta.get("deletionTimestamp"):
        meta["finalizers"] = [*finalizers, CLEANUP_FINALIZER]


def validate(crd: JSON, old: JSON | None) -> list[Cause]:
    out: list[Cause] = []
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "Required value", "FieldValueRequired")]
    group = spec.get("group")
    raw_names = spec.get("names")
    names: JSON = raw_names if isinstance(raw_names, dict) else {}
    plural = names.get("plural")
    if not group:
        out.append(Cause("spec.group", "Required value", "FieldValueRequired"))
    elif not isinstance(group, str) or "." not in group or not _DNS1123_SUBDOMAIN.match(group):
        out.append(Cause("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot'))
    if not plural:
        out.append(Cause("spec.names.plural", "Required value", "FieldValueRequired"))
    elif not isinstance(plural, str) or not _DNS1123_LABEL.match(plural):
        out.append(Cause("spec.names.plural", f'Invalid value: "{plural}": a lowercase RFC 1123 label is required'))
    kind = names.get("kind")
    if not kind:
        out.append(Cause("spec.names.kind", "Required value", "FieldValueRequired"))
    elif not isinstance(kind, str) or not _KIND.match(kind):
        out.append(Cause("spec.names.kind", f'Invalid value: "{kind}": must be a valid kind name'))
    for field in ("singular",):
        value = names.get(field)
        if value is not None and (not isinstance(value, str) or not _DNS1123_LABEL.match(value)):
            out.append(Cause(f"spec.names.{field}", f'Invalid value: "{value}": a lowercase RFC 1123 label is required'))
    for i, short in enumerate(names.get("shortNames") or []):
        if not isinstance(short, str) or not _DNS1123_LABEL.match(short):
            out.append(Cause(f"spec.names.shortNames[{i}]", f'Invalid value: "{short}": a lowercase RFC 1123 label is required'))
    name = (crd.get("metadata") or {}).get("name")
    if plural and group and name != f"{plural}.{group}":
        out.append(Cause("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        out.append(Cause("spec.scope", f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"', "FieldValueNotSupported"))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        out.append(Cause("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
        return out
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if len(storage) != 1:
        out.append(Cause("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    if not any(isinstance(v, dict) and v.get("served") for v in versions):
        out.append(Cause("spec.versions", "Invalid value: must have at least one version marked as served"))
    seen: set[str] = set()
    for i, v in enumerate(versions):
        if not isinstance(v, dict):
            continue
        vname = v.get("name")
        if not isinstance(vname, str) or not _VERSION.match(vname):
            out.append(Cause(f"spec.versions[{i}].name", f'Invalid value: "{vname}": a DNS-1035 label is required'))
        elif vname in seen:
            out.append(Cause(f"spec.versions[{i}].name", f'Duplicate value: "{vname}"', "FieldValueDuplicate"))
        seen.add(str(vname))
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            out.append(Cause(f"spec.versions[{i}].schema.openAPIV3Schema", "Required value: schemas are required", "FieldValueRequired"))
        elif schema.get("type") != "object":
            out.append(Cause(f"spec.versions[{i}].schema.openAPIV3Schema.type", 'Required value: must be "object" at the root', "FieldValueRequired"))
        out.extend(_pattern_causes(schema, f"spec.versions[{i}].schema.openAPIV3Schema"))
        out.extend(crdrules.compile_causes(schema, f"spec.versions[{i}].schema.openAPIV3Schema"))
        for j, col in enumerate(v.get("additionalPrinterColumns") or []):
            if not isinstance(col, dict) or not col.get("name") or not col.get("jsonPath"):
                out.append(Cause(f"spec.versions[{i}].additionalPrinterColumns[{j}]", "Required value: name and jsonPath are required", "FieldValueRequired"))
            elif col.get("type") not in ("integer", "number", "string", "boolean", "date"):
                out.append(Cause(f"spec.versions[{i}].additionalPrinterColumns[{j}].type",
                                 f'Unsupported value: "{col.get("type")}": supported values: "boolean", "date", "integer", "number", "string"',
                                 "FieldValueNotSupported"))
    if old is not None:
        ospec = old.get("spec") or {}
        if ospec.get("group") != group:
            out.append(Cause("spec.group", "Invalid value: field is immutable"))
        if (ospec.get("names") or {}).get("plural") != plural:
            out.append(Cause("spec.names.plural", "Invalid value: field is immutable"))
        if ospec.get("scope") != scope:
            out.append(Cause("spec.scope", "Invalid value: field is immutable"))
    return out


def status(crd: JSON, *, now: str, accepted: bool, conflict: str = "") -> JSON:
    """The status edgekube's CRD handling keeps: accepted names, conditions, stored versions."""
    spec = crd.get("spec") or {}
    old = crd.get("status") or {}
    stored = list(old.get("storedVersions") or [])
    for v in spec.get("versions") or []:
        # Worked out before validation (a nameless version is refused right after): no KeyError.
        if isinstance(v, dict) and v.get("storage") and isinstance(v.get("name"), str) and v["name"] not in stored:
            stored.append(v["name"])
    old_conditions = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}

    def cond(ctype: str, ok: bool, reason: str, message: str) -> JSON:
        value = "True" if ok else "False"
        prev = old_conditions.get(ctype)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else now
        return {"type": ctype, "status": value, "lastTransitionTime": since, "reason": reason, "message": message}

    names = dict(spec.get("names") or {})
    conditions = [
        cond("NamesAccepted", accepted, "NoConflicts" if accepted else "NameConflict",
             "no conflicts found" if accepted else conflict),
        cond("Established", accepted, "InitialNamesAccepted" if accepted else "NotAccepted",
             "the initial names have been accepted" if accepted else "not all names are accepted"),
    ]
    if (crd.get("metadata") or {}).get("deletionTimestamp"):
        conditions.append(cond("Terminating", True, "InstanceDeletionInProgress", "CustomResource deletion is in progress"))
    return {"acceptedNames": names if accepted else dict(old.get("acceptedNames") or {}),
            "conditions": conditions, "storedVersions": stored}


def served(crd: JSON) -> list[CustomResource]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    storage = next((v.get("name") for v in spec.get("versions") or [] if v.get("storage")), "")
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served"):
            continue
        sub = v.get("subresources") or {}
        out.append(CustomResource(
            crd_name=(crd.get("metadata") or {}).get("name", ""),
            group=spec.get("group", ""),
            version=v.get("name", ""),
            storage_version=str(storage),
            kind=names.get("kind", ""),
            plural=names.get("plural", ""),
            singular=names.get("singular") or str(names.get("kind", "")).lower(),
            list_kind=names.get("listKind") or f"{names.get('kind', '')}List",
            namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            schema=(v.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
            status="status" in sub,
            scale=sub.get("scale"),
        ))
    return out


# --- custom objects against their schema ----------------------------------------------------

_META_KEYS = ("apiVersion", "kind", "metadata")


def _props(schema: JSON) -> JSON:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def _preserves(schema: JSON) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or bool(schema.get("x-kubernetes-embedded-resource"))


def unknown_fields(schema: JSON | None, obj: JSON) -> list[str]:
    """Paths of fields the schema does not know (what pruning would drop)."""
    if schema is None:
        return []
    out: list[str] = []
    for key, value in obj.items():
        if key in _META_KEYS:
            continue
        _unknown(_props(schema).get(key), value, key, schema, out)
    return out


def _unknown(schema: JSON | None, value: Any, path: str, parent: JSON, out: list[str]) -> None:
    if schema is None:
        if not _preserves(parent) and not isinstance(parent.get("additionalProperties"), dict | bool):
            out.append(path)
        return
    if isinstance(value, dict):
        if _preserves(schema) and not _props(schema):
            return
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            child = _props(schema).get(k)
            if child is None and isinstance(extra, dict):
                child = extra
            if child is None and (extra is True or _preserves(schema)):
                continue
            _unknown(child, v, f"{path}.{k}", schema, out)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _unknown(items, v, f"{path}[{i}]", schema, out)


def prune(schema: JSON | None, obj: JSON) -> None:
    """Drop fields the schema does not know, in place."""
    if schema is None:
        return
    for key in list(obj):
        if key in _META_KEYS:
            continue
        child = _props(schema).get(key)
        if child is None:
            if not _preserves(schema):
                del obj[key]
            continue
        obj[key] = _prune(child, obj[key])


def _prune(schema: JSON, value: Any) -> Any:
    if isinstance(value, dict):
        props = _props(schema)
        extra = schema.get("additionalProperties")
        if _preserves(schema) and not props and not isinstance(extra, dict):
            return value
        for k in list(value):
            child = props.get(k)
            if child is None and isinstance(extra, dict):
                child = extra
            if child is None:
                if not (extra is True or _preserves(schema)):
                    del value[k]
                continue
            value[k] = _prune(child, value[k])
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune(items, v) for v in value]
    return value


def apply_defaults(schema: JSON | None, obj: JSON) -> None:
    if schema is None:
        return
    _defaults(schema, obj)


def _defaults(schema: JSON, value: Any) -> None:
    if isinstance(value, dict):
        for k, child in _props(schema).items():
            if k not in value and isinstance(child, dict) and "default" in child:
                value[k] = copy.deepcopy(child["default"])
            if k in value and isinstance(child, dict):
                _defaults(child, value[k])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for k, v in value.items():
                if k not in _props(schema):
                    _defaults(extra, v)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for v in value:
                _defaults(items, v)


_INT_FORMATS = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
_FORMATS = {
    "date-time": lambda s: bool(re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", s)),
    "date": lambda s: bool(re.match(r"^\d{4}-\d{2}-\d{2}$", s)),
    "byte": lambda s: bool(re.match(r"^[A-Za-z0-9+/]*={0,2}$", s)) and len(s) % 4 == 0,
}


def validate_object(schema: JSON | None, obj: JSON) -> list[Cause]:
    """Causes for a custom object that breaks its schema (metadata is checked elsewhere)."""
    if schema is None:
        return []
    out: list[Cause] = []
    body = {k: v for k, v in obj.items() if k not in _META_KEYS}
    for key in schema.get("required") or []:
        if key not in _META_KEYS and key not in body:
            out.append(Cause(key, "Required value", "FieldValueRequired"))
    for key, value in body.items():
        child = _props(schema).get(key)
        if isinstance(child, dict):
            _check(child, value, key, out)
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check(schema: JSON, value: Any, path: str, out: list[Cause]) -> None:
    if value is None:
        if not schema.get("nullable"):
            out.append(Cause(path, f'Invalid value: "null": {path} in body must be of type {schema.get("type", "object")}: "null"', "FieldValueTypeInvalid"))
        return
    want = schema.get("type")
    have = _type_name(value)
    if schema.get("x-kubernetes-int-or-string"):
        if have not in ("integer", "string"):
            out.append(Cause(path, f'Invalid value: "{have}": {path} in body must be of type integer-or-string: "{have}"', "FieldValueTypeInvalid"))
            return
    elif want and not (want == have or (want == "number" and have == "integer")):
        out.append(Cause(path, f'Invalid value: "{have}": {path} in body must be of type {want}: "{have}"', "FieldValueTypeInvalid"))
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        allowed = ", ".join(f'"{e}"' if isinstance(e, str) else str(e) for e in enum)
        out.append(Cause(path, f"Unsupported value: {_show(value)}: supported values: {allowed}", "FieldValueNotSupported"))
    bounds = _INT_FORMATS.get(str(schema.get("format"))) if want == "integer" else None
    if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
        out.append(Cause(path, f'Invalid value: {value}: {path} in body must be of type integer({schema["format"]}): "{value}"',
                         "FieldValueTypeInvalid"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, int | float) and (value < lo or (schema.get("exclusiveMinimum") and value == lo)):
            out.append(Cause(path, f"Invalid value: {value}: {path} in body should be greater than or equal to {lo}"))
        if isinstance(hi, int | float) and (value > hi or (schema.get("exclusiveMaximum") and value == hi)):
            out.append(Cause(path, f"Invalid value: {value}: {path} in body should be less than or equal to {hi}"))
    if isinstance(value, str):
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            out.append(Cause(path, f'Too long: may not be more than {schema["maxLength"]} bytes', "FieldValueTooLong"))
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            out.append(Cause(path, f'Invalid value: "{value}": {path} in body should be at least {schema["minLength"]} chars long'))
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                compiled = compile_pattern(pattern)
            except PatternError:
                compiled = None  # refused when the CRD was written; an older one is not enforced
            if compiled is not None and compiled.search(value) is None:
                out.append(Cause(path, f'Invalid value: "{value}": {path} in body should match \'{pattern}\''))
        fmt = _FORMATS.get(str(schema.get("format")))
        if fmt is not None and not fmt(value):
            out.append(Cause(path, f'Invalid value: "{value}": {path} in body must be of type {schema.get("format")}: "{value}"'))
    if isinstance(value, list):
        if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
            out.append(Cause(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", "FieldValueTooMany"))
        if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
            out.append(Cause(path, f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"))
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _check(items, v, f"{path}[{i}]", out)
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                out.append(Cause(f"{path}.{key}", "Required value", "FieldValueRequired"))
        props = _props(schema)
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            child = props.get(k)
            if child is None and isinstance(extra, dict):
                child = extra
            if isinstance(child, dict):
                _check(child, v, f"{path}.{k}", out)
        if isinstance(schema.get("maxProperties"), int) and len(value) > schema["maxProperties"]:
            out.append(Cause(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items", "FieldValueTooMany"))


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


# --- JSONPath (the subset printer columns and scale paths use) -------------------------------

_SEGMENT = re.compile(r"\.([A-Za-z0-9_\-/]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]|\[['\"]([^'\"]+)['\"]\]")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values at `path` (`.spec.replicas`, `.status.conditions[?(@.type=="Ready")].status`,
    `.items[*].name`); an empty list when nothing is there."""
    expr = path.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    if not expr.startswith((".", "[")):
        expr = "." + expr
    current = [obj]
    pos = 0
    while pos < len(expr):
        m = _SEGMENT.match(expr, pos)
        if m is None:
            return []
        pos = m.end()
        field, index, filter_key, filter_value, quoted = m.groups()
        nxt: list[Any] = []
        for value in current:
            nxt.extend(_step(value, field or quoted, index, filter_key, filter_value))
        current = nxt
    return current


def _step(value: Any, field: str | None, index: str | None, fkey: str | None, fvalue: str | None) -> Iterator[Any]:
    if field is not None:
        if isinstance(value, dict) and field in value:
            yield value[field]
        return
    if index is not None:
        if isinstance(value, list):
            if index == "*":
                yield from value
            elif int(index) < len(value):
                yield value[int(index)]
        elif isinstance(value, dict) and index == "*":
            yield from value.values()
        return
    if fkey is not None and isinstance(value, list):
        for item in value:
            got = jsonpath(item, "." + fkey)
            if got and str(got[0]) == fvalue:
                yield item


def printer_cell(obj: JSON, column: JSON, now: datetime.datetime) -> Any:
    values = jsonpath(obj, str(column.get("jsonPath", "")))
    if not values:
        return None
    value = values[0]
    ctype = column.get("type")
    if ctype == "date" and isinstance(value, str):
        return value
    if ctype == "integer" and isinstance(value, int | float):
        return int(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value
