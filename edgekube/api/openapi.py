"""OpenAPI documents: the `/openapi/v3` index, per-group-version v3 documents, `/openapi/v2`.

What kubectl does with each (checked against kubectl/client-go 1.27 to 1.3x):
- `/openapi/v3` index, then `/openapi/v3/<gv>?hash=...`: before every `create`/`apply`/`replace`
  kubectl's validator asks whether the server does field validation itself, by looking for a
  PATCH operation carrying the kind's `x-kubernetes-group-version-kind` and a `fieldValidation`
  query parameter. We list that parameter on every PATCH, so kubectl sends
  `?fieldValidation=Strict` and runs no client-side schema validation: our permissive schemas
  can never make it reject a valid manifest. A kind missing from an existing group-version
  still fails there (as "path not found"), before any request is sent. `kubectl explain` reads
  the v3 component schemas by their `x-kubernetes-group-version-kind`.
- `apply` (client-side) computes a strategic merge patch from the v3 schema only when the
  kind's PATCH operation accepts `application/strategic-merge-patch+json`; otherwise it tries
  v2, then kubectl's compiled-in Go types, which are exact for every built-in kind. Our schemas
  are partial, and a patch computed from partial patch metadata would either replace lists
  that should merge or make kubectl print warnings, so PATCH does not advertise strategic
  merge unless a kind's schema declares its patch metadata complete (`KindSchema`).
- `/openapi/v2`: client-go asks for it only as protobuf
  (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) and parses the body as
  protobuf without looking at Content-Type, so a JSON answer would be a parse error. The HTTP
  layer should answer that Accept with 406; kubectl then skips v2 (apply falls back to the
  built-in types; validation already settled on v3). The JSON document serves other clients.

Schemas are named as upstream names them (`io.k8s.api.core.v1.Pod`,
`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`; custom groups reversed, as for CRDs:
`com.example.stable.v1.CronTab`). Each kind's schema comes from a builder in `SCHEMA_BUILDERS`
(keyed by `ResourceInfo.gk`), falling back to `default_schema`: apiVersion, kind, a real
ObjectMeta, and the kind's known top-level fields as open objects
(`x-kubernetes-preserve-unknown-fields`), with list merge keys from `registry.patchmeta` where
known. Full schemas replace entries one kind at a time.

Schemas are written with v3 references (`#/components/schemas/...`); the v2 document rewrites
them to `#/definitions/...`. Hashes are sha512 of the canonical JSON, upper-case hex like
kube-openapi's, used for the index's `?hash=` and the `ETag` header.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from edgekube.api import apischema, discovery
from edgekube.api.registry import known_fields, patchmeta, resources

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
LIST_META = f"{META}.ListMeta"
STATUS = f"{META}.Status"
PATCH = f"{META}.Patch"
DELETE_OPTIONS = f"{META}.DeleteOptions"

GVK_EXT = "x-kubernetes-group-version-kind"
ACTION_EXT = "x-kubernetes-action"
PRESERVE = "x-kubernetes-preserve-unknown-fields"

_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
_SMP = "application/strategic-merge-patch+json"


def schema_name(group: str, version: str, kind: str) -> str:
    """Upstream's definition name for a kind: `io.k8s.api.apps.v1.Deployment`."""
    package = apischema.PACKAGES.get(group)
    if package is None:
        package = ".".join(reversed(group.split(".")))
    return f"{package}.{version}.{kind}"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


@dataclasses.dataclass(frozen=True)
class KindSchema:
    """A kind's schema and the named schemas it refers to.

    `patch_metadata_complete` says every list in the schema carries upstream's patch strategy
    and merge key, so kubectl may compute strategic merge patches from it (see the docstring).
    """

    schema: dict[str, Any]
    extra: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    patch_metadata_complete: bool = False


SchemaBuilder = Callable[[resources.ResourceInfo], KindSchema]


# --- shared schemas -------------------------------------------------------------------------


