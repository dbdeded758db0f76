"""The API as the official Python `kubernetes` client sees it, against a real `edgekube server`."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.conftest import Server


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api, request: pytest.FixtureRequest) -> str:
    name = "t-" + request.node.name.replace("_", "-").lower()[:50].strip("-")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The service-account controller adds `kube-root-ca.crt` to every namespace; let it land
    # first, so that tests watching the namespace see only their own changes.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if [c for c in core.list_namespaced_config_map(name).items if c.metadata.name == ROOT_CA]:
            break
        time.sleep(0.05)
    return name


ROOT_CA = "kube-root-ca.crt"


def _raw(server: Server, method: str, path: str, body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    """A request with the admin certificate, for what the typed client cannot send."""
    ctx = server.admin_context()
    req = urllib.request.Request(server.url + path, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _deployment(name: str, *, image: str = "busybox:1.36", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "busybox:1.36"},
                ]},
            },
        },
    }


def test_system_namespaces_exist_at_boot(core: client.CoreV1Api) -> None:
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert core.read_namespace("default").status.phase == "Active"


def test_create_get_list_delete_configmap(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1"), data={"a": "b"}))
    assert cm.metadata.uid and cm.metadata.creation_timestamp and cm.metadata.resource_version
    got = core.read_namespaced_config_map("c1", ns)
    assert got.data == {"a": "b"}
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c1", ROOT_CA]
    core.delete_namespaced_config_map("c1", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("c1", ns)
    assert err.value.status == 404
    body = json.loads(err.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "c1" not found'


def test_generate_name_and_already_exists(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-")))
    assert cm.metadata.name.startswith("gen-") and len(cm.metadata.name) == len("gen-") + 5
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=cm.metadata.name)))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cas"), data={"v": "1"}))
    cm.data = {"v": "2"}
    updated = core.replace_namespaced_config_map("cas", ns, cm)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cas", ns, cm)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("cas", ns).data == {"v": "2"}


def test_invalid_object_names_the_field(apps: client.AppsV1Api, ns: str) -> None:
    bad = _deployment("bad")
    bad["spec"]["replicas"] = -1
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(ns, bad)
    body = json.loads(err.value.body)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert any(c["field"] == "spec.replicas" for c in body["details"]["causes"])


def test_defaults_are_applied(apps: client.AppsV1Api, core: client.CoreV1Api, ns: str) -> None:
    d = apps.create_namespaced_deployment(ns, _deployment("defaults", image="busybox"))
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.spec.strategy.rolling_update.max_surge == "25%"
    assert d.spec.revision_history_limit == 10 and d.spec.progress_deadline_seconds == 600
    pod_spec = d.spec.template.spec
    assert pod_spec.restart_policy == "Always" and pod_spec.dns_policy == "ClusterFirst"
    assert pod_spec.containers[0].image_pull_policy == "Always"  # no tag means :latest
    assert pod_spec.containers[1].image_pull_policy == "IfNotPresent"
    assert d.metadata.generation == 1


def test_strategic_merge_patch_merges_containers_by_name(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _deployment("smp"))
    patched = apps.patch_namespaced_deployment(
        "smp", ns, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}}}
    )
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert containers["main"].image == "busybox:1.37"
    assert containers["main"].env[0].name == "A"  # untouched fields survive
    assert "side" in containers
    assert patched.metadata.generation == 2


def _retry_conflicts(write: Any) -> Any:
    for _ in range(20):
        try:
            return write()
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise AssertionError("kept conflicting")


def _with_status(obj: Any, status: Any) -> Any:
    obj.status = status
    return obj


def test_status_is_split_from_spec(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _deployment("split"))
    # The deployment controller writes too: read-modify-write until no race.
    after = _retry_conflicts(lambda: apps.replace_namespaced_deployment(
        "split", ns, _with_status(apps.read_namespaced_deployment("split", ns), client.V1DeploymentStatus(replicas=7))))
    assert not after.status or after.status.replicas != 7

    def write_status() -> Any:
        st = apps.read_namespaced_deployment_status("split", ns)
        st.status = client.V1DeploymentStatus(replicas=3, observed_generation=1)
        st.spec.replicas = 9  # ignored through the status subresource
        return apps.replace_namespaced_deployment_status("split", ns, st)

    out = _retry_conflicts(write_status)
    assert out.status.replicas == 3 and out.spec.replicas == 1
    assert out.metadata.generation == 1  # status writes never bump generation


def test_scale_subresource(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, _deployment("scaled"))
    scale = apps.read_namespaced_deployment_scale("scaled", ns)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=scaled"
    apps.patch_namespaced_deployment_scale("scaled", ns, {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("scaled", ns).spec.replicas == 5


def test_label_and_field_selectors(core: client.CoreV1Api, ns: str) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", None)):
        labels = {"tier": tier} if tier else {"other": "x"}
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def names(**kw: Any) -> list[str]:
        return sorted(c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items if c.metadata.name != ROOT_CA)

    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier in (web,db)") == ["a", "b"]
    assert names(label_selector="tier notin (web)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(ns, field_selector="spec.nope=1")
    assert err.value.status == 400


def test_limit_and_continue(core: client.CoreV1Api, ns: str) -> None:
    for i in range(7):
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"p{i}", labels={"page": "yes"})))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token, label_selector="page=yes")
        seen += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and seen == [f"p{i}" for i in range(7)]


def test_watch_resumes_from_resource_version(core: client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"), data={"v": "0"}))
    rv = cm.metadata.resource_version
    core.patch_namespaced_config_map("w", ns, {"data": {"v": "1"}})
    core.delete_namespaced_config_map("w", ns)
    events = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5):
        events.append((ev["type"], ev["object"].data))
        if len(events) == 2:
            w.stop()
    assert events == [("MODIFIED", {"v": "1"}), ("DELETED", {"v": "1"})]


def test_watch_sees_live_changes(core: client.CoreV1Api, ns: str) -> None:
    listed = core.list_namespaced_config_map(ns)

    def writer() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="live")))

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    got = None
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=listed.metadata.resource_version, timeout_seconds=10):
        got = (ev["type"], ev["object"].metadata.name)
        w.stop()
    t.join()
    assert got == ("ADDED", "live")


def test_dry_run_persists_nothing(core: client.CoreV1Api, ns: str) -> None:
    out = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")), dry_run="All")
    assert out.metadata.name == "dry"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("dry", ns)
    assert err.value.status == 404


def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="fin", finalizers=["example.com/hold"]))
    )
    core.delete_namespaced_config_map("fin", ns)
    held = core.read_namespaced_config_map("fin", ns)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("fin", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("fin", ns)
    assert err.value.status == 404


def test_secret_string_data_is_folded(core: client.CoreV1Api, ns: str) -> None:
    s = core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"pw": "hunter2"}))
    assert s.type == "Opaque" and s.string_data is None
    assert base64.b64decode(s.data["pw"]) == b"hunter2"


def test_service_ips_and_node_ports_are_allocated(core: client.CoreV1Api, ns: str) -> None:
    svc = core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(type="NodePort", selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]),
    ))
    assert svc.spec.cluster_ip.startswith("10.43.")
    assert 30000 <= svc.spec.ports[0].node_port <= 32767
    assert svc.spec.ports[0].target_port == 80
    other = core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web2"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    assert other.spec.cluster_ip != svc.spec.cluster_ip
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service(ns, client.V1Service(
            metadata=client.V1ObjectMeta(name="web3"),
            spec=client.V1ServiceSpec(cluster_ip=svc.spec.cluster_ip, ports=[client.V1ServicePort(port=80)])))
    assert err.value.status == 422


def test_terminating_namespace_refuses_new_objects(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="going")))
    core.create_namespaced_config_map("going", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="keep")))
    core.delete_namespace("going")
    assert core.read_namespace("going").status.phase == "Terminating"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("going", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="new")))
    assert err.value.status == 403
    assert "being terminated" in json.loads(err.value.body)["message"]


def test_missing_namespace_is_not_found(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("nope", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert err.value.status == 404


def test_leases_live_in_memory_but_behave_like_any_resource(api: client.ApiClient, ns: str) -> None:
    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease(ns, client.V1Lease(
        metadata=client.V1ObjectMeta(name="node-1"), spec=client.V1LeaseSpec(holder_identity="node-1", lease_duration_seconds=40)))
    lease.spec.renew_time = "2026-01-01T00:00:00.000000Z"
    renewed = coord.replace_namespaced_lease("node-1", ns, lease)
    assert int(renewed.metadata.resource_version) > int(lease.metadata.resource_version)


def test_malformed_bodies_and_media_types(server: Server) -> None:
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps", b"{not json")
    assert code == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps", b"a: [", "application/yaml")
    assert code == 400
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps", b"x", "text/csv")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    big = json.dumps({"metadata": {"name": "big"}, "data": {"x": "y" * (3 * 1024 * 1024)}}).encode()
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps", big)
    assert code == 413 and body["kind"] == "Status"
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps",
                      b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n", "application/yaml")
    assert code == 201 and body["metadata"]["name"] == "from-yaml"
    code, body = _raw(server, "PUT", "/api/v1/namespaces/default/configmaps", b"{}")
    assert code == 405 and body["reason"] == "MethodNotAllowed"
    code, body = _raw(server, "GET", "/api/v1/nonsense")
    assert code == 404 and body["kind"] == "Status"


def test_unknown_fields_follow_field_validation(server: Server) -> None:
    obj = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fv"}, "dta": {"a": "b"}}).encode()
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", obj)
    assert code == 400 and 'unknown field "dta"' in body["message"]
    code, body = _raw(server, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Ignore", obj)
    assert code == 201


def test_unauthenticated_requests_are_refused(server: Server) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/api/v1/namespaces", context=ctx, timeout=5)
    assert err.value.code == 401
    with urllib.request.urlopen(server.url + "/livez", context=ctx, timeout=5) as r:
        assert r.read() == b"ok"


def test_server_side_apply_through_the_dynamic_client(api: client.ApiClient, ns: str) -> None:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ConflictError

    dyn = DynamicClient(api)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = _deployment("applied", replicas=2)
    created = deployments.server_side_apply(body=body, name="applied", namespace=ns, field_manager="robot")
    assert created.spec.replicas == 2
    assert [(e.manager, e.operation) for e in created.metadata.managedFields] == [("robot", "Apply")]
    body["spec"]["replicas"] = 3
    with pytest.raises(ConflictError) as err:
        deployments.server_side_apply(body=body, name="applied", namespace=ns, field_manager="human")
    assert ".spec.replicas" in str(err.value.body)
    forced = deployments.server_side_apply(body=body, name="applied", namespace=ns, field_manager="human", force_conflicts=True)
    assert forced.spec.replicas == 3
    # An ordinary patch is tracked as an Update by its field manager.
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment("applied", ns, {"spec": {"minReadySeconds": 7}}, field_manager="tuner")
    got = apps.read_namespaced_deployment("applied", ns)
    managers = {(e.manager, e.operation) for e in got.metadata.managed_fields}
    assert ("tuner", "Update") in managers and ("human", "Apply") in managers


def test_apply_without_field_manager_is_invalid(server: Server, ns: str) -> None:
    code, body = _raw(server, "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/x",
                      json.dumps(_deployment("x")).encode(), "application/apply-patch+yaml")
    assert code == 422 and body["details"]["causes"][0]["field"] == "fieldManager"


def test_custom_resources_through_the_python_client(api: client.ApiClient, ns: str) -> None:
    import yaml

    from tests.conftest import REPO

    crd = yaml.safe_load((REPO / "tests" / "data" / "crontab-crd.yaml").read_text())
    group = "py.example.com"
    crd["metadata"]["name"] = f"crontabs.{group}"
    crd["spec"]["group"] = group
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": f"{group}/v1", "kind": "CronTab", "metadata": {"name": "c1"},
            "spec": {"cronSpec": "*/5 * * * *", "image": "x"}}
    made = custom.create_namespaced_custom_object(group, "v1", ns, "crontabs", body)
    assert made["spec"]["replicas"] == 1
    listed = custom.list_namespaced_custom_object(group, "v1", ns, "crontabs")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["c1"]
    custom.patch_namespaced_custom_object(group, "v1", ns, "crontabs", "c1", {"spec": {"image": "y"}})
    w = watch.Watch()
    seen = []
    for event in w.stream(custom.list_namespaced_custom_object, group, "v1", ns, "crontabs",
                          resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=3):
        seen.append((event["type"], event["object"]["spec"]["image"]))
        w.stop()
    assert seen == [("MODIFIED", "y")]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(group, "v1", ns, "crontabs", {**body, "metadata": {"name": "c2"},
                                                                             "spec": {"image": "no cron"}})
    assert err.value.status == 422
    ext.delete_custom_resource_definition(f"crontabs.{group}")
    with pytest.raises(ApiException) as gone:
        custom.list_namespaced_custom_object(group, "v1", ns, "crontabs")
    assert gone.value.status == 404


def test_unknown_and_mistyped_fields_at_any_depth(server: Server, ns: str) -> None:
    deploy = _deployment("typo")
    deploy["spec"]["template"]["spec"]["containers"][0]["imagee"] = "busybox"
    body = json.dumps(deploy).encode()
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    code, out = _raw(server, "POST", path + "?fieldValidation=Strict", body)
    assert code == 400
    assert out["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
                              'unknown field "spec.template.spec.containers[0].imagee"')
    code, out = _raw(server, "POST", path + "?fieldValidation=Ignore", body)
    assert code == 201 and "imagee" not in out["spec"]["template"]["spec"]["containers"][0]  # dropped, as upstream
    mistyped = _deployment("mistyped")
    mistyped["spec"]["replicas"] = "three"
    code, out = _raw(server, "POST", path + "?fieldValidation=Ignore", json.dumps(mistyped).encode())
    assert code == 400 and "spec.replicas: expected an integer, got a string" in out["message"]
    ok = _deployment("quantities")
    ok["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": 1, "memory": "64Mi"}}
    code, out = _raw(server, "POST", path, json.dumps(ok).encode())
    assert code == 201, out


def test_admission_configurations_through_the_typed_client(api: client.ApiClient) -> None:
    """The admissionregistration/v1 kinds decode into the client's models, upstream's defaults in."""
    adm = client.AdmissionregistrationV1Api(api)
    hook = client.V1ValidatingWebhook(
        name="typed.example.com", side_effects="None", admission_review_versions=["v1"],
        client_config=client.AdmissionregistrationV1WebhookClientConfig(url="https://127.0.0.1:1/x"),
        object_selector=client.V1LabelSelector(match_labels={"never": "matches"}),
        rules=[client.V1RuleWithOperations(operations=["CREATE"], api_groups=[""], api_versions=["v1"], resources=["configmaps"])])
    made = adm.create_validating_webhook_configuration(client.V1ValidatingWebhookConfiguration(
        metadata=client.V1ObjectMeta(name="typed-client"), webhooks=[hook]))
    try:
        got = made.webhooks[0]
        assert (got.failure_policy, got.match_policy, got.timeout_seconds) == ("Fail", "Equivalent", 10)
        assert got.rules[0].scope == "*"
        assert [c.metadata.name for c in adm.list_validating_webhook_configuration().items] == ["typed-client"]
        policy = adm.create_validating_admission_policy(client.V1ValidatingAdmissionPolicy(
            metadata=client.V1ObjectMeta(name="typed-client"),
            spec=client.V1ValidatingAdmissionPolicySpec(
                match_constraints=client.V1MatchResources(resource_rules=[client.V1NamedRuleWithOperations(
                    operations=["CREATE"], api_groups=["apps"], api_versions=["v1"], resources=["deployments"])]),
                validations=[client.V1Validation(expression="object.spec.replicas < 100")])))
        assert policy.spec.failure_policy == "Fail"
        with pytest.raises(ApiException) as caught:
            adm.create_validating_admission_policy(client.V1ValidatingAdmissionPolicy(
                metadata=client.V1ObjectMeta(name="typed-broken"),
                spec=client.V1ValidatingAdmissionPolicySpec(
                    match_constraints=policy.spec.match_constraints,
                    validations=[client.V1Validation(expression="object.spec.replicas <")])))
        assert caught.value.status == 422
        adm.delete_validating_admission_policy("typed-client")
    finally:
        adm.delete_validating_webhook_configuration("typed-client")
