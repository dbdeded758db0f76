"""Server-side apply and `metadata.managedFields`, as upstream's structured-merge-diff does them.

A *field set* is a set of paths into an object. Path elements, as in `fieldsV1`:
`("f", name)` a field or map key, `("k", '{"name":"web"}')` an element of an associative list
(listType=map) by its keys, `("v", '"a"')` an element of a set (listType=set), `("i", n)` an
element of a list upstream treats by position. Which one a list gets comes from the schema
(`apischema` for built-in kinds, a CRD's `openAPIV3Schema` for custom ones): `x-kubernetes-list-type`,
or, as upstream's schema conversion does, `patchStrategy: merge` with a merge key (a map list)
or without one (a set); every other list is atomic (owned and replaced whole).

- `apply(live, config, ...)`: merge an applied configuration into the live object; fields the
  same manager applied before and no longer does are removed unless another manager owns them;
  a field another manager owns whose value would change is a conflict (409) unless `force`,
  which takes ownership away from that manager.
- `track_update(old, new, ...)`: an ordinary create, update or patch: the manager owns what it
  added or changed, others lose what it changed or removed.

Entries are one per (manager, operation, subresource); `time` moves when an entry's set changes.

Moving from client-side to server-side apply (upstream's lastAppliedManager and
lastAppliedUpdater, for the manager `kubectl` only, as upstream): an apply by `kubectl` that
conflicts only on fields its last client-side apply set (in the
`kubectl.kubernetes.io/last-applied-configuration` annotation, values unchanged since) takes them
over as if forced, and every apply by `kubectl` keeps that annotation, when the object has one,
equal to the configuration applied, so that `kubectl apply` without `--server-side` still works
afterwards. kubectl then moves the `kubectl-client-side-apply` entry into its own by patching
`managedFields` (a write that sends managedFields sets them, see `track_update`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import orjson

from edgekube._cogs import pieces
from edgekube.api import apischema

JSON = dict[str, Any]
PathElement = tuple[str, Any]
Path = tuple[PathElement, ...]
Schema = JSON | None

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# The only manager whose applies upgrade from client-side apply (upstream's rule; another
# --field-manager opts out).
_UPGRADING_MANAGER = "kubectl"
# Go's encoding/json escapes these inside strings; the annotation is written as Go writes it.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

# Fields the server owns: never tracked, never merged from an applied configuration.
_IGNORED_META = frozenset({
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds",
})


@dataclasses.dataclass(frozen=True)
class Conflict:
    manager: str
    api_version: str
    path: Path

    def field(self) -> str:
        return render_path(self.path)


class ConflictError(Exception):
    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        n = len(conflicts)
        lines = [f'conflict with "{c.manager}" using {c.api_version}: {c.field()}' for c in conflicts]
        if n == 1:
            message = f"Apply failed with 1 conflict: {lines[0]}"
        else:
            message = f"Apply failed with {n} conflicts: " + "\n".join(lines)
        super().__init__(message)


# --- schema walking -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shape:
    """How a value is tracked: 'struct' (known fields), 'map' (granular keys), 'list' with a
    `list_type` ('atomic', 'map', 'set'), or 'scalar'. `child` gives the schema below a key."""

    kind: str
    list_type: str = "atomic"
    keys: tuple[str, ...] = ()
    atomic_map: bool = False


def shape(schema: Schema, value: Any) -> Shape:
    s = apischema.resolve(schema) if schema is not None else None
    if isinstance(value, dict):
        if s is not None and s.get("x-kubernetes-map-type") == "atomic":
            return Shape("map", atomic_map=True)
        if s is not None and isinstance(s.get("properties"), dict):
            return Shape("struct")
        return Shape("map")
    if isinstance(value, list):
        if schema is None:
            return Shape("list")
        own = schema  # list extensions sit on the property, next to a possible $ref
        list_type = own.get("x-kubernetes-list-type") or (s or {}).get("x-kubernetes-list-type")
        keys = own.get("x-kubernetes-list-map-keys") or (s or {}).get("x-kubernetes-list-map-keys") or []
        if not list_type:
            strategy = str(own.get("x-kubernetes-patch-strategy", ""))
            merge_key = own.get("x-kubernetes-patch-merge-key")
            if "merge" in strategy.split(","):
                list_type, keys = ("map", [merge_key]) if merge_key else ("set", [])
        if list_type == "map" and keys:
            return Shape("list", list_type="map", keys=tuple(keys))
        if list_type == "set":
            return Shape("list", list_type="set")
        return Shape("list")
    return Shape("scalar")


def child_schema(schema: Schema, key: str) -> Schema:
    if schema is None:
        return None
    return apischema.field_schema(schema, key)


def item_schema(schema: Schema) -> Schema:
    if schema is None:
        return None
    return apischema.items_schema(schema)


def _key_element(item: Any, keys: tuple[str, ...], schema: Schema) -> PathElement:
    """An associative list element by its keys; a key field left out takes its schema default
    (a container port without `protocol` is the same element as one with `protocol: TCP`)."""
    if not isinstance(item, dict):
        return ("v", _canon(item))
    values: JSON = {}
    for k in keys:
        if k in item:
            values[k] = item[k]
        else:
            default = (child_schema(schema, k) or {}).get("default") if schema is not None else None
            if default is not None:
                values[k] = default
    return ("k", _canon(values))


def _canon(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _elements(value: list[Any], sh: Shape, schema: Schema = None) -> Iterator[tuple[PathElement, Any]]:
    """(path element, item) for a list's items; `schema` is the list's own schema."""
    element_schema = item_schema(schema) if sh.list_type == "map" else None
    for i, item in enumerate(value):
        if sh.list_type == "map":
            yield _key_element(item, sh.keys, element_schema), item
        elif sh.list_type == "set":
            yield ("v", _canon(item)), item
        else:
            yield ("i", i), item


# --- field sets -----------------------------------------------------------------------------


def field_set(obj: JSON, schema: Schema, *, subresource: str | None = None) -> set[Path]:
    """Every tracked path in `obj` (leaves, map keys and list elements)."""
    out: set[Path] = set()
    for key, value in _tracked_top(obj, subresource):
        _collect(value, child_schema(schema, key), (("f", key),), out)
    return out


def _tracked_top(obj: JSON, subresource: str | None) -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if subresource == "status" and key != "status":
            continue
        if subresource != "status" and key == "status":  # none, or `scale`: the spec
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IGNORED_META}
            if not value:
                continue
        yield key, value


def _collect(value: Any, schema: Schema, path: Path, out: set[Path]) -> None:
    sh = shape(schema, value)
    if sh.kind in ("struct", "map") and not sh.atomic_map:
        if not value:
            out.add(path)
            return
        for k, v in value.items():
            sub = (*path, ("f", k))
            if sh.kind == "map":
                out.add(sub)
            _collect(v, child_schema(schema, k), sub, out)
        return
    if sh.kind == "list" and sh.list_type != "atomic":
        if not value:
            out.add(path)
            return
        for pe, item in _elements(value, sh, schema):
            sub = (*path, pe)
            out.add(sub)
            if sh.list_type == "map":
                _collect(item, item_schema(schema), sub, out)
        return
    out.add(path)


def changed_paths(old: JSON, new: JSON, schema: Schema, *, subresource: str | None = None) -> tuple[set[Path], set[Path]]:
    """(added or modified, removed) paths from `old` to `new`."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    old_top = dict(_tracked_top(old, subresource))
    new_top = dict(_tracked_top(new, subresource))
    for key in old_top.keys() | new_top.keys():
        _diff(old_top.get(key, _MISSING), new_top.get(key, _MISSING), child_schema(schema, key), (("f", key),), changed, removed)
    return changed, removed


