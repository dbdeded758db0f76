"""The Nuitka binary `dist/edgekube` starts, serves /readyz over TLS and stops cleanly on SIGTERM.

This is the smoke test for `make binary`. It is marked `binary`: `make test` deselects it (the
binary is built later in CI), and `.ci/run` runs it explicitly after `make binary` with
EDGEKUBE_REQUIRE_BINARY=1, so a missing binary there is a failure, never a skip. Run by hand
without that variable and without a binary, it is reported as skipped with the reason.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import conftest
from tests.support.waiting import until

pytestmark = [pytest.mark.binary, pytest.mark.e2e]

BINARY = conftest.REPO / "dist" / "edgekube"


def require_binary() -> Path:
    if BINARY.is_file() and os.access(BINARY, os.X_OK):
        return BINARY
    message = f"{BINARY} is missing or not executable; build it with `make binary`"
    if os.environ.get("EDGEKUBE_REQUIRE_BINARY") == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_binary_prints_its_version() -> None:
    binary = require_binary()
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=120,
                         check=False, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("edgekube "), out.stdout


def test_binary_serves_readyz_with_its_own_ca_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    binary = require_binary()
    srv = conftest.Server(tmp_path / "data", command=[str(binary)])
    try:
        # The first start of a onefile binary unpacks its payload: allow for it.
        srv.start(timeout=90)
        ctx = ssl.create_default_context(cafile=str(srv.ca))
        with urllib.request.urlopen(f"{srv.url}/readyz", context=ctx, timeout=10) as r:
            assert r.status == 200
            assert r.read() == b"ok"
        assert srv.kubeconfig.is_file(), f"no kubeconfig at {srv.kubeconfig}"
        code = srv.stop(timeout=30)
        assert code == 0, f"exit code {code} after SIGTERM:\n{srv.log()}"
    finally:
        srv.close()


def test_binary_encrypts_secrets_at_rest(tmp_path: Path) -> None:
    """The binary carries the AES-GCM path (OpenSSL through ctypes, on the libcrypto it ships)."""
    binary = require_binary()
    srv = conftest.Server(tmp_path / "data", command=[str(binary)])
    kubectl = str(conftest.REPO / "tools" / "bin" / "kubectl-1.33")
    try:
        srv.start(timeout=90)
        base = [kubectl, "--kubeconfig", str(srv.kubeconfig)]
        subprocess.run([*base, "create", "secret", "generic", "s", "--from-literal=pw=binary-secret-51c3"],
                       check=True, capture_output=True, timeout=60)
        got = subprocess.run([*base, "get", "secret", "s", "-o", "jsonpath={.data.pw}"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        assert got == "YmluYXJ5LXNlY3JldC01MWMz"  # base64 of the value
        status = subprocess.run([str(binary), "secrets-encrypt", "status", "--data-dir", str(srv.data_dir)],
                                capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
        assert status.returncode == 0 and "Stored Secret Values: 1 aesgcmkey-" in status.stdout, status.stderr
        assert srv.stop(timeout=30) == 0
        for p in srv.data_dir.rglob("*"):
            if p.is_file():
                assert b"binary-secret-51c3" not in p.read_bytes(), p
    finally:
        srv.close()


def test_binary_signs_and_checks_service_account_tokens_under_rbac(tmp_path: Path) -> None:
    """The binary carries the RS256 path (OpenSSL's EVP through ctypes, on the libcrypto it
    ships) and RBAC: a token from `kubectl create token` is refused a list until a RoleBinding
    lets its account read, then answered."""
    binary = require_binary()
    srv = conftest.Server(tmp_path / "data", command=[str(binary)])
    kubectl = str(conftest.REPO / "tools" / "bin" / "kubectl-1.33")
    try:
        srv.start(timeout=90)
        admin = [kubectl, "--kubeconfig", str(srv.kubeconfig), "-n", "default"]

        def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60)

        run(*admin, "create", "serviceaccount", "robot")
        token = run(*admin, "create", "token", "robot").stdout.strip()
        as_robot = [kubectl, "--kubeconfig", "/dev/null", "--server", srv.url, "--certificate-authority", str(srv.ca),
                    "--token", token, "-n", "default", "get", "configmaps", "-o", "name"]
        refused = run(*as_robot, check=False)
        assert refused.returncode != 0
        assert 'User "system:serviceaccount:default:robot" cannot list resource "configmaps"' in refused.stderr
        run(*admin, "create", "rolebinding", "robot-views", "--clusterrole=view", "--serviceaccount=default:robot")
        until(lambda: run(*as_robot, check=False).returncode == 0, timeout=10, what="the binding taking effect")
        assert srv.stop(timeout=30) == 0
    finally:
        srv.close()


def test_binary_runs_the_network_in_a_namespace_of_its_own(tmp_path: Path, netns: Any) -> None:
    """The binary carries the network part (the service proxy's nftables table, the NetworkPolicy
    chains, the cluster DNS on dnspython, whose record types load through importlib)."""
    import dns.message
    import dns.query

    binary = require_binary()
    srv = conftest.Server(tmp_path / "data", command=[str(binary)], netns=netns)
    try:
        srv.start(timeout=90)
        netns.run(["ip", "addr", "add", "10.42.0.1/32", "dev", "lo"])  # the pod gateway, as the bridge would hold it
        query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
        answer = netns.call(dns.query.udp, query, "10.42.0.1", timeout=5)
        assert [str(rr) for rrset in answer.answer for rr in rrset] == ["10.43.0.1"]
        srv_answer = netns.call(dns.query.tcp, dns.message.make_query("_https._tcp.kubernetes.default.svc.cluster.local",
                                                                      "SRV"), "10.42.0.1", timeout=5)
        assert srv_answer.answer, srv_answer
        table = netns.run(["nft", "list", "table", "inet", "edgekube"]).stdout
        assert "chain policy-forward" in table and "10.43.0.1" in table
        assert srv.stop(timeout=30) == 0
    finally:
        srv.close()


def test_binary_installs_itself_with_the_unit_and_config_it_carries(tmp_path: Path) -> None:
    binary = require_binary()
    root = tmp_path / "root"
    out = subprocess.run([str(binary), "install", "--root", str(root), "--no-start"], capture_output=True, text=True,
                         timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    installed = root / "usr/local/bin/edgekube"
    assert installed.read_bytes() == binary.read_bytes() and os.access(installed, os.X_OK)
    assert (root / "etc/systemd/system/edgekube.service").read_bytes() == \
        (conftest.REPO / "systemd/edgekube.service").read_bytes()
    assert (root / "etc/edgekube/config.yaml").read_bytes() == (conftest.REPO / "configs/config.yaml").read_bytes()


def test_release_tarball_checks_its_files_then_installs(tmp_path: Path) -> None:
    binary = require_binary()
    tarballs = sorted((conftest.REPO / "dist" / "release").glob("edgekube-*-linux-*.tar.gz"))
    if not tarballs:
        message = "no release tarball in dist/release; make it with `make release` (or packaging/release.sh)"
        if os.environ.get("EDGEKUBE_REQUIRE_BINARY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(["tar", "-C", str(tmp_path), "-xzf", str(tarballs[-1])], check=True)
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("edgekube-")]
    assert sorted(p.name for p in folder.iterdir()) == ["ARCH", "README", "SHA256SUMS", "config.yaml", "edgekube",
                                                        "edgekube.service", "install.sh"]
    assert (folder / "edgekube").read_bytes() == binary.read_bytes()
    root = tmp_path / "root"
    out = subprocess.run([str(folder / "install.sh"), "--root", str(root), "--no-start"], capture_output=True,
                         text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (root / "usr/local/bin/edgekube").read_bytes() == binary.read_bytes()
    assert (root / "etc/systemd/system/multi-user.target.wants/edgekube.service").is_symlink()
    with open(folder / "config.yaml", "a") as f:
        f.write("# changed\n")
    out = subprocess.run([str(folder / "install.sh"), "--root", str(root)], capture_output=True, text=True,
                         timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "do not match SHA256SUMS" in out.stderr
