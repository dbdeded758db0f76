"""The audit log: who did what to which object, and what the API answered, as upstream's.

Policy. An `audit.k8s.io/v1` Policy file (`audit.policy-file`), read at boot, decides how much of
each request is recorded; no policy, no log (upstream's default). Its rules are tried in order
and the first that matches gives the level, as upstream's policy checker: `users`, `userGroups`
(any), `verbs`, then either resource matching (`namespaces`, "" for cluster-scoped; `resources`
by group with `resources` as `pods`, `pods/log`, `*`, `*/status`, `deployments/*` and optional
`resourceNames`) or `nonResourceURLs` (`/healthz*`, `*`); a rule with neither matches any
request. Levels: `None` (nothing), `Metadata` (who, what, when, the answer's code),
`Request` (and the request's body), `RequestResponse` (and the answer's body). `omitStages` of
the policy and of the rule add up; a rule's `omitManagedFields` overrides the policy's. A
request that no rule matches is not recorded. A policy that cannot be read, or that upstream
would refuse (unknown levels or stages, a rule for both resources and URLs, no rules), stops
the boot with the file and the field named; unknown keys are refused too, since a typo in a
rule would otherwise widen or narrow it silently.

Events. JSON lines of `audit.k8s.io/v1` Event, fields in upstream's order: `RequestReceived`
when a request arrives, `ResponseStarted` when a long-running one (watch, log, exec) sends its
headers, `ResponseComplete` when it is answered, `Panic` when serving it failed unexpectedly
(a 500). The `auditID` is the client's `Audit-ID` header when it sent one, else a new UUID, and
every answer carries it as `Audit-Id` (upstream sets it whether or not a log is kept).

Where its steps sit in the server's filter chain (api/filters.py, upstream's order:
authentication, audit, impersonation, priority and fairness, authorization, handler):
- `received` before authentication: the audit ID and the time received; `unauthenticated`
  records a request that fails authentication (upstream's failed-authentication audit: stage
  `ResponseStarted`, an empty `user`, code 401);
- `observe` right after authentication, around the rest: the policy decision with the
  authenticated user, the events, and the answer's code, or the Status of a refusal raised
  further in (403 of authorization, 429 of fairness), so refusals are audited;
- impersonation runs inside `observe`: the user authentication set is the event's `user`,
  and a different user on the request when it is answered (`handlers.USER_KEY`, replaced by
  impersonation) is its `impersonatedUser`;
- `annotate(request, key, value)` is how inner steps add annotations
  (`authorization.k8s.io/decision`, `pod-security.kubernetes.io/...`).

Off the request path. The middleware only copies what the event needs (strings, the body's
bytes it already holds) into a bounded queue; one writer task drains it in batches and hands
each batch to one thread of its own, which decodes bodies, builds the JSON and appends it with
one `write` per batch. A batch is what came within 0.1 s of its first event: handing a batch to
the thread costs the event loop more than an event does, so they are handed over a few times a
second, not once per request. Nothing is fsync'd per event (an SD card would pay a flash erase for each):
the kernel writes the file back on its own, and the file is closed cleanly at stop. A line is
whole or absent: a batch written short (a full disk) is cut back to where it began, and a torn
last line left by a crash is cut off when the file is opened again. A full queue drops the event
and counts it (`apiserver_audit_error_total{plugin="buffered"}`): an audit log never blocks or
slows a write. A write that fails is logged (once a minute at most) and its events counted
(`plugin="log"`).

Rotation as upstream's (lumberjack): past `log-maxsize` megabytes the file is renamed
`<name>-<UTC time>.<ext>` and a new one started; backups beyond `log-maxbackup` (0: all) or older
than `log-maxage` days (0: any age) are deleted, oldest first. `log-path: "-"` writes to stdout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import itertools
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from edgekube.api import errors, handlers, negotiation, reqattrs
from edgekube.api.auth import user as user_mod

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = dict[str, Any]

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
NONE, METADATA, REQUEST, REQUEST_RESPONSE = range(4)
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
_API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")
_POLICY_KEYS = frozenset({"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"})
_RULE_KEYS = frozenset({"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                        "omitStages", "omitManagedFields"})
_GROUP_KEYS = frozenset({"group", "resources", "resourceNames"})
# Verbs whose body is the object itself: its name, uid and resourceVersion complete the
# objectRef (upstream's LogRequestObject); a patch's body is only a patch.
_OBJECT_VERBS = frozenset({"create", "update"})
_LOG_INTERVAL = 60.0  # a failing log file is reported at most this often
_BATCH_WAIT = 0.1  # seconds an event may wait for others to be written with it


class PolicyError(ValueError):
    pass


class AuditError(RuntimeError):
    """The audit log cannot be kept (its file cannot be opened): a boot error."""


# --- policy ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class GroupResources:
    group: str
    resources: tuple[str, ...]
    resource_names: tuple[str, ...]

    def matches(self, a: reqattrs.RequestInfo) -> bool:
        if self.group != a.api_group:
            return False
        if not self.resources:
            return True
        if self.resource_names and a.name not in self.resource_names:
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        for res in self.resources:
            if res in ("*", combined):
                return True
            if a.subresource and res.startswith("*/") and res[2:] == a.subresource:
                return True
            if res.endswith("/*") and res[:-2] == a.resource:
                return True
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    level: int
    users: frozenset[str] = frozenset()
    user_groups: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    resources: tuple[GroupResources, ...] = ()
    namespaces: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool | None = None

    def matches(self, a: reqattrs.RequestInfo, user: user_mod.UserInfo | None) -> bool:
        if self.users and (user is None or user.name not in self.users):
            return False
        if self.user_groups and (user is None or self.user_groups.isdisjoint(user.groups)):
            return False
        if self.verbs and a.verb not in self.verbs:
            return False
        if self.namespaces or self.resources:
            if not a.resource_request:
                return False
            if self.namespaces and a.namespace not in self.namespaces:
                return False
            return not self.resources or any(g.matches(a) for g in self.resources)
        if self.non_resource_urls:
            return not a.resource_request and any(_path_matches(a.path, spec) for spec in self.non_resource_urls)
        return True


def _path_matches(path: str, spec: str) -> bool:
    return spec in ("*", path) or (spec.endswith("*") and path.startswith(spec[:-1]))


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    level: int
    omit_stages: frozenset[str]
    omit_managed_fields: bool


_NOT_AUDITED = Decision(NONE, frozenset(), False)


@dataclasses.dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False

    def decide(self, a: reqattrs.RequestInfo, user: user_mod.UserInfo | None) -> Decision:
        for rule in self.rules:
            if rule.matches(a, user):
                if rule.level == NONE:
                    return _NOT_AUDITED
                omit = rule.omit_managed_fields
                return Decision(rule.level, self.omit_stages | rule.omit_stages,
                                self.omit_managed_fields if omit is None else omit)
        return _NOT_AUDITED


def load_policy(path: Path) -> Policy:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError(f"audit policy {path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"audit policy {path}: not valid YAML: {exc}") from None
    return parse_policy(doc, where=f"audit policy {path}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: must be a list of strings, got {value!r}")
    return tuple(value)


def _keys(doc: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(doc) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _stages(value: Any, where: str) -> frozenset[str]:
    stages = _strings(value, where)
    for s in stages:
        if s not in STAGES:
            raise PolicyError(f"{where}: unknown stage {s!r} (one of {', '.join(STAGES)})")
    return frozenset(stages)


def _bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PolicyError(f"{where}: must be true or false, got {value!r}")


def parse_policy(doc: Any, *, where: str) -> Policy:
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{where}: must be a Policy (a mapping), got {type(doc).__name__}")
    _keys(doc, _POLICY_KEYS, where)
    if doc.get("kind") != "Policy" or doc.get("apiVersion") not in _API_VERSIONS:
        raise PolicyError(f"{where}: must be kind Policy of apiVersion audit.k8s.io/v1, "
                          f"got kind {doc.get('kind')!r} of {doc.get('apiVersion')!r}")
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{where}: rules: a policy needs at least one rule (upstream refuses a policy with none)")
    rules = tuple(_rule(r, f"{where}: rules[{i}]") for i, r in enumerate(raw_rules))
    return Policy(rules=rules, omit_stages=_stages(doc.get("omitStages"), f"{where}: omitStages"),
                  omit_managed_fields=bool(_bool(doc.get("omitManagedFields"), f"{where}: omitManagedFields")))


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a mapping")
    _keys(raw, _RULE_KEYS, where)
    level = raw.get("level")
    if level not in LEVELS:
        raise PolicyError(f"{where}.level: must be one of {', '.join(LEVELS)}, got {level!r}")
    urls = _strings(raw.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    namespaces = _strings(raw.get("namespaces"), f"{where}.namespaces")
    groups_raw = raw.get("resources") or []
    if not isinstance(groups_raw, list):
        raise PolicyError(f"{where}.resources: must be a list of {{group, resources, resourceNames}}")
    if urls and (namespaces or groups_raw):
        raise PolicyError(f"{where}: rules cannot apply to both regular resources and non-resource URLs")
    for url in urls:
        if url != "*" and not url.startswith("/"):
            raise PolicyError(f"{where}.nonResourceURLs: {url!r}: non-resource URL rules must begin with a '/' character")
        if "*" in url[:-1]:
            raise PolicyError(f"{where}.nonResourceURLs: {url!r}: a wildcard '*' must be the final character of the rule")
    groups = []
    for j, g in enumerate(groups_raw):
        gw = f"{where}.resources[{j}]"
        if not isinstance(g, Mapping):
            raise PolicyError(f"{gw}: must be a mapping")
        _keys(g, _GROUP_KEYS, gw)
        group = g.get("group") or ""
        if not isinstance(group, str) or "/" in group:
            raise PolicyError(f"{gw}.group: must be an API group name such as \"\" or \"apps\", got {group!r}")
        resources = _strings(g.get("resources"), f"{gw}.resources")
        names = _strings(g.get("resourceNames"), f"{gw}.resourceNames")
        if names and not resources:
            raise PolicyError(f"{gw}.resourceNames: using resourceNames requires at least one resource")
        groups.append(GroupResources(group=group, resources=resources, resource_names=names))
    return Rule(
        level=LEVELS.index(level),
        users=frozenset(_strings(raw.get("users"), f"{where}.users")),
        user_groups=frozenset(_strings(raw.get("userGroups"), f"{where}.userGroups")),
        verbs=frozenset(_strings(raw.get("verbs"), f"{where}.verbs")),
        resources=tuple(groups),
        namespaces=frozenset(namespaces),
        non_resource_urls=urls,
        omit_stages=_stages(raw.get("omitStages"), f"{where}.omitStages"),
        omit_managed_fields=_bool(raw.get("omitManagedFields"), f"{where}.omitManagedFields"),
    )


# --- events ------------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _Request:
    """What the middlewares learn about one request, kept on it (`_KEY`)."""

    audit_id: str
    received: float  # time.time()
    decision: Decision = _NOT_AUDITED
    user: user_mod.UserInfo | None = None
    annotations: dict[str, str] | None = None
    code: int = 0  # of the answer, once its headers are sent
    user_json: JSON | None = None  # made once for the request's events
    source_ips: tuple[str, ...] | None = None


_KEY: web.RequestKey[_Request] = web.RequestKey("audit", _Request)


def annotate(request: web.Request, key: str, value: str) -> None:
    """An annotation on the request's audit events (authorization's decision, admission's)."""
    ctx = request.get(_KEY)
    if ctx is not None:
        if ctx.annotations is None:
            ctx.annotations = {}
        ctx.annotations[key] = value


