"""How the kubelet reaches into a running container for its probes and lifecycle hooks: a
command exec'd in it, an HTTP GET or a TCP connect to it. One outcome type for all of them, as
upstream's pkg/probe (exec, http, tcp) reports them.

- **exec** runs through the runtime (`runc exec`, see `runtime.containers.Runtime.exec`):
  exit code 0 succeeds; the output (stdout and stderr together, the first 10 KiB as upstream)
  is the message; past its timeout the process is killed and the action fails with upstream's
  `command "..." timed out`.
- **httpGet and tcpSocket** connect from inside the pod's network namespace (a socket made
  there by `sandbox.socket_in`; the host's for hostNetwork pods), to `host` or else the pod's
  IP, on `port` given by number or by the name of one of the container's ports. Names in `host`
  are resolved by the node, as upstream's kubelet does.
- **HTTP** is a plain HTTP/1.1 GET, one connection per request (`Connection: close`), HTTPS
  without checking the certificate, `User-Agent: kube-probe/<major>.<minor>` (kube-lifecycle for
  hooks) and `Accept: */*` unless `httpHeaders` set them (an empty Accept drops it), the
  `Host` header from `httpHeaders` when given. For probes (pkg/probe/http): 200 <= code < 400
  succeeds; redirects are followed (at most 10) only to the same host name, a redirect
  elsewhere ends the probe as a success with a warning, as upstream; any other code fails with
  `HTTP probe failed with statuscode: N`; a failed connection or a timeout fails with Go's
  wording (`Get "URL": dial tcp ...: connect: connection refused`). For hooks any response
  succeeds and every redirect is followed, as upstream's lifecycle handler runner.
- **TCP** succeeds once the connection is made (`dial tcp HOST:PORT: connect: ...` otherwise).

`ActionError` is an action that could not be tried at all (a port name the container does not
have, a container runc cannot exec into): upstream's "errored", which a probe throws away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import os
import socket
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from edgekube import KUBE_VERSION
from edgekube.kubelet import sandbox
from edgekube.kubelet.runtime import runc as runc_mod

SUCCESS = "success"
WARNING = "warning"  # a success that says something (a redirect not followed)
FAILURE = "failure"
OUTPUT_LIMIT = 10 * 1024
MAX_HEADER_BYTES = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: str  # SUCCESS | WARNING | FAILURE
    output: str = ""


class ActionError(Exception):
    """The action could not be tried: the message says why."""


class Exec(Protocol):
    """The runtime's exec (`runtime.containers.Runtime`)."""

    async def exec(self, cid: str, command: Sequence[str], *, time_limit: float | None,
                   limit: int = ...) -> runc_mod.ExecResult: ...


@dataclasses.dataclass(frozen=True)
class Target:
    """The running container an action is for, and where its pod is on the network."""

    cid: str
    container: Mapping[str, Any]
    pod_ip: str
    netns: Path | None  # None: the host's network (hostNetwork pods)


def user_agent(purpose: str) -> str:
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    return f"kube-{purpose}/{major}.{minor}"


# --- exec -----------------------------------------------------------------------------------------


async def run_exec(runtime: Exec, target: Target, command: Sequence[str], *, time_limit: float | None) -> Outcome:
    try:
        done = await runtime.exec(target.cid, command, time_limit=time_limit, limit=OUTPUT_LIMIT)
    except (runc_mod.RuncError, OSError) as exc:
        raise ActionError(f"cannot exec in container {target.container.get('name')}: {exc}") from None
    output = done.output.decode(errors="replace")
    if done.exit_code is None:
        return Outcome(FAILURE, f'command "{" ".join(command)}" timed out')
    return Outcome(SUCCESS if done.exit_code == 0 else FAILURE, output)


