"""Slow and idle clients (issue 13, point 5) against a real `edgekube server` over real TLS
sockets: handshake, request-head, idle and body deadlines, and the cap on connections. The
deadlines are set to a few seconds through the config file; every check is about what happened
(closed, refused, answered), and the seconds a test waits are only a bound on how long it waits.
Real kubectl and the Python client must keep working, watches included, past the idle timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config, watch

from tests.conftest import REPO, Server
from tests.e2e import test_logs
from tests.support.waiting import fresh_namespace, until

pytestmark = pytest.mark.e2e

DEADLINE = 2  # seconds: every deadline of the tight server
WAIT = 30.0  # how long a test waits for the server to act before it fails
TIGHT = {
    "tls-handshake-timeout-seconds": DEADLINE,
    "request-header-timeout-seconds": DEADLINE,
    "request-body-timeout-seconds": DEADLINE,
    "idle-timeout-seconds": DEADLINE,
    "send-stall-timeout-seconds": DEADLINE,
}


def _server(root: Path, api: dict[str, Any]) -> Server:
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({"api": api}))
    return Server(root / "data", extra=["--config", str(cfg)])


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _server(tmp_path_factory.mktemp("tight"), TIGHT)
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _context(server: Server, *, admin: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    if admin:
        tls = server.data_dir / "tls"
        ctx.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
    return ctx


def _tls(server: Server, *, admin: bool = True) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        return _context(server, admin=admin).wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to WAIT) for the server to end the connection; True if it did."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return True
    except TimeoutError:
        return False


def _read_for(sock: ssl.SSLSocket, seconds: float) -> bytes | None:
    """What the server sent within `seconds`: None for nothing yet, b"" once it closed. (A TLS
    socket is readable for records that carry no data, session tickets, so select() cannot tell.)"""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return b""


def _https(server: Server) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.port, context=_context(server), timeout=WAIT)


def _get(conn: http.client.HTTPSConnection, path: str) -> tuple[int, Any]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _create_configmap(conn: http.client.HTTPSConnection, ns: str, name: str,
                      data: dict[str, str] | None = None) -> int:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {}})
    conn.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _namespace(server: Server, name: str) -> str:
    conn = _https(server)
    try:
        body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        conn.request("POST", "/api/v1/namespaces", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201, resp.status
    finally:
        conn.close()
    return name


class _Watch:
    """A raw watch on a namespace's ConfigMaps over its own connection."""

    def __init__(self, server: Server, ns: str) -> None:
        self.conn = _https(server)
        status, listed = _get(self.conn, f"/api/v1/namespaces/{ns}/configmaps")
        assert status == 200
        rv = listed["metadata"]["resourceVersion"]
        self.conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200

    def sees_added(self, name: str) -> bool:
        while line := self.resp.readline():
            event = json.loads(line)
            if event["type"] == "ADDED" and event["object"]["metadata"]["name"] == name:
                return True
        return False  # the watch ended

    def close(self) -> None:
        self.conn.close()


# --- deadlines ------------------------------------------------------------------------------


def test_tcp_connection_without_handshake_is_closed(tight: Server) -> None:
    with socket.create_connection(("127.0.0.1", tight.port), timeout=WAIT) as raw:
        assert _closed_by_server(raw), "a TCP connection that never started TLS was kept open"