def _annotations(ctx: _Request, request: web.Request) -> dict[str, str] | None:
    """The event's annotations: what inner steps added (`annotate`) and what admission added
    to the write (PodSecurity, webhooks, policies; `handlers.ADMISSION_AUDIT_KEY`)."""
    admission = request.get(handlers.ADMISSION_AUDIT_KEY)
    if not ctx.annotations and not admission:
        return None
    return {**(ctx.annotations or {}), **(admission or {})}


@dataclasses.dataclass(slots=True)
class Record:
    """One event as queued: plain values only, turned into JSON by the writer's thread. Not
    changed once queued (not frozen only because a frozen dataclass is slower to make, and one
    is made per event on the request path)."""

    level: int
    audit_id: str
    stage: str
    uri: str
    verb: str
    user: JSON
    impersonated: JSON | None
    source_ips: tuple[str, ...]
    user_agent: str
    attrs: reqattrs.RequestInfo | None
    status: JSON | None
    request_body: bytes | None
    content_type: str
    response_body: bytes | None
    received: float
    at: float
    annotations: Mapping[str, str] | None
    omit_managed_fields: bool


class MicroTimes:
    """Upstream's MicroTime, `2006-01-02T15:04:05.000000Z`, each second formatted once (a
    strftime per event is most of an event's cost). One per writer thread."""

    def __init__(self) -> None:
        self._whole = -1
        self._text = ""

    def format(self, t: float) -> str:
        whole = int(t)
        if whole != self._whole:
            self._text = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._whole = whole
        return f"{self._text}.{int((t - whole) * 1e6):06d}Z"


