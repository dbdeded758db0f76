"""The clock of a board without an RTC, under libfaketime: `edgekube server` runs with a faked wall
clock (the monotonic clock stays real, as on a board whose clock NTP sets), real kubectl and the
test process with the real one.

- a first boot at 1970, then the real clock: the node works throughout, its certificates valid;
- a node past its certificates' end (and near and past its CA's): leaves renewed at boot with a
  clear line, kubectl works with the rewritten kubeconfig, the old one fails at once;
- a clock stepped forward and back while running (leases, node heartbeats, events, CronJobs): no
  crash, no storm of Jobs, no node marked NotReady; a step past the leaves' end renews them
  without a restart.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Server

pytestmark = pytest.mark.e2e

KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"
DAY = 86400


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found or shutil.which("faketime") is None:
        pytest.fail("libfaketime is missing: `make test` installs it (Debian package faketime)")
    return found[0]


def _faked(spec: str | None = None, *, file: Path | None = None) -> dict[str, str]:
    """The environment that runs a process under libfaketime: a fixed spec ("@1970-01-01
    00:00:10" starts the clock there, "+400d" offsets it), or a file the test rewrites to step
    the clock while the server runs. The monotonic clock is left real."""
    env = {"LD_PRELOAD": _libfaketime(), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    if file is not None:
        env.update(FAKETIME_TIMESTAMP_FILE=str(file), FAKETIME_CACHE_DURATION="1")
    else:
        assert spec is not None
        env["FAKETIME"] = spec
    return env


def _kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: run `make kube-tools` (make test does)")
    proc = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(kubeconfig.parent)})
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _certs(data_dir: Path, command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekube", "certs", command, "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; each is stopped at the end whatever happens."""
    made: list[Server] = []
    try:
        yield made
    finally:
        for srv in made:
            srv.close()


def _server(servers: list[Server], data_dir: Path, *, port: int | None = None,
            env: dict[str, str] | None = None, extra: list[str] | None = None) -> Server:
    # Certificate files and the wall clock looked at every 2 s (60 s on a device), and a node
    # NotReady after 10 s of silence (40 s): the same logic, in less of the suite's time.
    config = data_dir.parent / f"{data_dir.name}-config.yaml"
    config.write_text("api:\n  certificate-poll-seconds: 2\ncontrollers:\n  node-monitor-grace-period-seconds: 10\n")
    srv = Server(data_dir, port=port, env=env, extra=["--config", str(config), *(extra or [])])
    servers.append(srv)
    srv.start(timeout=60)
    return srv


def test_a_first_boot_at_1970_then_the_real_clock(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    srv = _server(servers, data, env=_faked("@1970-01-01 00:00:10"))  # ready: verified by the real clock
    assert "the system clock reads 1970-01-01T00:00:1" in srv.log()
    _kubectl(srv.kubeconfig, "create", "configmap", "from-1970", "--from-literal=a=b")
    assert _kubectl(srv.kubeconfig, "get", "configmap", "from-1970", "-o", "name").stdout.strip() == "configmap/from-1970"
    check = _certs(data, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    tls = {p.name: p.read_bytes() for p in (data / "tls").iterdir()}
    kubeconfig = srv.kubeconfig.read_bytes()
    srv.stop()
    srv = _server(servers, data, port=srv.port)  # NTP has set the clock
    assert {p.name: p.read_bytes() for p in (data / "tls").iterdir()} == tls  # nothing to renew
    assert srv.kubeconfig.read_bytes() == kubeconfig
    assert _kubectl(srv.kubeconfig, "get", "configmap", "from-1970", "-o", "name").stdout.strip() == "configmap/from-1970"


def test_a_node_past_its_certificates_end(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    srv = _server(servers, data)
    _kubectl(srv.kubeconfig, "get", "ns")
    old = tmp_path / "old-kubeconfig.yaml"
    shutil.copy(srv.kubeconfig, old)
    srv.stop()

    # 400 days on: the leaves (one year) have expired. Renewed at boot, with a line naming each.
    later = _faked("+400d")
    srv = _server(servers, data, port=srv.port, env=later)
    log = srv.log()
    assert f"{data / 'tls' / 'server.crt'} (the API server's serving certificate) expired on" in log
    assert "admin.crt (the admin client certificate (kubeconfig.yaml)) expired on" in log
    assert "issuing it again; the kubeconfig is rewritten" in log
    _kubectl(srv.kubeconfig, "get", "ns")
    # The old kubeconfig's certificate has expired by the server's clock: a TLS alert at once.
    stale = _kubectl(old, "get", "ns", check=False)
    assert stale.returncode != 0 and "remote error: tls: expired certificate" in stale.stderr, stale.stderr
    check = _certs(data, "check", env=later)
    assert check.returncode == 0, check.stdout + check.stderr
    srv.stop()

    # Near the CA's end (ten years): warned at boot; the leaves end with it, kubectl works.
    near = _faked("+3400d")
    srv = _server(servers, data, port=srv.port, env=near)
    assert "(the cluster CA) expires on" in srv.log() and "edgekube certs rotate --ca" in srv.log()
    _kubectl(srv.kubeconfig, "get", "ns")
    check = _certs(data, "check", env=near)
    assert check.returncode == 1 and "RENEW SOON" in check.stdout, check.stdout
    srv.stop()

    # Past the CA's end: a clear line says what to run; `certs rotate --ca` makes the node usable.
    past = _faked("+3700d")
    srv = _server(servers, data, port=srv.port, env=past)
    assert "(the cluster CA) expired on" in srv.log()
    assert "Run `edgekube certs rotate --ca`, restart edgekube" in srv.log()
    check = _certs(data, "check", env=past)
    assert check.returncode == 1 and "EXPIRED" in check.stdout, check.stdout
    srv.stop()
    leaves_only = _certs(data, "rotate", env=past)  # leaves from an expired CA would be no use
    assert leaves_only.returncode == 1 and "run `edgekube certs rotate --ca`" in leaves_only.stderr
    rotated = _certs(data, "rotate", "--ca")  # the clock set right again
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "kubeconfig rewritten" in rotated.stdout
    srv = _server(servers, data, port=srv.port)
    _kubectl(srv.kubeconfig, "get", "ns")
    assert _certs(data, "check").returncode == 0
    other_ca = _kubectl(old, "get", "ns", check=False)  # trusts the old CA only
    assert other_ca.returncode != 0 and "certificate signed by unknown authority" in other_ca.stderr


def test_a_client_certificate_from_another_ca_fails_at_once(tmp_path: Path, servers: list[Server]) -> None:
    """kubectl retried the EOF it got for most of a minute; with the TLS alert it stops at once
    (one attempt per request: the error is the alert's, not a retried EOF)."""
    srv = _server(servers, tmp_path / "a")
    other = _server(servers, tmp_path / "b")
    mixed = tmp_path / "mixed.yaml"
    doc = json.loads(json.dumps(__import__("yaml").safe_load(srv.kubeconfig.read_text())))
    theirs = __import__("yaml").safe_load(other.kubeconfig.read_text())
    doc["users"] = theirs["users"]
    mixed.write_text(json.dumps(doc))
    proc = _kubectl(mixed, "get", "ns", check=False)
    assert proc.returncode != 0
    assert "remote error: tls: unknown certificate authority" in proc.stderr, proc.stderr
    assert "EOF" not in proc.stderr


def _get(srv: Server, path: str) -> Any:
    return json.loads(_kubectl(srv.kubeconfig, "get", "--raw", path).stdout)


def test_a_clock_stepped_forward_and_back_while_running(tmp_path: Path, servers: list[Server]) -> None:
    from tests.support.testnode import NodeProcess

    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    data = tmp_path / "data"
    srv = _server(servers, data, env=_faked(file=clock))
    node = NodeProcess(data, srv.url, "stepped").start()
    try:
        _kubectl(srv.kubeconfig, "create", "cronjob", "tick", "--image=busybox", "--schedule=*/1 * * * *",
                 "--", "true")

        def jobs() -> int:
            return len(_get(srv, "/apis/batch/v1/namespaces/default/jobs")["items"])

        def renewals(n: int) -> None:
            """Wait for `n` renewals of the node's Lease, as the server sees them."""
            seen: set[str] = set()
            while len(seen) < n + 1:
                lease = _get(srv, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/stepped")
                seen.add(lease["spec"]["renewTime"])
                time.sleep(0.5)

        renewals(1)
        for step in ("+3600", "-7200", "+0"):
            before = jobs()
            clock.write_text(step + "\n")
            renewals(7)  # 14 s of heartbeats, past the 10 s grace period, with the clock stepped
            assert srv.proc is not None and srv.proc.poll() is None, srv.log()
            node_obj = _get(srv, "/api/v1/nodes/stepped")
            ready = next(c for c in node_obj["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True", (step, ready)
            assert not (node_obj["spec"].get("taints") or []), (step, node_obj["spec"])
            reasons = {e["reason"] for e in _get(srv, "/api/v1/events")["items"]}
            assert "NodeNotReady" not in reasons, (step, reasons)
            # a regular tick and the most recent missed one at most, never one per missed slot
            assert jobs() - before <= 2, (step, before, jobs())
        assert "the wall clock was set " in srv.log_path.read_text()  # noticed (sampled every poll)
    finally:
        node.stop()

    # 400 days on, the leaves have expired by the server's clock: it notices the step, renews them
    # (a forked child of the running server) and serves them without a restart; kubectl uses the
    # rewritten kubeconfig.
    clock.write_text(f"+{400 * DAY}\n")
    for _ in range(600):  # the step is noticed within a poll
        log = srv.log_path.read_text()
        if "(the API server's serving certificate) expired on" in log and "serving the certificate in" in log:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no renewal after the clock stepped 400 days:\n{srv.log()}")
    _kubectl(srv.kubeconfig, "get", "ns")
    assert srv.proc is not None and srv.proc.poll() is None


def _served_serial(srv: Server) -> int:
    import socket
    import ssl

    from cryptography import x509

    ctx = ssl.create_default_context(cafile=str(srv.ca))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # just look at what is served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_certs_rotate_on_a_running_server_is_served_without_a_restart(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    srv = _server(servers, data)
    first = _served_serial(srv)
    for args in ((), ("--ca",)):
        done = srv.log_path.read_text().count("serving the certificate in")
        rotated = _certs(data, "rotate", *args)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        for _ in range(300):  # picked up within a poll
            if srv.log_path.read_text().count("serving the certificate in") > done:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"rotated certificates not loaded:\n{srv.log()}")
        assert _served_serial(srv) != first
        first = _served_serial(srv)
        _kubectl(srv.kubeconfig, "get", "ns")  # the rewritten kubeconfig, against the same process
    check = _certs(data, "check")
    assert check.returncode == 0, check.stdout + check.stderr
