"""Client input as a JSON tree: the one shape an object may have on its way to the store.

Every object the store keeps is read back by informers, watchers and kubectl, which all expect
JSON: string keys, JSON scalars, integers that fit 64 bits, finite numbers, a bounded depth, and
a bounded size. Python objects can hold far more (a YAML body decodes to int, float, bool and
null keys, datetimes, bytes, sets; an in-process caller can pass anything), and one such value
committed once makes every later decode of that record fail. So:

- `load_yaml(body)` decodes a YAML body as upstream's sigs.k8s.io/yaml does (go-yaml v2, then
  YAML -> JSON), but for keys: a key that is not a string (a number, a boolean, null, a list) is
  a 400 naming its field and line, where upstream would turn numbers and booleans into strings
  (`1:` and `"01":`, `true:` and `"True":` would name one key differently than written);
  timestamps stay the strings they were written as, `!!binary` is its bytes as text, `!!set` a
  map of nulls, `!!omap`/`!!pairs` lists of one-entry maps, `.inf`/`.nan` are errors; excessive
  aliasing (a "billion laughs" document) is refused with go-yaml's rule and words, before any
  expansion, and an anchor that contains itself is refused. The text is parsed by libyaml
  (PyYAML's C parser: go-yaml is a port of it, and PyYAML's pure-Python scanner takes seconds
  over a 1 MB body), so edgekube requires PyYAML built with it, as its wheels and the binary are.
- `check(value, where=...)` is the gate: it walks any tree iteratively (so no depth can blow the
  Python stack) and raises a 400 naming the first field that is not JSON (a 413 past
  `MAX_VALUES` values, which bounds the CPU any one write can cost). Decoders call it on
  what they produce; the registry calls it on everything it is about to store, with `ints=True`
  for the 64-bit integer bound (left to the end so that a built-in kind's own int32/int64 check
  can name the Go field first).
- `check_size(obj, ...)`: what the store refuses, as etcd refuses a request over 1.5 MiB (by
  default): upstream answers that with a bare 500 (kubernetes#112152); it is the client's
  object, so here it is a 413 naming the object and the limit.

`MAX_DEPTH` is far below upstream's 10,000 (Go's JSON and go-yaml limits): the response encoder
(orjson) stops at 255 levels and the store's msgpack at 511, and the registry's walkers recurse
once or twice per level. Real objects (a Deployment's deepest field is about 10 levels, a large
CRD schema a few dozen) stay well inside.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from edgekube.api import errors
from edgekube.store import records

MAX_DEPTH = 128
# Values (scalars and containers) in one object. Every write walks, copies and validates its
# object in Python on the event loop, at about a microsecond per value and step; a 3 MiB body of
# `[0,0,0,...]` is 1.5 million values. Objects the store can hold stay far below this (a map's
# every key is also listed in managedFields, so 1.5 MiB holds some 100,000 keys).
MAX_VALUES = 250_000
# etcd's default --max-request-bytes: upstream cannot store a larger object either.
MAX_OBJECT_BYTES = 1536 * 1024
_INT64 = (-(1 << 63), (1 << 63) - 1)

# go-yaml v2's alias budget (decode.go, allowedAliasRatio): up to 99% of the decoded nodes may
# come from alias expansion in small documents, scaling down to 10% at 4,000,000 nodes.
_ALIAS_LOW = 400_000
_ALIAS_HIGH = 4_000_000


def _allowed_alias_ratio(decoded: int) -> float:
    if decoded <= _ALIAS_LOW:
        return 0.99
    if decoded >= _ALIAS_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_LOW) / (_ALIAS_HIGH - _ALIAS_LOW)


class YAMLError(ValueError):
    """A YAML document that has no JSON form (the message is upstream's, without its prefix)."""


# --- the gate --------------------------------------------------------------------------------


def _path(parent: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check(value: Any, *, where: str, ints: bool = False) -> None:
    """Raise a 400 naming the first place in `value` that is not JSON, or a 413 when it holds
    more than `MAX_VALUES` values (see the module doc)."""
    problem = find_problem(value, ints=ints)
    if problem is not None:
        code, path, what = problem
        if len(path) > 120:  # a path hundreds of levels deep says nothing more than its ends
            path = f"{path[:60]}...{path[-40:]}"
        text = f"{where}: {path + ': ' if path else ''}{what}"
        raise errors.bad_request(text) if code == 400 else errors.APIError(code, "RequestEntityTooLarge", text)


def find_problem(value: Any, *, ints: bool = False) -> tuple[int, str, str] | None:
    """(HTTP code, field path, what is wrong) for the first non-JSON place in `value`, or None."""
    # Each entry: (value, depth, its place), a place being (key, parent's place): the path
    # string is only built for the answer, not for every one of a large object's values.
    stack: list[tuple[Any, int, Any]] = [(value, 1, None)]
    seen = 0
    while stack:
        node, depth, place = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return 413, "", f"more than {MAX_VALUES} values: too large to handle in one request"
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                return 400, _place(place), f"nesting depth exceeds {MAX_DEPTH} levels"
            for k, v in node.items():
                if not isinstance(k, str):
                    return 400, _place(place), f"map key {k!r} is a {_type_name(k)}: object keys must be strings"
                stack.append((v, depth + 1, (k, place)))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                return 400, _place(place), f"nesting depth exceeds {MAX_DEPTH} levels"
            stack.extend((v, depth + 1, (i, place)) for i, v in enumerate(node))
        elif isinstance(node, str) or node is None or isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if ints and not _INT64[0] <= node <= _INT64[1]:
                return 400, _place(place), f"integer {node} is out of range: integers must fit 64 bits"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return 400, _place(place), f"unsupported value: {node} (JSON has no infinities or NaN)"
        else:
            return 400, _place(place), f"a {type(node).__name__} is not a JSON value"
    return None


def _place(place: Any) -> str:
    keys: list[Any] = []
    while place is not None:
        key, place = place
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = _path(path, key)
    return path


def check_size(obj: Any, *, plural: str, name: str) -> None:
    """Refuse an object whose stored encoding is over `MAX_OBJECT_BYTES` (413)."""
    size = len(records.encode_in_pieces(obj))  # a large one in pieces (see `records`)
    if size > MAX_OBJECT_BYTES:
        raise errors.APIError(
            413, "RequestEntityTooLarge",
            f'{plural} "{name}" is too large to store: {size} bytes encoded, the limit is '
            f"{MAX_OBJECT_BYTES} bytes (1.5 MiB, as etcd's); keep large data out of API objects",
        )


# --- YAML as upstream reads it ---------------------------------------------------------------


class _Loader(yaml.CSafeLoader):
    """libyaml's parser (go-yaml is a port of it; PyYAML's own, in Python, reads a 1 MB body in
    seconds) with go-yaml v2's view of scalars and tags. libyaml refuses nesting past 1000
    levels as it parses, so its composer's recursion stays bounded; `_check_graph` then holds
    the document to `MAX_DEPTH` before anything is constructed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Keys become JSON keys as they are read, as sigs.k8s.io/yaml converts them (so `1`
        # and `true` stay two keys, where a Python dict would merge them).
        self.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _json_key(self.construct_object(key_node, deep=True), key_node)
            out[key] = self.construct_object(value_node, deep=deep)
        return out


class _BadKey:
    """A key that is not a string, kept until the conversion knows its field path."""

    def __init__(self, key: Any, node: yaml.Node) -> None:
        where = f"(line {node.start_mark.line + 1}, column {node.start_mark.column + 1})"
        if isinstance(key, bool | int | float):
            # sigs.k8s.io/yaml would turn it into a string; edgekube refuses it instead, so that
            # what is stored is what was meant (`1:` and `"01":` are different keys to a reader).
            kind = "boolean" if isinstance(key, bool) else "number"
            self.text = (f"map key {node.value!r} is a {kind}, not a string {where}: "
                         f"quote it (\"{node.value}\": ...)")
        else:
            self.text = f"unsupported map key of type: {_type_name(key)}, key: {key!r} {where}"


def _json_key(key: Any, node: yaml.Node) -> Any:
    """Object keys must be strings, as in JSON: anything else (a number, a boolean, null, a
    list) is refused with its field path and line, never stored (issue 13: a stored non-string
    key once stopped the server at every boot)."""
    if isinstance(key, str):
        return key
    return _BadKey(key, node)


# Plain scalars resolve as in go-yaml v2, not PyYAML: YAML 1.1's base-60 numbers (`22:22`, 1342
# for PyYAML) stay strings, and `1e3` is a float.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float"))]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+))$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _scalar_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _binary(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raw = yaml.SafeLoader.construct_yaml_binary(loader, node)  # type: ignore[arg-type]
    # go-yaml v2 keeps the decoded bytes as a Go string; JSON then writes invalid UTF-8 as U+FFFD.
    return raw.decode("utf-8", errors="replace")


def _set(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_mapping(node)  # type: ignore[arg-type]


def _pairs(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # go-yaml v2 ignores the tag of a collection: !!omap/!!pairs are the sequence they spell.
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return _by_kind(loader, node)


def _by_kind(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # An unknown tag: go-yaml v2 decodes the node as if untagged.
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _scalar_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _binary)
_Loader.add_constructor("tag:yaml.org,2002:set", _set)
_Loader.add_constructor("tag:yaml.org,2002:omap", _pairs)
_Loader.add_constructor("tag:yaml.org,2002:pairs", _pairs)
_Loader.add_constructor(None, _by_kind)


def _may_alias(body: bytes | str) -> bool:
    """Whether the text can hold an alias at all (an anchor `&a` and an alias `*a`): most
    bodies cannot, and their graph is a tree whose depth `_to_json` bounds as it copies it."""
    if isinstance(body, str):
        return "&" in body and "*" in body
    return b"&" in body and b"*" in body


def _check_graph(root: yaml.Node) -> None:
    """The composed document's depth, and go-yaml v2's excessive-aliasing rule counted on the
    graph (where an alias is the anchored node itself) without expanding anything."""
    expanded: dict[int, int] = {}  # id(node) -> node count once fully expanded
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in _children(node))
            continue
        if key in expanded:
            continue
        if key in open_:
            raise YAMLError("yaml: anchor value contains itself")
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                raise YAMLError("yaml: anchor value contains itself")
            if id(child) not in expanded:
                stack.append((child, False))
    # Walk in document order: a node met again is an alias, and all it expands to is aliased.
    decoded = aliased = 0
    seen: set[int] = set()
    walk: list[tuple[yaml.Node, int]] = [(root, 1)]
    while walk:
        node, depth = walk.pop()
        if id(node) in seen:
            decoded += 1 + expanded[id(node)]
            aliased += expanded[id(node)]
            continue
        if depth > MAX_DEPTH and isinstance(node, yaml.CollectionNode):
            raise YAMLError(f"yaml: exceeded max depth of {MAX_DEPTH}")
        seen.add(id(node))
        decoded += 1
        walk.extend((child, depth + 1) for child in reversed(_children(node)))
    if aliased > 100 and decoded > 1000 and aliased / decoded > _allowed_alias_ratio(decoded):
        raise YAMLError("yaml: document contains excessive aliasing")
    if decoded > MAX_VALUES:
        # Within go-yaml's ratio a few hundred bytes can still expand to ~400,000 values:
        # refused here, before the expansion costs the time the gate exists to bound.
        raise YAMLError(f"yaml: document expands to more than {MAX_VALUES} values")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _to_json(value: Any, path: str, depth: int) -> Any:
    """A fresh JSON tree from a constructed YAML value (shared aliases become copies)."""
    if isinstance(value, dict | list) and depth > MAX_DEPTH:
        # Aliases can nest deeper than the text that was composed.
        raise YAMLError(f"yaml: exceeded max depth of {MAX_DEPTH} (at {path or '<root>'})")
    if isinstance(value, dict):
        for k in value:
            if isinstance(k, _BadKey):
                raise YAMLError(f"{k.text} at {path or '<root>'}")
        return {k: _to_json(v, _path(path, k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v, _path(path, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise YAMLError(f"json: unsupported value: {'NaN' if math.isnan(value) else ('+Inf' if value > 0 else '-Inf')} (at {path or '<root>'})")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value < (1 << 64):
        # Past uint64, go-yaml resolves the digits as a float64.
        return float(value)
    return value


def load_yaml(body: bytes | str) -> Any:
    """One YAML document as JSON, the way kube-apiserver converts a YAML body (module doc)."""
    loader = _Loader(body)
    try:
        node = _next_node(loader, single=True)
        return None if node is None else _document(loader, node, aliased=_may_alias(body))
    finally:
        loader.dispose()


def load_yaml_all(body: bytes | str) -> list[Any]:
    """Every document of a YAML stream (`---` between them, as `kubectl apply -f` reads a file),
    each as `load_yaml` converts one, with the same bounds; empty documents are left out."""
    loader = _Loader(body)
    aliased = _may_alias(body)
    out: list[Any] = []
    try:
        while (node := _next_node(loader, single=False)) is not None:
            value = _document(loader, node, aliased=aliased)
            if value is not None:
                out.append(value)
    finally:
        loader.dispose()
    return out


def _next_node(loader: _Loader, *, single: bool) -> yaml.Node | None:
    try:
        if single:
            return loader.get_single_node()
        return loader.get_node() if loader.check_node() else None
    except yaml.YAMLError as exc:
        if "exceeded maximum nesting depth" in str(exc):  # libyaml's own bound, past ours
            raise YAMLError(f"yaml: exceeded max depth of {MAX_DEPTH}") from None
        raise


def _document(loader: _Loader, node: yaml.Node, *, aliased: bool) -> Any:
    if aliased:
        _check_graph(node)
    return _to_json(loader.construct_document(node), "", 1)