def _drop_managed_fields(obj: Any) -> None:
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        for item in obj.get("items") or ():  # a list's objects
            _drop_managed_fields(item)


def _decoded(body: bytes, content_type: str) -> Any:
    """The request's body as the handler read it: an object, or a patch (a JSON patch is a list)."""
    media = negotiation.media_type(content_type)
    try:
        if media in ("application/json", "") or media.endswith("+json"):  # JSON, and the patch types
            return orjson.loads(body)
        return negotiation.decode_body(body, "application/yaml" if media.endswith("+yaml") else content_type)
    except (errors.APIError, ValueError):
        return None  # a body the handler refused too: the event says what was answered


def event(r: Record, *, times: MicroTimes) -> JSON:
    """The audit.k8s.io/v1 Event of a record, in upstream's field order."""
    ev: JSON = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": LEVELS[r.level], "auditID": r.audit_id,
                "stage": r.stage, "requestURI": r.uri, "verb": r.verb, "user": r.user}
    if r.impersonated is not None:
        ev["impersonatedUser"] = r.impersonated
    if r.source_ips:  # none for an in-process write
        ev["sourceIPs"] = list(r.source_ips)
    if r.user_agent:
        ev["userAgent"] = r.user_agent
    request_obj = _decoded(r.request_body, r.content_type) if r.request_body else None
    a = r.attrs
    if a is not None and a.resource_request:
        ref: JSON = {"resource": a.resource}
        meta = (request_obj.get("metadata") if isinstance(request_obj, dict) and a.verb in _OBJECT_VERBS else None) or {}
        namespace = a.namespace or meta.get("namespace")
        name = a.name or meta.get("name")
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if meta.get("uid"):
            ref["uid"] = meta["uid"]
        if a.api_group:
            ref["apiGroup"] = a.api_group
        ref["apiVersion"] = a.api_version
        if meta.get("resourceVersion"):
            ref["resourceVersion"] = meta["resourceVersion"]
        if a.subresource:
            ref["subresource"] = a.subresource
        ev["objectRef"] = ref
    if r.status is not None:
        ev["responseStatus"] = r.status
    if r.level >= REQUEST and request_obj is not None:
        if r.omit_managed_fields:
            _drop_managed_fields(request_obj)
        ev["requestObject"] = request_obj
    if r.level >= REQUEST_RESPONSE and r.response_body:
        try:
            response_obj = orjson.loads(r.response_body)
        except orjson.JSONDecodeError:
            response_obj = None  # not JSON (a log's text, a protobuf answer): not recorded
        if response_obj is not None:
            if r.omit_managed_fields:
                _drop_managed_fields(response_obj)
            ev["responseObject"] = response_obj
    ev["requestReceivedTimestamp"] = times.format(r.received)
    ev["stageTimestamp"] = times.format(r.at)
    if r.annotations:
        ev["annotations"] = dict(r.annotations)
    return ev


