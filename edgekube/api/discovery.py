"""Discovery documents: `/version`, `/api`, `/apis`, `/apis/<group>`, resource lists, aggregated.

Pure functions from the resource `Catalog` to the dicts the HTTP layer serves as JSON.

Two discovery protocols exist and clients pick by `Accept`:
- Legacy: `/api` (APIVersions), `/apis` (APIGroupList), then one APIResourceList per
  group-version (`/api/v1`, `/apis/apps/v1`). A client makes one request per group-version.
- Aggregated (`apidiscovery.k8s.io`, v2beta1 from client-go 1.26, v2 from 1.30): `/api` and
  `/apis` answer with an APIGroupDiscoveryList holding every group, version and resource at
  once. client-go asks with an Accept list like `application/json;g=apidiscovery.k8s.io;v=v2;
  as=APIGroupDiscoveryList,application/json;...v=v2beta1...,application/json` and decides which
  form it got from the response Content-Type alone (its g, v and as parameters, in any order),
  so `discovery_content_type` must be sent with an aggregated body, and a plain
  `application/json` with a legacy one. Newer client-go also offers a `profile=nopeer` variant
  first; a single server has no peers, so that is plain v2 to us.

Both forms are built from the same per-resource facts, so they cannot disagree. Subresources
(`pods/status`, `deployments/scale`) take their response kind and verbs from `_SUBRESOURCES`,
which follows what upstream reports (scale is autoscaling/v1 Scale, binding is Binding, ...).

`/version` reports `KUBE_VERSION` with `+edgekube-<version>` as semver build metadata: kubectl
parses gitVersion with apimachinery's semantic-version parser for its version-skew warning, and
build metadata (dot-separated `[0-9A-Za-z-]` identifiers) is allowed there, as k3s's `+k3s1` is.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import platform
import sys
from typing import Any

import edgekube
from edgekube.api import negotiation
from edgekube.api.registry import resources

DISCOVERY_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"
AGGREGATED_VERSIONS = ("v2", "v2beta1")  # in order of preference

_UPDATE_VERBS = ("get", "patch", "update")
_CONNECT_VERBS = ("create", "get")
_PROXY_VERBS = ("create", "delete", "get", "patch", "update")


@dataclasses.dataclass(frozen=True)
class _Sub:
    """What a subresource answers with: its kind (None: the parent's kind) and its verbs."""

    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""
    kind: str | None = None


# Keyed by subresource name; `proxy` is special-cased (its kind is `<Parent>ProxyOptions`).
_SUBRESOURCES: dict[str, _Sub] = {
    "status": _Sub(_UPDATE_VERBS),
    "scale": _Sub(_UPDATE_VERBS, group="autoscaling", version="v1", kind="Scale"),
    "binding": _Sub(("create",), kind="Binding"),
    "eviction": _Sub(("create",), group="policy", version="v1", kind="Eviction"),
    "finalize": _Sub(("update",)),
    "ephemeralcontainers": _Sub(_UPDATE_VERBS),
    "resize": _Sub(_UPDATE_VERBS),
    "log": _Sub(("get",)),
    "exec": _Sub(_CONNECT_VERBS, kind="PodExecOptions"),
    "attach": _Sub(_CONNECT_VERBS, kind="PodAttachOptions"),
    "portforward": _Sub(_CONNECT_VERBS, kind="PodPortForwardOptions"),
    "token": _Sub(("create",), group="authentication.k8s.io", version="v1", kind="TokenRequest"),
}


@dataclasses.dataclass(frozen=True)
class SubresourceInfo:
    """One subresource as discovery reports it."""

    name: str  # "status"
    group: str  # "" means the parent's group-version (how upstream reports same-GV kinds)
    version: str
    kind: str
    verbs: tuple[str, ...]


def subresource_info(info: resources.ResourceInfo, *, name: str) -> SubresourceInfo:
    """Kind and verbs of `info`'s subresource `name`; unknown ones act like `status`."""
    if name == "proxy":
        return SubresourceInfo(name, "", "", f"{info.kind}ProxyOptions", _PROXY_VERBS)
    sub = _SUBRESOURCES.get(name, _Sub(_UPDATE_VERBS))
    return SubresourceInfo(name, sub.group, sub.version, sub.kind or info.kind, sub.verbs)


def storage_version_hash(info: resources.ResourceInfo) -> str:
    """A stable opaque hash of the stored group/version/kind (upstream's shape: 8 bytes, base64).

    Clients only compare it for equality (the storage-version migrator does), so any stable
    function of the storage version will do.
    """
    digest = hashlib.sha256(f"{info.group}/{info.version}/{info.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


# --- /version -------------------------------------------------------------------------------

_MACHINE_TO_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def git_version() -> str:
    """`v1.31.0+edgekube-0.1.0`: valid semver whose core is the Kubernetes version we speak."""
    return f"{edgekube.KUBE_VERSION}+edgekube-{edgekube.__version__}"


def version_info(*, git_commit: str = "", build_date: str = "1970-01-01T00:00:00Z") -> dict[str, Any]:
    """The `/version` body (apimachinery's version.Info)."""
    core = edgekube.KUBE_VERSION.lstrip("v").split(".")
    machine = platform.machine().lower()
    arch = _MACHINE_TO_GOARCH.get(machine, machine or "unknown")
    os_name = sys.platform.split("-")[0] or "linux"
    # Nuitka-compiled modules carry `__compiled__`; say which build produced the answer.
    compiler = "nuitka" if "__compiled__" in globals() else platform.python_implementation().lower()
    return {
        "major": core[0],
        "minor": core[1] if len(core) > 1 else "0",
        "gitVersion": git_version(),
        "gitCommit": git_commit or "0" * 40,
        "gitTreeState": "clean",
        "buildDate": build_date,
        "goVersion": f"python{platform.python_version()}",
        "compiler": compiler,
        "platform": f"{os_name}/{arch}",
    }


# --- legacy discovery -----------------------------------------------------------------------


def core_versions(*, server_address: str) -> dict[str, Any]:
    """The `/api` body: APIVersions, with the address clients should use (host:port)."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    # The catalog lists a group's preferred version first.
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_group_list(catalog: resources.Catalog) -> dict[str, Any]:
    """The `/apis` body: every named group (the core group lives at `/api` instead)."""
    groups = [_group_entry(g, vs) for g, vs in catalog.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(catalog: resources.Catalog, group: str) -> dict[str, Any] | None:
    """The `/apis/<group>` body, or None when no such group is served."""
    versions = catalog.groups().get(group) if group else None
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _legacy_resource(info: resources.ResourceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        out["shortNames"] = list(info.short_names)
    if info.categories:
        out["categories"] = list(info.categories)
    out["storageVersionHash"] = storage_version_hash(info)
    return out


def _legacy_subresource(info: resources.ResourceInfo, sub: SubresourceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"{info.plural}/{sub.name}",
        "singularName": "",
        "namespaced": info.namespaced,
    }
    if sub.group or sub.version:
        out["group"] = sub.group
        out["version"] = sub.version
    out["kind"] = sub.kind
    out["verbs"] = list(sub.verbs)
    return out


def api_resource_list(catalog: resources.Catalog, group: str, version: str) -> dict[str, Any] | None:
    """The `/api/v1` or `/apis/<group>/<version>` body, or None when that is not served.

    Each subresource follows its parent as `<plural>/<sub>`, as upstream lists them.
    """
    infos = catalog.in_group_version(group, version)
    if not infos:
        return None
    entries: list[dict[str, Any]] = []
    for info in infos:
        entries.append(_legacy_resource(info))
        for name in info.subresources:
            entries.append(_legacy_subresource(info, subresource_info(info, name=name)))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


# --- aggregated discovery -------------------------------------------------------------------


def negotiate_discovery(accept: str) -> str | None:
    """The aggregated-discovery version an Accept header asks for ("v2", "v2beta1"), or None.

    The first acceptable entry in the header wins, as the client lists its preference first.
    None means legacy: a plain JSON (or absent) Accept, or one naming only forms we lack.
    Only JSON is served, so protobuf entries are passed over.
    """
    for rng in negotiation.parse_accept(accept or ""):
        if rng.type not in ("application/json", "*/*", "application/*"):
            continue
        group, version, as_kind = (rng.params.get(k) for k in ("g", "v", "as"))
        if group is None and version is None and as_kind is None:
            return None  # plain JSON listed before any aggregated form: legacy it is
        if group == DISCOVERY_GROUP and as_kind == AGGREGATED_KIND and version in AGGREGATED_VERSIONS:
            return version
    return None


def discovery_content_type(version: str) -> str:
    """The Content-Type an aggregated body must carry for client-go to read it as aggregated."""
    return f"application/json;g={DISCOVERY_GROUP};v={version};as={AGGREGATED_KIND}"


def _aggregated_resource(info: resources.ResourceInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": info.plural,
        # Upstream leaves group and version empty when the kind is the resource's own GV.
        "responseKind": {"group": "", "version": "", "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        out["shortNames"] = list(info.short_names)
    if info.categories:
        out["categories"] = list(info.categories)
    subs = [subresource_info(info, name=name) for name in info.subresources]
    if subs:
        out["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": list(s.verbs),
            }
            for s in subs
        ]
    return out


def aggregated(catalog: resources.Catalog, *, core: bool, version: str) -> dict[str, Any]:
    """The APIGroupDiscoveryList for `/api` (core=True) or `/apis` (core=False).

    `version` is what `negotiate_discovery` chose; v2 and v2beta1 share one shape.
    """
    if version not in AGGREGATED_VERSIONS:
        raise ValueError(f"aggregated discovery version must be one of {AGGREGATED_VERSIONS}, not {version!r}")
    items: list[dict[str, Any]] = []
    for group, versions in catalog.groups().items():
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group} if group else {},
                "versions": [
                    {
                        "version": v,
                        "resources": [_aggregated_resource(i) for i in catalog.in_group_version(group, v)],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": AGGREGATED_KIND,
        "apiVersion": f"{DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": items,
    }
