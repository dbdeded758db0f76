"""Manifests dropped in a folder, deployed: every object in `DATA/manifests/` applied at boot and
on change, and what a file no longer holds pruned (k3s's deploy controller, for an offline site
whose workloads come on the SD card).

Files. Every `*.yaml`, `*.yml` and `*.json` file of the folder (not its subfolders; hidden files
ignored) holds any number of objects: YAML documents separated by `---`, a `List` flattened. A
file `NAME.skip` beside `NAME` leaves NAME alone (k3s's convention): nothing is applied or pruned
for it, and what it applied before stays.

Applying. Each object is server-side applied, as `kubectl apply --server-side --force-conflicts`
does, by the field manager `edgekube-manifests` (the files are the truth: a field they set is
theirs again at the next apply, as in k3s). Files go in name order, and in one pass the
Namespaces and CustomResourceDefinitions of every file go first, so a file may hold a namespace
with what lives in it, or a CRD with its custom objects. A namespaced object without a namespace
goes to `default`. Each applied object is annotated `edgekube.io/manifest: FILE`.

When. At boot, once the controllers run, every file is applied. Then the folder is read every
`check-seconds` (default 10 s): only a file whose inode, size or modification time changed is
read again, and applied if its content changed (sha256). A file with an object that failed is
applied again at every check until it applies whole (a namespace made meanwhile, an admission
webhook back). A quiet folder costs a few stat calls and writes nothing.

Pruning. What each file applied (apiVersion, kind, namespace, name and uid of each object) is
recorded in the ConfigMap `kube-system/edgekube-manifests`, one key per file, with its sha256 and
its last error (`kubectl -n kube-system get cm edgekube-manifests -o yaml` shows what came from
where). An object that a file no longer holds (its document removed, or the whole file) is
deleted, with the recorded uid as a precondition: an object someone made again under that name
is left alone. A file that fails to read or parse prunes nothing, nor does an object that failed
to apply. Delete the ConfigMap and the history is forgotten: nothing is pruned for files removed
before that.

Errors. A file that does not parse and an object the API refuses are logged with the file, the
object and the reason (once until it changes) and recorded in the ConfigMap; the other files,
and the other objects of the same file, are applied. A manifest never fails the boot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors, jsontree
from edgekube.api.registry import rest
from edgekube.client import local

log = logging.getLogger(__name__)
JSON = dict[str, Any]

EXTENSIONS = (".yaml", ".yml", ".json")
SKIP_SUFFIX = ".skip"
CHECK_SECONDS = 10.0
FIELD_MANAGER = "edgekube-manifests"
SOURCE_ANNOTATION = "edgekube.io/manifest"
STATE_NAMESPACE = "kube-system"
STATE_NAME = "edgekube-manifests"
MAX_FILE_BYTES = 8 << 20  # a manifest folder holds charts' worth of YAML, not disk images
_FIRST = frozenset({("v1", "Namespace"), ("apiextensions.k8s.io/v1", "CustomResourceDefinition")})
_STATE_KEY = re.compile(r"[-._a-zA-Z0-9]+")  # what a ConfigMap key may be


class ManifestError(ValueError):
    """The file holds no usable objects; the message says why."""


@dataclasses.dataclass(frozen=True, order=True)
class Ref:
    """One object a file applies."""

    api_version: str
    kind: str
    namespace: str  # "" for a cluster-scoped object
    name: str

    def show(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclasses.dataclass(frozen=True)
class Read:
    """A file as last read."""

    stat: tuple[int, int, int]  # inode, size, modification time (ns): unchanged, not read again
    sha256: str
    objects: tuple[JSON, ...] | None  # None: it did not parse
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Applied:
    """What a file gave the cluster, as recorded in the state ConfigMap."""

    sha256: str
    objects: dict[Ref, str]  # -> uid
    error: str = ""

    def encode(self, file: str) -> str:
        return json.dumps({"file": file, "sha256": self.sha256, "error": self.error,
                           "objects": [[r.api_version, r.kind, r.namespace, r.name, uid]
                                       for r, uid in sorted(self.objects.items())]}, separators=(",", ":"))

    @staticmethod
    def decode(text: str) -> tuple[str, Applied]:
        doc = json.loads(text)
        objects = {Ref(str(a), str(k), str(ns), str(n)): str(uid) for a, k, ns, n, uid in doc["objects"]}
        return str(doc["file"]), Applied(str(doc["sha256"]), objects, str(doc.get("error") or ""))


def parse(text: str, *, json_file: bool) -> list[JSON]:
    """The objects a file's text holds, in order (a `List`'s items in its place)."""
    try:
        docs = [json.loads(text)] if json_file else jsontree.load_yaml_all(text)
    except (ValueError, yaml.YAMLError) as exc:  # jsontree.YAMLError is a ValueError
        raise ManifestError(f"does not parse: {exc}") from None
    out: list[JSON] = []
    for i, doc in enumerate(docs):
        where = f"document {i + 1}"
        problem = jsontree.find_problem(doc)
        if problem is not None:
            raise ManifestError(f"{where}: {problem[1] + ': ' if problem[1] else ''}{problem[2]}")
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
                and isinstance(doc.get("items"), list):
            items = [(f"{where} item {j + 1}", item) for j, item in enumerate(doc["items"])]
        else:
            items = [(where, doc)]
        for at, obj in items:
            if not isinstance(obj, dict):
                raise ManifestError(f"{at}: not an object")
            meta = obj.get("metadata")
            if not obj.get("apiVersion") or not isinstance(obj.get("apiVersion"), str) \
                    or not obj.get("kind") or not isinstance(obj.get("kind"), str):
                raise ManifestError(f"{at}: apiVersion and kind are required")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
                raise ManifestError(f"{at} ({obj['kind']}): metadata.name is required (generateName cannot be applied)")
            out.append(obj)
    return out


def read_folder(folder: Path, previous: dict[str, Read]) -> tuple[dict[str, Read], set[str], str]:
    """(file -> its read, files left alone by a `.skip`, a problem with the folder itself).
    Blocking: run it in a thread. A file whose stat did not change is not read again."""
    out: dict[str, Read] = {}
    skipped: set[str] = set()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return out, skipped, ""
    except OSError as exc:
        return out, skipped, f"cannot be read: {exc}"
    names = {e.name for e in entries}
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(EXTENSIONS):
            continue
        if name + SKIP_SUFFIX in names:
            skipped.add(name)
            continue
        try:
            if not entry.is_file():
                continue
            st = entry.stat()
            stat = (st.st_ino, st.st_size, st.st_mtime_ns)
            before = previous.get(name)
            if before is not None and before.stat == stat:
                out[name] = before
                continue
            if st.st_size > MAX_FILE_BYTES:
                out[name] = Read(stat, "", None, f"is {st.st_size} bytes; a manifest file may hold {MAX_FILE_BYTES}")
                continue
            data = Path(entry.path).read_bytes()
        except OSError as exc:
            out[name] = Read((0, 0, 0), "", None, f"cannot be read: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if before is not None and before.sha256 == digest:
            out[name] = dataclasses.replace(before, stat=stat)  # touched, not changed
            continue
        try:
            objects = parse(data.decode(), json_file=name.endswith(".json"))
        except UnicodeDecodeError:
            out[name] = Read(stat, digest, None, "is not UTF-8 text")
        except ManifestError as exc:
            out[name] = Read(stat, digest, None, str(exc))
        else:
            out[name] = Read(stat, digest, tuple(objects))
    return out, skipped, ""


def _state_key(file: str) -> str:
    if _STATE_KEY.fullmatch(file) and len(file) <= 200:
        return file
    return "file-" + hashlib.sha256(file.encode()).hexdigest()[:32]


class Deployer:
    """Applies the folder's manifests and prunes what they no longer hold (module doc)."""

    def __init__(self, folder: Path, *, client: local.LocalClient, clock: clock_mod.Clock,
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.folder = folder
        self._client = client
        self._clock = clock
        self._check_seconds = check_seconds
        self._reads: dict[str, Read] = {}
        self._applied: dict[str, Applied] | None = None  # loaded from the state ConfigMap at the first pass
        self._recorded: dict[str, str] = {}  # the state ConfigMap's data as last written or read
        self._logged: dict[str, str] = {}  # file -> the problems last logged
        self._folder_problem = ""

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except errors.APIError as exc:  # the state record: tried again at the next check
                log.warning("manifests in %s: %s", self.folder, exc.message)
            except Exception:  # a bug, or a manifest no one foresaw: never the node's end
                log.exception("manifests in %s: the pass failed; tried again at the next check", self.folder)
            await asyncio.sleep(self._check_seconds)

    async def sync(self) -> None:
        """One pass: read what changed, apply it, prune what is gone, record it."""
        first = self._applied is None
        if self._applied is None:
            self._applied = self._load_state()
        reads, skipped, problem = await asyncio.to_thread(read_folder, self.folder, self._reads)
        self._reads = reads
        if problem != self._folder_problem:
            self._folder_problem = problem
            if problem:
                log.error("manifests folder %s %s", self.folder, problem)
        if problem:
            return
        applied = self._applied
        due = [f for f, r in reads.items()
               if first or f not in applied or applied[f].sha256 != r.sha256 or applied[f].error or r.error]
        gone = [f for f in applied if f not in reads and f not in skipped]
        if not due and not gone:
            return
        new = dict(applied)
        for f in due:
            read = reads[f]
            if read.objects is None:  # did not read or parse: nothing pruned, the error recorded
                before = applied.get(f, Applied("", {}))
                new[f] = Applied(before.sha256, before.objects, f"{f} {read.error}")
        parsed = [f for f in due if reads[f].objects is not None]
        results: dict[str, dict[Ref, str]] = {f: {} for f in parsed}
        failures: dict[str, list[str]] = {f: [] for f in parsed}
        failed: set[Ref] = set()  # objects whose apply failed: pruned by no file this pass
        for first_kinds in (True, False):
            for f in parsed:
                for obj in reads[f].objects or ():
                    if ((obj["apiVersion"], obj["kind"]) in _FIRST) != first_kinds:
                        continue
                    ref, uid, error = await self._apply(f, obj)
                    if error:
                        failures[f].append(error)
                        if ref is not None:
                            failed.add(ref)
                        kept = applied.get(f, Applied("", {})).objects
                        if ref is not None and ref in kept:
                            results[f][ref] = kept[ref]  # a failed apply prunes nothing
                    elif ref is not None:
                        results[f][ref] = uid
        for f in parsed:
            new[f] = Applied(reads[f].sha256, results[f], "; ".join(failures[f]))
            if not failures[f]:
                log.info("manifest %s applied: %d objects", f, len(results[f]))
        for f in gone:
            del new[f]
        # An object no file holds any more is pruned; one that moved to another file is not.
        held = {ref for a in new.values() for ref in a.objects} | failed
        for f in sorted({*parsed, *gone}):
            dropped = {r: u for r, u in applied.get(f, Applied("", {})).objects.items() if r not in held}
            await self._prune(f, dropped)
            if f in gone:
                log.info("manifest %s removed: %d objects pruned", f, len(dropped))
        for f, a in new.items():
            self._log_once(f, a.error)
        for f in set(self._logged) - set(new):
            del self._logged[f]
        # Taken as done only once recorded: a record that cannot be written (a webhook refusing
        # ConfigMaps, say) leaves every file due again at the next check (applies are no-ops,
        # prunes of what is gone find it gone), so the record catches up.
        await self._record(new)
        self._applied = new

    async def _apply(self, file: str, obj: JSON) -> tuple[Ref | None, str, str]:
        """(its ref, its uid, "" or the error) for one object of a file."""
        obj = json.loads(json.dumps(obj))  # the apply owns its copy; the read is kept
        meta = obj["metadata"]
        kind = f"{obj['kind']} {meta['name']}"
        try:
            info = self._client.resource(obj["apiVersion"], obj["kind"])
        except errors.APIError:
            return None, "", f"{kind}: the server has no kind {obj['kind']} in {obj['apiVersion']}"
        if info.namespaced:
            meta["namespace"] = str(meta.get("namespace") or "default")
        else:
            meta.pop("namespace", None)
        ref = Ref(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        annotations = meta.get("annotations")
        meta["annotations"] = {**(annotations if isinstance(annotations, dict) else {}), SOURCE_ANNOTATION: file}
        try:
            out, _ = await self._client.apply(obj, force=True, cost=len(json.dumps(obj)))
        except errors.APIError as exc:
            return ref, "", f"{ref.show()}: {exc.message}"
        return ref, str((out.get("metadata") or {}).get("uid") or ""), ""

    async def _prune(self, file: str, objects: dict[Ref, str]) -> None:
        for ref, uid in sorted(objects.items()):
            try:
                await self._client.delete(ref.api_version, ref.kind, name=ref.name, namespace=ref.namespace or None,
                                          options=rest.DeleteOptions(precondition_uid=uid or None,
                                                                     propagation_policy="Background",
                                                                     user=self._client.user))
            except errors.APIError as exc:
                if exc.code in (404, 409):  # gone already, or another object of that name now
                    continue
                log.warning("manifest %s: %s not pruned: %s", file, ref.show(), exc.message)
                continue
            log.info("manifest %s: %s pruned (no longer in the file)", file, ref.show())

    def _log_once(self, file: str, error: str) -> None:
        if self._logged.get(file, "") != error:
            self._logged[file] = error
            if error:
                log.error("manifest %s not applied whole: %s", file, error)

    def _load_state(self) -> dict[str, Applied]:
        try:
            cm = self._client.get("v1", "ConfigMap", name=STATE_NAME, namespace=STATE_NAMESPACE)
        except errors.APIError as exc:
            if exc.code == 404:
                return {}
            raise
        data = cm.get("data") or {}
        out: dict[str, Applied] = {}
        for key, text in data.items():
            try:
                file, applied = Applied.decode(text)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("manifests record %s/%s: entry %s unreadable (%s): forgotten", STATE_NAMESPACE,
                            STATE_NAME, key, exc)
                continue
            out[file] = applied
        self._recorded = dict(data)
        return out

    async def _record(self, applied: dict[str, Applied]) -> None:
        data = {_state_key(f): a.encode(f) for f, a in sorted(applied.items())}
        if data == self._recorded:
            return
        cm: JSON = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": STATE_NAME, "namespace": STATE_NAMESPACE,
                                 "annotations": {SOURCE_ANNOTATION: str(self.folder)}},
                    "data": data}
        await self._client.apply(cm, force=True)
        self._recorded = data