def _open(description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", PRESERVE: True}
    if description:
        out["description"] = description
    return out


def _string_map(description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": description}


def _meta_schemas() -> dict[str, dict[str, Any]]:
    """ObjectMeta, ListMeta and the other meta.k8s.io/v1 shapes every document refers to."""
    time = {"type": "string", "format": "date-time"}
    owner_ref = {
        "type": "object",
        "required": ["apiVersion", "kind", "name", "uid"],
        "properties": {
            "apiVersion": {"type": "string", "default": ""},
            "kind": {"type": "string", "default": ""},
            "name": {"type": "string", "default": ""},
            "uid": {"type": "string", "default": ""},
            "controller": {"type": "boolean"},
            "blockOwnerDeletion": {"type": "boolean"},
        },
        "x-kubernetes-map-type": "atomic",
    }
    object_meta = {
        "description": "Standard object's metadata.",
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Name must be unique within a namespace."},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "selfLink": {"type": "string"},
            "uid": {"type": "string"},
            "resourceVersion": {"type": "string"},
            "generation": {"type": "integer", "format": "int64"},
            "creationTimestamp": time,
            "deletionTimestamp": time,
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "labels": _string_map("Map of string keys and values to organize and select objects."),
            "annotations": _string_map("Unstructured key value map stored with a resource."),
            "ownerReferences": {
                "type": "array",
                "items": {"allOf": [ref(f"{META}.OwnerReference")], "default": {}},
                "x-kubernetes-patch-merge-key": "uid",
                "x-kubernetes-patch-strategy": "merge",
            },
            "finalizers": {
                "type": "array",
                "items": {"type": "string", "default": ""},
                "x-kubernetes-list-type": "set",
                "x-kubernetes-patch-strategy": "merge",
            },
            "managedFields": {"type": "array", "items": _open()},
        },
    }
    list_meta = {
        "type": "object",
        "properties": {
            "continue": {"type": "string"},
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": {"type": "string"},
            "selfLink": {"type": "string"},
        },
    }
    status = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [ref(LIST_META)], "default": {}},
            "status": {"type": "string"},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "details": _open(),
            "code": {"type": "integer", "format": "int32"},
        },
        GVK_EXT: [gvk("", "v1", "Status")],
    }
    return {
        OBJECT_META: object_meta,
        LIST_META: list_meta,
        f"{META}.OwnerReference": owner_ref,
        STATUS: status,
        PATCH: {"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."},
        DELETE_OPTIONS: {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "dryRun": {"type": "array", "items": {"type": "string", "default": ""}},
                "gracePeriodSeconds": {"type": "integer", "format": "int64"},
                "orphanDependents": {"type": "boolean"},
                "preconditions": _open(),
                "propagationPolicy": {"type": "string"},
            },
        },
    }


def _from_patchmeta(node: patchmeta.Node | None, *, description: str = "") -> dict[str, Any]:
    """An open object schema whose described fields carry upstream's patch strategies."""
    out = _open(description)
    if node is None or not node.fields:
        return out
    props: dict[str, Any] = {}
    for name, child in node.fields.items():
        props[name] = _field_from_patchmeta(child)
    out["properties"] = props
    return out


def _field_from_patchmeta(node: patchmeta.Node) -> dict[str, Any]:
    if node is patchmeta.OBJECT_META:
        return {"allOf": [ref(OBJECT_META)], "default": {}}
    strategies = []
    if node.merge:
        strategies.append("merge")
    if node.retain_keys:
        strategies.append("retainKeys")
    if node.merge_key or (node.merge and node.fields):
        field: dict[str, Any] = {"type": "array", "items": _from_patchmeta(node)}
        if node.merge_key:
            # Only the patch extensions: server-side apply's list-map keys differ from the
            # patch merge keys in places (Service ports), and come with the full schemas.
            field["x-kubernetes-patch-merge-key"] = node.merge_key
    elif node.merge:
        # A merged list of scalars (finalizers, podCIDRs).
        field = {"type": "array", "items": {"type": "string"}}
    else:
        field = _from_patchmeta(node)
    if strategies:
        field["x-kubernetes-patch-strategy"] = ",".join(strategies)
    return field


