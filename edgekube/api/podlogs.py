"""`GET /api/v1/namespaces/<ns>/pods/<name>/log`: a container's log as plain text, read to the end
or followed, with upstream's options, choice of container and run, and errors.

Upstream splits this between kube-apiserver (options, pod, container, a proxy to the node) and
the kubelet (which run, the file). Here both halves are in one process and the API layer reads no
file: it resolves the request to a `Target` (which run of which container) and asks a
`LogSource` (the kubelet's, handed in by the composition root; the API layer may not import the
kubelet) for that run's log with the options applied.

Query parameters (PodLogOptions): `container`, `follow`, `previous`, `sinceSeconds`, `sinceTime`
(RFC 3339), `timestamps`, `tailLines`, `limitBytes`, `stream` (All, Stdout, Stderr) and
`insecureSkipTLSVerifyBackend` (accepted and ignored: there is no backend connection to verify).
Checked as upstream's ValidatePodLogOptions, failing with 422 `PodLogOptions "<pod>" is
invalid: ...`; a value that is not a number or a boolean is a 400.

In upstream's order then:
- the pod (404 `pods "<name>" not found`);
- the container: the `container` parameter, else the only one; with several, 400 `a container
  name must be specified for pod <pod>, choose one of: [<init> <main> <ephemeral>]`; a name the
  pod does not have, 400 `container <c> is not valid for pod <pod>`;
- a pod not bound to a node answers 200 with an empty body (upstream: no node, no location);
- the run, from the pod's status as the kubelet reported it (upstream's
  validateContainerLogStatus, with its 400 messages): with `previous`, the run in
  `lastState.terminated` (else `previous terminated container "<c>" in pod "<pod>" not found`);
  otherwise the running or terminated run in `state`, or the one in `lastState` while the
  container waits to restart; a container that never ran is `waiting to start: <reason>`
  (`image can't be pulled`, `trying and failing to pull image` for the pull reasons), and one
  the status does not list yet is waiting as the kubelet would report it (`ContainerCreating`,
  `PodInitializing` for a main container behind init containers).
  Runs are numbered by restart count, as their log files are: the newest run is `restartCount`;
  `lastState` is the run before it (`restartCount - 1`), except while the container waits to
  restart, when `lastState` is the newest run itself (how the kubelet reports CrashLoopBackOff).

The body is `text/plain`, chunked, each chunk sent as read. With `follow` the stream goes on as
the file grows until the run ends (the status no longer shows that container running with that
id), the pod goes, or the client disconnects; then what is left in the file is sent and the
response ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from edgekube.api import errors
from edgekube.api.registry import defaults, resources, rest

JSON = dict[str, Any]
STREAMS = ("All", "Stdout", "Stderr")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
         "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False, "": False}


@dataclasses.dataclass(frozen=True)
class Options:
    """What to read of a run's log and how (PodLogOptions, resolved)."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None  # the last N lines only
    limit_bytes: int | None = None  # the body stops after this many bytes
    since_ns: int | None = None  # lines stamped before this instant (ns since the epoch) are left out
    stream: str = "All"  # All | Stdout | Stderr


@dataclasses.dataclass(frozen=True)
class Target:
    """One run of one container: its log is `<ns>_<pod>_<uid>/<container>/<restart>.log`."""

    namespace: str
    pod: str
    uid: str
    container: str
    restart: int
    container_id: str  # `runc://<id>` as the status shows it ("" when it shows none)


class LogUnavailable(Exception):
    """The run's log cannot be read; the message says why (sent as a 400, as upstream's kubelet
    errors are)."""


class LogSource(Protocol):
    async def open(self, target: Target, options: Options, *,
                   follow_while: Callable[[], bool]) -> AsyncIterator[bytes]:
        """Open the run's log (raising LogUnavailable if it cannot be read) and return its
        text with `options` applied, in chunks. With `options.follow` the iterator waits at the
        end of the file for more while `follow_while()` is true, then sends what is left."""
        ...


# --- options ------------------------------------------------------------------------------------


