"""Static pods: manifest parsing and hashing (pure), the folder scan, and the file source's
mirror pods over a real registry and store (pod workers played by a recorder: the real ones run
in tests/e2e/test_static_pods.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import defaults, resources, rest
from edgekube.client import informer as informer_mod
from edgekube.client.local import LocalClient
from edgekube.kubelet import staticpods
from edgekube.store import store as store_mod

JSON = dict[str, Any]
NODE = "Edge-1"
SEEN = "2026-01-01T00:00:00.000000Z"

WEB = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: busybox:1.36
    command: [sleep, "3600"]
"""


def _parse(text: str = WEB, *, file_name: str = "web.yaml", node_name: str = NODE) -> JSON:
    return staticpods.parse(text, file_name=file_name, node_name=node_name, seen=SEEN)


# --- parsing and hashing -------------------------------------------------------------------------


def test_a_manifest_becomes_a_static_pod_as_upstream_makes_it() -> None:
    pod = _parse()
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "web-edge-1"  # the node name lowercased, as upstream's generatePodName
    assert meta["namespace"] == "default"
    assert len(meta["uid"]) == 32 and int(meta["uid"], 16) >= 0
    assert meta["annotations"] == {"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": meta["uid"],
                                   "kubernetes.io/config.seen": SEEN}
    assert meta["labels"] == {"app": "web"}
    assert spec["nodeName"] == NODE
    assert {"operator": "Exists", "effect": "NoExecute"} in spec["tolerations"]
    # The API's pod-spec defaults, not its admission: no service account.
    c = spec["containers"][0]
    assert c["terminationMessagePath"] == "/dev/termination-log" and c["imagePullPolicy"] == "IfNotPresent"
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert "serviceAccountName" not in spec
    assert pod["status"] == {"phase": "Pending"}


def test_the_uid_is_the_content_the_node_and_the_file() -> None:
    uid = _parse()["metadata"]["uid"]
    # Stable: the same file again, or written otherwise (comments, layout, key order, JSON).
    assert _parse()["metadata"]["uid"] == uid
    reformatted = "# a comment\n" + WEB.replace("labels: {app: web}", "labels:\n    app: web")
    assert _parse(reformatted)["metadata"]["uid"] == uid
    as_json = json.dumps({"kind": "Pod", "apiVersion": "v1", "spec": {"containers": [
        {"command": ["sleep", "3600"], "image": "busybox:1.36", "name": "web"}]},
        "metadata": {"labels": {"app": "web"}, "name": "web"}})
    assert staticpods.parse(as_json, file_name="web.yaml", node_name=NODE, seen=SEEN)["metadata"]["uid"] == uid
    # Another content, node or file: another uid.
    assert _parse(WEB.replace("3600", "3601"))["metadata"]["uid"] != uid
    assert _parse(node_name="edge-2")["metadata"]["uid"] != uid
    assert _parse(file_name="web2.yaml")["metadata"]["uid"] != uid
    # What the server sets is not taken from the file: a uid in it is replaced.
    with_uid = WEB.replace("  name: web\n", "  name: web\n  uid: 1234\n  resourceVersion: '7'\n")
    meta = _parse(with_uid)["metadata"]
    assert meta["uid"] != "1234" and "resourceVersion" not in meta


def test_a_namespace_and_tolerations_of_the_file_are_kept() -> None:
    text = WEB.replace("  name: web\n", "  name: web\n  namespace: kube-system\n") + \
        "  tolerations: [{operator: Exists, effect: NoExecute}, {key: a, operator: Exists}]\n"
    pod = _parse(text)
    assert pod["metadata"]["namespace"] == "kube-system"
    assert pod["spec"]["tolerations"] == [{"operator": "Exists", "effect": "NoExecute"}, {"key": "a", "operator": "Exists"}]


