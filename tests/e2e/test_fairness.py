"""Fair sharing of the API (issue 15): a noisy client cannot starve kubectl, another user or the
node, and is itself refused with 429 and Retry-After, which real clients retry.

The noisy user's slow requests are creates whose bodies it sends only in part: each holds a seat
of its priority level for as long as the test wants, so every step is a known state (seats held,
requests queued: read from /metrics) and every check is about order and outcome, never about how
long anything took. The server is sized small through its config file: 5 seats for
`global-default` and 3 waiting requests per user.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException

from tests.conftest import Server
from tests.e2e.test_audit import metric
from tests.e2e.test_kubectl import _binary
from tests.support import usercert
from tests.support.waiting import until

pytestmark = pytest.mark.e2e

LEVEL = 'flow_schema="global-default",priority_level="global-default"'
EXECUTING = f"apiserver_flowcontrol_current_executing_requests{{{LEVEL}}}"
INQUEUE = f"apiserver_flowcontrol_current_inqueue_requests{{{LEVEL}}}"
REJECTED = f'apiserver_flowcontrol_rejected_requests_total{{{LEVEL},reason="queue-full"}}'


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("capped")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({"flowcontrol": {"max-requests-inflight": 10, "queue-length-per-flow": 3,
                                                   "max-queued": 50, "queue-wait-seconds": 120}}))
    srv = Server(root / "data", extra=["--config", str(cfg)])
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


class SlowCreate:
    """A create whose body is sent in part: it holds a seat (or its place in the queue) until
    `finish` sends the rest."""

    def __init__(self, srv: Server, user: usercert.UserCert, name: str) -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}).encode()
        self._rest = body[10:]
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        self.sock = user.context().wrap_socket(raw, server_hostname="127.0.0.1")
        head = (f"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body[:10])

    def finish(self) -> int:
        self.sock.sendall(self._rest)
        status = int(self.sock.recv(65536).split(b" ", 2)[1])
        self.sock.close()
        return status

    def close(self) -> None:
        self.sock.close()


def _python_client(srv: Server, user: usercert.UserCert, *, retries: Any = None) -> k8s_client.CoreV1Api:
    conf = k8s_client.Configuration()
    conf.host = srv.url
    conf.ssl_ca_cert = str(srv.ca)
    conf.cert_file = str(user.cert)
    conf.key_file = str(user.key)
    if retries is not None:
        conf.retries = retries
    return k8s_client.CoreV1Api(k8s_client.ApiClient(conf))


# The test users' group: RBAC lets it edit and read /metrics, as an administrator would.
TESTERS = "fairness-testers"


def _grant_testers(srv: Server) -> None:
    usercert.grant(srv, group=TESTERS, cluster_role="edit",
                   probe={"verb": "create", "resource": "configmaps", "namespace": "default"})
    usercert.grant(srv, group=TESTERS, cluster_role="system:monitoring", probe={"verb": "get", "path": "/metrics"})


def test_a_noisy_client_cannot_starve_others_and_is_told_to_retry(capped: Server, tmp_path: Path) -> None:
    noisy = usercert.issue(capped, "noisy", groups=(TESTERS,), into=tmp_path)
    alice = usercert.issue(capped, "alice", groups=(TESTERS,), into=tmp_path)
    node = usercert.issue(capped, "system:node:edge-1", groups=("system:nodes", TESTERS), into=tmp_path)
    _grant_testers(capped)
    watcher = node.context()  # /metrics read as the node: its own priority level, never queued here

    def reading(name: str) -> float:
        return metric(capped, name, context=watcher)

    slow: list[SlowCreate] = []
    try:
        slow += [SlowCreate(capped, noisy, f"slow-{i}") for i in range(5)]
        until(lambda: reading(EXECUTING) == 5, timeout=30, what="the noisy user holding every seat")
        slow += [SlowCreate(capped, noisy, f"slow-{i}") for i in range(5, 8)]
        until(lambda: reading(INQUEUE) == 3, timeout=30, what="three more of it queued")

        # Its fourth waiting request is refused at once, as upstream's APF refuses it.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{capped.url}/api/v1/namespaces/default/configmaps", context=noisy.context(),
                                   timeout=30)
        assert refused.value.code == 429 and refused.value.headers["Retry-After"] == "1"
        status = json.loads(refused.value.read())
        assert (status["reason"], status["message"], status["details"]) == (
            "TooManyRequests", "Too many requests, please try again later.", {"retryAfterSeconds": 1})

        # The node is in a priority level of its own: answered while global-default is full.
        with urllib.request.urlopen(f"{capped.url}/api/v1/nodes", context=watcher, timeout=30) as r:
            assert r.status == 200

        # kubectl (the admin) and the Python client (alice) queue behind the noisy user's three.
        kubectl = subprocess.Popen([str(_binary("1.36")), "--kubeconfig", str(capped.kubeconfig), "get", "--raw",
                                    "/api/v1/namespaces/default/configmaps"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        until(lambda: reading(INQUEUE) == 4, timeout=30, what="kubectl queued")
        alice_result: dict[str, Any] = {}

        def alice_lists() -> None:
            try:
                alice_result["items"] = _python_client(capped, alice).list_namespaced_config_map("default").items
            except Exception as exc:  # reported by the assertion below
                alice_result["error"] = exc

        alice_thread = threading.Thread(target=alice_lists, name="alice")
        alice_thread.start()
        until(lambda: reading(INQUEUE) == 5, timeout=30, what="alice queued")

        # One seat frees: kubectl is served, then alice, before any of the noisy user's
        # requests that were waiting longer.
        assert slow.pop(0).finish() == 201
        out, err = kubectl.communicate(timeout=60)
        assert kubectl.returncode == 0, err
        assert json.loads(out)["kind"] == "ConfigMapList"
        alice_thread.join(timeout=60)
        assert "error" not in alice_result and isinstance(alice_result["items"], list)
        until(lambda: reading(INQUEUE) == 2 and reading(EXECUTING) == 5, timeout=30,
              what="the noisy user's seat given back to it only after the others")

        # Real clients and 429: the Python client raises it with Retry-After, and retries it
        # when told to (urllib3's Retry honours the header); kubectl (client-go) retries on its own.
        slow.append(SlowCreate(capped, noisy, "slow-8"))
        until(lambda: reading(INQUEUE) == 3, timeout=30, what="the noisy user's queue full again")
        with pytest.raises(ApiException) as told:
            _python_client(capped, noisy).list_namespaced_config_map("default")
        assert told.value.status == 429 and told.value.headers["Retry-After"] == "1"
        rejected = reading(REJECTED)
        retried: dict[str, Any] = {}

        def retrying() -> None:
            retry = urllib3.Retry(total=60, status_forcelist=[429], allowed_methods=None, respect_retry_after_header=True)
            retried["items"] = _python_client(capped, noisy, retries=retry).list_namespaced_config_map("default").items

        retry_thread = threading.Thread(target=retrying, name="retrying")
        retry_thread.start()
        noisy_kubectl = subprocess.Popen([str(_binary("1.36")), "--kubeconfig", str(noisy.kubeconfig()), "get",
                                          "--raw", "/api/v1/namespaces/default/configmaps"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        until(lambda: reading(REJECTED) >= rejected + 2, timeout=60, what="both clients refused at least once")
        while slow:
            assert slow.pop(0).finish() == 201
        retry_thread.join(timeout=90)
        assert isinstance(retried.get("items"), list)
        out, err = noisy_kubectl.communicate(timeout=90)
        assert noisy_kubectl.returncode == 0, err
        assert {i["metadata"]["name"] for i in json.loads(out)["items"]} >= {f"slow-{i}" for i in range(9)}
    finally:
        for s in slow:
            s.close()


def test_watches_and_probes_take_no_seat(capped: Server, tmp_path: Path) -> None:
    noisy = usercert.issue(capped, "noisy-watcher", groups=(TESTERS,), into=tmp_path)
    _grant_testers(capped)
    watches = []
    try:
        for _ in range(12):  # more than the level's seats and queue together
            raw = socket.create_connection(("127.0.0.1", capped.port), timeout=60)
            sock = noisy.context().wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=60 HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            watches.append(sock)
        with urllib.request.urlopen(f"{capped.url}/api/v1/namespaces/default/configmaps", context=noisy.context(),
                                    timeout=30) as r:
            assert r.status == 200
        anon = ssl.create_default_context(cafile=str(capped.ca))
        with urllib.request.urlopen(f"{capped.url}/readyz", context=anon, timeout=30) as r:
            assert r.read() == b"ok"
    finally:
        for sock in watches:
            sock.close()