_MISSING: Any = object()


def _diff(a: Any, b: Any, schema: Schema, path: Path, changed: set[Path], removed: set[Path]) -> None:
    if b is _MISSING:
        out: set[Path] = set()
        _collect(a, schema, path, out)
        removed.update(out)
        removed.add(path)
        return
    if a is _MISSING:
        _collect(b, schema, path, changed)
        return
    if a == b:
        return
    sh = shape(schema, b)
    if type(a) is not type(b) or shape(schema, a) != sh:
        _collect(b, schema, path, changed)
        return
    if sh.kind in ("struct", "map") and not sh.atomic_map:
        if not b:
            changed.add(path)
        for k in a.keys() | b.keys():
            sub = (*path, ("f", k))
            _diff(a.get(k, _MISSING), b.get(k, _MISSING), child_schema(schema, k), sub, changed, removed)
        return
    if sh.kind == "list" and sh.list_type != "atomic":
        old_items = dict(_elements(a, sh, schema))
        new_items = dict(_elements(b, sh, schema))
        for pe in old_items.keys() | new_items.keys():
            sub = (*path, pe)
            if pe not in new_items:
                _diff(old_items[pe], _MISSING, item_schema(schema), sub, changed, removed)
            elif pe not in old_items:
                changed.add(sub)
                if sh.list_type == "map":
                    _collect(new_items[pe], item_schema(schema), sub, changed)
            elif sh.list_type == "map":
                _diff(old_items[pe], new_items[pe], item_schema(schema), sub, changed, removed)
        if not b:
            changed.add(path)
        return
    changed.add(path)