def _source_ips(request: web.Request) -> tuple[str, ...]:
    """Upstream's SourceIPs: X-Forwarded-For, then X-Real-Ip, then the peer's address."""
    ips: list[str] = [ip.strip() for ip in request.headers.get("X-Forwarded-For", "").split(",") if ip.strip()]
    real = request.headers.get("X-Real-Ip", "").strip()
    if real and real not in ips:
        ips.append(real)
    peer = request.remote or ""
    if peer and (not ips or ips[-1] != peer):
        ips.append(peer)
    return tuple(ips)


def _auth_methods(request: web.Request) -> str:
    """Upstream's message for a failed authentication: what the client tried."""
    tried = []
    if request.headers.get("Authorization", "").lower().startswith("basic "):
        tried.append("basic")
    parts = request.headers.get("Authorization", "").split(" ")
    if len(parts) > 1 and parts[0].lower() == "bearer":
        tried.append("bearer")
    transport = request.transport
    if transport is not None and transport.get_extra_info("peercert"):
        tried.append("x509")
    if tried:
        return f"Authentication failed, attempted: {', '.join(tried)}"
    return "Authentication failed, no credentials provided"


def _failure(err: errors.APIError) -> JSON:
    status = err.status()
    del status["kind"], status["apiVersion"]
    return status