def _scale_schema() -> dict[str, Any]:
    return {
        "description": "Scale represents a scaling request for a resource.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [ref(OBJECT_META)], "default": {}},
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32"}}},
            "status": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer", "format": "int32", "default": 0},
                    "selector": {"type": "string"},
                },
            },
        },
        GVK_EXT: [gvk("autoscaling", "v1", "Scale")],
    }


# --- per-kind schemas -----------------------------------------------------------------------


def default_schema(info: resources.ResourceInfo) -> KindSchema:
    """apiVersion, kind, ObjectMeta, and the kind's other top-level fields as open objects.

    Top-level fields come from `known_fields` (the same list the server's field validation
    uses); for a kind it does not know (custom resources) the whole object stays open, so no
    valid manifest is refused by a client reading this schema.
    """
    meta = patchmeta.meta_for(info.gk)
    known = known_fields.TOP_LEVEL.get(info.gk)
    names: Iterable[str] = sorted(known - {"apiVersion", "kind", "metadata"}) if known is not None else ("spec", "status")
    props: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
        "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
        "metadata": {"allOf": [ref(OBJECT_META)], "default": {}, "description": "Standard object's metadata."},
    }
    for name in names:
        child = meta.child(name) if meta is not None else None
        props[name] = _field_from_patchmeta(child) if child is not None else _open()
    schema: dict[str, Any] = {
        "description": f"{info.kind} ({info.api_version}).",
        "type": "object",
        "properties": props,
        GVK_EXT: [gvk(info.group, info.version, info.kind)],
    }
    if known is None:
        schema[PRESERVE] = True
    return KindSchema(schema=schema)


# Per-kind builders keyed by `ResourceInfo.gk`; kinds without one get `default_schema`.
# The full-schema issue fills this table.
SCHEMA_BUILDERS: dict[str, SchemaBuilder] = {}


def custom_schema(info: resources.ResourceInfo) -> KindSchema:
    """A custom kind's schema: its CRD version's openAPIV3Schema with ObjectMeta and the GVK."""
    assert info.custom is not None
    schema: dict[str, Any] = copy.deepcopy(info.custom.schema) if info.custom.schema else {"type": "object", PRESERVE: True}
    props: dict[str, Any] = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}
    props["metadata"] = {"allOf": [ref(OBJECT_META)], "description": "Standard object's metadata."}
    schema[GVK_EXT] = [gvk(info.group, info.version, info.kind)]
    return KindSchema(schema=schema, patch_metadata_complete=False)


def kind_schema(info: resources.ResourceInfo) -> KindSchema:
    if info.custom is not None:
        return custom_schema(info)
    builder = SCHEMA_BUILDERS.get(info.gk)
    if builder is not None:
        return builder(info)
    name = apischema.kind_definition(info.group, info.version, info.kind)
    if name is not None:
        return builtin_schema(info, name)
    return default_schema(info)


def builtin_schema(info: resources.ResourceInfo, name: str) -> KindSchema:
    """A built-in kind's full upstream schema (from `apischema`), with everything it refers to.

    Its patch metadata is upstream's, so kubectl may compute strategic merge patches from it.
    """
    defs = apischema.closure(name)
    extra = {n: apischema.to_v3_definition(n, s) for n, s in defs.items() if n != name}
    schema = dict(apischema.to_v3_definition(name, defs[name]))
    schema[GVK_EXT] = [gvk(info.group, info.version, info.kind)]
    return KindSchema(schema=schema, extra=extra, patch_metadata_complete=True)


def _list_schema(info: resources.ResourceInfo) -> dict[str, Any]:
    return {
        "description": f"{info.list_kind} is a list of {info.kind}.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"allOf": [ref(schema_name(info.group, info.version, info.kind))], "default": {}}},
            "metadata": {"allOf": [ref(LIST_META)], "default": {}},
        },
        GVK_EXT: [gvk(info.group, info.version, info.list_kind)],
    }


# --- paths ----------------------------------------------------------------------------------