# --- ports and addresses --------------------------------------------------------------------------


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A port by number, or by the name of one of the container's ports (then a number written
    as a string), as upstream's probe.ResolveContainerPort."""
    if isinstance(port, int) and not isinstance(port, bool):
        number = port
    else:
        name = str(port or "")
        found = [p.get("containerPort") for p in container.get("ports") or []
                 if isinstance(p, Mapping) and p.get("name") == name]
        if found and isinstance(found[0], int):
            number = found[0]
        elif name.isdigit():
            number = int(name)
        else:
            raise ActionError(f"port {name!r} is not a port of container {container.get('name')!r}")
    if not 0 < number < 65536:
        raise ActionError(f"invalid port number: {number}")
    return number


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _connect(host: str, port: int, netns: Path | None) -> socket.socket:
    """A connected socket to host:port from the pod's network namespace."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, _, _, _, address in infos:  # each address in turn, as Go's dialer (localhost: ::1, then 127.0.0.1)
        try:
            sock = await sandbox.socket_in(netns, family)
        except OSError as exc:  # no such family in the pod's namespace
            error = exc
            continue
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error if error is not None else OSError(f"no address for {host}")


def _dial_error(host_port: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"dial tcp {host_port}: i/o timeout"
    if isinstance(exc, socket.gaierror):
        return f"dial tcp: lookup {host_port.rsplit(':', 1)[0]}: {exc.strerror}"
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
    return f"dial tcp {host_port}: connect: {reason[:1].lower()}{reason[1:]}"


# --- tcp ------------------------------------------------------------------------------------------


async def tcp_connect(action: Mapping[str, Any], target: Target, *, time_limit: float) -> Outcome:
    host = str(action.get("host") or target.pod_ip)
    port = resolve_port(action.get("port"), target.container)
    try:
        async with asyncio.timeout(time_limit):
            sock = await _connect(host, port, target.netns)
    except (OSError, TimeoutError) as exc:
        return Outcome(FAILURE, _dial_error(_host_port(host, port), exc))
    sock.close()
    return Outcome(SUCCESS)


# --- http -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Response:
    code: int
    location: str
    body: bytes


def probe_url(action: Mapping[str, Any], target: Target) -> urllib.parse.SplitResult:
    """The URL an httpGet action asks for (upstream's GetProbeUrl: the path may carry a query)."""
    scheme = str(action.get("scheme") or "HTTP").lower()
    host = str(action.get("host") or target.pod_ip)
    port = resolve_port(action.get("port"), target.container)
    path = urllib.parse.urlsplit(str(action.get("path") or "/"))
    return urllib.parse.SplitResult(scheme, _host_port(host, port), path.path or "/", path.query, "")


def _headers(action: Mapping[str, Any], purpose: str) -> list[tuple[str, str]]:
    out = [(str(h.get("name") or ""), str(h.get("value") or "")) for h in action.get("httpHeaders") or []
           if isinstance(h, Mapping) and h.get("name")]
    names = {n.lower() for n, _ in out}
    if "user-agent" not in names:
        out.append(("User-Agent", user_agent(purpose)))
    if "accept" not in names:
        out.append(("Accept", "*/*"))
    elif not any(v for n, v in out if n.lower() == "accept"):
        out = [(n, v) for n, v in out if n.lower() != "accept"]
    return out


async def http_get(action: Mapping[str, Any], target: Target, *, time_limit: float | None,
                   purpose: str = "probe") -> Outcome:
    """A GET as a probe (`purpose` "probe") or a lifecycle hook ("lifecycle") makes it."""
    url = probe_url(action, target)
    headers = _headers(action, purpose)
    hook = purpose != "probe"
    first_host = url.hostname
    try:
        async with asyncio.timeout(time_limit):
            for _ in range(MAX_REDIRECTS + 1):
                response = await _get(url, headers, target.netns)
                if response.code not in REDIRECTS or not response.location:
                    break
                following = urllib.parse.urlsplit(urllib.parse.urljoin(url.geturl(), response.location))
                if not hook and following.hostname != first_host:
                    break  # upstream keeps the redirect as the answer (a warning)
                url = following
            else:
                return Outcome(FAILURE, f'Get "{url.geturl()}": stopped after {MAX_REDIRECTS} redirects')
    except TimeoutError:
        return Outcome(FAILURE, f'Get "{url.geturl()}": context deadline exceeded '
                                "(Client.Timeout exceeded while awaiting headers)")
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return Outcome(FAILURE, f'Get "{url.geturl()}": {_http_error(url, exc)}')
    body = response.body.decode(errors="replace")
    if hook:
        return Outcome(SUCCESS, body)
    if 200 <= response.code < 400:
        if response.code >= 300:
            return Outcome(WARNING, f"Probe terminated redirects, Response body: {body}")
        return Outcome(SUCCESS, body)
    return Outcome(FAILURE, f"HTTP probe failed with statuscode: {response.code}")


def _http_error(url: urllib.parse.SplitResult, exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    if isinstance(exc, OSError) and not isinstance(exc, asyncio.IncompleteReadError):
        return _dial_error(url.netloc, exc)
    if isinstance(exc, asyncio.IncompleteReadError):
        return "EOF"
    return f"malformed HTTP response: {exc}"


@functools.cache
def _tls() -> ssl.SSLContext:
    """One context for every HTTPS probe and hook, made once: upstream's probes skip
    verification (InsecureSkipVerify), so no CA bundle is loaded (that alone took ~36 ms of
    the loop per try)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _get(url: urllib.parse.SplitResult, headers: Sequence[tuple[str, str]], netns: Path | None) -> _Response:
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = await _connect(host, port, netns)
    tls = _tls() if url.scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(sock=sock, ssl=tls,
                                                       server_hostname=("" if _is_ip(host) else host) if tls else None)
    except BaseException:
        sock.close()
        raise
    try:
        target = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {next((v for n, v in headers if n.lower() == 'host'), url.netloc)}"]
        lines += [f"{n}: {v}" for n, v in headers if n.lower() not in ("host", "connection")]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace"))
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> _Response:
    while True:
        status = (await reader.readline()).decode("latin-1")
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"status line {status.strip()!r}")
        code = int(parts[1])
        fields: dict[str, str] = {}
        header_bytes = 0
        while True:
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            header_bytes += len(line)
            if header_bytes > MAX_HEADER_BYTES:  # Go's http client stops at 1 MB of headers too
                raise ValueError(f"response headers over {MAX_HEADER_BYTES} bytes")
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if not 100 <= code < 200:  # an interim answer (100 Continue) is followed by the real one
            break
    if code in (204, 304):
        body = b""
    elif "chunked" in fields.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif fields.get("content-length", "").isdigit():
        body = await _read_up_to(reader, min(int(fields["content-length"]), OUTPUT_LIMIT))
    else:
        body = await _read_up_to(reader, OUTPUT_LIMIT)
    return _Response(code=code, location=fields.get("location", ""), body=body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """The body up to OUTPUT_LIMIT, whatever chunk sizes the container announces (never more
    than that is buffered: a probe's target must not be able to grow edgekube's memory)."""
    body = bytearray()
    while len(body) < OUTPUT_LIMIT:
        size_line = (await reader.readline()).split(b";", 1)[0].strip()
        size = int(size_line or b"0", 16)
        if size == 0:
            break
        want = min(size, OUTPUT_LIMIT - len(body))
        body += await _read_up_to(reader, want)
        if want < size:
            break  # the rest is not read: the connection is closed after a probe anyway
        await reader.readline()
    return bytes(body[:OUTPUT_LIMIT])


async def _read_up_to(reader: asyncio.StreamReader, size: int) -> bytes:
    body = bytearray()
    while len(body) < size:
        chunk = await reader.read(size - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
