"""RBAC end to end, with real kubectl (1.27, 1.33, 1.36) and the real Python `kubernetes` client.

Two users besides the admin: bob, with a client certificate signed by the cluster CA (CN=bob,
O=devs), and carol, with a bearer token from the static token file (`--token-auth-file`). Each
test works in namespaces of its own on one shared server; the admin (system:masters) sets up
the roles and bindings, and the users are refused with kube-apiserver's exact words.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.conftest import REPO, Server, free_port

pytestmark = pytest.mark.e2e
VERSIONS = ("1.27", "1.33", "1.36")
CAROL_TOKEN = "carol-static-token-5d1e9a"
T = TypeVar("T")


def _client_cert(server: Server, out: Path, *, user: str, groups: list[str]) -> tuple[Path, Path]:
    """A client certificate for `user` signed by the cluster CA (as an administrator would issue)."""
    tls = server.data_dir / "tls"
    ca_cert = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                         x509.NameAttribute(NameOID.COMMON_NAME, user)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    crt, pem = out / f"{user}.crt", out / f"{user}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def _kubeconfig(server: Server, path: Path, *, user: str, credentials: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [{"name": "edge", "cluster": {"server": server.url, "certificate-authority": str(server.ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "edge", "user": user}}],
    }))
    return path


class Users:
    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        crt, key = _client_cert(server, work, user="bob", groups=["devs"])
        self.bob = _kubeconfig(server, work / "bob.kubeconfig", user="bob",
                               credentials={"client-certificate": str(crt), "client-key": str(key)})
        self.carol = _kubeconfig(server, work / "carol.kubeconfig", user="carol", credentials={"token": CAROL_TOKEN})
        self.admin = server.kubeconfig


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    work = tmp_path_factory.mktemp("rbac")
    tokens = work / "tokens.csv"
    tokens.write_text(f'{CAROL_TOKEN},carol,carol-uid,"testers"\n')
    server = Server(work / "data", extra=["--token-auth-file", str(tokens)])
    server.start()
    try:
        yield Users(server, work)
    finally:
        server.close()


class Kubectl:
    def __init__(self, version: str, kubeconfig: Path, home: Path) -> None:
        self.bin = REPO / "tools" / "bin" / f"kubectl-{version}"
        if not self.bin.exists():
            pytest.fail(f"{self.bin} is missing: run `make kube-tools`")
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def run(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.bin), *args], capture_output=True, text=True, timeout=60, env=self.env,
                              input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def out(self, *args: str) -> str:
        return self.run(*args).stdout

    def refused(self, *args: str) -> str:
        proc = self.run(*args, check=False)
        assert proc.returncode != 0, f"kubectl {' '.join(args)} was allowed:\n{proc.stdout}"
        return proc.stderr.strip()


class Actors:
    def __init__(self, version: str, users: Users, home: Path) -> None:
        self.version = version
        self.admin = Kubectl(version, users.admin, home)
        self.bob = Kubectl(version, users.bob, home)
        self.carol = Kubectl(version, users.carol, home)
        v = version.replace(".", "")
        self.team, self.other = f"team-{v}", f"other-{v}"


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def actors(request: pytest.FixtureRequest, users: Users, tmp_path: Path) -> Iterator[Actors]:
    a = Actors(request.param, users, tmp_path)
    test = request.node.originalname.removeprefix("test_").replace("_", "-")[:20]
    a.team, a.other = f"{test}-{a.team}", f"{test}-{a.other}"
    for ns in (a.team, a.other):
        a.admin.run("create", "namespace", ns)
        a.admin.run("-n", ns, "create", "configmap", "settings", "--from-literal=mode=edge")
        a.admin.run("-n", ns, "create", "secret", "generic", "keys", "--from-literal=k=v")
    yield a
    for ns in (a.team, a.other):
        a.admin.run("delete", "namespace", ns, "--wait=false", check=False)


def _eventually(fn: Callable[[], T], *, until: Callable[[T], bool], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _reader_role(a: Actors, *, subject: str) -> None:
    a.admin.run("-n", a.team, "create", "role", "reader", "--verb=get,list,watch", "--resource=configmaps")
    a.admin.run("-n", a.team, "create", "rolebinding", "reader", "--role=reader", subject)


def test_read_only_role_lists_configmaps_and_nothing_else(actors: Actors) -> None:
    a = actors
    # Before any binding: refused, as upstream words it.
    assert a.bob.refused("-n", a.team, "get", "configmaps") == (
        f'Error from server (Forbidden): configmaps is forbidden: User "bob" cannot list resource "configmaps" in API '
        f'group "" in the namespace "{a.team}"')
    _reader_role(a, subject="--user=bob")
    out = _eventually(lambda: a.bob.run("-n", a.team, "get", "configmaps", "-o", "name", check=False).stdout,
                      until=lambda s: "configmap/settings" in s)
    assert "configmap/settings" in out
    assert a.bob.out("-n", a.team, "get", "configmap", "settings", "-o", "jsonpath={.data.mode}") == "edge"
    assert a.bob.refused("-n", a.team, "get", "secrets") == (
        f'Error from server (Forbidden): secrets is forbidden: User "bob" cannot list resource "secrets" in API group '
        f'"" in the namespace "{a.team}"')
    assert a.bob.refused("-n", a.team, "get", "secret", "keys") == (
        f'Error from server (Forbidden): secrets "keys" is forbidden: User "bob" cannot get resource "secrets" in API '
        f'group "" in the namespace "{a.team}"')
    assert a.bob.refused("-n", a.other, "get", "configmaps") == (
        f'Error from server (Forbidden): configmaps is forbidden: User "bob" cannot list resource "configmaps" in API '
        f'group "" in the namespace "{a.other}"')
    assert "cannot create resource \"configmaps\"" in a.bob.refused("-n", a.team, "create", "configmap", "x")
    assert "cannot delete resource \"configmaps\"" in a.bob.refused("-n", a.team, "delete", "configmap", "settings")
    assert a.bob.refused("get", "nodes") == ('Error from server (Forbidden): nodes is forbidden: User "bob" cannot list '
                                             'resource "nodes" in API group "" at the cluster scope')
    # A watch is its own verb (granted here), and the token user is still no one here.
    watch = a.bob.run("-n", a.team, "get", "configmaps", "--watch", "--request-timeout=1s", check=False)
    assert "settings" in watch.stdout
    assert 'User "carol" cannot list resource "configmaps"' in a.carol.refused("-n", a.team, "get", "configmaps")


def test_auth_can_i_and_the_rules_review(actors: Actors) -> None:
    a = actors
    _reader_role(a, subject="--group=devs")  # bob is in devs by his certificate's O
    assert _eventually(lambda: a.bob.run("auth", "can-i", "list", "configmaps", "-n", a.team, check=False).stdout.strip(),
                       until=lambda s: s == "yes") == "yes"
    assert a.bob.run("auth", "can-i", "get", "secrets", "-n", a.team, check=False).stdout.strip() == "no"
    assert a.bob.run("auth", "can-i", "list", "configmaps", "-n", a.other, check=False).stdout.strip() == "no"
    assert a.bob.run("auth", "can-i", "get", "/healthz", check=False).stdout.strip() == "yes"
    assert a.bob.run("auth", "can-i", "get", "/logs", check=False).stdout.strip() == "no"
    # The admin asks about someone else (a SubjectAccessReview through --as is impersonation;
    # `auth can-i --as` impersonates).
    assert a.admin.run("auth", "can-i", "list", "configmaps", "-n", a.team, "--as=bob", "--as-group=devs",
                       check=False).stdout.strip() == "yes"
    assert a.admin.run("auth", "can-i", "delete", "nodes", check=False).stdout.strip() == "yes"
    listing = a.bob.out("auth", "can-i", "--list", "-n", a.team)
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert ["configmaps", "[]", "[]", "[get", "list", "watch]"] in rows
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in rows
    assert not any(r[0].startswith("secrets") for r in rows)
    assert ["[/healthz]", "[]", "[get]"] in rows
    other = [line.split() for line in a.bob.out("auth", "can-i", "--list", "-n", a.other).splitlines()[1:]]
    assert not any(r[0] == "configmaps" for r in other)


def test_impersonation_needs_the_impersonate_right(actors: Actors) -> None:
    a = actors
    if a.version != "1.27":  # `auth whoami` is authentication.k8s.io/v1 from kubectl 1.28 on
        who = json.loads(a.admin.out("auth", "whoami", "--as=bob", "-o", "json"))["status"]["userInfo"]
        assert who == {"username": "bob", "groups": ["system:authenticated"]}
        who = json.loads(a.admin.out("auth", "whoami", "--as=bob", "--as-group=devs", "--as-uid=u-7", "-o", "json"))
        assert who["status"]["userInfo"] == {"username": "bob", "uid": "u-7", "groups": ["devs", "system:authenticated"]}
    _reader_role(a, subject="--user=carol")
    _eventually(lambda: a.carol.run("-n", a.team, "get", "cm", check=False).returncode, until=lambda c: c == 0)
    # bob may not act as carol...
    assert a.bob.refused("-n", a.team, "get", "configmaps", "--as=carol") == (
        'Error from server (Forbidden): users "carol" is forbidden: User "bob" cannot impersonate resource "users" in '
        'API group "" at the cluster scope')
    # ...until he may impersonate that user (and only that one), and then he is carol.
    a.admin.run("create", "clusterrole", f"impersonate-carol-{a.team}", "--verb=impersonate", "--resource=users",
                "--resource-name=carol")
    a.admin.run("create", "clusterrolebinding", f"bob-as-carol-{a.team}", f"--clusterrole=impersonate-carol-{a.team}",
                "--user=bob")
    try:
        out = _eventually(lambda: a.bob.run("-n", a.team, "get", "configmaps", "--as=carol", "-o", "name", check=False).stdout,
                          until=lambda s: "configmap/settings" in s)
        assert "configmap/settings" in out
        if a.version != "1.27":
            who = json.loads(a.bob.out("auth", "whoami", "--as=carol", "-o", "json"))["status"]["userInfo"]
            assert who == {"username": "carol", "groups": ["system:authenticated"]}
        assert 'users "dave" is forbidden: User "bob" cannot impersonate' in a.bob.refused("get", "cm", "--as=dave")
        assert 'groups "system:masters" is forbidden: User "bob" cannot impersonate resource "groups"' in a.bob.refused(
            "get", "nodes", "--as=carol", "--as-group=system:masters")
        # As carol, bob has carol's rights, not his own and not more.
        assert 'User "carol" cannot list resource "secrets"' in a.bob.refused("-n", a.team, "get", "secrets", "--as=carol")
    finally:  # cluster-wide: gone before the next kubectl's turn
        a.admin.run("delete", "clusterrolebinding", f"bob-as-carol-{a.team}", check=False)
        a.admin.run("delete", "clusterrole", f"impersonate-carol-{a.team}", check=False)


def test_escalation_is_refused(actors: Actors) -> None:
    a = actors
    a.admin.run("-n", a.team, "create", "role", "rbac-editor", "--verb=get,list,create,update,patch,delete",
                "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io")
    a.admin.run("-n", a.team, "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps")
    a.admin.run("-n", a.team, "create", "rolebinding", "bob-rbac", "--role=rbac-editor", "--user=bob")
    a.admin.run("-n", a.team, "create", "rolebinding", "bob-cm", "--role=cm-reader", "--user=bob")
    _eventually(lambda: a.bob.run("-n", a.team, "get", "roles", check=False).returncode, until=lambda c: c == 0)
    # What he holds he may hand out; what he does not, he may not.
    a.bob.run("-n", a.team, "create", "role", "mine", "--verb=get", "--resource=configmaps")
    err = a.bob.refused("-n", a.team, "create", "role", "grab", "--verb=get", "--resource=secrets")
    assert err.endswith(
        'roles.rbac.authorization.k8s.io "grab" is forbidden: user "bob" (groups=["devs" "system:authenticated"]) is '
        'attempting to grant RBAC permissions not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}')
    err = a.bob.refused("-n", a.team, "create", "rolebinding", "grab", "--clusterrole=admin", "--user=bob")
    assert 'rolebindings.rbac.authorization.k8s.io "grab" is forbidden: user "bob"' in err
    assert "attempting to grant RBAC permissions not currently held" in err
    a.bob.run("-n", a.team, "create", "rolebinding", "share", "--role=cm-reader", "--user=carol")
    # An update that adds a rule he lacks is refused too.
    role = json.loads(a.bob.out("-n", a.team, "get", "role", "mine", "-o", "json"))
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    err = a.bob.run("-n", a.team, "replace", "-f", "-", input=json.dumps(role), check=False).stderr
    assert 'Resources:["secrets"], Verbs:["list"]' in err
    # `escalate` and `bind` lift the check, as upstream.
    a.admin.run("-n", a.team, "create", "role", "escalator", "--verb=escalate,bind",
                "--resource=roles.rbac.authorization.k8s.io,clusterroles.rbac.authorization.k8s.io")
    a.admin.run("-n", a.team, "create", "rolebinding", "bob-escalate", "--role=escalator", "--user=bob")
    _eventually(lambda: a.bob.run("-n", a.team, "create", "role", "grab", "--verb=get", "--resource=secrets",
                                  check=False).returncode, until=lambda c: c == 0)
    a.bob.run("-n", a.team, "create", "rolebinding", "grab", "--clusterrole=admin", "--user=carol")


def test_aggregated_cluster_role_picks_up_a_labelled_role(actors: Actors) -> None:
    a = actors
    name = f"leases-{a.team}"  # a kind `view` does not read: only the labelled role brings it
    rule = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}

    def grants(role: str) -> bool:
        return rule in json.loads(a.admin.out("get", "clusterrole", role, "-o", "json"))["rules"]

    assert not grants("view")
    a.admin.run("-n", a.team, "create", "rolebinding", "viewer", "--clusterrole=view", "--user=bob")
    _eventually(lambda: a.bob.run("-n", a.team, "get", "configmaps", check=False).returncode, until=lambda c: c == 0)
    assert a.bob.run("auth", "can-i", "list", "leases", "-n", a.team, check=False).stdout.strip() == "no"
    a.admin.run("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [rule]}))
    try:
        for role in ("view", "edit", "admin"):  # admin takes edit, which takes view
            assert _eventually(lambda role=role: grants(role), until=bool), role  # type: ignore[misc]
        assert _eventually(lambda: a.bob.run("auth", "can-i", "list", "leases", "-n", a.team,
                                             check=False).stdout.strip(), until=lambda s: s == "yes") == "yes"
        a.bob.run("-n", a.team, "get", "leases")
    finally:
        a.admin.run("delete", "clusterrole", name)
    assert not _eventually(lambda: grants("view"), until=lambda g: not g)
    assert "cannot list resource \"leases\"" in _eventually(
        lambda: a.bob.run("-n", a.team, "get", "leases", check=False).stderr, until=lambda e: "cannot" in e)


def test_python_client_as_a_read_only_user(users: Users, tmp_path: Path) -> None:
    admin = Kubectl("1.36", users.admin, tmp_path)
    admin.run("create", "namespace", "py-team")
    admin.run("-n", "py-team", "create", "configmap", "settings", "--from-literal=mode=edge")
    admin.run("-n", "py-team", "create", "role", "reader", "--verb=get,list,watch", "--resource=configmaps")
    admin.run("-n", "py-team", "create", "rolebinding", "reader", "--role=reader", "--user=bob", "--user=carol")
    for kubeconfig, who in ((users.bob, "bob"), (users.carol, "carol")):
        api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))
        names: list[Any] = _eventually(lambda api=api: _names(api), until=bool)  # type: ignore[misc]
        assert "settings" in names
        with pytest.raises(ApiException) as err:
            api.list_namespaced_secret("py-team")
        assert err.value.status == 403
        body = json.loads(err.value.body)
        assert body["message"] == (f'secrets is forbidden: User "{who}" cannot list resource "secrets" in API group "" '
                                   'in the namespace "py-team"')
        assert body["reason"] == "Forbidden" and body["details"] == {"kind": "secrets"}
        with pytest.raises(ApiException) as err:
            api.list_namespaced_config_map("default")
        assert err.value.status == 403
    admin.run("delete", "namespace", "py-team", "--wait=false")


def _names(api: k8s.CoreV1Api) -> list[str]:
    try:
        return [c.metadata.name for c in api.list_namespaced_config_map("py-team").items]
    except ApiException:
        return []


def test_components_run_with_their_own_roles_only(users: Users, tmp_path: Path) -> None:
    """The in-process components' users are bound by the bootstrap policy, and to no more."""
    admin = Kubectl("1.36", users.admin, tmp_path)

    def can(*args: str) -> str:
        return admin.run("auth", "can-i", *args, check=False).stdout.strip()

    kcm = "--as=system:kube-controller-manager"
    assert can("create", "replicasets", "-n", "default", kcm) == "yes"
    assert can("delete", "pods", "-n", "default", kcm) == "yes"
    assert can("create", "clusterrolebindings", kcm) == "no"
    assert can("impersonate", "users", kcm) == "no"
    node = ("--as=system:node:edge-1", "--as-group=system:nodes")
    assert can("patch", "nodes", "--subresource=status", *node) == "yes"
    assert can("create", "serviceaccounts", "--subresource=token", "-n", "default", *node) == "yes"
    assert can("delete", "namespaces", *node) == "no"
    assert can("create", "pods", "--subresource=binding", "-n", "default", *node) == "no"
    assert can("create", "secrets", "-n", "default", *node) == "no"
    assert can("create", "pods", "--subresource=binding", "-n", "default", "--as=system:kube-scheduler") == "yes"
    assert can("list", "secrets", "-n", "default", "--as=system:kube-scheduler") == "no"
    assert can("watch", "endpointslices.discovery.k8s.io", "--as=system:kube-proxy") == "yes"
    assert can("create", "pods", "-n", "default", "--as=system:kube-proxy") == "no"
    assert can("list", "services", "--as=system:kube-dns") == "yes"
    assert can("list", "secrets", "--as=system:kube-dns") == "no"
    # The bootstrap roles are marked as such, and reconciled at boot.
    role = json.loads(admin.out("get", "clusterrole", "system:kube-controller-manager", "-o", "json"))
    assert role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    assert role["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"


def test_subject_access_review_with_the_python_client(users: Users, tmp_path: Path) -> None:
    admin = Kubectl("1.36", users.admin, tmp_path)
    admin.run("create", "namespace", "sar-team")
    admin.run("-n", "sar-team", "create", "role", "reader", "--verb=get", "--resource=configmaps")
    admin.run("-n", "sar-team", "create", "rolebinding", "reader", "--role=reader", "--group=devs")
    api = k8s.AuthorizationV1Api(k8s_config.new_client_from_config(str(users.admin)))

    def review(user: str, groups: list[str], verb: str) -> Any:
        body = k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
            user=user, groups=groups, resource_attributes=k8s.V1ResourceAttributes(
                namespace="sar-team", verb=verb, resource="configmaps")))
        return api.create_subject_access_review(body).status

    status = _eventually(lambda: review("bob", ["devs"], "get"), until=lambda s: s.allowed)
    assert status.allowed and status.reason == 'RBAC: allowed by RoleBinding "reader/sar-team" of Role "reader" to Group "devs"'
    assert not review("bob", [], "get").allowed  # a SubjectAccessReview's groups are as given
    assert not review("bob", ["devs"], "delete").allowed
    # bob may not ask about others (SubjectAccessReview is cluster-admin's), only about himself.
    bob = k8s.AuthorizationV1Api(k8s_config.new_client_from_config(str(users.bob)))
    with pytest.raises(ApiException) as err:
        bob.create_subject_access_review(k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
            user="carol", resource_attributes=k8s.V1ResourceAttributes(verb="get", resource="secrets"))))
    assert err.value.status == 403
    mine = bob.create_self_subject_access_review(k8s.V1SelfSubjectAccessReview(spec=k8s.V1SelfSubjectAccessReviewSpec(
        resource_attributes=k8s.V1ResourceAttributes(namespace="sar-team", verb="get", resource="configmaps"))))
    assert mine.status.allowed
    admin.run("delete", "namespace", "sar-team", "--wait=false")


def test_a_bad_token_file_stops_the_boot_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.csv"
    bad.write_text("only-a-token,and-a-user\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgekube", "server", "--data-dir", str(tmp_path / "data"), "--bind-address", "127.0.0.1",
         "--https-port", str(free_port()), "--disable", "kubelet", "--disable", "network", "--disable", "dns",
         "--token-auth-file", str(bad)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(f"edgekube: token file '{bad}' must have at least 3 columns (token, user name, "
                                        "user uid), found 2 on line 1")
    assert not (tmp_path / "data" / "db").exists()  # refused before the data dir was touched