def _query(name: str, description: str, *, type_: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": True}}


_PRETTY = _query("pretty", "If 'true', then the output is pretty printed.")
_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _query("fieldManager", "A name associated with the actor or entity that is making these changes.")
# Its presence on PATCH is what tells kubectl the server validates fields (see the docstring).
_FIELD_VALIDATION = _query("fieldValidation", "How the server treats unknown and duplicate fields: Ignore, Warn or Strict.")
_FORCE = _query("force", "Force is going to \"force\" Apply requests.", type_="boolean")
_LIST_PARAMS = [
    _query("allowWatchBookmarks", "Requests watch events with type BOOKMARK.", type_="boolean"),
    _query("continue", "The continue option from a previous list."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("limit", "The maximum number of responses to return for a list call.", type_="integer"),
    _query("resourceVersion", "Which resource versions may be served."),
    _query("resourceVersionMatch", "How resourceVersion is applied to list calls."),
    _query("sendInitialEvents", "Whether a watch starts with synthetic events of the current state.", type_="boolean"),
    _query("timeoutSeconds", "Timeout for the list/watch call.", type_="integer"),
    _query("watch", "Watch for changes to the described resources.", type_="boolean"),
]


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "description": description, "required": True, "schema": {"type": "string", "uniqueItems": True}}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema} for media in ("application/json", "application/yaml")}


def _operation(
    action: str,
    *,
    op_id: str,
    tag: str,
    kind: dict[str, str],
    response: dict[str, Any],
    params: list[dict[str, Any]],
    body: dict[str, Any] | None = None,
    body_types: Iterable[str] = ("application/json", "application/yaml"),
    created: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _json_content(response)}}
    if created:
        responses["201"] = {"description": "Created", "content": _json_content(response)}
    responses["401"] = {"description": "Unauthorized"}
    op: dict[str, Any] = {
        "tags": [tag],
        "description": f"{action} {kind['kind']}",
        "operationId": op_id,
        "parameters": params,
        "responses": responses,
        ACTION_EXT: action,
        GVK_EXT: kind,
    }
    if body is not None:
        op["requestBody"] = {"content": {t: {"schema": body} for t in body_types}, "required": True}
    return op


def _op_prefix(info: resources.ResourceInfo) -> str:
    """`CoreV1`, `AppsV1`, `RbacAuthorizationV1`, as in upstream operation IDs."""
    group = info.group.removesuffix(".k8s.io") if info.group else "core"
    words = [w for part in group.split(".") for w in part.split("-")]
    return "".join(w[:1].upper() + w[1:] for w in words) + info.version[:1].upper() + info.version[1:]


def _tag(info: resources.ResourceInfo) -> str:
    group = info.group.removesuffix(".k8s.io").replace(".", "_") if info.group else "core"
    return f"{group}_{info.version}"


