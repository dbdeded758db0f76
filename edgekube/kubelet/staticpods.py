"""Static pods: pods from manifest files that the kubelet runs on its own, and their mirror pods
in the API (upstream's file source, pod manager and mirror client).

Files. Every `*.yaml`, `*.yml` and `*.json` file in `pod-manifest-path` (hidden files ignored)
holds one Pod. The folder is read at boot, before the pod workers adopt the containers that
outlived the last process (so static pods are known there, not swept), then every 20 s as
upstream's file check frequency. A file that does not parse, holds several documents or another
kind, or does not validate is logged with its name and the reason (once, until it changes) and
skipped; the others run. Two files naming the same pod: the first by file name wins.

Identity, as upstream's `applyDefaults`: a static pod is named `<name>-<node-name>`, in its
namespace or `default`; its uid is a hash of the pod as the file gives it (parsed: comments and
layout do not count), the node name and the file name, so the same file gives the same uid after
a restart (its containers are adopted, none restarted) and after an upgrade of edgekube that adds
a default, and an edit gives a new uid: the old pod is stopped, and the new one starts once the
old one is gone (upstream's one-static-pod-per-name start order). It gets the pod defaults the
API applies (not the admission ones: no service account, as upstream's decoder), `nodeName`, a
toleration of every NoExecute taint, and the annotations `kubernetes.io/config.source: file`,
`kubernetes.io/config.hash: <uid>` and `kubernetes.io/config.seen`.

Mirror pods. For each static pod the API holds a pod of the same name, namespace, labels,
annotations and spec, with `kubernetes.io/config.mirror: <uid>` and an ownerReference to the
Node (controller, so no workload controller adopts it; nodeName set, so the scheduler leaves
it); the pod workers write the static pod's status there. The kubelet runs static pods from
their files only: a mirror pod being deleted, or whose hash is not its static pod's, is deleted
at once (grace 0, uid precondition) and made again; a mirror pod without a static pod behind it
(its file removed, once the pod stopped) is deleted. Upstream's admission forbids mirror pods
to reference service accounts and secrets because its nodes are not trusted; this kubelet is
the API server's own process and its manifests are root's files, so they may.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import defaults, rest, validation
from edgekube.client import informer as informer_mod
from edgekube.client import local

log = logging.getLogger(__name__)
JSON = dict[str, Any]

SOURCE_ANNOTATION = "kubernetes.io/config.source"
HASH_ANNOTATION = "kubernetes.io/config.hash"
SEEN_ANNOTATION = "kubernetes.io/config.seen"
MIRROR_ANNOTATION = defaults.MIRROR_POD_ANNOTATION
EXTENSIONS = (".yaml", ".yml", ".json")
FILE_CHECK_SECONDS = 20.0
STOPPING_CHECK_SECONDS = 1.0  # while a new static pod waits for the old one of its name to stop
ALL_NO_EXECUTE: JSON = {"operator": "Exists", "effect": "NoExecute"}
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "generateName", "managedFields", "selfLink")


class ManifestError(ValueError):
    """The file holds no valid Pod; the message says why."""


class Workers(Protocol):
    """What the file source needs of the pod workers (`pods.PodManager`)."""

    def add_static(self, pod: JSON) -> None: ...

    def remove_static(self, uid: str) -> None: ...

    def resend_status(self, uid: str) -> None: ...

    def static_uids(self) -> set[str]: ...


# --- pods from files -------------------------------------------------------------------------


def full_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def mirror_of(pod: Mapping[str, Any]) -> str:
    """The uid of the static pod a mirror pod stands for ("" for any other pod)."""
    return str(((pod.get("metadata") or {}).get("annotations") or {}).get(MIRROR_ANNOTATION) or "")


def is_mirror(pod: Mapping[str, Any]) -> bool:
    return MIRROR_ANNOTATION in (((pod.get("metadata") or {}).get("annotations")) or {})


def pod_uid(doc: Mapping[str, Any], *, node_name: str, file_name: str) -> str:
    """A hash of the pod as written, the node and the file (32 hex digits, as upstream's md5)."""
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    h.update(f"\0host:{node_name}\0file:{file_name}".encode())
    return h.hexdigest()[:32]


def _document(text: str, *, json_file: bool) -> Any:
    try:
        if json_file:
            return json.loads(text)
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"does not parse: {exc}") from None
    if len(docs) != 1:
        raise ManifestError(f"holds {len(docs)} documents; a manifest holds one Pod")
    _bounded(docs[0])
    # YAML's timestamps and other non-JSON scalars become strings, as they would through the API.
    return json.loads(json.dumps(docs[0], default=str))