# --- in-process writes -------------------------------------------------------------------------

# Upstream's identity of the API server's own loopback writes: an in-process write made without
# a component's own user (edgekube's boot reconciles) is recorded as it.
APISERVER = user_mod.authenticated("system:apiserver", groups=[user_mod.SYSTEM_MASTERS])


@dataclasses.dataclass(slots=True)
class LocalWrite:
    """One audited write of an in-process component (`LocalClient`): begun before the registry
    is called, recorded when it answered (`done`) or refused (`failed`)."""

    auditor: Auditor
    decision: Decision
    attrs: reqattrs.RequestInfo
    user: JSON
    agent: str
    audit_id: str
    received: float
    request_body: bytes | None

    def done(self, response: Any, *, code: int) -> None:
        body = orjson.dumps(response) if self.decision.level >= REQUEST_RESPONSE and response is not None else None
        self._record("ResponseComplete", status={"metadata": {}, "code": code}, response_body=body)

    def failed(self, err: errors.APIError) -> None:
        body = orjson.dumps(err.status()) if self.decision.level >= REQUEST_RESPONSE else None
        self._record("ResponseComplete", status=_failure(err), response_body=body)

    def _record(self, stage: str, *, status: JSON | None, response_body: bytes | None = None) -> None:
        if stage in self.decision.omit_stages:
            return
        self.auditor._queue_record(Record(
            level=self.decision.level, audit_id=self.audit_id, stage=stage, uri=self.attrs.path, verb=self.attrs.verb,
            user=self.user, impersonated=None, source_ips=(), user_agent=self.agent, attrs=self.attrs, status=status,
            request_body=self.request_body if stage != "RequestReceived" else None, content_type="application/json",
            response_body=response_body,
            received=self.received, at=time.time(), annotations=None,
            omit_managed_fields=self.decision.omit_managed_fields))


# --- the log file ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LogSettings:
    path: Path | None  # None: stdout ("-")
    max_size_mb: int  # 0: never rotated
    max_backups: int  # 0: all kept
    max_age_days: int  # 0: any age
    buffer_size: int  # events queued for the writer; more are dropped and counted
    batch_size: int = 1000  # events per write


_BACKUP_TIME = "%Y-%m-%dT%H-%M-%S.%f"