def _resource_paths(info: resources.ResourceInfo, *, patch_types: tuple[str, ...]) -> dict[str, Any]:
    """Upstream's paths for one resource: collection, item, every subresource, all-namespaces list."""
    root = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    scope = "Namespaced" if info.namespaced else ""
    ns_prefix = f"{root}/namespaces/{{namespace}}" if info.namespaced else root
    kind = gvk(info.group, info.version, info.kind)
    prefix = _op_prefix(info)
    tag = _tag(info)
    obj = ref(schema_name(info.group, info.version, info.kind))
    lst = ref(schema_name(info.group, info.version, info.list_kind))
    verbs = set(info.verbs)
    path_params = [_path_param("namespace", "object name and auth scope, such as for teams and projects")] if info.namespaced else []
    name_param = _path_param("name", f"name of the {info.kind}")
    write_params = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]

    def ops_for(subject: str, suffix: str, k: dict[str, str], schema: dict[str, Any], sub_verbs: set[str]) -> dict[str, Any]:
        item: dict[str, Any] = {"parameters": [name_param, *path_params, _PRETTY]}
        if "get" in sub_verbs:
            item["get"] = _operation("get", op_id=f"read{prefix}{scope}{subject}{suffix}", tag=tag, kind=k, response=schema, params=[])
        if "update" in sub_verbs:
            item["put"] = _operation(
                "put", op_id=f"replace{prefix}{scope}{subject}{suffix}", tag=tag, kind=k, response=schema,
                params=write_params, body=schema, created=True,
            )
        if "patch" in sub_verbs:
            item["patch"] = _operation(
                "patch", op_id=f"patch{prefix}{scope}{subject}{suffix}", tag=tag, kind=k, response=schema,
                params=[*write_params, _FORCE], body=ref(PATCH), body_types=patch_types, created=True,
            )
        return item

    paths: dict[str, Any] = {}
    collection: dict[str, Any] = {"parameters": [*path_params, _PRETTY]}
    if "list" in verbs:
        collection["get"] = _operation("list", op_id=f"list{prefix}{scope}{info.kind}", tag=tag, kind=kind, response=lst, params=list(_LIST_PARAMS))
    if "create" in verbs:
        collection["post"] = _operation(
            "post", op_id=f"create{prefix}{scope}{info.kind}", tag=tag, kind=kind, response=obj,
            params=write_params, body=obj, created=True,
        )
    if "deletecollection" in verbs:
        collection["delete"] = _operation(
            "deletecollection", op_id=f"deleteCollection{prefix}{scope}{info.kind}", tag=tag, kind=kind,
            response=ref(STATUS), params=[_DRY_RUN, *_LIST_PARAMS[1:5]], body=ref(DELETE_OPTIONS),
        )
    paths[f"{ns_prefix}/{info.plural}"] = collection

    item = ops_for(info.kind, "", kind, obj, verbs)
    if "delete" in verbs:
        item["delete"] = _operation(
            "delete", op_id=f"delete{prefix}{scope}{info.kind}", tag=tag, kind=kind,
            response=obj if info.returns_deleted_object else ref(STATUS),
            params=[_DRY_RUN, _query("gracePeriodSeconds", "Seconds before the object is deleted.", type_="integer"),
                    _query("propagationPolicy", "Whether and how garbage collection is performed.")],
            body=ref(DELETE_OPTIONS),
        )
    paths[f"{ns_prefix}/{info.plural}/{{name}}"] = item

    for name in info.subresources:
        if name == "log":
            paths[f"{ns_prefix}/{info.plural}/{{name}}/log"] = _log_item(info, name_param, path_params, op_id=f"read{prefix}{scope}{info.kind}Log", tag=tag, kind=kind)
            continue
        sub = discovery.subresource_info(info, name=name)
        sub_group = sub.group if sub.group or sub.version else info.group
        sub_version = sub.version or info.version
        sub_kind = gvk(sub_group, sub_version, sub.kind)
        suffix = name[:1].upper() + name[1:]
        sub_verbs = set(sub.verbs)
        if sub.kind != info.kind and not _has_schema(sub_group, sub.kind):
            continue  # connect-style subresources (exec, proxy) have no document schema to point at
        schema = ref(schema_name(sub_group, sub_version, sub.kind))
        sub_item = ops_for(info.kind, suffix, sub_kind, schema, sub_verbs)
        if "create" in sub_verbs:
            sub_item["post"] = _operation(
                "post", op_id=f"create{prefix}{scope}{info.kind}{suffix}", tag=tag, kind=sub_kind, response=schema,
                params=write_params, body=schema, created=True,
            )
        paths[f"{ns_prefix}/{info.plural}/{{name}}/{name}"] = sub_item

    if info.namespaced and "list" in verbs:
        paths[f"{root}/{info.plural}"] = {
            "parameters": [_PRETTY],
            "get": _operation(
                "list", op_id=f"list{prefix}{info.kind}ForAllNamespaces", tag=tag, kind=kind, response=lst,
                params=list(_LIST_PARAMS),
            ),
        }
    return paths


