"""The network-test namespaces keep the network rule: nothing reaches or changes the host's
namespace, and everything goes even when the test fails."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.support import netns as netns_mod


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_a_namespace_has_loopback_only_and_goes_with_its_links() -> None:
    before = host_links()
    with netns_mod.namespaces("a", "b") as (a, b):
        assert a.links() == ["lo"]
        netns_mod.link(a, b, a_name="ekt-a", b_name="ekt-b")
        assert "ekt-a" in a.links() and "ekt-b" in b.links()
        assert host_links() == before  # the pair never appeared in the host's namespace
        listener = b.call(socket.create_server, ("198.18.0.2", 0))
        with listener:
            port = listener.getsockname()[1]
            with a.call(socket.create_connection, ("198.18.0.2", port), timeout=5):
                peer, _ = listener.accept()
                peer.close()
        paths = [a.path, b.path]
    assert not any(p.exists() for p in paths)
    assert host_links() == before


def test_call_runs_in_the_namespace_and_leaves_the_caller_where_it_was() -> None:
    with netns_mod.namespaces("a") as (a,):
        with socket.socket() as outside:
            outside.bind(("127.0.0.1", 0))
            outside.listen()
            port = outside.getsockname()[1]

            def connect() -> int:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port))

            assert a.call(connect) != 0  # the host's loopback is not reachable from inside
            assert connect() == 0  # and this thread never left the host's namespace


def test_namespaces_go_even_when_the_test_fails() -> None:
    made = []
    with pytest.raises(RuntimeError), netns_mod.namespaces("a") as (a,):
        made.append(a.path)
        raise RuntimeError("the test failed")
    assert not made[0].exists()


def test_a_killed_run_is_swept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{netns_mod.PREFIX}{dead.pid}-0-stale"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in netns_mod.sweep_stale()
        assert not (netns_mod.NETNS_DIR / name).exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_a_server_runs_inside_and_is_reached_only_from_inside(tmp_path, netns) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import Server

    srv = Server(tmp_path / "data", netns=netns)
    srv.start()
    try:
        assert netns.call(srv.ready)
        assert not srv._ready()  # the host's loopback has no edgekube on that port
        assert srv.proc is not None and srv.proc.pid in netns.pids()
    finally:
        srv.close()