# --- fieldsV1 -------------------------------------------------------------------------------


def _element_key(pe: PathElement) -> str:
    kind, value = pe
    if kind == "f":
        return f"f:{value}"
    if kind == "i":
        return f"i:{value}"
    return f"{kind}:{value}"


def to_fields_v1(paths: set[Path]) -> JSON:
    """The fieldsV1 tree of `paths`, each node's keys sorted (as upstream writes it: "." first).

    Sorted node by node, each node's keys as strings in calls of a few thousand
    (`pieces.sorted_in_pieces`): one `sorted()` of a large object's paths (45,000 lists of
    strings) held the interpreter lock for 50 ms or more in one C call, and the event loop with
    it, although this runs on the offload worker."""
    root: JSON = {}
    for path in paths:
        node = root
        for pe in path:
            node = node.setdefault(_element_key(pe), {})
    # A path that is a member and has children gets ".": {}.
    for path in paths:
        node = root
        for pe in path:
            node = node[_element_key(pe)]
        if node and "." not in node:
            node["."] = {}
    return _sorted_tree(root)


def _sorted_tree(node: JSON) -> JSON:
    if not node:
        return node
    return {k: _sorted_tree(node[k]) for k in pieces.sorted_in_pieces(node)}


def from_fields_v1(fields: Any) -> set[Path]:
    out: set[Path] = set()
    _walk_fields(fields, (), out)
    return out


def _walk_fields(node: Any, path: Path, out: set[Path]) -> None:
    # A module function, not a closure calling itself: that closure would be a reference cycle
    # holding `out` (every path of a large object) until the cyclic collector came by.
    if not isinstance(node, dict):
        return
    if not node and path:
        out.add(path)
        return
    for key, child in node.items():
        if key == ".":
            out.add(path)
            continue
        kind, _, rest = key.partition(":")
        pe: PathElement = (kind, int(rest)) if kind == "i" and rest.isdigit() else (kind, rest)
        _walk_fields(child, (*path, pe), out)


def render_path(path: Path) -> str:
    """`.spec.template.spec.containers[name="web"].image`, as upstream prints conflicts."""
    out = []
    for kind, value in path:
        if kind == "f":
            out.append(f".{value}")
        elif kind == "k":
            try:
                keys = orjson.loads(value)
                out.append("[" + ",".join(f"{k}={_canon(v)}" for k, v in keys.items()) + "]")
            except orjson.JSONDecodeError:
                out.append(f"[{value}]")
        elif kind == "v":
            out.append(f"[={value}]")
        else:
            out.append(f"[{value}]")
    return "".join(out)


# --- managed fields entries -----------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    time: str | None
    paths: set[Path]
    subresource: str | None = None

    def key(self) -> tuple[str, str, str | None]:
        return (self.manager, self.operation, self.subresource)

    def to_json(self) -> JSON:
        out: JSON = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version}
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = to_fields_v1(self.paths)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def read_entries(obj: JSON) -> list[Entry]:
    out = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(raw, dict) or not raw.get("manager"):
            continue
        out.append(Entry(
            manager=str(raw["manager"]),
            operation=str(raw.get("operation", "Update")),
            api_version=str(raw.get("apiVersion", "")),
            time=raw.get("time"),
            paths=from_fields_v1(raw.get("fieldsV1") or {}),
            subresource=raw.get("subresource") or None,
        ))
    return out


