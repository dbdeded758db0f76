"""Probes and hooks without runc: the settings' defaults, the threshold counting, the prober's
gating (startup before liveness and readiness) with a scripted exec, the HTTP and TCP actions
against real servers on 127.0.0.1 (from the host's network: no namespace needed), and the API's
defaults and validation of probes and lifecycle hooks. The real-runc side is in
tests/integration/test_kubelet_actions.py and tests/e2e/test_probes.py."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgekube._cogs import clock as clock_mod
from edgekube.api.registry import defaults, validation
from edgekube.kubelet import actions, lifecycle, podstatus, probes
from edgekube.kubelet.runtime import containers, runc

JSON = dict[str, Any]


# --- settings and thresholds ------------------------------------------------------------------


def test_spec_defaults_as_upstream() -> None:
    s = probes.Spec.of(probes.READINESS, {"exec": {"command": ["true"]}})
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold, s.failure_threshold, s.grace) == (0, 10, 1, 1, 3, None)
    # Zero is "unset" (upstream's defaulting); a readiness probe has no grace period of its own.
    s = probes.Spec.of(probes.READINESS, {"periodSeconds": 0, "timeoutSeconds": 0, "successThreshold": 2,
                                          "terminationGracePeriodSeconds": 5})
    assert (s.period, s.timeout, s.success_threshold, s.grace) == (10, 1, 2, None)
    s = probes.Spec.of(probes.LIVENESS, {"successThreshold": 3, "terminationGracePeriodSeconds": 5, "initialDelaySeconds": 7})
    assert (s.success_threshold, s.grace, s.initial_delay) == (1, 5, 7)
    kinds = [s.kind for s in probes.specs({"livenessProbe": {}, "readinessProbe": {}, "startupProbe": {}})]
    assert kinds == [probes.STARTUP, probes.LIVENESS, probes.READINESS]


def test_counter_publishes_only_past_the_thresholds() -> None:
    c = probes.Counter(probes.READINESS, success_threshold=2, failure_threshold=3)
    assert c.result == probes.FAILURE
    assert not c.observe(probes.SUCCESS)
    assert c.observe(probes.SUCCESS) and c.result == probes.SUCCESS
    assert not c.observe(probes.FAILURE) and not c.observe(probes.FAILURE)
    assert not c.observe(probes.SUCCESS)  # a success breaks the run of failures
    assert [c.observe(probes.FAILURE) for _ in range(3)] == [False, False, True]
    assert c.result == probes.FAILURE and not c.on_hold  # readiness never holds

    live = probes.Counter(probes.LIVENESS, failure_threshold=1)
    assert live.result == probes.SUCCESS and not live.observe(probes.SUCCESS)
    assert live.observe(probes.FAILURE) and live.on_hold

    startup = probes.Counter(probes.STARTUP)
    assert startup.result == probes.UNKNOWN and not startup.on_hold
    assert startup.observe(probes.SUCCESS) and startup.on_hold


# --- the prober, with a scripted exec -----------------------------------------------------------


class ScriptedExec:
    """Exits with `codes[command[-1]]` (0 when unset); remembers what ran."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []

    async def exec(self, cid: str, command: Sequence[str], *, time_limit: float | None,
                   limit: int = 10240) -> runc.ExecResult:
        self.calls.append((cid, command[-1]))
        code = self.codes.get(command[-1], 0)
        return runc.ExecResult(exit_code=code, output=f"{command[-1]} says {code}".encode())


def _running(cid: str, name: str = "main") -> containers.ContainerStatus:
    now = datetime.datetime.now(datetime.UTC)
    return containers.ContainerStatus(
        id=cid, state=containers.RUNNING, pid=1, pod_uid="u", pod_name="p", namespace="ns", name=name, attempt=0,
        created_at=now, started_at=now, finished_at=None, exit_code=None, oom_killed=False, reason="", log_path="",
        cgroup="", annotations={})


def _probe(check: str, **fields: Any) -> JSON:
    return {"exec": {"command": ["check", check]}, "periodSeconds": 0.02, **fields}


