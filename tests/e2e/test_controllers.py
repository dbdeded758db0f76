"""The first controllers, through kubectl: namespaces, service accounts, garbage collection."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e


@pytest.fixture
def k(server: Server, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(server, request)


def _exists(k: Kubectl, *args: str) -> bool:
    return k.run("get", *args, check=False).returncode == 0


def test_every_namespace_gets_a_default_account_and_the_root_ca(k: Kubectl, server: Server) -> None:
    _until(lambda: _exists(k, "serviceaccount", "default") and _exists(k, "configmap", "kube-root-ca.crt"))
    ca = k.json("get", "configmap", "kube-root-ca.crt")["data"]["ca.crt"]
    assert ca == server.ca.read_text()
    k.run("delete", "serviceaccount", "default")
    _until(lambda: _exists(k, "serviceaccount", "default"))  # made again


def test_deleting_a_namespace_empties_it(k: Kubectl) -> None:
    k.run("create", "configmap", "inside")
    k.run("create", "deployment", "web", "--image=busybox:1.36")
    k.run("create", "configmap", "held")
    k.run("patch", "configmap", "held", "--type=merge", "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    k.run("delete", "namespace", k.ns, "--wait=false", namespaced=False)
    _until(lambda: not _exists(k, "configmap", "inside") and not _exists(k, "deployment", "web"))
    # An object with a finalizer keeps the namespace Terminating until it goes.
    time.sleep(1)
    assert k.json("get", "namespace", k.ns)["status"]["phase"] == "Terminating"
    k.run("patch", "configmap", "held", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    _until(lambda: not _exists(k, "namespace", k.ns, "--namespace=default"))


def _owned(k: Kubectl, name: str, owner: dict[str, str], *, block: bool = False) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": name, "ownerReferences": [
              {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"], "uid": owner["uid"],
               "blockOwnerDeletion": block}]}}
    k.run("create", "-f", "-", input=json.dumps(cm))


def _ref(k: Kubectl, kind: str, name: str) -> dict[str, str]:
    obj = k.json("get", kind, name)
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": name, "uid": obj["metadata"]["uid"]}


def test_garbage_collection_background_orphan_and_foreground(k: Kubectl) -> None:
    # Background (kubectl's default): the owner goes at once, then its dependents, transitively.
    k.run("create", "configmap", "owner")
    _owned(k, "child", _ref(k, "configmap", "owner"))
    _owned(k, "grandchild", _ref(k, "configmap", "child"))
    k.run("delete", "configmap", "owner")
    _until(lambda: not _exists(k, "configmap", "child") and not _exists(k, "configmap", "grandchild"))
    # Orphan: the dependents stay, without the reference.
    k.run("create", "configmap", "parent")
    _owned(k, "kept", _ref(k, "configmap", "parent"))
    k.run("delete", "configmap", "parent", "--cascade=orphan")
    _until(lambda: not _exists(k, "configmap", "parent"))
    assert "ownerReferences" not in k.json("get", "configmap", "kept")["metadata"]
    # Foreground: the owner waits for its blocking dependents.
    k.run("create", "deployment", "fg", "--image=busybox:1.36")
    _owned(k, "fg-dep", _ref(k, "deployment", "fg"), block=True)
    k.run("delete", "deployment", "fg", "--cascade=foreground", "--wait=true", "--timeout=20s")
    assert not _exists(k, "configmap", "fg-dep") and not _exists(k, "deployment", "fg")
    # A dependent whose owner never existed is collected.
    _owned(k, "dangling", {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "0000-ghost"})
    _until(lambda: not _exists(k, "configmap", "dangling"))
    # An owner of a kind the server does not serve is never guessed to be gone.
    _owned(k, "unknown-owner", {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "0000-w"})
    time.sleep(1)
    assert _exists(k, "configmap", "unknown-owner")
    # One of two owners gone: the dependent stays and loses that reference.
    k.run("create", "configmap", "mom")
    k.run("create", "configmap", "dad")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kid", "ownerReferences": [
        _ref(k, "configmap", "mom"), _ref(k, "configmap", "dad")]}}
    k.run("create", "-f", "-", input=json.dumps(cm))
    k.run("delete", "configmap", "mom")
    _until(lambda: [r["name"] for r in k.json("get", "configmap", "kid")["metadata"].get("ownerReferences", [])] == ["dad"])