def _write_entries(entries: list[Entry]) -> list[JSON]:
    return [e.to_json() for e in entries if e.paths]


def _entry(entries: list[Entry], key: tuple[str, str, str | None], *, api_version: str) -> Entry:
    for e in entries:
        if e.key() == key:
            return e
    e = Entry(manager=key[0], operation=key[1], api_version=api_version, time=None, paths=set(), subresource=key[2])
    entries.append(e)
    return e


def track_update(
    old: JSON | None,
    new: JSON,
    *,
    manager: str,
    api_version: str,
    schema: Schema,
    now: str,
    subresource: str | None = None,
) -> list[JSON]:
    """managedFields for `new` after an ordinary write (create when `old` is None)."""
    entries = read_entries(old) if old is not None else []
    removed: set[Path]
    if old is None:
        changed, removed = field_set(new, schema, subresource=subresource), set()
    else:
        changed, removed = changed_paths(old, new, schema, subresource=subresource)
    if changed or removed:
        lost = changed | removed
        for e in entries:
            if e.key() != (manager, "Update", subresource):
                before = len(e.paths)
                e.paths = {p for p in e.paths if not _under_any(p, lost)}
                if len(e.paths) != before:
                    e.time = now
        mine = _entry(entries, (manager, "Update", subresource), api_version=api_version)
        mine.paths = {p for p in (mine.paths | changed) if not _under_any(p, removed)}
        mine.api_version = api_version
        mine.time = now
    return _write_entries(entries)


def _under_any(path: Path, prefixes: set[Path]) -> bool:
    for i in range(len(path), 0, -1):
        if path[:i] in prefixes:
            return True
    return False


# --- apply ----------------------------------------------------------------------------------


def apply(
    live: JSON | None,
    config: JSON,
    *,
    manager: str,
    api_version: str,
    schema: Schema,
    force: bool,
    now: str,
    subresource: str | None = None,
) -> tuple[JSON, list[JSON]]:
    """(object to store, its managedFields) for applying `config` as `manager`."""
    sent = config
    config = {k: v for k, v in config.items() if k != "status" or subresource == "status"}
    applied = field_set(config, schema, subresource=subresource)
    if live is None:
        obj = copy.deepcopy(config)
        entry = Entry(manager=manager, operation="Apply", api_version=api_version, time=now, paths=applied, subresource=subresource)
        _update_last_applied(obj, sent, manager=manager)
        return obj, _write_entries([entry])
    entries = read_entries(live)
    key = (manager, "Apply", subresource)
    previous = next((e.paths for e in entries if e.key() == key), set())
    merged = _merge_top(live, config, schema, subresource)
    changed, _ = changed_paths(live, merged, schema, subresource=subresource)
    conflicts: list[Conflict] = []
    for e in entries:
        if e.key() == key:
            continue
        hit = sorted((p for p in e.paths if p in changed and p in applied), key=render_path)
        conflicts.extend(Conflict(e.manager, e.api_version, p) for p in hit)
    if conflicts and not force and manager == _UPGRADING_MANAGER:
        allowed = _last_applied_fields(live, api_version=api_version, schema=schema)
        remaining = [c for c in conflicts if c.path not in allowed]
        if remaining:
            raise ConflictError(remaining)
        force = True
    if conflicts and not force:
        raise ConflictError(conflicts)
    # Fields this manager stopped applying: removed unless someone else still owns them (or
    # something below them: a list element another manager added a field to stays).
    others: set[Path] = set()
    for e in entries:
        if e.key() != key:
            others |= e.paths
    owned_prefixes = {q[:i] for q in others for i in range(1, len(q) + 1)}
    dropped = {p for p in previous - applied if p not in owned_prefixes}
    for path in sorted(dropped, key=len):
        _remove(merged, path, schema)
    if force:
        taken = {c.path for c in conflicts}
        for e in entries:
            if e.key() != key and taken & e.paths:
                e.paths -= taken
                e.time = now
    mine = _entry(entries, key, api_version=api_version)
    if mine.paths != applied or mine.api_version != api_version:
        mine.time = now
    mine.paths = applied
    mine.api_version = api_version
    _update_last_applied(merged, sent, manager=manager)
    return merged, _write_entries(entries)