class LogFile:
    """The file the writer appends to, rotated by size; used from the writer's thread only."""

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        self._fd = -1
        self._size = 0

    def open(self) -> None:
        path = self.settings.path
        if path is None:
            self._fd = sys.stdout.fileno()
            return
        if path.parent.exists() and not path.parent.is_dir():
            raise AuditError(f"audit log {path}: cannot be opened for writing: {path.parent} is not a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._size = os.fstat(self._fd).st_size
            self._cut_torn_line(path)
        except OSError as exc:
            raise AuditError(f"audit log {path}: cannot be opened for writing: {exc.strerror or exc}") from None

    def _cut_torn_line(self, path: Path) -> None:
        """A crash in the middle of a write can leave a last line without its end: cut it."""
        if self._size == 0:
            return
        with open(path, "rb") as f:
            f.seek(max(0, self._size - 65536))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        end = tail.rfind(b"\n")
        keep = self._size - len(tail) + end + 1 if end >= 0 else max(0, self._size - len(tail))
        os.ftruncate(self._fd, keep)
        log.warning("audit log %s: cut a torn last line (%d bytes) left by an interrupted write", path,
                    self._size - keep)
        self._size = keep

    def write_lines(self, lines: list[bytes]) -> None:
        """`lines` appended in as few writes as the size limit allows: the file is rotated
        between lines, so it passes `log-maxsize` by one line at most (a batch may hold many)."""
        max_size = self.settings.max_size_mb * 1024 * 1024 if self.settings.path is not None else 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and max_size and self._size + size + len(line) > max_size:
                self.write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self.write(b"".join(chunk))

    def write(self, data: bytes) -> None:
        max_size = self.settings.max_size_mb * 1024 * 1024
        if self.settings.path is not None and max_size and self._size and self._size + len(data) > max_size:
            self._rotate()
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            if done and self.settings.path is not None:
                os.ftruncate(self._fd, self._size)  # whole lines or none
            raise
        self._size += done

    def _rotate(self) -> None:
        path = self.settings.path
        assert path is not None
        at = datetime.datetime.now(datetime.UTC)
        backup = path.with_name(f"{path.stem}-{at.strftime(_BACKUP_TIME)[:-3]}{path.suffix}")
        while backup.exists():  # two rotations within a millisecond: the next one, names still in order
            at += datetime.timedelta(milliseconds=1)
            backup = path.with_name(f"{path.stem}-{at.strftime(_BACKUP_TIME)[:-3]}{path.suffix}")
        os.close(self._fd)
        self._fd = -1
        os.rename(path, backup)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = 0
        self._prune()

    def backups(self) -> list[Path]:
        """The rotated files, oldest first (their names sort by time)."""
        path = self.settings.path
        if path is None:
            return []
        pattern = re.compile(re.escape(path.stem) + r"-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}" + re.escape(path.suffix) + "$")
        return sorted(p for p in path.parent.iterdir() if pattern.match(p.name))

    def _prune(self) -> None:
        old = self.backups()
        doomed = set(old[:-self.settings.max_backups] if self.settings.max_backups else [])
        if self.settings.max_age_days:
            cutoff = time.time() - self.settings.max_age_days * 86400
            doomed.update(p for p in old if p.stat().st_mtime < cutoff)
        for p in doomed:
            try:
                p.unlink()
            except OSError as exc:
                log.error("audit log: cannot remove the old backup %s: %s", p, exc.strerror or exc)

    def close(self) -> None:
        if self._fd >= 0 and self.settings.path is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
        self._fd = -1


class AuditIds:
    """Version-4 UUIDs for audit IDs, cheaply: the first 80 bits drawn once per process, the
    last 48 a counter started at a random point, so an ID is unique within the process (for
    2^48 requests) and, with overwhelming probability, across processes and restarts.
    (`uuid.uuid4()`, 16 bytes from the kernel and a UUID object per request, was a few per cent
    of a small GET.)"""

    def __init__(self) -> None:
        drawn = f"{int.from_bytes(os.urandom(16), 'big'):032x}"
        variant = "89ab"[int(drawn[16], 16) & 3]  # RFC 4122's variant bits, 10
        self._prefix = f"{drawn[:8]}-{drawn[8:12]}-4{drawn[13:16]}-{variant}{drawn[17:20]}-"
        self._count = itertools.count(int(drawn[20:], 16))

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & _COUNTER_MASK:012x}"


_COUNTER_MASK = (1 << 48) - 1


