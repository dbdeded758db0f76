"""PATCH bodies applied to stored objects: JSON patch, merge patch, strategic merge patch.

`apply_patch` is the one entry point the REST layer calls: it picks the patch flavour from the
request's media type, parses the body and returns the patched object, never touching the
original (the caller still needs it for preconditions, admission and the watch event's diff).

The three flavours, as kubectl, helm and client-go send them:

- JSON patch (RFC 6902, `application/json-patch+json`) is applied by the `jsonpatch` library.
  A malformed operation list is the client's syntax error (400); an operation that cannot be
  applied to this object (failed `test`, missing path) is answered 422 Invalid, as upstream does.
- Merge patch (RFC 7386, `application/merge-patch+json`): maps merge, null deletes, anything
  else (lists included) replaces.
- Strategic merge patch (`application/strategic-merge-patch+json`, kubectl's default) is merge
  patch plus per-field list strategies from `registry.patchmeta` (lists of containers merge by
  `name`, finalizers union) and the directives upstream defines: `$patch` (delete, replace,
  merge) on maps and list elements, `$deleteFromPrimitiveList/<field>`,
  `$setElementOrder/<field>` and `$retainKeys`. Directives are consumed here and never reach the
  stored object.

Strategic merge works on deep copies of the original and the patch and then mutates those
copies in place: simpler than building new containers at every level, and no result shares a
list or map with the caller's original.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import orjson

from edgekube._cogs import pieces
from edgekube.api import errors, jsontree
from edgekube.api.registry import patchmeta

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
SUPPORTED: tuple[str, ...] = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

_JSON_PATCH_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
# Upstream's maxJSONBytePatcherOperations: more operations is a 413.
MAX_JSON_PATCH_OPS = 10000

_PATCH = "$patch"
_GONE = object()  # a list element a strategic merge deleted, dropped when the list is done
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def apply_patch(content_type: str, original: dict[str, Any], body: bytes, *, gk: str) -> dict[str, Any]:
    """Apply a PATCH request body of media type `content_type` to `original` (a kind `gk`)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == APPLY_PATCH:
        raise errors.APIError(
            415,
            "UnsupportedMediaType",
            f"server-side apply ({APPLY_PATCH}) is not supported by this server yet; "
            f"use client-side apply (kubectl apply --server-side=false) or one of: {', '.join(SUPPORTED)}",
        )
    if media not in SUPPORTED:
        raise errors.unsupported_media_type(content_type, list(SUPPORTED))
    try:
        patch = pieces.json_loads(body)  # a large one in calls of some 32 KiB (see `pieces`)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from None
    jsontree.check(patch, where="error decoding patch")
    if media == JSON_PATCH:
        return json_patch(original, patch)
    if not isinstance(patch, dict):
        raise errors.bad_request(
            f"error decoding patch: a {media} body must be a JSON object, got {json_type(patch)}"
        )
    if media == MERGE_PATCH:
        return merge_patch(original, patch)
    return strategic_merge_patch(original, patch, meta=patchmeta.meta_for(gk))


# --- JSON patch ---------------------------------------------------------------------------------