def _log_item(info: resources.ResourceInfo, name_param: dict[str, Any], path_params: list[dict[str, Any]], *,
              op_id: str, tag: str, kind: dict[str, str]) -> dict[str, Any]:
    """`pods/log` as upstream describes it: a GET answering plain text, with PodLogOptions."""
    op = _operation("get", op_id=op_id, tag=tag, kind=kind, response={"type": "string"}, params=[])
    op["description"] = f"read log of the specified {info.kind}"
    op["responses"]["200"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    params = [
        _query("container", "The container for which to stream logs."),
        _query("follow", "Follow the log stream of the pod.", type_="boolean"),
        _query("insecureSkipTLSVerifyBackend", "Accepted and ignored (there is no backend connection).", type_="boolean"),
        _query("limitBytes", "The number of bytes to read before terminating the log output.", type_="integer"),
        name_param, *path_params, _PRETTY,
        _query("previous", "Return previous terminated container logs.", type_="boolean"),
        _query("sinceSeconds", "A relative time in seconds before the current time from which to show logs.", type_="integer"),
        _query("sinceTime", "An RFC3339 timestamp from which to show logs."),
        _query("stream", "Which container log stream to return: All, Stdout or Stderr."),
        _query("tailLines", "The number of lines from the end of the logs to show.", type_="integer"),
        _query("timestamps", "Add an RFC3339 timestamp at the beginning of every line of log output.", type_="boolean"),
    ]
    return {"get": op, "parameters": params}


# Subresource kinds outside the catalog that documents describe (with their schema builders).
def _binding_schema() -> dict[str, Any]:
    return {
        "description": "Binding ties one object to another; for example, a pod is bound to a node by a scheduler.",
        "type": "object",
        "required": ["target"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [ref(OBJECT_META)], "default": {}},
            "target": _open("The target object that you want to bind to the standard object."),
        },
        GVK_EXT: [gvk("", "v1", "Binding")],
    }


_SUBRESOURCE_SCHEMAS: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("autoscaling", "Scale"): _scale_schema,
    ("", "Binding"): _binding_schema,
}


def _has_schema(group: str, kind: str) -> bool:
    return (group, kind) in _SUBRESOURCE_SCHEMAS


# --- documents ------------------------------------------------------------------------------


def _gv_path(info: resources.ResourceInfo) -> str:
    return f"apis/{info.group}/{info.version}" if info.group else f"api/{info.version}"


def group_version_paths(catalog: resources.Catalog) -> list[str]:
    """`api/v1`, `apis/apps/v1`, ...: the keys of the v3 index, in catalog order."""
    out: list[str] = []
    for info in catalog.all():
        path = _gv_path(info)
        if path not in out:
            out.append(path)
    return out


def _parse_gv_path(path: str) -> tuple[str, str] | None:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return parts[1], parts[2]
    return None


def _schemas_for(infos: list[resources.ResourceInfo]) -> tuple[dict[str, Any], dict[str, bool]]:
    """Component schemas for `infos`, and per-kind whether PATCH may offer strategic merge."""
    schemas: dict[str, Any] = _meta_schemas()
    kinds: dict[str, Any] = {}
    smp: dict[str, bool] = {}
    for info in infos:
        built = kind_schema(info)
        schemas.update(built.extra)
        kinds[schema_name(info.group, info.version, info.kind)] = built.schema
        schemas[schema_name(info.group, info.version, info.list_kind)] = _list_schema(info)
        smp[info.gk] = built.patch_metadata_complete
        for name in info.subresources:
            sub = discovery.subresource_info(info, name=name)
            builder = _SUBRESOURCE_SCHEMAS.get((sub.group, sub.kind))
            if builder is not None:
                schemas[schema_name(sub.group, sub.version or info.version, sub.kind)] = builder()
    # A kind's own schema (with its GVK) wins over the same definition pulled in as another
    # kind's dependency (a PersistentVolumeClaim inside a StatefulSet).
    schemas.update(kinds)
    return dict(sorted(schemas.items())), smp


def _patch_types(complete: bool) -> tuple[str, ...]:
    return (*_PATCH_TYPES[:2], _SMP, _PATCH_TYPES[2]) if complete else _PATCH_TYPES