class Auditor:
    """The policy, the request path's steps, the queue and the writer task (`run`)."""

    def __init__(self, policy: Policy | None, *, settings: LogSettings | None) -> None:
        self.policy = policy
        self.settings = settings
        self._file = LogFile(settings) if policy is not None and settings is not None else None
        self._queue: deque[Record] = deque()
        self._capacity = settings.buffer_size if settings is not None else 0
        self._wakeup = asyncio.Event()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._times = MicroTimes()  # the writer's thread only
        self.events = 0  # written
        self.dropped = 0  # the queue was full
        self.failed = 0  # their write failed
        self.levels = [0] * len(LEVELS)
        self._failure_logged = float("-inf")
        self._ids = AuditIds()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def open(self) -> None:
        """At boot: the file opened (a clear error if it cannot be), the writer's thread made."""
        if self._file is not None:
            self._file.open()
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")

    # --- the request path (called by the server's filter chain, api/filters.py) ---

    def received(self, request: web.Request) -> _Request:
        """Before authentication: the audit ID and the time received, kept on the request."""
        ctx = request[_KEY] = _Request(audit_id=request.headers.get("Audit-ID") or self._ids.next(),
                                       received=time.time())
        return ctx

    def unauthenticated(self, request: web.Request, ctx: _Request) -> None:
        """A request authentication refused: upstream's failed-authentication event."""
        if self._file is None:
            return
        assert self.policy is not None
        attrs = reqattrs.of(request)
        decision = self.policy.decide(attrs, None)
        if decision.level == NONE or "ResponseStarted" in decision.omit_stages:
            return
        ctx.decision = decision
        self._emit(request, ctx, "ResponseStarted", user={}, status={"metadata": {}, "message": _auth_methods(request),
                                                                      "code": 401})

    async def observe(self, request: web.Request, ctx: _Request,
                      inner: Handler) -> web.StreamResponse:
        """After authentication: the policy decision and the events of the request, around
        `inner` (impersonation, fairness, authorization and the handler)."""
        if self._file is None:
            return await inner(request)
        assert self.policy is not None
        ctx.user = request.get(handlers.USER_KEY) or user_mod.anonymous()  # open paths: upstream's anonymous
        decision = self.policy.decide(reqattrs.of(request), ctx.user)
        if decision.level == NONE:
            return await inner(request)
        ctx.decision = decision
        if "RequestReceived" not in decision.omit_stages:
            self._emit(request, ctx, "RequestReceived")
        try:
            response = await inner(request)
        except errors.APIError as err:
            failure = _failure(err)
            self._complete(request, ctx, status=failure, response_body=orjson.dumps(err.status())
                           if decision.level >= REQUEST_RESPONSE else None)
            raise
        except web.HTTPException as exc:
            self._complete(request, ctx, status={"metadata": {}, "code": exc.status_code})
            raise
        except (asyncio.CancelledError, ConnectionError):
            # Its answer had begun (a stream, a large body sent in pieces) when the client went
            # away or the server stopped: recorded with the code sent, as upstream records it.
            if ctx.code:
                self._complete(request, ctx, status={"metadata": {}, "code": ctx.code})
            raise
        except Exception as exc:
            if "Panic" not in decision.omit_stages:
                self._emit(request, ctx, "Panic", status={
                    "metadata": {}, "status": "Failure", "message": f"APIServer panic'd: {type(exc).__name__}: {exc}",
                    "reason": "InternalError", "code": 500})
            raise
        body = response.body if isinstance(response, web.Response) and decision.level >= REQUEST_RESPONSE else None
        self._complete(request, ctx, status={"metadata": {}, "code": response.status},
                       response_body=body if isinstance(body, bytes) else None)
        return response

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer carries the Audit-Id; a long-running one records ResponseStarted."""
        ctx = request.get(_KEY)
        if ctx is None:
            return
        response.headers["Audit-Id"] = ctx.audit_id
        if ctx.decision.level == NONE:
            return
        ctx.code = response.status
        if reqattrs.of(request).long_running:
            if "ResponseStarted" not in ctx.decision.omit_stages:
                self._emit(request, ctx, "ResponseStarted", status={"metadata": {}, "code": response.status})

    def _complete(self, request: web.Request, ctx: _Request, *, status: JSON,
                  response_body: bytes | None = None) -> None:
        if "ResponseComplete" in ctx.decision.omit_stages:
            return
        self._emit(request, ctx, "ResponseComplete", status=status, response_body=response_body)

    def _request_body(self, request: web.Request) -> bytes | None:
        """The body the handler read (aiohttp keeps it); never waits for one nobody read."""
        if not request.body_exists or not request.content.is_eof():
            return None
        body = getattr(request, "_read_bytes", None)  # what `request.read()` kept; not read again here
        if not isinstance(body, bytes) or not body:
            return None
        encoding = request.headers.get("Content-Encoding", "")
        if encoding:
            try:
                return negotiation.decode_content(body, encoding, limit=len(body) * 64)
            except errors.APIError:
                return None
        return body

    def local(self, user: user_mod.UserInfo | None, *, agent: str, verb: str, group: str, version: str,
              resource: str, namespace: str | None, name: str | None, subresource: str | None = None,
              body: Any = None) -> LocalWrite | None:
        """A write of an in-process component, as the policy sees it: None when it is not
        audited. Its requestURI is the path the same write would take over HTTP, its userAgent
        the component's field manager, and it has no source IP."""
        if self._file is None:
            return None
        assert self.policy is not None
        who = user or APISERVER
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        path = "/".join(p for p in (prefix, f"namespaces/{namespace}" if namespace else "", resource, name or "",
                                    subresource or "") if p)
        attrs = reqattrs.RequestInfo(verb=verb, path=path, resource_request=True, api_group=group, api_version=version,
                                    resource=resource, subresource=subresource or "", namespace=namespace or "",
                                    name=name or "")
        decision = self.policy.decide(attrs, who)
        if decision.level == NONE:
            return None
        # The body as sent, before the registry defaults it in place (objects only; a patch
        # in process is a function, not a document).
        sent = orjson.dumps(body) if body is not None and (decision.level >= REQUEST or verb in _OBJECT_VERBS) else None
        write = LocalWrite(auditor=self, decision=decision, attrs=attrs, user=who.to_json(), agent=agent,
                           audit_id=self._ids.next(), received=time.time(), request_body=sent)
        write._record("RequestReceived", status=None)
        return write

    def _queue_record(self, record: Record) -> None:
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        self._queue.append(record)
        self.levels[record.level] += 1
        self._wakeup.set()

    def _emit(self, request: web.Request, ctx: _Request, stage: str, *, user: JSON | None = None,
              status: JSON | None = None, response_body: bytes | None = None) -> None:
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        level = ctx.decision.level
        attrs = reqattrs.of(request)
        current = request.get(handlers.USER_KEY)
        impersonated = current.to_json() if current is not None and ctx.user is not None and current != ctx.user \
            else None
        body = self._request_body(request) if stage != "RequestReceived" and (
            level >= REQUEST or attrs.verb in _OBJECT_VERBS) else None
        if ctx.user_json is None:
            ctx.user_json = ctx.user.to_json() if ctx.user is not None else {}
            ctx.source_ips = _source_ips(request)
        self._queue_record(Record(
            level=level, audit_id=ctx.audit_id, stage=stage, uri=request.raw_path, verb=attrs.verb,
            user=user if user is not None else ctx.user_json, impersonated=impersonated,
            source_ips=ctx.source_ips or (),
            user_agent=request.headers.get("User-Agent", ""), attrs=attrs, status=status, request_body=body,
            content_type=request.headers.get("Content-Type", ""), response_body=response_body,
            received=ctx.received, at=time.time(),
            annotations=_annotations(ctx, request),
            omit_managed_fields=ctx.decision.omit_managed_fields,
        ))

    # --- the writer ---

    async def run(self) -> None:
        """The writer task: batches from the queue, written by the writer's thread."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            # What else comes meanwhile joins the batch: one handoff to the thread per batch (a
            # handoff per event costs the loop more than the event itself).
            await asyncio.sleep(_BATCH_WAIT)
            self._wakeup.clear()
            await self._drain(loop)

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        limit = self.settings.batch_size if self.settings is not None else 1000
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            # Shielded: the writer stopped meanwhile must not cancel a batch not yet begun (it
            # would be lost); `close` waits for it behind it in the same thread.
            await asyncio.shield(loop.run_in_executor(self._pool, self._write, batch))

    def _write(self, batch: list[Record]) -> None:
        """In the writer's thread: the batch's lines, appended in one write."""
        assert self._file is not None
        lines = []
        for record in batch:
            try:
                lines.append(orjson.dumps(event(record, times=self._times)) + b"\n")
            except (TypeError, ValueError) as exc:  # never expected: counted, not fatal
                self.failed += 1
                log.error("audit: event %s could not be encoded: %s", record.audit_id, exc)
        try:
            self._file.write_lines(lines)
            self.events += len(lines)
        except OSError as exc:
            self.failed += len(lines)
            now = time.monotonic()
            if now - self._failure_logged >= _LOG_INTERVAL:
                self._failure_logged = now
                log.error("audit log %s: cannot write (%s): %d events lost so far", self.settings and self.settings.path,
                          exc.strerror or exc, self.failed)

    async def close(self) -> None:
        """At stop: what is queued is written, the file closed."""
        if self._file is None or self._pool is None:
            return
        loop = asyncio.get_running_loop()
        await self._drain(loop)
        await loop.run_in_executor(self._pool, self._file.close)
        self._pool.shutdown(wait=True)
        self._pool = None

    def metrics(self) -> Iterable[str]:
        """Prometheus text lines, upstream's names."""
        yield "# TYPE apiserver_audit_event_total counter"
        yield f"apiserver_audit_event_total {self.events}"
        yield "# TYPE apiserver_audit_error_total counter"
        yield f'apiserver_audit_error_total{{plugin="buffered"}} {self.dropped}'
        yield f'apiserver_audit_error_total{{plugin="log"}} {self.failed}'
        yield "# TYPE apiserver_audit_level_total counter"
        for i, name in enumerate(LEVELS[1:], start=1):
            yield f'apiserver_audit_level_total{{level="{name}"}} {self.levels[i]}'