def test_half_finished_handshake_is_closed(tight: Server) -> None:
    """A ClientHello and then silence: the server's answer is read, the handshake never ends."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _context(tight).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    with socket.create_connection(("127.0.0.1", tight.port), timeout=WAIT) as raw:
        raw.sendall(outgoing.read())
        raw.settimeout(WAIT)
        got = b""
        try:
            while chunk := raw.recv(65536):
                got += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        assert got, "the server did not answer the ClientHello"
        assert closed, "a connection stuck in its TLS handshake was kept open"


def test_connection_that_never_sends_a_request_is_closed(tight: Server) -> None:
    with _tls(tight, admin=False) as sock:
        assert _closed_by_server(sock), "an anonymous TLS connection with no request was kept open"


def test_slowloris_head_is_cut_off(tight: Server) -> None:
    """One header line at a time, faster than any per-line timeout: the whole head has a deadline."""
    with _tls(tight) as sock:
        sock.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sent = 0
        answer = None
        stop = time.monotonic() + WAIT
        while answer is None and time.monotonic() < stop:
            answer = _read_for(sock, 0.2)
            if answer is None:
                try:
                    sock.sendall(f"X-Slow-{sent}: a\r\n".encode())
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    answer = b""
                sent += 1
        assert answer == b"", f"a head trickled in {sent} lines was still being read ({answer!r})"
        assert sent > 1


def test_idle_keepalive_connection_is_closed(tight: Server) -> None:
    conn = _https(tight)
    try:
        status, _ = _get(conn, "/api/v1/namespaces/default")
        assert status == 200
        assert conn.sock is not None
        assert _closed_by_server(conn.sock), "an idle keep-alive connection was kept open"
    finally:
        conn.close()


def test_slow_body_is_refused(tight: Server) -> None:
    with _tls(tight) as sock:
        sock.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        answer = b""
        sent = 0
        stop = time.monotonic() + WAIT
        while b"\r\n\r\n" not in answer and time.monotonic() < stop:
            got = _read_for(sock, 0.2)
            if got is None:
                sock.sendall(b" ")
                sent += 1
            elif got:
                answer += got
            else:
                break
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), f"after {sent} bytes of body: {answer[:200]!r}"
        assert b"connection: close" in head.lower()
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length and (got := _read_for(sock, WAIT)):
            body += got
        status = json.loads(body)
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 408, "Timeout")
        assert _closed_by_server(sock)


def test_watcher_that_stops_reading_is_cut_off(tight: Server) -> None:
    """A watch whose client reads nothing while large events keep coming: once they pile up
    unread on the server, the connection is aborted instead of held (with the events) for ever."""
    ns = _namespace(tight, "stalled-watch")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the events pile up on the server
    raw.settimeout(WAIT)
    raw.connect(("127.0.0.1", tight.port))
    writer = _https(tight)
    try:
        with _context(tight).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(f"GET /api/v1/namespaces/{ns}/configmaps?watch=true HTTP/1.1\r\n"
                         "Host: 127.0.0.1\r\n\r\n".encode())
            big = "x" * 1_000_000
            for i in range(10):  # 10 MB of events: more than the kernel buffers
                body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}"},
                                   "data": {"x": big}})
                writer.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=body,
                               headers={"Content-Type": "application/json"})
                resp = writer.getresponse()
                resp.read()
                assert resp.status == 201
            time.sleep(DEADLINE * 4)  # reading nothing
            received = 0
            while (got := _read_for(sock, 5)) is not None and got:
                received += len(got)
            assert got == b"", f"a watch that read nothing was kept open (then {received:,} bytes came)"
    finally:
        writer.close()


def test_slow_steady_reader_gets_a_large_answer_whole(tight: Server) -> None:
    """Several MB taken a little at a time, for longer than the idle, send and closing-handshake
    deadlines together: a client that keeps taking is never cut off, even once its connection is
    closed as idle behind the answer."""
    ns = _namespace(tight, "slow-reader")
    writer = _https(tight)
    try:
        for i in range(6):
            assert _create_configmap(writer, ns, f"big-{i}", data={"x": "x" * 1_000_000}) == 201
    finally:
        writer.close()
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(WAIT)
    raw.connect(("127.0.0.1", tight.port))
    with _context(tight).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(f"GET /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Accept: application/json\r\n\r\n".encode())
        got = b""
        length = None
        started = time.monotonic()
        while length is None or len(got) < length:
            chunk = sock.recv(16384)
            if not chunk:
                break
            got += chunk
            if length is None and b"\r\n\r\n" in got:
                head = got.partition(b"\r\n\r\n")[0]
                length = len(head) + 4 + int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                                  if line.lower().startswith(b"content-length")))
            time.sleep(0.025)  # ~600 KB/s: the answer takes several seconds
        took = time.monotonic() - started
        assert length is not None and len(got) == length, f"{len(got):,} of {length} bytes in {took:.1f} s"
        listed = json.loads(got.partition(b"\r\n\r\n")[2])
        assert sorted(i["metadata"]["name"] for i in listed["items"] if i["metadata"]["name"].startswith("big-")) == [
            f"big-{i}" for i in range(6)]
        assert took > DEADLINE * 2, "the answer was taken too fast to show anything"


def test_requests_on_a_connection_keep_working(tight: Server) -> None:
    """Requests one after another on one keep-alive connection, each well within the deadlines."""
    conn = _https(tight)
    try:
        for _ in range(5):
            status, _ = _get(conn, "/api/v1/namespaces/default")
            assert status == 200
    finally:
        conn.close()


def test_watch_outlives_the_idle_timeout(tight: Server) -> None:
    ns = _namespace(tight, "idle-raw-watch")
    w = _Watch(tight, ns)
    writer = _https(tight)
    try:
        time.sleep(DEADLINE * 3)  # past the idle and head deadlines: a served watch is neither
        assert _create_configmap(writer, ns, "after-idle") == 201
        assert w.sees_added("after-idle")
    finally:
        writer.close()
        w.close()


@pytest.mark.parametrize("version", ["1.27", "1.36"])
def test_kubectl_watch_outlives_the_idle_timeout(tight: Server, version: str) -> None:
    kubectl = str(REPO / "tools" / "bin" / f"kubectl-{version}")
    env = {**os.environ, "KUBECONFIG": str(tight.kubeconfig), "HOME": str(tight.data_dir.parent)}
    ns = _namespace(tight, f"idle-kubectl-watch-{version.replace('.', '')}")
    proc = subprocess.Popen([kubectl, "-n", ns, "get", "configmaps", "-w", "-o", "name"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.put(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(DEADLINE * 3)  # past the idle and head deadlines: a served watch is neither
        subprocess.run([kubectl, "-n", ns, "create", "configmap", "after-idle"], env=env, check=True,
                       capture_output=True, timeout=60)
        lines = []
        with contextlib.suppress(queue.Empty):
            while "configmap/after-idle" not in lines:
                lines.append(seen.get(timeout=WAIT))
        assert "configmap/after-idle" in lines, f"kubectl get -w printed {lines}, exit code {proc.poll()}"
        assert proc.poll() is None, "kubectl get -w ended"
    finally:
        proc.kill()
        proc.wait()
        reader.join(timeout=WAIT)
        assert proc.stderr is not None
        proc.stderr.close()


def test_python_client_across_idle_timeouts(tight: Server) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(tight.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        ns = "idle-python"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.list_namespaced_config_map(ns)
        time.sleep(DEADLINE * 2)  # the pooled connection is closed by the server meanwhile
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
        listed = core.list_namespaced_config_map(ns)
        assert "a" in [c.metadata.name for c in listed.items]

        def later() -> None:
            time.sleep(DEADLINE * 3)  # the watch below is open, and served, all along
            with client.ApiClient(cfg) as other:
                client.CoreV1Api(other).create_namespaced_config_map(
                    ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b")))

        writer = threading.Thread(target=later)
        writer.start()
        try:
            w = watch.Watch()
            seen = []
            for event in w.stream(core.list_namespaced_config_map, ns,
                                  resource_version=listed.metadata.resource_version, timeout_seconds=60):
                seen.append((event["type"], event["object"].metadata.name))
                if seen[-1] == ("ADDED", "b"):
                    w.stop()
        finally:
            writer.join()
        assert ("ADDED", "b") in seen


@pytest.fixture(scope="module")
def tight_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[test_logs.LogServer]:
    """test_logs' server (the tests write the pods' CRI log files), with the tight deadlines."""
    ls = test_logs.LogServer(tmp_path_factory.mktemp("tight-logs"))
    cfg = yaml.safe_load(ls.config_file.read_text())
    ls.config_file.write_text(yaml.safe_dump({**cfg, "api": TIGHT}))
    ls.server.start()
    try:
        yield ls
    finally:
        ls.server.close()


def test_kubectl_logs_follow_outlives_the_idle_timeout(tight_logs: test_logs.LogServer,
                                                       request: pytest.FixtureRequest) -> None:
    k = fresh_namespace(tight_logs.server, request)
    kubelet = test_logs.Kubelet(k, tight_logs)
    follower: test_logs.Follower | None = None
    try:
        kubelet.pod("tail")
        kubelet.status("tail", test_logs.running())
        f = kubelet.log("tail")
        test_logs.write(f, "first")
        follower = test_logs.Follower(k, "tail")
        until(lambda: follower is not None and follower.saw("first"), timeout=WAIT, what="the first line")
        time.sleep(DEADLINE * 3)  # a followed log is being served, never idle
        test_logs.write(f, "after idle")
        until(lambda: follower is not None and follower.saw("after idle"), timeout=WAIT, what="a line after idle")
        assert follower.proc.poll() is None, "kubectl logs -f ended"
    finally:
        if follower is not None:
            follower.close()
        kubelet.close()


# --- the cap --------------------------------------------------------------------------------

CAP = 6
T = TypeVar("T")


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _server(tmp_path_factory.mktemp("capped"), {"max-connections": CAP})
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _refused(server: Server) -> bool:
    try:
        with _tls(server):
            return False
    except (ConnectionError, ssl.SSLError):
        return True


def _accepted(connect: Callable[[], T]) -> T:
    """`connect()`, retried while refused: a connection the test closed just before may not be
    gone on the server's side yet."""
    stop = time.monotonic() + WAIT
    while True:
        try:
            return connect()
        except (ConnectionError, ssl.SSLError):
            if time.monotonic() > stop:
                raise
            time.sleep(0.1)


