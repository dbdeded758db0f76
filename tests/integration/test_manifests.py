"""DATA/manifests (controllers/manifests.py): every object of its files applied at boot and on
change, what the files no longer hold pruned, errors per file that never fail the boot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.support.apiclient import Api
from tests.support.waiting import until

CHECK = 1  # manifests-check-seconds of these servers

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: site
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: site
data:
  mode: "{mode}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: site
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: busybox}}]
"""

CRD = """\
apiVersion: stable.example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {size: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.stable.example.com}
spec:
  group: stable.example.com
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""

LIST = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "stringData": {"k": "v"}},
]}


def _server(tmp_path: Path, name: str = "data") -> Server:
    cfg = tmp_path / f"{name}-config.yaml"
    cfg.write_text(f"controllers:\n  manifests-check-seconds: {CHECK}\n")
    return Server(tmp_path / name, extra=["--config", str(cfg)])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Server, Path, Api]]:
    server = _server(tmp_path)
    folder = server.data_dir / "manifests"
    folder.mkdir(parents=True)
    (folder / "app.yaml").write_text(APP.format(mode="a"))
    (folder / "gadgets.yml").write_text(CRD)
    (folder / "accounts.json").write_text(json.dumps(LIST))
    (folder / ".hidden.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hidden}\n")
    (folder / "notes.txt").write_text("not a manifest")
    server.start()
    api = Api(server)
    try:
        yield server, folder, api
    finally:
        api.close()
        if server.proc is not None:
            server.stop()


def _get(api: Api, path: str) -> tuple[int, Any]:
    return api.call("GET", path)


def _exists(api: Api, path: str) -> bool:
    code, _ = _get(api, path)
    assert code in (200, 404), code
    return code == 200


def _state(api: Api) -> dict[str, Any]:
    code, cm = _get(api, "/api/v1/namespaces/kube-system/configmaps/edgekube-manifests")
    assert code == 200, cm
    return {json.loads(v)["file"]: json.loads(v) for v in cm.get("data", {}).values()}


def test_every_file_is_applied_at_boot(site: tuple[Server, Path, Api]) -> None:
    server, _, api = site
    cm = until(lambda: _get(api, "/api/v1/namespaces/site/configmaps/settings")[1] if _exists(
        api, "/api/v1/namespaces/site/configmaps/settings") else None, timeout=30, what="the ConfigMap applied")
    assert cm["data"] == {"mode": "a"}
    assert cm["metadata"]["annotations"]["edgekube.io/manifest"] == "app.yaml"
    assert [m["manager"] for m in cm["metadata"]["managedFields"]] == ["edgekube-manifests"]
    assert [m["operation"] for m in cm["metadata"]["managedFields"]] == ["Apply"]
    until(lambda: _exists(api, "/apis/apps/v1/namespaces/site/deployments/web"), timeout=30)
    # A CRD and its custom object in one file, the object first: the CRD goes first.
    until(lambda: _exists(api, "/apis/stable.example.com/v1/gadgets/g1"), timeout=30)
    # A List in a JSON file; namespaced objects without a namespace go to default.
    until(lambda: _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30)
    assert _exists(api, "/api/v1/namespaces/default/serviceaccounts/robot")
    assert not _exists(api, "/api/v1/namespaces/default/configmaps/hidden")
    state = until(lambda: _state(api) if _exists(api, "/api/v1/namespaces/kube-system/configmaps/edgekube-manifests")
                  else None, timeout=30)
    assert sorted(state) == ["accounts.json", "app.yaml", "gadgets.yml"]
    assert all(s["error"] == "" for s in state.values())
    assert ["v1", "ConfigMap", "site", "settings", cm["metadata"]["uid"]] in state["app.yaml"]["objects"]
    assert "manifest app.yaml applied: 3 objects" in server.log()


def test_a_changed_file_is_applied_and_what_it_dropped_is_pruned(site: tuple[Server, Path, Api]) -> None:
    _, folder, api = site
    until(lambda: _exists(api, "/apis/apps/v1/namespaces/site/deployments/web"), timeout=30)
    without_deployment = APP.format(mode="b").split("---\napiVersion: apps/v1")[0]
    (folder / "app.yaml").write_text(without_deployment)
    until(lambda: _get(api, "/api/v1/namespaces/site/configmaps/settings")[1]["data"] == {"mode": "b"}, timeout=30)
    until(lambda: not _exists(api, "/apis/apps/v1/namespaces/site/deployments/web"), timeout=30,
          what="the Deployment pruned")
    assert _exists(api, "/api/v1/namespaces/site")


def test_a_removed_file_has_its_objects_pruned_and_a_skipped_one_is_left_alone(site: tuple[Server, Path, Api]) -> None:
    _, folder, api = site
    until(lambda: _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30)
    until(lambda: _exists(api, "/apis/stable.example.com/v1/gadgets/g1"), timeout=30)
    (folder / "gadgets.yml.skip").write_text("")
    (folder / "accounts.json").unlink()
    until(lambda: not _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30, what="the Secret pruned")
    assert not _exists(api, "/api/v1/namespaces/default/serviceaccounts/robot")
    time.sleep(3 * CHECK)
    assert _exists(api, "/apis/stable.example.com/v1/gadgets/g1")  # skipped: neither applied nor pruned
    assert "accounts.json" not in _state(api)
    # Removing the skip and the file prunes it at last.
    (folder / "gadgets.yml.skip").unlink()
    (folder / "gadgets.yml").unlink()
    until(lambda: not _exists(api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.stable.example.com"),
          timeout=30, what="the CRD pruned")


def test_bad_files_and_refused_objects_are_reported_and_the_rest_applied(site: tuple[Server, Path, Api]) -> None:
    server, folder, api = site
    until(lambda: _exists(api, "/api/v1/namespaces/site/configmaps/settings"), timeout=30)
    (folder / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n")
    (folder / "mixed.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good, namespace: site}\ndata: {a: b}\n---\n"
        "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, namespace: site}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: elsewhere, namespace: nowhere}\n")
    (folder / "nameless.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n")
    until(lambda: _exists(api, "/api/v1/namespaces/site/configmaps/good"), timeout=30)
    state = until(lambda: _state(api) if "mixed.yaml" in _state(api) and "broken.yaml" in _state(api) else None,
                  timeout=30)
    assert "does not parse" in state["broken.yaml"]["error"]
    assert "metadata.name is required" in state["nameless.yaml"]["error"]
    mixed = state["mixed.yaml"]["error"]
    assert "no kind Widget in v1" in mixed and "ConfigMap site/Bad_Name" in mixed and "nowhere" in mixed
    assert [o[3] for o in state["mixed.yaml"]["objects"]] == ["good"]
    assert server.ready()
    log = server.log()
    assert "manifest broken.yaml not applied whole" in log and "manifest mixed.yaml not applied whole" in log
    # Logged once, not at every check.
    time.sleep(3 * CHECK)
    assert server.log().count("manifest mixed.yaml not applied whole") == 1
    # A failing object is retried at each check: its namespace made, it applies.
    api.call("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": "nowhere"}}))
    until(lambda: _exists(api, "/api/v1/namespaces/nowhere/configmaps/elsewhere"), timeout=30)


def test_a_quiet_folder_and_a_retried_file_write_nothing(site: tuple[Server, Path, Api]) -> None:
    _, folder, api = site
    (folder / "retried.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: site}\n"
                                         "---\napiVersion: v1\nkind: Widget\nmetadata: {name: w}\n")
    until(lambda: "retried.yaml" in _state(api) if _exists(
        api, "/api/v1/namespaces/kube-system/configmaps/edgekube-manifests") else False, timeout=30)
    (folder / "app.yaml").touch()  # a new mtime, the same content: not applied again

    def revisions() -> dict[str, str]:
        out = {}
        for path in ("/api/v1/namespaces/site/configmaps/settings", "/api/v1/namespaces/site/configmaps/kept",
                     "/api/v1/namespaces/kube-system/configmaps/edgekube-manifests"):
            out[path] = _get(api, path)[1]["metadata"]["resourceVersion"]
        return out

    time.sleep(2 * CHECK)
    before = revisions()
    time.sleep(4 * CHECK)
    assert revisions() == before


def test_what_was_removed_while_stopped_is_pruned_at_the_next_boot_and_a_remade_object_is_not(
        site: tuple[Server, Path, Api]) -> None:
    server, folder, api = site
    until(lambda: _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30)
    until(lambda: "accounts.json" in _state(api) if _exists(
        api, "/api/v1/namespaces/kube-system/configmaps/edgekube-manifests") else False, timeout=30)
    # The ServiceAccount deleted and made again by someone: not the object the file applied.
    assert api.call("DELETE", "/api/v1/namespaces/default/serviceaccounts/robot")[0] == 200
    assert api.call("POST", "/api/v1/namespaces/default/serviceaccounts",
                    json.dumps({"metadata": {"name": "robot"}}))[0] == 201
    api.close()
    assert server.stop() == 0
    (folder / "accounts.json").unlink()
    server.start()
    until(lambda: not _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30, what="pruned after a restart")
    time.sleep(2 * CHECK)
    assert _exists(api, "/api/v1/namespaces/default/serviceaccounts/robot")


def test_an_object_moved_to_another_file_is_kept(site: tuple[Server, Path, Api]) -> None:
    _, folder, api = site
    until(lambda: _exists(api, "/api/v1/namespaces/default/secrets/token"), timeout=30)
    uid = _get(api, "/api/v1/namespaces/default/secrets/token")[1]["metadata"]["uid"]
    (folder / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: default}\nstringData: {k: v}\n")
    (folder / "accounts.json").write_text(json.dumps({**LIST, "items": LIST["items"][:1]}))
    until(lambda: _get(api, "/api/v1/namespaces/default/secrets/token")[1]["metadata"]["annotations"]
          ["edgekube.io/manifest"] == "secret.yaml", timeout=30)
    time.sleep(2 * CHECK)
    assert _get(api, "/api/v1/namespaces/default/secrets/token")[1]["metadata"]["uid"] == uid


def test_a_first_boot_file_configures_the_node_and_its_manifests(tmp_path: Path) -> None:
    boot = tmp_path / "edgekube.yaml"
    boot.write_text("controllers: {manifests-check-seconds: 1}\n"
                    "registries:\n  mirrors:\n    docker.io: {endpoint: ['http://198.18.0.2:5000']}\n"
                    "manifests:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: station}, data: {n: '7'}}\n")
    server = Server(tmp_path / "data", extra=["--boot-config", str(boot)])
    data = server.data_dir
    server.start()
    api = Api(server)
    try:
        until(lambda: _exists(api, "/api/v1/namespaces/default/configmaps/station"), timeout=30)
        written = data / "manifests" / "boot-config.yaml"
        assert written.read_text().startswith(f"# Written by edgekube at each start from {boot}")
        registries = data / "boot-registries.yaml"
        assert "198.18.0.2:5000" in registries.read_text() and registries.stat().st_mode & 0o777 == 0o600
        stamp = written.stat().st_mtime_ns
        api.close()
        assert server.stop() == 0
        server.start()  # unchanged: not written again
        assert written.stat().st_mtime_ns == stamp
        # Its manifests and registries taken out of the file: the files go, the ConfigMap is pruned.
        api.close()
        assert server.stop() == 0
        boot.write_text("controllers: {manifests-check-seconds: 1}\n")
        server.start()
        assert not written.exists() and not registries.exists()
        until(lambda: not _exists(api, "/api/v1/namespaces/default/configmaps/station"), timeout=30)
        # A card edited wrongly: ignored whole, the node boots, the log says why, and what the
        # file gave before stays (its workloads are not pruned, its mirrors still used).
        api.close()
        assert server.stop() == 0
        good = ("controllers: {manifests-check-seconds: 1}\n"
                "registries:\n  mirrors:\n    docker.io: {endpoint: ['http://198.18.0.2:5000']}\n"
                "manifests:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: station}, data: {n: '8'}}\n")
        boot.write_text(good)
        server.start()
        until(lambda: _exists(api, "/api/v1/namespaces/default/configmaps/station"), timeout=30)
        api.close()
        assert server.stop() == 0
        boot.write_text(good + "node-nmae: typo\n")
        server.start()
        assert f"first-boot file ignored: {boot}: unknown setting 'node-nmae'" in server.log()
        time.sleep(3 * CHECK)
        assert _exists(api, "/api/v1/namespaces/default/configmaps/station")
        assert written.exists() and registries.exists()
        # Registries the kubelet could not use are refused before they are written.
        api.close()
        assert server.stop() == 0
        boot.write_text(good.replace("endpoint: ['http://198.18.0.2:5000']", "endpoints: oops"))
        server.start()
        assert "first-boot file: its registries are ignored" in server.log()
        assert "198.18.0.2:5000" in registries.read_text()
    finally:
        api.close()
        if server.proc is not None:
            server.stop()