def _bool(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = _BOOL.get(raw)
    if value is None:
        raise errors.bad_request(f'invalid value for query parameter {name}: "{raw}" is not a boolean')
    return value


def _time(query: Mapping[str, str], name: str) -> datetime.datetime | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        t = datetime.datetime.fromisoformat(raw)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None or "T" not in raw:
        raise errors.bad_request(f'invalid value for query parameter {name}: "{raw}" is not an RFC 3339 time '
                                 f'such as 2006-01-02T15:04:05Z')
    return t


def parse_options(query: Mapping[str, str], *, pod: str, now_ns: int) -> Options:
    """PodLogOptions from the query, validated as upstream (422 Invalid, or 400 for a value of
    the wrong type)."""
    tail = errors.int_query(query, "tailLines")
    limit = errors.int_query(query, "limitBytes")
    since_seconds = errors.int_query(query, "sinceSeconds")
    since_time = _time(query, "sinceTime")
    stream = query.get("stream")
    _bool(query, "insecureSkipTLSVerifyBackend")  # checked for its type, then ignored
    causes: list[errors.Cause] = []
    if tail is not None and tail < 0:
        causes.append(errors.Cause("tailLines", f"Invalid value: {tail}: must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        causes.append(errors.Cause("limitBytes", f"Invalid value: {limit}: must be greater than 0"))
    if since_seconds is not None and since_time is not None:
        causes.append(errors.Cause("", "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
                                   "FieldValueForbidden"))
    elif since_seconds is not None and since_seconds < 1:
        causes.append(errors.Cause("sinceSeconds", f"Invalid value: {since_seconds}: must be greater than 0"))
    if stream is not None:
        if stream not in STREAMS:
            listed = ", ".join(f'"{s}"' for s in STREAMS)
            causes.append(errors.Cause("stream", f'Unsupported value: "{stream}": supported values: {listed}',
                                       "FieldValueNotSupported"))
        elif stream != "All" and tail is not None:
            causes.append(errors.Cause("", "Forbidden: `tailLines` and specific `stream` are mutually exclusive "
                                           "for now", "FieldValueForbidden"))
    if causes:
        raise errors.invalid("PodLogOptions", pod, causes)
    since_ns: int | None = None
    if since_seconds is not None:
        since_ns = now_ns - since_seconds * 1_000_000_000
    if since_time is not None:
        since_ns = (since_time - _EPOCH) // datetime.timedelta(microseconds=1) * 1000
    return Options(container=query.get("container", ""), follow=_bool(query, "follow"),
                   previous=_bool(query, "previous"), timestamps=_bool(query, "timestamps"), tail_lines=tail,
                   limit_bytes=limit, since_ns=since_ns, stream=stream or "All")


# --- which container, which run ------------------------------------------------------------------


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Init, regular and ephemeral containers, in upstream's VisitContainers order."""
    spec = pod.get("spec") or {}
    return [str(c.get("name")) for key in ("initContainers", "containers", "ephemeralContainers")
            for c in (spec.get(key) or []) if isinstance(c, Mapping)]


def choose_container(pod: Mapping[str, Any], container: str) -> str:
    name = str((pod.get("metadata") or {}).get("name") or "")
    names = container_names(pod)
    if not container:
        mains = [str(c.get("name")) for c in ((pod.get("spec") or {}).get("containers") or [])
                 if isinstance(c, Mapping)]
        if len(mains) == 1:
            return mains[0]
        if not mains:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                 f"choose one of: [{' '.join(names)}]")
    if container not in names:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def _status_of(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            if isinstance(cs, Mapping) and cs.get("name") == container:
                return cs
    return None


def _default_waiting(pod: Mapping[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    mains = {str(c.get("name")) for c in spec.get("containers") or [] if isinstance(c, Mapping)}
    return "PodInitializing" if spec.get("initContainers") and container in mains else "ContainerCreating"


def _log_uid(meta: Mapping[str, Any]) -> str:
    """The uid in the pod's log directory name: a mirror pod's logs are its static pod's, whose
    uid its `kubernetes.io/config.mirror` annotation holds."""
    mirror = str((meta.get("annotations") or {}).get(defaults.MIRROR_POD_ANNOTATION) or "")
    if mirror and all(c in "0123456789abcdef-" for c in mirror):  # a hash; never a path
        return mirror
    return str(meta.get("uid") or "")


def resolve(pod: Mapping[str, Any], container: str, *, previous: bool) -> Target:
    """The run whose log is asked for, from the pod's status (400 with upstream's words when
    there is none to read)."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name") or "")
    where = f'container "{container}" in pod "{name}"'

    def target(restart: int, cid: Any) -> Target:
        return Target(namespace=str(meta.get("namespace") or ""), pod=name, uid=_log_uid(meta),
                      container=container, restart=max(0, restart), container_id=str(cid or ""))

    cs = _status_of(pod, container)
    if cs is None:
        if previous:
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        raise errors.bad_request(f"{where} is waiting to start: {_default_waiting(pod, container)}")
    try:
        restarts = int(cs.get("restartCount") or 0)
    except (TypeError, ValueError):
        restarts = 0
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated")
    waiting, running, terminated = state.get("waiting"), state.get("running"), state.get("terminated")
    if previous:
        if not isinstance(last, Mapping) or not last.get("containerID") or (restarts == 0 and waiting is None):
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        return target(restarts if waiting is not None else restarts - 1, last.get("containerID"))
    if running is not None:
        return target(restarts, cs.get("containerID"))
    if isinstance(terminated, Mapping):
        if terminated.get("containerID"):
            return target(restarts, terminated.get("containerID"))
        if isinstance(last, Mapping) and last.get("containerID"):
            return target(restarts - 1, last.get("containerID"))
        raise errors.bad_request(f"{where} is terminated")
    if isinstance(last, Mapping):
        if not last.get("containerID"):
            raise errors.bad_request(f"{where} is terminated")
        return target(restarts, last.get("containerID"))
    if isinstance(waiting, Mapping):
        reason = str(waiting.get("reason") or "")
        if reason == "ErrImagePull":
            raise errors.bad_request(f"{where} is waiting to start: image can't be pulled")
        if reason == "ImagePullBackOff":
            raise errors.bad_request(f"{where} is waiting to start: trying and failing to pull image")
        raise errors.bad_request(f"{where} is waiting to start: {reason}")
    raise errors.bad_request(f"{where} is waiting to start - no logs yet")


def still_running(pod: Mapping[str, Any] | None, target: Target) -> bool:
    """Whether the pod still shows this run of the container running."""
    if pod is None or _log_uid(pod.get("metadata") or {}) != target.uid:
        return False
    cs = _status_of(pod, target.container)
    if cs is None or (cs.get("state") or {}).get("running") is None:
        return False
    return not target.container_id or str(cs.get("containerID") or "") == target.container_id


# --- HTTP ---------------------------------------------------------------------------------------


async def serve(request: web.Request, *, registry: rest.Registry, info: resources.ResourceInfo, namespace: str,
                name: str, source: LogSource | None) -> web.StreamResponse:
    if request.method != "GET":
        raise errors.method_not_allowed(request.method, "pods/log")
    options = parse_options(request.query, pod=name, now_ns=time.time_ns())
    pod = registry.get(info, namespace=namespace, name=name)
    container = choose_container(pod, options.container)
    if not (pod.get("spec") or {}).get("nodeName"):
        return web.Response(body=b"", headers={"Content-Type": "text/plain"})
    target = resolve(pod, container, previous=options.previous)
    if source is None:
        raise errors.APIError(503, "ServiceUnavailable", "this server has no kubelet to read container logs from")

    def follow_while() -> bool:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        try:
            current: JSON | None = registry.get(info, namespace=namespace, name=name)
        except errors.APIError:
            current = None
        return still_running(current, target)

    try:
        chunks = await source.open(target, options, follow_while=follow_while)
    except LogUnavailable as exc:
        raise errors.bad_request(str(exc)) from None
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    async with contextlib.aclosing(_closing(chunks)) as stream:
        await response.prepare(request)
        try:
            async for chunk in stream:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
    return response


async def _closing(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """`chunks`, closed (its file released) when the response ends, however it ends."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