async def _until(check: Callable[[], Any], what: str, within: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def prober() -> AsyncIterator[tuple[probes.Prober, ScriptedExec, list[tuple[str, str, str]], list[int]]]:
    runtime = ScriptedExec()
    events: list[tuple[str, str, str]] = []
    changes: list[int] = []
    p = probes.Prober(pod="ns/p", runtime=runtime, pod_ip="127.0.0.1", netns=None, clock=clock_mod.WallClock(),
                      on_change=lambda: changes.append(1), on_event=lambda *e: events.append(e))
    try:
        yield p, runtime, events, changes
    finally:
        await p.close()


async def test_startup_gates_liveness_and_readiness(prober: Any) -> None:
    p, runtime, events, changes = prober
    c = {"name": "main", "startupProbe": _probe("startup", failureThreshold=1000),
         "livenessProbe": _probe("live", failureThreshold=2), "readinessProbe": _probe("ready")}
    runtime.codes.update(startup=1, live=1)
    await p.sync([(c, _running("a"))])
    await _until(lambda: len([x for x in runtime.calls if x[1] == "startup"]) >= 5, "startup probed")
    assert not p.started(c, "a") and not p.ready(c, "a") and p.failure(c, "a") is None
    assert {x[1] for x in runtime.calls} == {"startup"}, "liveness and readiness wait for startup"
    assert ("Warning", "Unhealthy", "Startup probe failed: startup says 1") in events
    runtime.codes["startup"] = 0
    await _until(lambda: p.ready(c, "a"), "started, then ready")
    assert p.started(c, "a") and changes
    # Liveness now runs and fails twice in a row: the container is to be killed.
    await _until(lambda: p.failure(c, "a") is not None, "liveness failed")
    failed = p.failure(c, "a")
    assert failed is not None and failed.kind == probes.LIVENESS
    assert ("Warning", "Unhealthy", "Liveness probe failed: live says 1") in events
    # On hold: no more liveness tries for this run; the startup probe ran no more once passed.
    calls = len(runtime.calls)
    await asyncio.sleep(0.2)
    assert [x for x in runtime.calls[calls:] if x[1] in ("live", "startup")] == []
    # A new run of the container starts over: startup again, fresh results.
    await p.sync([(c, _running("b"))])
    assert not p.started(c, "b") and p.failure(c, "b") is None
    await _until(lambda: p.ready(c, "b"), "the new run ready")


async def test_readiness_thresholds_and_stopped_containers(prober: Any) -> None:
    p, runtime, _, _ = prober
    c = {"name": "main", "readinessProbe": _probe("ready", successThreshold=3, failureThreshold=2)}
    await p.sync([(c, _running("a"))])
    await _until(lambda: p.ready(c, "a"), "ready")
    assert len(runtime.calls) >= 3
    runtime.codes["ready"] = 1
    await _until(lambda: not p.ready(c, "a"), "unready")
    # Not running: no worker, not ready; a container without probes is started and ready.
    await p.sync([(c, None)])
    assert not p.ready(c, "a")
    plain = {"name": "plain"}
    assert p.started(plain, "x") and p.ready(plain, "x")


async def test_unsupported_and_unresolvable_probes_error_and_keep_their_results(prober: Any) -> None:
    p, _, events, _ = prober
    c = {"name": "main", "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 0.02},
         "livenessProbe": {"tcpSocket": {"port": "nope"}, "periodSeconds": 0.02, "failureThreshold": 1}}
    await p.sync([(c, _running("a"))])
    await _until(lambda: len(events) >= 4, "errors reported")
    assert not p.ready(c, "a") and p.failure(c, "a") is None
    texts = {e[2] for e in events}
    assert "Readiness probe errored and resulted in unknown state: grpc probes are not supported by this kubelet" in texts
    assert any(t.startswith("Liveness probe errored") and "'nope'" in t for t in texts)


async def test_exec_commands_expand_static_env_only() -> None:
    runtime = ScriptedExec()
    spec = probes.Spec.of(probes.LIVENESS, {"exec": {"command": ["check", "$(A)-$(B)-$$(A)"]}})
    container = {"name": "main", "env": [{"name": "A", "value": "x"}, {"name": "B", "valueFrom": {"fieldRef": {}}}]}
    target = actions.Target(cid="a", container=container, pod_ip="127.0.0.1", netns=None)
    outcome = await probes.run_probe(spec, target, runtime=runtime)
    assert runtime.calls == [("a", "x-$(B)-$(A)")] and outcome.result == actions.SUCCESS


# --- HTTP and TCP against real servers on 127.0.0.1 ---------------------------------------------

Handler = Callable[[list[str]], Awaitable[bytes | None]]


class Server:
    """An HTTP/1.1 server on 127.0.0.1 answering with what `answer(request lines)` gives (None:
    no answer until the client leaves)."""

    def __init__(self, answer: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[list[str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = []
        while (line := (await reader.readline()).decode().rstrip("\r\n")):
            lines.append(line)
        self.requests.append(lines)
        data = await self.answer(lines)
        if data is None:
            await reader.read()  # until the client gives up
        else:
            writer.write(data)
            await writer.drain()
        writer.close()


def _target(port: int, host: str = "127.0.0.1") -> actions.Target:
    return actions.Target(cid="c", container={"name": "web", "ports": [{"name": "http", "containerPort": port}]},
                          pod_ip=host, netns=None)


def _reply(code: int, body: bytes = b"", **headers: str) -> bytes:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def test_http_probe_codes_headers_and_port_names() -> None:
    async def answer(lines: list[str]) -> bytes:
        path = lines[0].split()[1]
        return _reply(200, b"fine") if path == "/ok?x=1" else _reply(500)

    async with Server(answer) as srv:
        action = {"path": "/ok?x=1", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "yes"},
                                                                    {"name": "Host", "value": "web.example"}]}
        assert await actions.http_get(action, _target(srv.port), time_limit=5) == actions.Outcome(actions.SUCCESS, "fine")
        request = srv.requests[-1]
        assert request[0] == "GET /ok?x=1 HTTP/1.1"
        assert {"X-Probe: yes", "Host: web.example", "User-Agent: kube-probe/1.31", "Accept: */*",
                "Connection: close"} <= set(request[1:])
        bad = await actions.http_get({"path": "/", "port": srv.port}, _target(srv.port), time_limit=5)
        assert bad == actions.Outcome(actions.FAILURE, "HTTP probe failed with statuscode: 500")
        # Hooks take any answer; their User-Agent says so.
        assert (await actions.http_get({"path": "/", "port": srv.port}, _target(srv.port), time_limit=5,
                                       purpose="lifecycle")).result == actions.SUCCESS
        assert "User-Agent: kube-lifecycle/1.31" in srv.requests[-1]


async def test_http_redirects_followed_only_to_the_same_host_for_probes() -> None:
    async def answer(lines: list[str]) -> bytes:
        path = lines[0].split()[1]
        if path == "/here":
            return _reply(302, Location="/there")
        if path == "/away":
            return _reply(302, b"moved", Location=f"http://localhost:{srv.port}/there")
        if path == "/loop":
            return _reply(307, Location="/loop")
        return _reply(200, b"arrived")

    async with Server(answer) as srv:
        target = _target(srv.port)
        here = await actions.http_get({"path": "/here", "port": srv.port}, target, time_limit=5)
        assert here == actions.Outcome(actions.SUCCESS, "arrived")
        away = await actions.http_get({"path": "/away", "port": srv.port}, target, time_limit=5)
        assert away == actions.Outcome(actions.WARNING, "Probe terminated redirects, Response body: moved")
        hook = await actions.http_get({"path": "/away", "port": srv.port}, target, time_limit=5, purpose="lifecycle")
        assert hook == actions.Outcome(actions.SUCCESS, "arrived")
        looping = await actions.http_get({"path": "/loop", "port": srv.port}, target, time_limit=5)
        assert looping.result == actions.FAILURE and looping.output.endswith("stopped after 10 redirects")


async def test_http_chunked_bodies_timeouts_and_refusals() -> None:
    async def answer(lines: list[str]) -> bytes | None:
        if lines[0].split()[1] == "/slow":
            return None
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

    async with Server(answer) as srv:
        target = _target(srv.port)
        assert await actions.http_get({"path": "/", "port": srv.port}, target, time_limit=5) == \
            actions.Outcome(actions.SUCCESS, "abcde")
        slow = await actions.http_get({"path": "/slow", "port": srv.port}, target, time_limit=0.3)
        assert slow == actions.Outcome(actions.FAILURE, f'Get "http://127.0.0.1:{srv.port}/slow": context deadline '
                                                         "exceeded (Client.Timeout exceeded while awaiting headers)")
    port = _free_port()
    refused = await actions.http_get({"path": "/", "port": port}, _target(port), time_limit=5)
    assert refused == actions.Outcome(
        actions.FAILURE, f'Get "http://127.0.0.1:{port}/": dial tcp 127.0.0.1:{port}: connect: connection refused')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_https_probe_skips_certificate_checks(tmp_path: Path) -> None:
    async def answer(lines: list[str]) -> bytes:
        return _reply(204)

    async with Server(answer, tls=_self_signed(tmp_path)) as srv:
        action = {"path": "/", "port": srv.port, "scheme": "HTTPS"}
        assert (await actions.http_get(action, _target(srv.port), time_limit=5)).result == actions.SUCCESS
        plain = await actions.http_get({"path": "/", "port": srv.port}, _target(srv.port), time_limit=5)
        assert plain.result == actions.FAILURE


async def test_tcp_probe() -> None:
    async def answer(lines: list[str]) -> bytes:
        return b""

    async with Server(answer) as srv:
        ok = await actions.tcp_connect({"port": "http"}, _target(srv.port), time_limit=5)
        assert ok == actions.Outcome(actions.SUCCESS)
    port = _free_port()
    refused = await actions.tcp_connect({"port": port}, _target(port), time_limit=5)
    assert refused == actions.Outcome(actions.FAILURE, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def test_ports_by_number_or_name() -> None:
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    assert actions.resolve_port(80, c) == 80
    assert actions.resolve_port("http", c) == 8080
    assert actions.resolve_port("9090", c) == 9090
    with pytest.raises(actions.ActionError, match="'metrics' is not a port of container 'web'"):
        actions.resolve_port("metrics", c)
    with pytest.raises(actions.ActionError, match="invalid port number: 70000"):
        actions.resolve_port(70000, c)


async def test_hooks_report_failures_as_upstream() -> None:
    runtime = ScriptedExec()
    runtime.codes["fail"] = 2
    target = actions.Target(cid="a", container={"name": "main"}, pod_ip="127.0.0.1", netns=None)
    assert await lifecycle.run({"exec": {"command": ["check", "ok"]}}, target, runtime=runtime, pod="p_ns(u)") is None
    failed = await lifecycle.run({"exec": {"command": ["check", "fail"]}}, target, runtime=runtime, pod="p_ns(u)")
    assert failed == ('Exec lifecycle hook ([check fail]) for Container "main" in Pod "p_ns(u)" failed - error: '
                      "command 'check fail' exited with 2: , message: \"fail says 2\"")
    port = _free_port()
    http = await lifecycle.run({"httpGet": {"path": "/x", "port": port}}, target, runtime=runtime, pod="p_ns(u)")
    assert http is not None and http.startswith('Http lifecycle hook (/x) for Container "main" in Pod "p_ns(u)" '
                                                f'failed - error: Get "http://127.0.0.1:{port}/x": dial tcp')
    assert await lifecycle.run({"sleep": {"seconds": 0}}, target, runtime=runtime, pod="p_ns(u)") is None
    tcp = await lifecycle.run({"tcpSocket": {"port": 80}}, target, runtime=runtime, pod="p_ns(u)")
    assert tcp is not None and tcp.startswith("Cannot run handler")


# --- the API: defaults and validation -----------------------------------------------------------


def _pod(container: JSON, **spec: Any) -> JSON:
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **container}], **spec}}