_MAX_VALUES = 250_000  # as the API's gate (api/jsontree.py): far beyond any real pod
_MAX_DEPTH = 128


def _bounded(doc: Any) -> None:
    """Refuse a document too big once its YAML aliases are expanded: PyYAML shares an alias's
    value, so a 400-byte "billion laughs" file loads small, and would only blow up (and take the
    node with it) in the copy below. Counts every visit, as the copy would, up to the bound."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > _MAX_VALUES or depth > _MAX_DEPTH:
            raise ManifestError(f"is too large or too deep once its YAML aliases are expanded (more than "
                                f"{_MAX_VALUES} values or {_MAX_DEPTH} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def parse(text: str, *, file_name: str, node_name: str, seen: str) -> JSON:
    """The static pod a manifest file's text gives, defaulted and validated."""
    doc = _document(text, json_file=file_name.endswith(".json"))
    if not isinstance(doc, dict):
        raise ManifestError("holds no object; a manifest holds one Pod")
    if doc.get("kind") != "Pod" or doc.get("apiVersion") != "v1":
        raise ManifestError(f"holds a {doc.get('apiVersion') or '(no apiVersion)'} {doc.get('kind') or '(no kind)'}, "
                            "not a v1 Pod")
    uid = pod_uid(doc, node_name=node_name, file_name=file_name)
    pod = copy.deepcopy(doc)
    meta, spec = pod.setdefault("metadata", {}), pod.get("spec")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise ManifestError("metadata.name: Required value")
    if not isinstance(spec, dict):
        raise ManifestError("spec: Required value")
    if not isinstance(meta.get("annotations") or {}, dict) or not isinstance(spec.get("tolerations") or [], list):
        raise ManifestError("metadata.annotations must be a map and spec.tolerations a list")
    for k in _SERVER_FIELDS:
        meta.pop(k, None)
    meta.update(name=f"{meta['name']}-{node_name.lower()}", namespace=str(meta.get("namespace") or "default"), uid=uid)
    meta["annotations"] = {**(meta.get("annotations") or {}), SOURCE_ANNOTATION: "file", HASH_ANNOTATION: uid,
                           SEEN_ANNOTATION: seen}
    spec["nodeName"] = node_name
    defaults.pod_spec(spec)
    tolerations = spec.setdefault("tolerations", [])
    if ALL_NO_EXECUTE not in tolerations:
        tolerations.append(dict(ALL_NO_EXECUTE))
    pod["status"] = {"phase": "Pending"}
    causes = validation.validate("Pod", pod, old=None, namespaced=True)
    if causes:
        raise ManifestError("; ".join(f"{c.field}: {c.message}" for c in causes))
    return pod


def seen_now(clock: clock_mod.Clock) -> str:
    """Upstream's config.seen form: RFC 3339 with the fraction of the second."""
    return clock.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class Scan:
    pods: dict[str, JSON]  # uid -> static pod, in file name order
    files: dict[str, str]  # uid -> file name
    problems: dict[str, str]  # file (or folder) -> why it was skipped


def scan(folder: Path, *, node_name: str, seen: str) -> Scan:
    """Read the folder (blocking: run it in a thread). A missing folder holds no static pods."""
    out = Scan({}, {}, {})
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out.problems[str(folder)] = f"cannot be read: {exc}"
        return out
    by_name: dict[str, str] = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(EXTENSIONS):
            continue
        try:
            if not entry.is_file():
                continue
            pod = parse(Path(entry.path).read_text(), file_name=entry.name, node_name=node_name, seen=seen)
        except (OSError, UnicodeDecodeError, ManifestError) as exc:
            out.problems[entry.path] = str(exc)
            continue
        name = full_name(pod)
        if name in by_name:
            out.problems[entry.path] = f"pod {name} is already defined by {by_name[name]}"
            continue
        by_name[name] = entry.name
        uid = pod["metadata"]["uid"]
        out.pods[uid] = pod
        out.files[uid] = entry.name
    return out