def v3_document(catalog: resources.Catalog, group_version_path: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document for `api/v1` or `apis/<group>/<version>`, or None if not served."""
    parsed = _parse_gv_path(group_version_path)
    if parsed is None:
        return None
    infos = catalog.in_group_version(*parsed)
    if not infos:
        return None
    schemas, smp = _schemas_for(infos)
    paths: dict[str, Any] = {}
    for info in infos:
        paths.update(_resource_paths(info, patch_types=_patch_types(smp[info.gk])))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery.git_version()},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def to_json(doc: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys), so a document's bytes and its hash never disagree."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def content_hash(doc: dict[str, Any]) -> str:
    """sha512 of the canonical JSON, upper-case hex, as kube-openapi formats it."""
    return hashlib.sha512(to_json(doc)).hexdigest().upper()


def etag(doc: dict[str, Any]) -> str:
    """The quoted `ETag` header value for a document."""
    return f'"{content_hash(doc)}"'


def v3_index(catalog: resources.Catalog) -> dict[str, Any]:
    """The `/openapi/v3` index: each group-version's document URL, pinned by content hash."""
    paths: dict[str, Any] = {}
    for path in group_version_paths(catalog):
        doc = v3_document(catalog, path)
        if doc is not None:
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={content_hash(doc)}"}
    return {"paths": paths}


def _to_v2_refs(value: Any) -> Any:
    """Rewrite v3 `$ref`s (`#/components/schemas/...`) to v2 ones (`#/definitions/...`)."""
    if isinstance(value, dict):
        return {
            k: (v.replace("#/components/schemas/", "#/definitions/") if k == "$ref" and isinstance(v, str) else _to_v2_refs(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_to_v2_refs(v) for v in value]
    return value


def _v2_operation(op: dict[str, Any]) -> dict[str, Any]:
    """A v3 operation in Swagger 2.0 form: `consumes`/`produces`, body as an `in: body` param."""
    out: dict[str, Any] = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
    params = [_v2_param(p) for p in op.get("parameters", [])]
    body = op.get("requestBody")
    if body is not None:
        media = list(body["content"])
        out["consumes"] = media
        params.insert(0, {"name": "body", "in": "body", "required": True, "schema": body["content"][media[0]]["schema"]})
    out["produces"] = ["application/json", "application/yaml"]
    if "text/plain" in ((op["responses"].get("200") or {}).get("content") or {}):
        out["produces"] = ["text/plain", *out["produces"]]  # pods/log
    out["schemes"] = ["https"]
    out["parameters"] = params
    responses: dict[str, Any] = {}
    for code, resp in op["responses"].items():
        entry: dict[str, Any] = {"description": resp["description"]}
        content = resp.get("content")
        if content:
            entry["schema"] = content["application/json"]["schema"]
        responses[code] = entry
    out["responses"] = responses
    return out


def _v2_param(param: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in param.items() if k != "schema"}
    out.update(param.get("schema", {}))
    return out


def v2_document(catalog: resources.Catalog) -> dict[str, Any]:
    """The Swagger 2.0 document for every served kind (`/openapi/v2`, JSON only)."""
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for path in group_version_paths(catalog):
        doc = v3_document(catalog, path)
        if doc is None:
            continue
        for name, schema in doc["components"]["schemas"].items():
            if name in apischema.V3_ONE_OF:  # Swagger 2.0 has no oneOf: upstream's v2 form
                schema = apischema.definition(name)
            # A kind's own schema (with its GVK) wins over its copy in another group's
            # document (a PersistentVolumeClaim in apps/v1, as a StatefulSet's template).
            if name not in definitions or GVK_EXT in schema:
                definitions[name] = schema
        for url, item in doc["paths"].items():
            v2_item: dict[str, Any] = {}
            for method, op in item.items():
                if method == "parameters":
                    v2_item["parameters"] = [_v2_param(p) for p in op]
                else:
                    v2_item[method] = _v2_operation(op)
            paths[url] = v2_item
    out: dict[str, Any] = _to_v2_refs(
        {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": discovery.git_version()},
            "paths": paths,
            "definitions": dict(sorted(definitions.items())),
            "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
            "security": [{"BearerToken": []}],
        }
    )
    return out