def _connected(server: Server) -> http.client.HTTPSConnection:
    conn = _https(server)
    conn.connect()
    return conn


def test_connection_over_the_cap_is_refused_and_open_ones_work(capped: Server) -> None:
    ns = _namespace(capped, "capped")
    with contextlib.ExitStack() as stack:
        w = _accepted(lambda: _Watch(capped, ns))
        stack.callback(w.close)
        busy = _accepted(lambda: _connected(capped))
        stack.callback(busy.close)
        idle = [stack.enter_context(_accepted(lambda: _tls(capped))) for _ in range(CAP - 2)]

        assert _refused(capped), f"a connection beyond max-connections={CAP} was accepted"

        # What was open before keeps working: requests on a kept-alive connection, the watch.
        assert _get(busy, f"/api/v1/namespaces/{ns}")[0] == 200
        assert _create_configmap(busy, ns, "at-the-cap") == 201
        assert w.sees_added("at-the-cap")
        assert _refused(capped)

        # A slot freed is a slot to take.
        idle.pop().close()
        again = _accepted(lambda: _connected(capped))
        stack.callback(again.close)
        assert _get(again, f"/api/v1/namespaces/{ns}")[0] == 200
    assert "api.max-connections" in capped.log()


# --- memory -----------------------------------------------------------------------------------


def _rss_kib(server: Server) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_memory_of_closed_connections_does_not_accumulate(fresh_server: Server) -> None:
    """Rounds of idle TLS connections opened and closed: what the server keeps afterwards stays
    bounded (a connection's state left behind would add its share every round). The figures
    themselves are benchmarks/conns_bench.py's."""
    count, rounds = 200, 6
    held, after = [], []
    for _ in range(rounds):
        socks = [_tls(fresh_server, admin=False) for _ in range(count)]
        held.append(_rss_kib(fresh_server))
        for s in socks:
            s.close()
        time.sleep(3)  # the server notices the closes and gives the memory back (2 s after)
        after.append(_rss_kib(fresh_server))
    cost = held[0] - after[0]  # what holding them took, beyond what stays
    growth = after[-1] - after[1]
    assert growth < max(cost, 0) / 2 + 1024, (
        f"RSS after each round (KiB): {after}; holding {count} connections: {held}")