@pytest.mark.parametrize(("text", "file_name", "why"), [
    (WEB + "---\n" + WEB, "two.yaml", "holds 2 documents; a manifest holds one Pod"),
    ("", "empty.yaml", "holds 0 documents"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "cm.yaml", "holds a v1 ConfigMap, not a v1 Pod"),
    ("- a\n- b\n", "list.yaml", "holds no object"),
    ("kind: Pod\napiVersion: v1\nmetadata: {name: [unclosed\n", "bad.yaml", "does not parse"),
    ('{"kind": "Pod",', "bad.json", "does not parse"),
    (WEB.replace("  name: web\n", ""), "noname.yaml", "metadata.name: Required value"),
    (WEB.replace("    image: busybox:1.36\n", ""), "noimage.yaml", "spec.containers[0].image: Required value"),
    (WEB.replace("name: web\n  labels", "name: Web_1\n  labels"), "badname.yaml", "metadata.name: Invalid value"),
    # A "billion laughs" file in the manifests folder: refused, never expanded (it would take the node).
    (WEB + "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
     "bomb.yaml", "too large or too deep once its YAML aliases are expanded"),
])
def test_files_that_hold_no_valid_pod_say_why(text: str, file_name: str, why: str) -> None:
    with pytest.raises(staticpods.ManifestError, match=why.replace("[", r"\[").replace("]", r"\]")):
        staticpods.parse(text, file_name=file_name, node_name=NODE, seen=SEEN)


def test_the_scan_reads_manifests_skips_the_rest_and_reports_problems(tmp_path: Path) -> None:
    assert staticpods.scan(tmp_path / "missing", node_name=NODE, seen=SEEN) == staticpods.Scan({}, {}, {})
    (tmp_path / "a-web.yaml").write_text(WEB)
    (tmp_path / "b.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api"},
                                                 "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    (tmp_path / "c-copy.yml").write_text(WEB)  # the same pod name again
    (tmp_path / "d-broken.yaml").write_text("apiVersion: v1\nkind: Service\n")
    (tmp_path / ".hidden.yaml").write_text(WEB.replace("name: web", "name: hidden"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "dir.yaml").mkdir()
    found = staticpods.scan(tmp_path, node_name=NODE, seen=SEEN)
    assert sorted(staticpods.full_name(p) for p in found.pods.values()) == ["default/api-edge-1", "default/web-edge-1"]
    assert sorted(found.files.values()) == ["a-web.yaml", "b.json"]
    assert found.problems == {
        str(tmp_path / "c-copy.yml"): "pod default/web-edge-1 is already defined by a-web.yaml",
        str(tmp_path / "d-broken.yaml"): "holds a v1 Service, not a v1 Pod",
    }


def test_a_mirror_pod_copies_the_static_pod_and_names_its_node() -> None:
    static = _parse()
    mirror = staticpods.mirror_pod(static, node_name=NODE, node_uid="node-uid")
    meta = mirror["metadata"]
    assert meta["name"] == "web-edge-1" and meta["namespace"] == "default" and "uid" not in meta
    assert meta["labels"] == {"app": "web"}
    assert meta["annotations"] == {**static["metadata"]["annotations"], "kubernetes.io/config.mirror": static["metadata"]["uid"]}
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "node-uid",
                                        "controller": True}]
    assert mirror["spec"] == static["spec"] and mirror["spec"] is not static["spec"]
    assert staticpods.is_mirror(mirror) and staticpods.mirror_of(mirror) == static["metadata"]["uid"]
    assert not staticpods.is_mirror(static) and staticpods.mirror_of(static) == ""


# --- mirror pods over a real registry ------------------------------------------------------------


class Workers:
    """The pod workers' side, recorded: a static pod stays "live" until `stopped()`."""

    def __init__(self) -> None:
        self.live: dict[str, JSON] = {}
        self.removed: list[str] = []
        self.resent: list[str] = []

    def add_static(self, pod: JSON) -> None:
        self.live[pod["metadata"]["uid"]] = pod

    def remove_static(self, uid: str) -> None:
        self.removed.append(uid)

    def resend_status(self, uid: str) -> None:
        self.resent.append(uid)

    def static_uids(self) -> set[str]:
        return set(self.live)

    def stopped(self, uid: str) -> None:
        del self.live[uid]