def mirror_pod(static: Mapping[str, Any], *, node_name: str, node_uid: str) -> JSON:
    """The API's copy of a static pod (upstream's CreateMirrorPod)."""
    meta = static["metadata"]
    out_meta: JSON = {"name": meta["name"], "namespace": meta["namespace"],
                      "annotations": {**meta.get("annotations", {}), MIRROR_ANNOTATION: meta["uid"]},
                      "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid,
                                           "controller": True}]}
    if meta.get("labels"):
        out_meta["labels"] = dict(meta["labels"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out_meta, "spec": copy.deepcopy(static["spec"])}


# --- the source ------------------------------------------------------------------------------


class FileSource:
    """Hands the static pods of the folder to the pod workers and keeps their mirror pods."""

    def __init__(self, folder: Path, *, node_name: str, client: local.LocalClient, pods: informer_mod.Informer,
                 workers: Workers, clock: clock_mod.Clock, check_seconds: float = FILE_CHECK_SECONDS) -> None:
        self.folder = folder
        self._check_seconds = check_seconds
        self._node_name = node_name
        self._client = client
        self._pods = pods
        self._workers = workers
        self._clock = clock
        self._wanted: dict[str, JSON] = {}  # uid -> static pod, from the files
        self._files: dict[str, str] = {}  # uid -> file name
        self._handed: set[str] = set()  # uids given to the workers and not taken back
        self._names: dict[str, str] = {}  # uid -> full name, of static pods the workers still have
        self._file_problems: dict[str, str] = {}  # file -> why it was skipped, as last logged
        self._mirror_problems: dict[str, str] = {}  # static pod -> why it has no mirror pod, as last logged
        self._wake = asyncio.Event()

    def handlers(self) -> informer_mod.Handlers:
        """Mirror pods that come, go, or start being deleted wake the source (status writes do not)."""

        def state(pod: JSON) -> tuple[str, bool]:
            return mirror_of(pod), bool((pod.get("metadata") or {}).get("deletionTimestamp"))

        def changed(pod: JSON) -> None:
            if is_mirror(pod):
                self._wake.set()

        def updated(old: JSON, new: JSON) -> None:
            if (is_mirror(old) or is_mirror(new)) and state(old) != state(new):
                self._wake.set()

        return informer_mod.Handlers(on_add=changed, on_update=updated, on_delete=changed)

    async def load(self) -> None:
        """The boot read: the static pods go to the workers before these adopt containers."""
        await self.rescan()
        self._hand_over()

    async def run(self, *, synced: asyncio.Event) -> None:
        await synced.wait()
        next_scan = self._clock.monotonic() + self._check_seconds
        while True:
            self._wake.clear()
            if self._clock.monotonic() >= next_scan:
                await self.rescan()
                next_scan = self._clock.monotonic() + self._check_seconds
            waiting = await self.sync()
            timeout = next_scan - self._clock.monotonic()
            if waiting:
                timeout = min(timeout, STOPPING_CHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._wake.wait()

    async def rescan(self) -> None:
        found = await asyncio.to_thread(scan, self.folder, node_name=self._node_name, seen=seen_now(self._clock))
        for where, problem in found.problems.items():
            if self._file_problems.get(where) != problem:
                log.error("static pod manifest %s skipped: %s", where, problem)
        self._file_problems = dict(found.problems)
        # A pod seen before is kept as it was first seen (its config.seen stays).
        self._wanted = {uid: self._wanted.get(uid, pod) for uid, pod in found.pods.items()}
        self._files = found.files

    async def sync(self) -> bool:
        """One pass: static pods to start and stop, then mirror pods. Returns whether a static pod
        is stopping (its mirror pod goes once it stopped, a new pod of its name starts then)."""
        waiting = self._hand_over()
        await self._sync_mirrors()
        return waiting

    def _hand_over(self) -> bool:
        for uid in sorted(self._handed - set(self._wanted)):
            self._handed.discard(uid)
            self._workers.remove_static(uid)
            log.info("static pod %s (%s): its manifest is gone or changed; stopping it", self._names.get(uid), uid)
        live = self._workers.static_uids()
        self._names = {uid: name for uid, name in self._names.items() if uid in live or uid in self._handed}
        for uid, pod in self._wanted.items():
            name = full_name(pod)
            # The pod of the file before an edit (or this one, stopping after its file came back)
            # stops first.
            if uid not in self._handed and name not in self._names.values():
                self._handed.add(uid)
                self._names[uid] = name
                self._workers.add_static(self._with_start_time(pod))
                log.info("static pod %s (%s) from %s", name, uid, self._files.get(uid))
        return bool(set(self._names) - self._handed)

    def _with_start_time(self, pod: JSON) -> JSON:
        """The pod with the startTime its mirror shows, when the mirror is of this very pod (an
        edgekube restart): its activeDeadlineSeconds and its mirror's startTime go on from there."""
        meta = pod["metadata"]
        try:
            mirror = self._client.get("v1", "Pod", name=meta["name"], namespace=meta["namespace"])
        except errors.APIError:
            return pod
        started = (mirror.get("status") or {}).get("startTime")
        if not started or (mirror.get("metadata", {}).get("annotations") or {}).get(MIRROR_ANNOTATION) != meta["uid"]:
            return pod
        return {**pod, "status": {**(pod.get("status") or {}), "startTime": started}}

    # --- mirror pods ---------------------------------------------------------------------------

    async def _sync_mirrors(self) -> None:
        mirrors = {full_name(p): p for p in self._pods.list()
                   if is_mirror(p) and (p.get("spec") or {}).get("nodeName") == self._node_name}
        for uid in sorted(self._handed):
            static = self._wanted[uid]
            await self._ensure_mirror(static, self._pods.get(full_name(static)))
        kept = set(self._names.values()) | {full_name(p) for p in self._wanted.values()}
        for name, mirror in mirrors.items():
            if name not in kept:
                await self._delete_mirror(mirror, why="its static pod is gone")

    async def _ensure_mirror(self, static: JSON, current: JSON | None) -> None:
        uid, name = str(static["metadata"]["uid"]), full_name(static)
        if current is not None and not is_mirror(current):
            self._report(name, f"static pod {name}: a pod of that name that is no mirror pod is in the way; "
                               "it runs without a mirror pod until that pod is deleted")
            return
        if current is not None:
            if mirror_of(current) == uid and not current["metadata"].get("deletionTimestamp"):
                return
            why = "it is being deleted" if mirror_of(current) == uid else "it stands for an older static pod"
            if not await self._delete_mirror(current, why=why):
                return
        try:
            node = self._client.get("v1", "Node", name=self._node_name)
        except errors.APIError as exc:
            self._report(name, f"static pod {name}: no mirror pod while node {self._node_name} cannot be read: {exc}")
            return
        if node["metadata"].get("deletionTimestamp"):
            return  # upstream's: no mirror pods on a node being removed
        body = mirror_pod(static, node_name=self._node_name, node_uid=str(node["metadata"]["uid"]))
        try:
            await self._client.create(body)
        except errors.APIError as exc:
            if exc.code != 409:  # 409: made meanwhile, the next pass looks at it
                self._report(name, f"static pod {name}: mirror pod not created: {exc}")
            return
        self._mirror_problems.pop(name, None)
        log.info("static pod %s: mirror pod created", name)
        self._workers.resend_status(uid)

    async def _delete_mirror(self, mirror: JSON, *, why: str) -> bool:
        meta = mirror["metadata"]
        opts = rest.DeleteOptions(grace_period_seconds=0, precondition_uid=str(meta.get("uid")))
        try:
            await self._client.delete("v1", "Pod", name=str(meta["name"]), namespace=str(meta["namespace"]),
                                      options=opts)
        except errors.APIError as exc:
            if exc.code == 404:
                return True
            if exc.code != 409:  # 409: another pod of that name now, looked at next pass
                log.warning("mirror pod %s not deleted: %s", full_name(mirror), exc)
            return False
        log.info("mirror pod %s deleted: %s", full_name(mirror), why)
        return True

    def _report(self, name: str, message: str) -> None:
        """Log why a static pod has no mirror pod, once until it changes (tried again each pass)."""
        if self._mirror_problems.get(name) != message:
            self._mirror_problems[name] = message
            log.error("%s", message)
