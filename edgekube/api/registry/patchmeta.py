"""Strategic-merge-patch metadata for the built-in kinds.

Upstream Kubernetes reads how each list merges from Go struct tags (`patchStrategy`,
`patchMergeKey`, and `retainKeys`) on the typed API structs. The same tags are in the OpenAPI
definitions of `apischema` (generated from those structs), and this module turns them into a
small tree of frozen `Node`s keyed by JSON field name. Only fields that carry a strategy, or lead
to one, appear: everything else is a plain map (merged key by key) or an atomic list (replaced
whole), which is what the patch code does when a field has no node.

A `Node` describes a field's value. For a list of objects, its `fields` describe each element
(as the Go element type does), so `containers` has `merge_key="name"` and `fields["env"]`.

Shared shapes (ObjectMeta, PodSpec, Container) are one Node per definition, reused by every
kind that embeds them.

Deliberate departures from what a reader might expect, all matching upstream:
- `tolerations`, `envFrom`, `readinessGates`, Node `spec.taints` and ServiceAccount
  `imagePullSecrets` carry no strategy upstream, so they are replaced whole.
- Service `spec.ports` merges on `port` alone (upstream's patchMergeKey), even though the
  list-map key for server-side apply is (port, protocol).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

from edgekube.api import apischema

_NO_FIELDS: Mapping[str, Node] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Node:
    """How one field's value is patched.

    `merge` is patchStrategy "merge": a list merges with the original instead of replacing it
    (by `merge_key` for lists of objects, by value for lists of scalars). `retain_keys` is
    patchStrategy "retainKeys": the patch may send `$retainKeys` to clear fields of a union
    (Deployment strategy, volume source) that it did not name.
    """

    # A read-only view, so the tree really is immutable; dataclasses wants a factory for it.
    fields: Mapping[str, Node] = dataclasses.field(default_factory=lambda: _NO_FIELDS)
    merge: bool = False
    merge_key: str = ""
    retain_keys: bool = False

    def child(self, name: str) -> Node | None:
        return self.fields.get(name)


def _node(
    fields: Mapping[str, Node] | None = None,
    *,
    merge: bool = False,
    merge_key: str = "",
    retain_keys: bool = False,
) -> Node:
    frozen = types.MappingProxyType(dict(fields)) if fields else _NO_FIELDS
    return Node(fields=frozen, merge=merge, merge_key=merge_key, retain_keys=retain_keys)


def _merge_by(key: str, fields: Mapping[str, Node] | None = None, *, retain_keys: bool = False) -> Node:
    return _node(fields, merge=True, merge_key=key, retain_keys=retain_keys)


OBJECT_META_DEFINITION = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

_BUILDING = object()  # marks a definition whose node is being built (a recursive schema)


class _Builder:
    """Node trees from `apischema` definitions, one shared Node per definition."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node | object | None] = {}

    def for_definition(self, name: str) -> Node | None:
        done = self.nodes.get(name)
        if done is _BUILDING:
            return None  # a cycle (JSONSchemaProps): nothing in it carries a strategy
        if name in self.nodes:
            return done  # type: ignore[return-value]
        self.nodes[name] = _BUILDING
        schema = apischema.definition(name)
        node = self._object(schema) if schema is not None else None
        self.nodes[name] = node
        return node

    def _object(self, schema: apischema.JSON) -> Node | None:
        fields: dict[str, Node] = {}
        for fname, prop in (schema.get("properties") or {}).items():
            child = self._field(prop)
            if child is not None:
                fields[fname] = child
        return _node(fields) if fields else None

    def _value(self, schema: apischema.JSON | None) -> Node | None:
        if schema is None:
            return None
        name = apischema.ref_name(schema)
        if name is None:
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1:
                name = apischema.ref_name(all_of[0])
        if name is not None:
            return self.for_definition(name)
        if schema.get("type") == "object" and schema.get("properties"):
            return self._object(schema)
        return None

    def _field(self, prop: apischema.JSON) -> Node | None:
        strategy = str(prop.get("x-kubernetes-patch-strategy", "")).split(",")
        merge = "merge" in strategy
        retain = "retainKeys" in strategy
        key = str(prop.get("x-kubernetes-patch-merge-key", ""))
        if prop.get("type") == "array":
            element = self._value(prop.get("items") if isinstance(prop.get("items"), dict) else None)
            if not (merge or retain or element is not None):
                return None
            return _node(element.fields if element is not None else None, merge=merge, merge_key=key, retain_keys=retain)
        child = self._value(prop)
        if child is None and not retain:
            return None
        if not retain:
            return child
        return _node(child.fields if child is not None else None, retain_keys=True)


_BUILDER = _Builder()


def __getattr__(name: str) -> Node:
    # OBJECT_META is looked up lazily, so importing this module loads no schema.
    if name == "OBJECT_META":
        node = _BUILDER.for_definition(OBJECT_META_DEFINITION)
        assert node is not None
        return node
    raise AttributeError(name)


def meta_for(gk: str) -> Node | None:
    """The patch metadata of a built-in kind (`Pod`, `Deployment.apps`), or None when it has none.

    From upstream's definitions (`apischema`), so it carries exactly the Go types'
    `patchStrategy` and `patchMergeKey` tags. None (custom resources, unknown kinds) means every
    list is replaced whole, which is what upstream's schema-less merge does.
    """
    kind, _, group = gk.partition(".")
    name = apischema.kind_definition(group, "v1", kind)
    if name is None:
        return None
    return _BUILDER.for_definition(name) or _node()
