"""A second client's opinion: lightkube (httpx-based, typed models) against edgekube server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace

from tests.conftest import Server


@pytest.fixture(scope="module")
def kube(server: Server) -> Iterator[Client]:
    client = Client(KubeConfig.from_file(str(server.kubeconfig)), field_manager="lightkube-test")
    client.create(Namespace(metadata=ObjectMeta(name="lk")))
    yield client
    client.close()


def test_crud_list_and_errors(kube: Client) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="one", labels={"k": "v"}), data={"a": "1"}), namespace="lk")
    got = kube.get(ConfigMap, "one", namespace="lk")
    assert got.data == {"a": "1"} and got.metadata.resourceVersion
    names = [c.metadata.name for c in kube.list(ConfigMap, namespace="lk", labels={"k": "v"})]
    assert names == ["one"]
    kube.patch(ConfigMap, "one", {"data": {"b": "2"}}, namespace="lk")
    assert kube.get(ConfigMap, "one", namespace="lk").data == {"a": "1", "b": "2"}
    with pytest.raises(ApiError) as err:
        kube.create(ConfigMap(metadata=ObjectMeta(name="one")), namespace="lk")
    assert err.value.status.code == 409 and err.value.status.reason == "AlreadyExists"
    kube.delete(ConfigMap, "one", namespace="lk")
    with pytest.raises(ApiError) as err:
        kube.get(ConfigMap, "one", namespace="lk")
    assert err.value.status.code == 404


def test_watch_sees_what_happens(kube: Client) -> None:
    start = kube.list(ConfigMap, namespace="lk", chunk_size=1)
    list(start)
    rv = start.resourceVersion  # type: ignore[attr-defined]
    seen: list[tuple[str, str]] = []

    def watch() -> None:
        for op, obj in kube.watch(ConfigMap, namespace="lk", resource_version=rv, server_timeout=5):
            seen.append((op, obj.metadata.name))
            if len(seen) == 2:
                return

    t = threading.Thread(target=watch)
    t.start()
    kube.create(ConfigMap(metadata=ObjectMeta(name="watched")), namespace="lk")
    kube.delete(ConfigMap, "watched", namespace="lk")
    t.join(timeout=10)
    assert seen == [("ADDED", "watched"), ("DELETED", "watched")]


def test_server_side_apply(kube: Client) -> None:
    deploy = Deployment(
        metadata=ObjectMeta(name="applied", namespace="lk"),
        spec=DeploymentSpec(
            replicas=2,
            selector=LabelSelector(matchLabels={"app": "applied"}),
            template=PodTemplateSpec(metadata=ObjectMeta(labels={"app": "applied"}),
                                     spec=PodSpec(containers=[Container(name="c", image="busybox:1.36")])),
        ),
    )
    out = kube.apply(deploy)
    assert out.spec.replicas == 2
    assert [(m.manager, m.operation) for m in out.metadata.managedFields] == [("lightkube-test", "Apply")]
    deploy.spec.replicas = 3
    with pytest.raises(ApiError) as err:
        kube.apply(deploy, field_manager="someone-else")
    assert err.value.status.code == 409
    assert kube.apply(deploy, field_manager="someone-else", force=True).spec.replicas == 3