def json_patch(original: dict[str, Any], ops: Any) -> dict[str, Any]:
    """Apply an RFC 6902 operation list to a copy of `original`."""
    _check_json_patch_ops(ops)
    # One operation at a time on a private copy, so an error can name the operation that failed.
    result: Any = copy.deepcopy(original)
    # `copy` duplicates a subtree, so a few dozen operations could double an object into
    # gigabytes: count the nodes each copy adds and stop past what the store could ever take.
    budget = jsontree.MAX_OBJECT_BYTES - _count_nodes(result, limit=jsontree.MAX_OBJECT_BYTES)
    for i, op in enumerate(ops):
        if op["op"] == "copy":
            try:
                source = jsonpatch.JsonPointer(op["from"]).resolve(result)
            except (jsonpatch.JsonPointerException, KeyError, IndexError, TypeError, ValueError):
                source = None
            budget -= _count_nodes(source, limit=budget + 1)
            if budget < 0:
                raise errors.APIError(
                    413, "RequestEntityTooLarge",
                    f"json patch operation {i} (copy from {op['from']}) makes the object too large to store",
                )
        source = f' from {op["from"]}' if "from" in op else ""
        what = f'json patch operation {i} ({op["op"]} {op["path"]}{source})'
        try:
            result = jsonpatch.JsonPatch([op]).apply(result, in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            # Checked before JsonPatchException, its base: this one is the client's syntax.
            raise errors.bad_request(f"invalid {what}: {exc}") from None
        except jsonpatch.JsonPatchTestFailed as exc:
            raise _unprocessable(f"{what} failed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise _unprocessable(f"{what} could not be applied: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            # The library lets some path mismatches escape raw (a missing "from" key, say).
            raise _unprocessable(f"{what} could not be applied: no such path ({type(exc).__name__}: {exc})") from None
    if not isinstance(result, dict):
        raise _unprocessable(f"json patch replaced the object with {json_type(result)}; it must stay a JSON object")
    return result


def _count_nodes(value: Any, *, limit: int) -> int:
    """Nodes in a JSON tree, counting no further than `limit`."""
    count = 0
    stack = [value]
    while stack and count < limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _check_json_patch_ops(ops: Any) -> None:
    if not isinstance(ops, list):
        raise errors.bad_request(
            f"error decoding patch: a json patch must be a list of operations, got {json_type(ops)}"
        )
    if len(ops) > MAX_JSON_PATCH_OPS:
        raise errors.APIError(
            413, "RequestEntityTooLarge",
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {len(ops)}",
        )
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise errors.bad_request(f"invalid json patch: operation {i} must be an object, got {json_type(op)}")
        name = op.get("op")
        if not isinstance(name, str):
            raise errors.bad_request(f'invalid json patch: operation {i} has no "op" member')
        if name not in _JSON_PATCH_OPS:
            raise errors.bad_request(
                f'invalid json patch: operation {i} has unknown op "{name}" '
                f"(expected one of {', '.join(sorted(_JSON_PATCH_OPS))})"
            )
        if not isinstance(op.get("path"), str):
            raise errors.bad_request(f'invalid json patch: operation {i} ({name}) has no string "path" member')
        if name in ("add", "replace", "test") and "value" not in op:
            raise errors.bad_request(f'invalid json patch: operation {i} ({name} {op["path"]}) has no "value" member')
        if name in ("move", "copy") and not isinstance(op.get("from"), str):
            raise errors.bad_request(f'invalid json patch: operation {i} ({name} {op["path"]}) has no string "from" member')


# --- merge patch --------------------------------------------------------------------------------


def merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch to a copy of `original`."""
    result = _merge_value(original, patch)
    if not isinstance(result, dict):  # only when patch is not an object; apply_patch rules that out
        raise errors.bad_request(f"a merge patch must be a JSON object, got {json_type(patch)}")
    return result


def _merge_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_value(result.get(key), value)
    return result


# --- strategic merge patch ----------------------------------------------------------------------


def strategic_merge_patch(
    original: dict[str, Any], patch: dict[str, Any], *, meta: patchmeta.Node | None
) -> dict[str, Any]:
    """Apply a strategic merge patch to a copy of `original`, list strategies taken from `meta`.

    With `meta` None every list is replaced whole, as a merge patch would.
    """
    if not isinstance(patch, dict):
        raise errors.bad_request(f"a strategic merge patch must be a JSON object, got {json_type(patch)}")
    merged = _smp_map(copy.deepcopy(original), copy.deepcopy(patch), meta=meta, path="")
    # `{"$patch": "delete"}` at the top deletes everything: what remains is an empty object.
    return merged if merged is not None else {}


def _smp_map(
    original: dict[str, Any], patch: dict[str, Any], *, meta: patchmeta.Node | None, path: str
) -> dict[str, Any] | None:
    """Merge `patch` into `original` in place; None means the map itself is deleted."""
    directive = patch.pop(_PATCH, None)
    if directive == "delete":
        return None
    if directive == "replace":
        return _smp_map({}, patch, meta=meta, path=path)
    if directive not in (None, "merge"):
        raise errors.bad_request(
            f'{_where(path)}: unknown $patch directive {directive!r} (expected "delete", "replace" or "merge")'
        )

    retain = patch.pop(_RETAIN_KEYS, None)
    if retain is not None:
        _retain_keys(original, patch, retain, path=path)

    orders: dict[str, list[Any]] = {}
    for key in [k for k in patch if k.startswith("$")]:
        value = patch.pop(key)
        if key.startswith(_SET_ORDER):
            field = key[len(_SET_ORDER):]
            if not isinstance(value, list):
                raise errors.bad_request(f"{_where(path)}: {key} must be a list, got {json_type(value)}")
            orders[field] = value
        elif key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            _delete_from_primitive_list(original, field, value, path=_join(path, field))
        else:
            raise errors.bad_request(f"{_where(path)}: unknown strategic merge patch directive {key!r}")

    for key, value in patch.items():
        child = meta.child(key) if meta is not None else None
        child_path = _join(path, key)
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value, meta=child, path=child_path)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _smp_list(
                current if isinstance(current, list) else [], value, meta=child, path=child_path
            )
        else:
            original[key] = value

    # `$setElementOrder` comes for every list kubectl knows about, whether or not the patch
    # changes it, so it also reorders lists the patch did not touch.
    for field, order in orders.items():
        current = original.get(field)
        if isinstance(current, list):
            child = meta.child(field) if meta is not None else None
            original[field] = _reorder(current, order, merge_key=child.merge_key if child else "",
                                       path=_join(path, field))
    return original


def _retain_keys(original: dict[str, Any], patch: dict[str, Any], retain: Any, *, path: str) -> None:
    if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
        raise errors.bad_request(f"{_where(path)}: $retainKeys must be a list of field names, got {retain!r}")
    keep = set(retain)
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep:
            raise _unprocessable(
                f"{_where(path)}: patch content doesn't match $retainKeys: field {key!r} is set "
                f"but $retainKeys lists only {sorted(keep)}"
            )
    for key in [k for k in original if k not in keep]:
        del original[key]


def _delete_from_primitive_list(original: dict[str, Any], field: str, values: Any, *, path: str) -> None:
    if not isinstance(values, list):
        raise errors.bad_request(f"{path}: $deleteFromPrimitiveList must be a list, got {json_type(values)}")
    current = original.get(field)
    if not isinstance(current, list):
        return
    if any(isinstance(v, (dict, list)) for v in values):
        raise errors.bad_request(f"{path}: $deleteFromPrimitiveList applies only to lists of scalars")
    drop = set(values)  # a set: long lists on both sides stay linear
    original[field] = [item for item in current if _hashable(item) not in drop]


def _smp_list(original: list[Any], patch: list[Any], *, meta: patchmeta.Node | None, path: str) -> list[Any]:
    # A bare `{"$patch": "replace"}` element says: the rest of this list replaces the original.
    replace = any(item == {_PATCH: "replace"} for item in patch)
    if replace or meta is None or not meta.merge:
        # No merge strategy (or an explicit replace): the patch's list is the new list. Its
        # maps still go through the merge, against nothing, so directives and nulls in them
        # do not reach the stored object.
        return _fresh_list(
            [item for item in patch if item != {_PATCH: "replace"}],
            meta=meta,
            path=path,
        )
    if not meta.merge_key:
        # A merged list of scalars is a set union: the original's order, then what is new.
        result = list(original)
        present = {_hashable(item) for item in result}
        for item in patch:
            if isinstance(item, (dict, list)):
                raise errors.bad_request(f"{path}: expected a list of scalars, got an element of type {json_type(item)}")
            if item not in present:
                present.add(item)
                result.append(item)
        return result

    # Elements are found by merge key through an index, not a scan per patch element: a patch
    # of n elements against a list of m stays O(n + m), whatever their lengths.
    key = meta.merge_key
    result = list(original)
    where: dict[Any, list[int]] = {}
    for j, r in enumerate(result):
        if isinstance(r, dict) and key in r:
            where.setdefault(_hashable(r[key]), []).append(j)
    for i, item in enumerate(patch):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise errors.bad_request(f"{item_path}: expected an object with merge key {key!r}, got {json_type(item)}")
        if key not in item:
            raise errors.bad_request(f"{item_path}: element does not contain the merge key {key!r}")
        wanted = _hashable(item[key])
        if item.get(_PATCH) == "delete":
            for j in where.pop(wanted, []):
                result[j] = _GONE
            continue
        found = where.get(wanted)
        if not found:
            added = _smp_map({}, item, meta=meta, path=item_path)
            if added is not None:
                where.setdefault(wanted, []).append(len(result))
                result.append(added)
            continue
        merged = _smp_map(result[found[0]], item, meta=meta, path=item_path)
        if merged is None:
            result[found.pop(0)] = _GONE
        else:
            result[found[0]] = merged
    return [r for r in result if r is not _GONE]


def _fresh_list(items: list[Any], *, meta: patchmeta.Node | None, path: str) -> list[Any]:
    out: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            cleaned = _smp_map({}, item, meta=meta, path=f"{path}[{i}]")
            if cleaned is not None:
                out.append(cleaned)
        else:
            out.append(item)
    return out


def _reorder(items: list[Any], order: list[Any], *, merge_key: str, path: str) -> list[Any]:
    """Put `items` in the order `$setElementOrder` gives; items it does not name go last."""

    def identity(item: Any) -> Any:
        if merge_key:
            return item.get(merge_key) if isinstance(item, dict) else None
        return item

    position: dict[Any, int] = {}
    for i, entry in enumerate(order):
        if merge_key and not (isinstance(entry, dict) and merge_key in entry):
            raise errors.bad_request(
                f"{path}: $setElementOrder entry {i} must be an object with the merge key {merge_key!r}"
            )
        ident = identity(entry)
        if isinstance(ident, (dict, list)):
            raise errors.bad_request(f"{path}: $setElementOrder entry {i} must name a scalar key")
        position.setdefault(ident, i)
    listed = sorted((it for it in items if _hashable(identity(it)) in position),
                    key=lambda it: position[identity(it)])
    rest = [it for it in items if _hashable(identity(it)) not in position]
    return listed + rest


def _hashable(value: Any) -> Any:
    # Unhashable identities (a list element that is itself a list) are never in the order.
    return value if not isinstance(value, (dict, list)) else object()


# --- helpers ------------------------------------------------------------------------------------


def _unprocessable(message: str) -> errors.APIError:
    # Upstream answers patches that parse but cannot be applied with a bare 422 Invalid, no causes.
    return errors.APIError(422, "Invalid", message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "<root>"


def json_type(value: Any) -> str:
    """A JSON value's type with its article ("a string", "an object"), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