class Env:
    def __init__(self, client: LocalClient, folder: Path, informer: informer_mod.Informer) -> None:
        self.client = client
        self.folder = folder
        self.informer = informer
        self.workers = Workers()
        self.source = staticpods.FileSource(folder, node_name=NODE.lower(), client=client, pods=informer,
                                            workers=self.workers, clock=clock_mod.FakeClock())

    def pods(self) -> dict[str, JSON]:
        return {p["metadata"]["name"]: p for p in self.client.list("v1", "Pod", namespace="default").items}

    async def caught_up(self) -> None:
        def same() -> bool:
            stored = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in self.client.list("v1", "Pod").items}
            return stored == {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in self.informer.list()}

        await settle(same)

    async def sync(self, *, rescan: bool = False) -> bool:
        await self.caught_up()
        if rescan:
            await self.source.rescan()
        waiting = await self.source.sync()
        await self.caught_up()
        return waiting


async def settle(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the informer did not catch up")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path / "db", compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    registry = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    client = LocalClient(registry, manager="kubelet")
    await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE.lower()}})
    informer = informer_mod.Informer(client, "v1", "Pod")
    task = asyncio.create_task(informer.run())
    folder = tmp_path / "manifests"
    folder.mkdir()
    e = Env(client, folder, informer)
    informer.add_handlers(e.source.handlers())
    try:
        await informer.synced.wait()
        yield e
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_static_pods_are_handed_over_at_boot_and_get_mirror_pods(env: Env) -> None:
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    (uid,) = env.workers.live
    assert env.pods() == {}  # mirror pods wait for the informer, in run()
    await env.sync()
    mirror = env.pods()["web-edge-1"]
    node = env.client.get("v1", "Node", name=NODE.lower())
    assert mirror["metadata"]["annotations"][defaults.MIRROR_POD_ANNOTATION] == uid
    assert mirror["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": NODE.lower(),
                                                      "uid": node["metadata"]["uid"], "controller": True}]
    assert mirror["metadata"]["uid"] != uid
    # The API's admission leaves a mirror pod without a service account, as upstream's.
    assert "serviceAccountName" not in mirror["spec"]
    assert env.workers.resent == [uid]
    # A pass with nothing to do does nothing.
    rv = mirror["metadata"]["resourceVersion"]
    await env.sync(rescan=True)
    assert env.pods()["web-edge-1"]["metadata"]["resourceVersion"] == rv
    assert env.workers.resent == [uid]


async def test_a_mirror_pod_being_deleted_is_made_again(env: Env) -> None:
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    await env.sync()
    first = env.pods()["web-edge-1"]
    # kubectl delete: the pod is bound, so it gets a deletionTimestamp and a grace period.
    await env.client.delete("v1", "Pod", name="web-edge-1", namespace="default")
    assert env.pods()["web-edge-1"]["metadata"]["deletionTimestamp"]
    await env.sync()
    second = env.pods()["web-edge-1"]
    assert second["metadata"]["uid"] != first["metadata"]["uid"] and not second["metadata"].get("deletionTimestamp")
    assert staticpods.mirror_of(second) == staticpods.mirror_of(first)
    assert env.workers.removed == [] and len(env.workers.resent) == 2
    # Deleted outright (--force --grace-period=0): made again too.
    await env.client.delete("v1", "Pod", name="web-edge-1", namespace="default",
                            options=rest.DeleteOptions(grace_period_seconds=0))
    await env.sync()
    assert env.pods()["web-edge-1"]["metadata"]["uid"] != second["metadata"]["uid"]


