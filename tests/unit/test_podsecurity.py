"""PodSecurity admission: upstream's checks and texts per level and version, and the plugin
through the real registry (namespace labels, enforce/warn/audit, workloads, exemptions)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube.api import errors
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import chain, podsecurity, resources, rest
from edgekube.store import store as store_mod
from tests.support import registry as registry_support

JSON = dict[str, Any]

RESTRICTED_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                 "seccompProfile": {"type": "RuntimeDefault"}}


def _pod(*containers: JSON, name: str = "x", **spec: Any) -> JSON:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": list(containers) or [{"name": "c", "image": "busybox"}], **spec}}


def _c(name: str = "c", **sc: Any) -> JSON:
    out: JSON = {"name": name, "image": "busybox"}
    if sc:
        out["securityContext"] = sc
    return out


def _lv(text: str) -> podsecurity.LevelVersion:
    level, _, version = text.partition(":")
    parsed = None if version in ("", "latest") else (1, int(version.split(".")[1]))
    return podsecurity.LevelVersion(level, parsed)


EVALUATOR = podsecurity.Evaluator(max_version=(1, 37))


def _detail(level: str, pod: JSON) -> str:
    return podsecurity.detail(EVALUATOR.evaluate(_lv(level), pod["metadata"], pod["spec"]))


# (level, pod, the aggregated detail upstream prints; "" when allowed)
CASES: list[tuple[str, JSON, str]] = [
    ("privileged:latest", _pod(_c(privileged=True), hostNetwork=True), ""),
    ("baseline:latest", _pod(_c()), ""),
    ("baseline:latest", _pod(_c(privileged=True)),
     'privileged (container "c" must not set securityContext.privileged=true)'),
    ("baseline:latest", _pod(hostNetwork=True, hostPID=True), "host namespaces (hostNetwork=true, hostPID=true)"),
    ("baseline:latest", _pod(_c(capabilities={"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]}), _c("d", capabilities={"add": ["NET_ADMIN"]})),
     'non-default capabilities (containers "c", "d" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)'),
    ("baseline:latest", _pod(volumes=[{"name": "h", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]),
     'hostPath volumes (volume "h")'),
    ("baseline:latest", _pod({"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 81}]}),
     'hostPort (container "c" uses hostPorts 8080, 81)'),
    ("baseline:latest", _pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}),
     "forbidden sysctls (kernel.msgmax)"),
    ("baseline:latest", _pod(_c(seccompProfile={"type": "Unconfined"})),
     'seccompProfile (container "c" must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("baseline:latest", _pod(_c(seLinuxOptions={"type": "spc_t", "user": "u"})),
     'seLinuxOptions (container "c" set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set)'),
    ("baseline:latest", _pod(_c(procMount="Unmasked")),
     'procMount (container "c" must not set securityContext.procMount to "Unmasked")'),
    ("baseline:latest", _pod(_c(appArmorProfile={"type": "Unconfined"})),
     'forbidden AppArmor profile (container "c" must not set AppArmor profile type to "Unconfined")'),
    ("restricted:latest", _pod(_c(**RESTRICTED_SC)), ""),
    ("restricted:latest", _pod(_c()),
     'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
     'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
     'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
     'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'),
    ("restricted:latest", _pod(_c(privileged=True, **RESTRICTED_SC)),
     'privileged (container "c" must not set securityContext.privileged=true)'),
    ("restricted:latest", _pod(_c(**{**RESTRICTED_SC, "runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_TIME"]}})),
     'unrestricted capabilities (container "c" must not include "SYS_TIME" in securityContext.capabilities.add), '
     'runAsUser=0 (container "c" must not set runAsUser=0)'),
    ("restricted:latest", _pod(_c(**RESTRICTED_SC), volumes=[{"name": "n", "nfs": {"server": "s", "path": "/"}}, {"name": "h", "hostPath": {"path": "/"}}]),
     'restricted volume types (volumes "n", "h" use restricted volume types "hostPath", "nfs")'),
    # Pod-level settings cover the containers.
    ("restricted:latest", _pod(_c(allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]}),
                               securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}), ""),
    ("restricted:latest", _pod(_c(**{**RESTRICTED_SC, "runAsNonRoot": False})),
     'runAsNonRoot != true (container "c" must not set securityContext.runAsNonRoot=false)'),
    # Versions: before 1.22 restricted checked the baseline capabilities, before 1.23 not runAsUser.
    ("restricted:v1.21", _pod(_c(**{**RESTRICTED_SC, "capabilities": {}, "runAsUser": 0})), ""),
    ("restricted:v1.22", _pod(_c(**{**RESTRICTED_SC, "capabilities": {}, "runAsUser": 0})),
     'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"])'),
    ("restricted:v1.7", _pod(_c(**{**RESTRICTED_SC, "allowPrivilegeEscalation": True})), ""),
    # 1.25: Windows pods are spared the Linux-only restricted checks.
    ("restricted:v1.24", _pod(_c(runAsNonRoot=True), os={"name": "windows"}),
     'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
     'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
     'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'),
    ("restricted:v1.25", _pod(_c(runAsNonRoot=True), os={"name": "windows"}), ""),
    # Sysctls allowed by version.
    ("baseline:v1.26", _pod(securityContext={"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}),
     "forbidden sysctls (net.ipv4.ip_local_reserved_ports)"),
    ("baseline:v1.27", _pod(securityContext={"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}), ""),
    # 1.31 allows container_engine_t; 1.34 forbids probe hosts.
    ("baseline:v1.30", _pod(_c(seLinuxOptions={"type": "container_engine_t"})),
     'seLinuxOptions (container "c" set forbidden securityContext.seLinuxOptions: type "container_engine_t")'),
    ("baseline:v1.31", _pod(_c(seLinuxOptions={"type": "container_engine_t"})), ""),
    ("baseline:v1.33", _pod({"name": "c", "image": "i", "livenessProbe": {"httpGet": {"host": "evil", "port": 80}}}), ""),
    ("baseline:v1.34", _pod({"name": "c", "image": "i", "livenessProbe": {"httpGet": {"host": "evil", "port": 80}}}),
     'probe or lifecycle host (container "c" uses probe or lifecycle host "evil")'),
]


@pytest.mark.parametrize(("level", "pod", "expected"), CASES)
def test_checks_by_level_and_version_say_what_upstream_says(level: str, pod: JSON, expected: str) -> None:
    assert _detail(level, pod) == expected


def test_latest_is_the_version_this_server_speaks() -> None:
    speaks = podsecurity.Evaluator()
    assert speaks.max_version == podsecurity.server_version()
    pod = _pod({"name": "c", "image": "i", "livenessProbe": {"httpGet": {"host": "evil", "port": 80}}})
    # A version past the server's is evaluated as the server's (upstream's emulation version).
    assert (speaks.evaluate(_lv("baseline:v1.99"), pod["metadata"], pod["spec"])
            == speaks.evaluate(_lv("baseline:latest"), pod["metadata"], pod["spec"]))


def test_namespace_labels_resolve_to_a_policy() -> None:
    defaults = podsecurity.Policy()
    p, bad = podsecurity.policy_for({"pod-security.kubernetes.io/enforce": "baseline",
                                     "pod-security.kubernetes.io/enforce-version": "v1.25"}, defaults)
    assert not bad
    assert str(p.enforce) == "baseline:v1.25" and str(p.warn) == "baseline:v1.25" and str(p.audit) == "privileged:latest"
    p, bad = podsecurity.policy_for({"pod-security.kubernetes.io/enforce": "strict",
                                     "pod-security.kubernetes.io/warn-version": "1.25"}, defaults)
    assert str(p.enforce) == "restricted:latest"  # a bad enforce level enforces restricted
    assert [c.message for c in bad] == ['Invalid value: "strict": must be one of privileged, baseline, restricted',
                                        'Invalid value: "1.25": must be "latest" or "v1.x"']


# --- the plugin through the registry ----------------------------------------------------------

@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[rest.Registry]:
    def policy(store: store_mod.Store, catalog: resources.Catalog) -> chain.Chain:
        return chain.Chain(store, catalog=catalog, pod_security=podsecurity.Settings(
            exempt_usernames=frozenset({"system:admin-exempt"}), exempt_runtime_classes=frozenset({"kata"})))

    async with registry_support.opened(tmp_path, policy=policy) as reg:
        yield reg


def _info(reg: rest.Registry, group: str, version: str, plural: str) -> resources.ResourceInfo:
    return registry_support.info(reg, group, plural, version)


async def _namespace(reg: rest.Registry, name: str, **labels: str) -> JSON:
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": name, "labels": {f"pod-security.kubernetes.io/{k.replace('_', '-')}": v for k, v in labels.items()}}}
    return await reg.create(_info(reg, "", "v1", "namespaces"), ns, namespace=None)


async def test_enforce_refuses_with_upstreams_message_and_audits(registry: rest.Registry) -> None:
    await _namespace(registry, "ns", enforce="restricted")
    pods = _info(registry, "", "v1", "pods")
    warnings = rest.Warnings()
    with pytest.raises(errors.APIError) as caught:
        await registry.create(pods, _pod(_c(privileged=True)), namespace="ns", warnings=warnings)
    assert caught.value.code == 403 and caught.value.reason == "Forbidden"
    assert caught.value.message == (
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": '
        'privileged (container "c" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    assert warnings.messages == []  # no warnings with a refusal
    assert warnings.audit_annotations["pod-security.kubernetes.io/enforce-policy"] == "restricted:latest"
    ok = await registry.create(pods, _pod(_c(**RESTRICTED_SC), name="ok"), namespace="ns", warnings=warnings)
    assert ok["metadata"]["name"] == "ok"
    # A dry run is refused the same.
    with pytest.raises(errors.APIError):
        await registry.create(pods, _pod(name="dry"), namespace="ns", options=rest.Options(dry_run=True))


async def test_warn_and_audit_do_not_refuse(registry: rest.Registry) -> None:
    await _namespace(registry, "ns", warn="baseline", audit="restricted", audit_version="v1.24")
    warnings = rest.Warnings()
    await registry.create(_info(registry, "", "v1", "pods"), _pod(hostNetwork=True), namespace="ns", warnings=warnings)
    assert warnings.messages == ['would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)']
    assert warnings.audit_annotations["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:v1.24": host namespaces (hostNetwork=true), allowPrivilegeEscalation != false')


async def test_workloads_are_warned_on_their_template_never_refused(registry: rest.Registry) -> None:
    await _namespace(registry, "ns", enforce="baseline")
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
              "spec": {"selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [_c(privileged=True)]}}}}
    warnings = rest.Warnings()
    await registry.create(_info(registry, "apps", "v1", "deployments"), deploy, namespace="ns", warnings=warnings)
    assert warnings.messages == [
        'would violate PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)']
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "ns"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [_c()], "hostPID": True}}}}}}
    warnings = rest.Warnings()
    await registry.create(_info(registry, "batch", "v1", "cronjobs"), cron, namespace="ns", warnings=warnings)
    assert warnings.messages == ['would violate PodSecurity "baseline:latest": host namespaces (hostPID=true)']


async def test_exemptions_by_namespace_user_and_runtime_class(registry: rest.Registry) -> None:
    pods = _info(registry, "", "v1", "pods")
    await _namespace(registry, "ns", enforce="restricted")
    bad = _pod(_c(privileged=True))
    # kube-system is exempt in the default configuration (as k3s's).
    system = copy.deepcopy(bad)
    system["metadata"]["namespace"] = "kube-system"
    warnings = rest.Warnings()
    await registry.create(pods, system, namespace="kube-system", warnings=warnings)
    assert warnings.audit_annotations == {"pod-security.kubernetes.io/exempt": "namespace"}
    exempt_user = user_mod.authenticated("system:admin-exempt")
    await registry.create(pods, _pod(_c(privileged=True), name="u"), namespace="ns", options=rest.Options(user=exempt_user))
    await registry.create(pods, _pod(_c(privileged=True), name="k", runtimeClassName="kata"), namespace="ns")
    with pytest.raises(errors.APIError):
        await registry.create(pods, bad, namespace="ns", options=rest.Options(user=user_mod.authenticated("bob")))


async def test_bad_labels_are_refused_and_stricter_enforce_warns_about_existing_pods(registry: rest.Registry) -> None:
    namespaces = _info(registry, "", "v1", "namespaces")
    with pytest.raises(errors.APIError) as caught:
        await _namespace(registry, "bad", enforce="strict")
    assert caught.value.code == 422
    assert caught.value.message == ('Namespace "bad" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
                                    'Invalid value: "strict": must be one of privileged, baseline, restricted')
    await _namespace(registry, "ns")
    pods = _info(registry, "", "v1", "pods")
    for name in ("b", "a"):
        await registry.create(pods, _pod(_c(privileged=True), name=name), namespace="ns")
    await registry.create(pods, _pod(name="c", hostIPC=True), namespace="ns")

    def relabel(ns: JSON) -> JSON:
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "baseline"}
        return ns

    warnings = rest.Warnings()
    await registry.patch(namespaces, namespace=None, name="ns", apply=relabel, warnings=warnings)
    assert warnings.messages == [
        'existing pods in namespace "ns" violate the new PodSecurity enforce level "baseline:latest"',
        "a (and 1 other pod): privileged",
        "c: host namespaces",
    ]
    # Relaxing never checks the pods.
    warnings = rest.Warnings()

    def relax(ns: JSON) -> JSON:
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "privileged"}
        return ns

    await registry.patch(namespaces, namespace=None, name="ns", apply=relax, warnings=warnings)
    assert warnings.messages == []


async def test_pod_updates_are_checked_only_when_the_image_changes(registry: rest.Registry) -> None:
    pods = _info(registry, "", "v1", "pods")
    await _namespace(registry, "ns")
    await registry.create(pods, _pod(_c(privileged=True)), namespace="ns")
    namespaces = _info(registry, "", "v1", "namespaces")

    def enforce(ns: JSON) -> JSON:
        ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": "baseline"}
        return ns

    await registry.patch(namespaces, namespace=None, name="ns", apply=enforce)

    def label(pod: JSON) -> JSON:
        pod["metadata"]["labels"] = {"touched": "yes"}
        return pod

    await registry.patch(pods, namespace="ns", name="x", apply=label)  # allowed: nothing significant changed

    def image(pod: JSON) -> JSON:
        pod["spec"]["containers"][0]["image"] = "busybox:2"
        return pod

    with pytest.raises(errors.APIError) as caught:
        await registry.patch(pods, namespace="ns", name="x", apply=image)
    assert caught.value.code == 403 and 'violates PodSecurity "baseline:latest"' in caught.value.message