def _causes(pod: JSON) -> dict[str, str]:
    defaults.apply("Pod", pod)
    return {c.field: c.message for c in validation.validate("Pod", pod, old=None, namespaced=True)}


def test_probe_and_hook_defaults() -> None:
    pod = _pod({"readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0},
                "lifecycle": {"preStop": {"httpGet": {"port": 80}}}})
    defaults.apply("Pod", pod)
    c = pod["spec"]["containers"][0]
    assert c["readinessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "periodSeconds": 10,
                                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 80, "path": "/", "scheme": "HTTP"}


def test_valid_probes_and_hooks_pass() -> None:
    pod = _pod({"ports": [{"name": "http", "containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": "http", "httpHeaders": [{"name": "X-A", "value": "1"}]},
                                  "terminationGracePeriodSeconds": 5},
                "readinessProbe": {"tcpSocket": {"port": 80}},
                "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
                "lifecycle": {"postStart": {"exec": {"command": ["true"]}}, "preStop": {"sleep": {"seconds": 5}}}},
               initContainers=[{"name": "side", "image": "busybox", "restartPolicy": "Always",
                                "readinessProbe": {"grpc": {"port": 9000}}, "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}])
    assert _causes(pod) == {}


@pytest.mark.parametrize(("container", "field", "message"), [
    ({"livenessProbe": {}}, "livenessProbe", "Required value: must specify a handler type"),
    ({"livenessProbe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 1}}}, "livenessProbe.tcpSocket",
     "Forbidden: may not specify more than 1 handler type"),
    ({"livenessProbe": {"exec": {}}}, "livenessProbe.exec.command", "Required value"),
    ({"startupProbe": {"exec": {"command": ["x"]}, "successThreshold": 2}}, "startupProbe.successThreshold",
     "Invalid value: 2: must be 1"),
    ({"readinessProbe": {"exec": {"command": ["x"]}, "initialDelaySeconds": -1}}, "readinessProbe.initialDelaySeconds",
     "Invalid value: -1: must be greater than or equal to 0"),
    ({"readinessProbe": {"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 3}},
     "readinessProbe.terminationGracePeriodSeconds", "Invalid value: 3: must not be set for readinessProbes"),
    ({"livenessProbe": {"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 0}},
     "livenessProbe.terminationGracePeriodSeconds", "Invalid value: 0: must be greater than 0"),
    ({"readinessProbe": {"httpGet": {"port": 0}}}, "readinessProbe.httpGet.port",
     "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ({"readinessProbe": {"httpGet": {"port": "Web_Port"}}}, "readinessProbe.httpGet.port",
     "Invalid value: \"Web_Port\": must be no more than 15 characters, contain only lowercase alphanumerics and '-', "
     "and at least one letter"),
    ({"readinessProbe": {"httpGet": {"port": 80, "scheme": "FTP"}}}, "readinessProbe.httpGet.scheme",
     'Unsupported value: "FTP": supported values: "HTTP", "HTTPS"'),
    ({"readinessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": ""}]}}},
     "readinessProbe.httpGet.httpHeaders[0].name", "Invalid value: \"a b\": a valid HTTP header must consist of "
     "alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')"),
    ({"lifecycle": {"preStop": {"sleep": {"seconds": 31}}}}, "lifecycle.preStop.sleep",
     "Invalid value: 31: must be greater than 0 and less than terminationGracePeriodSeconds (30)"),
    ({"lifecycle": {"postStart": {}}}, "lifecycle.postStart", "Required value: must specify a handler type"),
])
def test_invalid_probes_and_hooks(container: JSON, field: str, message: str) -> None:
    causes = _causes(_pod(container))
    assert causes.get(f"spec.containers[0].{field}") == message, causes


def test_init_containers_take_probes_and_hooks_only_as_sidecars() -> None:
    pod = _pod({}, initContainers=[{"name": "init", "image": "busybox", "readinessProbe": {"tcpSocket": {"port": 1}},
                                    "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}])
    causes = _causes(pod)
    assert causes["spec.initContainers[0].readinessProbe"] == \
        "Forbidden: may not be set for init containers without restartPolicy=Always"
    assert causes["spec.initContainers[0].lifecycle"] == \
        "Forbidden: may not be set for init containers without restartPolicy=Always"


# --- the status the probes feed -------------------------------------------------------------------


def test_container_status_follows_the_probes() -> None:
    c = {"name": "main", "image": "busybox"}
    run = _running("a")

    def status(*, started: bool, ready: bool, init: bool = False) -> tuple[bool, bool]:
        obs = podstatus.Observed(latest=run, started=started, ready=ready)
        s = podstatus.container_status({**c, "restartPolicy": "Always"} if init else c, obs, old=None,
                                       default_waiting="ContainerCreating", init=init)
        assert "running" in s["state"]
        return s["started"], s["ready"]

    assert status(started=False, ready=False) == (False, False)
    assert status(started=True, ready=False) == (True, False)
    assert status(started=True, ready=True) == (True, True)
    assert status(started=True, ready=False, init=True) == (True, False)  # a sidecar's readiness counts


def test_readiness_gate_conditions() -> None:
    pod: JSON = {"spec": {"readinessGates": [{"conditionType": "example.com/a"}]},
                 "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert podstatus.gates(pod) == {"example.com/a": None}
    pod["status"]["conditions"].append({"type": "example.com/a", "status": "True"})
    assert podstatus.gates(pod) == {"example.com/a": "True"}
    assert podstatus.gates({"spec": {}, "status": pod["status"]}) == {}


@pytest.mark.parametrize("jump", [-86400 * 365, 86400 * 365])
async def test_initial_delay_survives_wall_clock_jumps(jump: int) -> None:
    """A container started under a wall clock that then jumps (a board's first NTP sync) is
    probed after its initialDelaySeconds at most: never held for the jump."""
    runtime = ScriptedExec()
    clock = clock_mod.FakeClock(datetime.datetime.now(datetime.UTC))
    p = probes.Prober(pod="ns/p", runtime=runtime, pod_ip="127.0.0.1", netns=None, clock=clock,
                      on_change=lambda: None, on_event=lambda *e: None)
    try:
        c = {"name": "main", "readinessProbe": _probe("ready", initialDelaySeconds=1)}
        started = _running("a")
        clock.jump(jump)
        await p.sync([(c, started)])
        await _until(lambda: runtime.calls, "probed after the initial delay", within=5)
    finally:
        await p.close()