async def test_an_edited_manifest_replaces_the_pod_once_the_old_one_stopped(env: Env) -> None:
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    await env.sync()
    (old,) = env.workers.live
    (env.folder / "web.yaml").write_text(WEB.replace("3600", "7200"))
    assert await env.sync(rescan=True)  # the old one is stopping: the new one waits
    assert env.workers.removed == [old] and set(env.workers.live) == {old}
    assert staticpods.mirror_of(env.pods()["web-edge-1"]) == old  # the old pod's status goes there meanwhile
    env.workers.stopped(old)
    assert not await env.sync()
    (new,) = env.workers.live
    assert new != old
    mirror = env.pods()["web-edge-1"]
    assert staticpods.mirror_of(mirror) == new and mirror["spec"]["containers"][0]["command"] == ["sleep", "7200"]


async def test_a_removed_manifest_stops_the_pod_then_its_mirror_goes(env: Env) -> None:
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    await env.sync()
    (uid,) = env.workers.live
    (env.folder / "web.yaml").unlink()
    assert await env.sync(rescan=True)
    assert env.workers.removed == [uid] and "web-edge-1" in env.pods()  # kept while the pod stops
    env.workers.stopped(uid)
    assert not await env.sync()
    assert env.pods() == {}
    # The same file back: the same uid runs again.
    (env.folder / "web.yaml").write_text(WEB)
    await env.sync(rescan=True)
    assert set(env.workers.live) == {uid} and staticpods.mirror_of(env.pods()["web-edge-1"]) == uid


async def test_orphaned_and_foreign_pods(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    # A mirror pod of a static pod this kubelet does not have (from before a restart): deleted.
    orphan = staticpods.mirror_pod(_parse(WEB.replace("name: web", "name: old"), node_name=NODE.lower()),
                                   node_name=NODE.lower(), node_uid="x")
    await env.client.create(orphan)
    # An ordinary pod already holding a static pod's name: left alone, and said once.
    await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-edge-1", "namespace": "default"},
                             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    await env.sync()
    await env.sync()
    pods = env.pods()
    assert set(pods) == {"web-edge-1"} and not staticpods.is_mirror(pods["web-edge-1"])
    said = [r.getMessage() for r in caplog.records if "no mirror pod is in the way" in r.getMessage()]
    assert len(said) == 1 and "default/web-edge-1" in said[0]
    # Once it is gone, the mirror pod is made.
    await env.client.delete("v1", "Pod", name="web-edge-1", namespace="default")
    await env.sync()
    assert staticpods.is_mirror(env.pods()["web-edge-1"])


async def test_a_pod_may_not_become_or_stop_being_a_mirror_pod(env: Env) -> None:
    (env.folder / "web.yaml").write_text(WEB)
    await env.source.load()
    await env.sync()
    await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "default"},
                             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})

    def set_mirror(value: str | None) -> Callable[[JSON], JSON]:
        def mutate(pod: JSON) -> JSON:
            annotations = pod["metadata"].setdefault("annotations", {})
            if value is None:
                annotations.pop(defaults.MIRROR_POD_ANNOTATION, None)
            else:
                annotations[defaults.MIRROR_POD_ANNOTATION] = value
            return pod
        return mutate

    for name, value, why in (("plain", "abc", "may not add mirror pod annotation"),
                             ("web-edge-1", None, "may not remove or update mirror pod annotation"),
                             ("web-edge-1", "abc", "may not remove or update mirror pod annotation")):
        with pytest.raises(errors.APIError) as caught:
            await env.client.patch("v1", "Pod", name=name, namespace="default", mutate=set_mirror(value))
        assert caught.value.code == 422 and why in str(caught.value)


def test_a_toleration_without_a_key_counts_for_the_default_ones() -> None:
    pod: JSON = {"metadata": {}, "spec": {"containers": [], "tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}}
    defaults.apply("Pod", pod)
    assert pod["spec"]["tolerations"] == [{"operator": "Exists", "effect": "NoExecute"}]
    plain: JSON = {"metadata": {}, "spec": {"containers": []}}
    defaults.apply("Pod", plain)
    assert [t["key"] for t in plain["spec"]["tolerations"]] == ["node.kubernetes.io/not-ready",
                                                                "node.kubernetes.io/unreachable"]
    assert plain["spec"]["serviceAccountName"] == "default"