def _last_applied_fields(live: JSON, *, api_version: str, schema: Schema) -> set[Path]:
    """The fields the live object's last client-side apply set and that still hold the values
    it set (upstream's allowedConflictsFromLastApplied); empty without a usable annotation."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str) or not raw:
        return set()
    try:
        last = json.loads(raw)
    except ValueError:
        return set()
    if not isinstance(last, dict) or last.get("apiVersion") != api_version:
        return set()
    fields = field_set(last, schema)
    differing, missing = changed_paths(last, live, schema)
    return fields - differing - missing


def _update_last_applied(obj: JSON, config: JSON, *, manager: str) -> None:
    """After an apply by `kubectl`: the annotation, where the object has one, becomes the
    configuration just applied (upstream's lastAppliedUpdater, Go's JSON with a newline)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if manager != _UPGRADING_MANAGER or not isinstance(annotations, dict) or not annotations.get(LAST_APPLIED):
        return
    applied = copy.deepcopy(config)
    sent_annotations = (applied.get("metadata") or {}).get("annotations")
    if isinstance(sent_annotations, dict):
        sent_annotations.pop(LAST_APPLIED, None)
    text = json.dumps(applied, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in _GO_ESCAPES.items():
        text = text.replace(ch, esc)
    annotations[LAST_APPLIED] = text + "\n"


def _merge_top(live: JSON, config: JSON, schema: Schema, subresource: str | None) -> JSON:
    out = copy.deepcopy(live)
    for key, value in config.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "status" and subresource != "status":
            continue
        if subresource == "status" and key not in ("status", "metadata"):
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IGNORED_META}
        out[key] = merge(out.get(key, _MISSING), value, child_schema(schema, key))
    return out


def merge(live: Any, config: Any, schema: Schema) -> Any:
    """The applied `config` over `live`: structs and maps by key, map lists by their keys, sets
    by value, everything else replaced."""
    if live is _MISSING or live is None or config is None:
        return copy.deepcopy(config)
    sh = shape(schema, config)
    if sh.kind in ("struct", "map") and not sh.atomic_map and isinstance(live, dict):
        out = dict(live)
        for k, v in config.items():
            out[k] = merge(live.get(k, _MISSING), v, child_schema(schema, k))
        return out
    if sh.kind == "list" and sh.list_type != "atomic" and isinstance(live, list):
        live_items = list(_elements(live, sh, schema))
        config_items = dict(_elements(config, sh, schema))
        out_list: list[Any] = []
        seen = set()
        for pe, item in live_items:
            if pe in config_items:
                if sh.list_type == "map":
                    out_list.append(merge(item, config_items[pe], item_schema(schema)))
                else:
                    out_list.append(item)
                seen.add(pe)
            else:
                out_list.append(item)
        for pe, item in _elements(config, sh, schema):
            if pe not in seen:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(config)


def _remove(obj: Any, path: Path, schema: Schema) -> None:
    """Delete the value at `path` (a no-op when it is already gone)."""
    node = obj
    node_schema = schema
    for i, (kind, value) in enumerate(path):
        last = i == len(path) - 1
        if kind == "f":
            if not isinstance(node, dict) or value not in node:
                return
            if last:
                del node[value]
                return
            node_schema = child_schema(node_schema, value)
            node = node[value]
            continue
        if not isinstance(node, list):
            return
        sh = shape(node_schema, node)
        index = next((j for j, (pe, _) in enumerate(_elements(node, sh, node_schema)) if pe == (kind, value)), None)
        if index is None:
            return
        if last:
            del node[index]
            return
        node = node[index]
        node_schema = item_schema(node_schema)


def kind_schema(group: str, version: str, kind: str) -> Schema:
    name = apischema.kind_definition(group, version, kind)
    return apischema.definition(name) if name is not None else None

