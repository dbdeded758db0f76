"""ControllerRevisions: the template history of DaemonSets and StatefulSets, kept as upstream keeps it.

A revision's `data` is the strategic merge patch that puts the owner's pod template back,
`{"spec": {"template": {..., "$patch": "replace"}}}`: `kubectl rollout undo` applies it as is, and
`kubectl rollout history --revision=N` shows the template in it. A revision is current when its
data equals the patch made from the owner now; its `revision` number is bumped to the top when an
old template comes back (a rollback), so the history stays ordered by when a template was last used.

Names are `<owner>-<hash>` with upstream's hashes: FNV-32a over the pod template plus the
collision count (`controller.ComputeHash`: DaemonSet revisions, and the `pod-template-hash` of
ReplicaSets) and FNV-32 over the revision's data plus the collision count
(`history.HashControllerRevision`: StatefulSet revisions), both spelled in the alphabet upstream
uses for generated names. The template is hashed as canonical JSON (sorted keys, Go's escaping),
not Go's struct dump, so the hash values differ from a real cluster's, never their form.

Templates are compared and hashed in their `normal` form, as upstream compares and hashes Go
structs: a `null` is the field's zero value, the same as leaving it out. Clients that re-encode
a template through Go types send `metadata: {creationTimestamp: null}` (`kubectl rollout undo`,
`kubectl apply` of a manifest made by `kubectl create --dry-run -o yaml`); that is no new
template, so no new ReplicaSet, revision or rollout.

`Digests` compares templates without holding the event loop: a controller reconciles an owner
many times per revision (every status change of its pods), and the normal form of a template
of 10,000 env entries costs some 20 ms of Python, each time, on the loop. A digest of the
normal form (its sorted JSON) is computed once per object revision (uid and resourceVersion:
cached objects are never changed in place), on the offload worker when the template is large,
and kept in a small bounded cache.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from edgekube._cogs import offload as offload_mod
from edgekube.client import objects

JSON = dict[str, Any]

HASH_LABEL = "controller-revision-hash"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
_NAME_PREFIX_MAX = 223  # 253 minus room for "-<hash>"
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
# Go's encoding/json escapes these inside strings; so do we, for the same bytes.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def safe_encode(text: str) -> str:
    """apimachinery's rand.SafeEncodeString: no vowels, no look-alike characters."""
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in text)


def fnv32(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
        h ^= b
    return h


def fnv32a(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def canonical(value: Any) -> bytes:
    """JSON as Go marshals a map: sorted keys, no spaces, <, > and & escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in _GO_ESCAPES.items():
        text = text.replace(ch, esc)
    return text.encode()


def normal(value: Any) -> Any:
    """`value` without its nulls (at any depth): what decoding into Go types leaves of it."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def compute_hash(template: JSON, collision_count: int | None) -> str:
    """controller.ComputeHash: the hash of a pod template (and of the collision count, if any)."""
    data = canonical(normal(template))
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"
    return safe_encode(str(fnv32a(data)))


def hash_revision(data: JSON, probe: int | None) -> str:
    """history.HashControllerRevision: the hash of a revision's data (and of the probe)."""
    raw = canonical(data)
    if probe is not None:
        raw += str(probe).encode()
    return safe_encode(str(fnv32(raw)))


def revision_name(prefix: str, hash_: str) -> str:
    return f"{prefix[:_NAME_PREFIX_MAX]}-{hash_}"


def template_patch(owner: JSON) -> JSON:
    """The revision data for `owner`'s current template (upstream's getPatch)."""
    template = normal((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def matches(owner: JSON, revision: JSON) -> bool:
    """Whether `revision` holds `owner`'s current template."""
    return canonical(template_patch(owner)) == canonical(normal(revision.get("data")))


def equal(a: JSON, b: JSON) -> bool:
    return canonical(normal(a.get("data"))) == canonical(normal(b.get("data")))


def apply(owner: JSON, revision: JSON) -> JSON:
    """A copy of `owner` with the template `revision` holds (upstream's ApplyRevision)."""
    out = copy.deepcopy(owner)
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    out.setdefault("spec", {})["template"] = template
    return out


def number(revision: JSON) -> int:
    try:
        return int(revision.get("revision") or 0)
    except (TypeError, ValueError):
        return 0


def sort(revisions: Iterable[JSON]) -> list[JSON]:
    """Oldest first: by revision number, then creation time, then name (SortControllerRevisions)."""
    return sorted(revisions, key=lambda r: (number(r), objects.meta(r).get("creationTimestamp") or "",
                                            objects.meta(r).get("name") or ""))


def max_number(revisions: Iterable[JSON]) -> int:
    return max((number(r) for r in revisions), default=0)


def new(owner: JSON, *, name: str, data: JSON, revision: int, labels: dict[str, str]) -> JSON:
    """A ControllerRevision of `owner` (not yet created): its annotations, owned by it."""
    meta = objects.meta(owner)
    out_meta: JSON = {"name": name, "namespace": meta.get("namespace"), "labels": labels,
                      "ownerReferences": [objects.owner_ref(owner)]}
    if meta.get("annotations"):
        out_meta["annotations"] = dict(meta["annotations"])
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": out_meta, "data": data,
            "revision": revision}


def template_labels(owner: JSON) -> dict[str, str]:
    tmeta = (((owner.get("spec") or {}).get("template") or {}).get("metadata") or {})
    return dict(tmeta.get("labels") or {})


def digest(value: Any) -> bytes:
    """A fingerprint of `value`'s normal form: equal for values that `normal` makes equal."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if b"null" in data:  # some null to drop (or the word in a string: the same answer, slower)
        data = orjson.dumps(normal(value), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=16).digest()


class Digests:
    """`digest`s of a part of objects, once per object revision, off the loop when large."""

    def __init__(self, offload: offload_mod.Offload, part: Callable[[JSON], Any], *, size: int = 256) -> None:
        self._offload = offload
        self._part = part
        self._size = size
        self._cache: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()

    async def of(self, obj: JSON) -> bytes:
        """The digest of `part(obj)`; cached when `obj` is a stored object (uid and version)."""
        meta = objects.meta(obj)
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        key = (str(uid), str(version))
        if uid and version:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        out = await self.of_value(self._part(obj))
        if uid and version:
            self._cache[key] = out
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return out

    async def of_value(self, value: Any) -> bytes:
        """The digest of `value` (not cached), on the worker when it is large."""
        if self._offload.heavy_value(value):
            return await self._offload.always(digest, value)
        return digest(value)
