"""Service account tokens end to end (issue 15): real kubectl 1.27, 1.33 and 1.36 and the real
Python client against `edgekube server`.

`kubectl create token` (TokenRequest through `serviceaccounts/<name>/token`) with `--duration`,
`--audience` and `--bound-object-kind/name`; the token then authenticates as
`system:serviceaccount:<ns>:<name>` with upstream's groups and extra (SelfSubjectReview), until
its ServiceAccount or bound object is deleted (or replaced by one of the same name); TokenReview
says who a token is, or why not, in upstream's words; the OIDC discovery documents are served to
anonymous clients and their key checks the token's signature with an independent library
(`cryptography`); legacy Secret-based tokens filled by the token controller; bootstrap tokens.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.waiting import until

pytestmark = pytest.mark.e2e

VERSIONS = ("1.27", "1.33", "1.36")
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _call(server: Server, method: str, path: str, *, token: str | None = None,
          body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One HTTPS request with a bearer token (or none: anonymous), never the admin certificate."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{server.url}{path}", method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw


def whoami(server: Server, token: str) -> tuple[int, Any]:
    code, body = _call(server, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                       body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return code, body.get("status", {}).get("userInfo") if code == 201 else body


@pytest.fixture(params=VERSIONS, ids=[f"kubectl-{v}" for v in VERSIONS])
def kubectl(request: pytest.FixtureRequest, server: Server) -> Iterator[Kubectl]:
    version = request.param
    ns = f"{request.node.originalname.removeprefix('test_').replace('_', '-')[:40]}-{version.replace('.', '')}"
    k = Kubectl(version, server, ns)
    k.run("create", "namespace", ns, namespaced=False)
    yield k


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[k8s_client.ApiClient]:
    cfg = k8s_client.Configuration()
    cfg.host = server.url
    cfg.ssl_ca_cert = str(server.ca)
    cfg.cert_file = str(server.data_dir / "tls" / "admin.crt")
    cfg.key_file = str(server.data_dir / "tls" / "admin.key")
    with k8s_client.ApiClient(cfg) as c:
        yield c


def test_create_token_authenticates_as_the_service_account(kubectl: Kubectl) -> None:
    kubectl.run("create", "serviceaccount", "robot")
    uid = kubectl.json("get", "serviceaccount", "robot")["metadata"]["uid"]
    token = kubectl.out("create", "token", "robot").strip()
    claims = _claims(token)
    assert claims["iss"] == ISSUER and claims["aud"] == [ISSUER]
    assert claims["sub"] == f"system:serviceaccount:{kubectl.ns}:robot"
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert claims["kubernetes.io"] == {"namespace": kubectl.ns, "serviceaccount": {"name": "robot", "uid": uid}}
    code, user = whoami(kubectl.server, token)
    assert code == 201, user
    assert user == {"username": f"system:serviceaccount:{kubectl.ns}:robot", "uid": uid,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{kubectl.ns}", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": [f"JTI={claims['jti']}"]}}
    # kubectl itself, with nothing but the token (no client certificate): refused until RBAC
    # lets the account read its namespace (the `view` role), then answered.
    as_robot = ("--kubeconfig", "/dev/null", "--server", kubectl.server.url,
                "--certificate-authority", str(kubectl.server.ca), "--token", token,
                "get", "serviceaccounts", "-o", "name")
    refused = kubectl.run(*as_robot, check=False)
    assert refused.returncode != 0
    assert (f'serviceaccounts is forbidden: User "system:serviceaccount:{kubectl.ns}:robot" cannot list resource '
            f'"serviceaccounts" in API group "" in the namespace "{kubectl.ns}"') in refused.stderr
    kubectl.run("create", "rolebinding", "robot-views", "--clusterrole=view", f"--serviceaccount={kubectl.ns}:robot")
    # The authorizer follows bindings through a watch, as upstream's informers do: soon, not at once.
    out = until(lambda: (r := kubectl.run(*as_robot, check=False)).returncode == 0 and r, timeout=10,
                what="the RoleBinding taking effect")
    assert "serviceaccount/robot" in out.stdout


def test_duration_audience_and_limits(kubectl: Kubectl) -> None:
    kubectl.run("create", "serviceaccount", "robot")
    claims = _claims(kubectl.out("create", "token", "robot", "--duration", "10m").strip())
    assert claims["exp"] - claims["iat"] == 600
    short = kubectl.run("create", "token", "robot", "--duration", "9m", check=False)
    assert short.returncode != 0
    assert "spec.expirationSeconds: Invalid value: 540: may not specify a duration less than 10 minutes" in short.stderr
    missing = kubectl.run("create", "token", "nobody", check=False)
    assert 'serviceaccounts "nobody" not found' in missing.stderr
    token = kubectl.out("create", "token", "robot", "--audience", "vault", "--audience", "other").strip()
    assert _claims(token)["aud"] == ["vault", "other"]
    code, body = whoami(kubectl.server, token)  # not for the API's audience
    assert code == 401, body


def test_token_bound_to_a_pod_dies_with_it(kubectl: Kubectl) -> None:
    kubectl.run("create", "serviceaccount", "robot")
    kubectl.run("run", "holder", "--image=busybox", "--restart=Never", "--overrides",
                json.dumps({"spec": {"serviceAccountName": "robot"}}))
    pod_uid = kubectl.json("get", "pod", "holder")["metadata"]["uid"]
    token = kubectl.out("create", "token", "robot", "--bound-object-kind", "Pod",
                        "--bound-object-name", "holder").strip()
    assert _claims(token)["kubernetes.io"]["pod"] == {"name": "holder", "uid": pod_uid}
    code, user = whoami(kubectl.server, token)
    assert code == 201, user
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["holder"]
    assert user["extra"]["authentication.kubernetes.io/pod-uid"] == [pod_uid]
    wrong = kubectl.run("create", "token", "default", "--bound-object-kind", "Pod", "--bound-object-name", "holder",
                        check=False)
    assert 'cannot bind token for serviceaccount "default" to pod running with different serviceaccount name.' \
        in wrong.stderr
    kubectl.run("delete", "pod", "holder", "--grace-period=0", "--force")
    code, body = whoami(kubectl.server, token)
    assert code == 401 and body["reason"] == "Unauthorized", body
    review = json.loads(kubectl.out("create", "-f", "-", "-o", "json", input=json.dumps({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})))
    assert review["status"].get("authenticated") is not True
    assert review["status"]["error"] == "[invalid bearer token, service account token has been invalidated]"


def test_token_bound_to_a_secret_and_account_replaced(kubectl: Kubectl) -> None:
    kubectl.run("create", "serviceaccount", "robot")
    kubectl.run("create", "secret", "generic", "anchor", "--from-literal=a=b")
    token = kubectl.out("create", "token", "robot", "--bound-object-kind", "Secret",
                        "--bound-object-name", "anchor").strip()
    assert whoami(kubectl.server, token)[0] == 201
    kubectl.run("delete", "secret", "anchor")
    kubectl.run("create", "secret", "generic", "anchor", "--from-literal=a=b")  # same name, new uid
    assert whoami(kubectl.server, token)[0] == 401
    plain = kubectl.out("create", "token", "robot").strip()
    assert whoami(kubectl.server, plain)[0] == 201
    kubectl.run("delete", "serviceaccount", "robot")
    kubectl.run("create", "serviceaccount", "robot")
    assert whoami(kubectl.server, plain)[0] == 401


def test_token_request_and_review_with_the_python_client(server: Server, api: k8s_client.ApiClient) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "pyclient"}})
    core.create_namespaced_service_account("pyclient", {"metadata": {"name": "robot"}})
    tr = core.create_namespaced_service_account_token("robot", "pyclient", {
        "spec": {"audiences": ["https://vault.example"], "expirationSeconds": 1200}})
    assert tr.spec.audiences == ["https://vault.example"] and tr.spec.expiration_seconds == 1200
    token = tr.status.token
    left = tr.status.expiration_timestamp.timestamp() - time.time()
    assert 1100 < left <= 1200
    auth = k8s_client.AuthenticationV1Api(api)
    ok = auth.create_token_review({"spec": {"token": token, "audiences": ["https://vault.example"]}})
    assert ok.status.authenticated is True
    assert ok.status.user.username == "system:serviceaccount:pyclient:robot"
    assert ok.status.audiences == ["https://vault.example"]
    assert ok.status.user.groups == ["system:serviceaccounts", "system:serviceaccounts:pyclient",
                                     "system:authenticated"]
    wrong = auth.create_token_review({"spec": {"token": token}})  # the API's audience: not this token's
    assert not wrong.status.authenticated
    assert wrong.status.error == (f'[invalid bearer token, token audiences ["https://vault.example"] is invalid '
                                  f'for the target audiences ["{ISSUER}"]]')
    junk = auth.create_token_review({"spec": {"token": "not-a-token"}})
    assert not junk.status.authenticated and junk.status.error == "invalid bearer token"


def test_oidc_discovery_is_public_and_its_key_verifies_tokens(server: Server, api: k8s_client.ApiClient) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    code, config = _call(server, "GET", "/.well-known/openid-configuration")  # anonymous
    assert code == 200, config
    assert config["issuer"] == ISSUER and config["jwks_uri"].endswith("/openid/v1/jwks")
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    code, jwks = _call(server, "GET", "/openid/v1/jwks")
    assert code == 200 and len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
    core = k8s_client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token("default", "default", {"spec": {}}).status.token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "RS256", "kid": jwk["kid"]}

    def num(v: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), "big")

    key = rsa.RSAPublicNumbers(num(jwk["e"]), num(jwk["n"])).public_key()
    signing_input, _, sig = token.rpartition(".")
    key.verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), signing_input.encode(),
               padding.PKCS1v15(), hashes.SHA256())
    # Anything else stays closed to anonymous clients; a forged token is refused.
    assert _call(server, "GET", "/api/v1/namespaces")[0] == 401
    forged = token[:-8] + ("AAAAAAAA" if not token.endswith("AAAAAAAA") else "BBBBBBBB")
    assert whoami(server, forged)[0] == 401


def test_legacy_secret_token(server: Server, api: k8s_client.ApiClient) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "legacy"}})
    sa = core.create_namespaced_service_account("legacy", {"metadata": {"name": "robot"}})
    core.create_namespaced_secret("legacy", {
        "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token"})

    def filled() -> Any:
        s = core.read_namespaced_secret("robot-token", "legacy")
        return s if s.data and "token" in s.data else None

    secret = until(filled, timeout=30, what="the token controller filling the Secret")
    assert base64.b64decode(secret.data["namespace"]).decode() == "legacy"
    assert base64.b64decode(secret.data["ca.crt"]).decode() == server.ca.read_text()
    assert secret.metadata.annotations["kubernetes.io/service-account.uid"] == sa.metadata.uid
    token = base64.b64decode(secret.data["token"]).decode()
    claims = _claims(token)
    assert claims["iss"] == "kubernetes/serviceaccount" and "exp" not in claims
    assert claims["kubernetes.io/serviceaccount/secret.name"] == "robot-token"
    code, user = whoami(server, token)
    assert code == 201, user
    assert user["username"] == "system:serviceaccount:legacy:robot" and user["uid"] == sa.metadata.uid
    core.delete_namespaced_secret("robot-token", "legacy")
    assert whoami(server, token)[0] == 401
    # A token Secret for an account that does not exist is removed, as upstream's controller does.
    core.create_namespaced_secret("legacy", {
        "metadata": {"name": "ghost-token", "annotations": {"kubernetes.io/service-account.name": "ghost"}},
        "type": "kubernetes.io/service-account-token"})
    names = lambda: [s.metadata.name for s in core.list_namespaced_secret("legacy").items]  # noqa: E731
    until(lambda: "ghost-token" not in names(), timeout=30, what="the ghost account's Secret deleted")


def test_bootstrap_token(server: Server, api: k8s_client.ApiClient) -> None:
    core = k8s_client.CoreV1Api(api)

    def bootstrap(token_id: str, secret: str, **data: str) -> None:
        core.create_namespaced_secret("kube-system", {
            "metadata": {"name": f"bootstrap-token-{token_id}"}, "type": "bootstrap.kubernetes.io/token",
            "stringData": {"token-id": token_id, "token-secret": secret, **data}})

    bootstrap("abcdef", "0123456789abcdef", **{"usage-bootstrap-authentication": "true",
                                                "auth-extra-groups": "system:bootstrappers:edge-agents",
                                                "expiration": "2099-01-01T00:00:00Z"})
    code, user = whoami(server, "abcdef.0123456789abcdef")
    assert code == 201, user
    assert user == {"username": "system:bootstrap:abcdef",
                    "groups": ["system:bootstrappers", "system:bootstrappers:edge-agents", "system:authenticated"]}
    assert whoami(server, "abcdef.0123456789abcdee")[0] == 401  # wrong secret
    bootstrap("expire", "0123456789abcdef", **{"usage-bootstrap-authentication": "true",
                                                "expiration": "2020-01-01T00:00:00Z"})
    assert whoami(server, "expire.0123456789abcdef")[0] == 401
    bootstrap("nousag", "0123456789abcdef")
    assert whoami(server, "nousag.0123456789abcdef")[0] == 401
    core.delete_namespaced_secret("bootstrap-token-abcdef", "kube-system")
    assert whoami(server, "abcdef.0123456789abcdef")[0] == 401



def test_service_account_admission(server: Server, api: k8s_client.ApiClient) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "admit"}})
    until(lambda: any(s.metadata.name == "default" for s in core.list_namespaced_service_account("admit").items),
          timeout=30, what="the default ServiceAccount")
    c = {"name": "c", "image": "busybox"}
    pod = api.sanitize_for_serialization(core.create_namespaced_pod("admit", {
        "metadata": {"name": "plain"}, "spec": {"initContainers": [{**c, "name": "init"}], "containers": [c]}}))
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default"
    [vol] = spec["volumes"]
    assert vol["name"].startswith("kube-api-access-") and len(vol["name"]) == len("kube-api-access-") + 5
    assert vol["projected"] == {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                     "fieldPath": "metadata.namespace"}}]}}]}
    mount = {"name": vol["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert spec["containers"][0]["volumeMounts"] == [mount]
    assert spec["initContainers"][0]["volumeMounts"] == [mount]

    core.create_namespaced_service_account("admit", {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False,
                                                     "imagePullSecrets": [{"name": "regcred"}]})
    quiet = core.create_namespaced_pod("admit", {"metadata": {"name": "quiet"},
                                                 "spec": {"serviceAccountName": "quiet", "containers": [c]}})
    assert not quiet.spec.volumes and not quiet.spec.containers[0].volume_mounts
    assert [s.name for s in quiet.spec.image_pull_secrets] == ["regcred"]
    loud = core.create_namespaced_pod("admit", {"metadata": {"name": "loud"}, "spec": {
        "serviceAccountName": "quiet", "automountServiceAccountToken": True, "containers": [c]}})
    assert loud.spec.volumes[0].name.startswith("kube-api-access-")
    off = core.create_namespaced_pod("admit", {"metadata": {"name": "off"}, "spec": {
        "automountServiceAccountToken": False, "containers": [c]}})
    assert not off.spec.volumes
    own = core.create_namespaced_pod("admit", {"metadata": {"name": "own"}, "spec": {
        "volumes": [{"name": "mine", "emptyDir": {}}],
        "containers": [{**c, "volumeMounts": [{"name": "mine",
                                               "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}]}})
    assert [v.name for v in own.spec.volumes] == ["mine"]  # nobody else needs the token volume

    with pytest.raises(k8s_client.ApiException) as refused:
        core.create_namespaced_pod("admit", {"metadata": {"name": "ghostly"},
                                             "spec": {"serviceAccountName": "ghost", "containers": [c]}})
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"] == (
        'pods "ghostly" is forbidden: error looking up service account admit/ghost: serviceaccount "ghost" not found')


def test_root_ca_configmap_in_every_namespace(server: Server, api: k8s_client.ApiClient) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "rootca"}})
    cm = until(lambda: next((m for m in core.list_namespaced_config_map("rootca").items
                             if m.metadata.name == "kube-root-ca.crt"), None), timeout=30, what="kube-root-ca.crt")
    assert cm.data == {"ca.crt": server.ca.read_text()}


def test_token_bound_to_a_node(server: Server, api: k8s_client.ApiClient) -> None:
    """kubectl 1.33+ binds tokens to Nodes too (upstream 1.32's ServiceAccountTokenNodeBinding)."""
    k = Kubectl("1.36", server, "default")
    k.run("create", "serviceaccount", "agent")
    core = k8s_client.CoreV1Api(api)
    node = core.create_node({"metadata": {"name": "edge-7"}})
    token = k.out("create", "token", "agent", "--bound-object-kind", "Node", "--bound-object-name", "edge-7").strip()
    assert _claims(token)["kubernetes.io"]["node"] == {"name": "edge-7", "uid": node.metadata.uid}
    code, user = whoami(server, token)
    assert code == 201, user
    assert user["extra"]["authentication.kubernetes.io/node-name"] == ["edge-7"]
    assert user["extra"]["authentication.kubernetes.io/node-uid"] == [node.metadata.uid]
    core.delete_node("edge-7")
    assert whoami(server, token)[0] == 401


def test_signing_key_rotation_keeps_old_tokens_while_their_key_is_listed(fresh_server: Server, tmp_path: Path) -> None:
    """`edgekube service-account-key rotate` (here to an EC key: ES256), then a restart with the
    old public key in `api.service-account-key-files`: a token issued before still authenticates,
    new tokens are ES256 under the new kid, the JWKS serves both keys; once the old key is no
    longer listed (another restart), the old token is refused and the new one holds."""
    srv = fresh_server
    k = Kubectl("1.36", srv, "default")
    until(lambda: k.run("get", "serviceaccount", "default", check=False).returncode == 0, timeout=20)
    old = k.out("create", "token", "default").strip()
    assert whoami(srv, old)[0] == 201
    old_kid = json.loads(base64.urlsafe_b64decode(old.split(".")[0] + "=="))["kid"]
    srv.stop()
    rotated = subprocess.run([sys.executable, "-m", "edgekube", "service-account-key", "rotate", "--algorithm", "ES256",
                              "--data-dir", str(srv.data_dir)], capture_output=True, text=True, timeout=60, check=True)
    kept = next(srv.data_dir.glob("tls/service-account-*.pub"))
    assert str(kept) in rotated.stdout and "service-account-key-files" in rotated.stdout
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"api": {"service-account-key-files": [str(kept)]}}))
    srv.extra = [*srv.extra, "--config", str(config)]
    srv.start()

    code, user = whoami(srv, old)
    assert (code, user["username"]) == (201, "system:serviceaccount:default:default")
    new = k.out("create", "token", "default").strip()
    header = json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"] != old_kid
    assert whoami(srv, new)[0] == 201
    code, jwks = _call(srv, "GET", "/openid/v1/jwks")
    assert code == 200 and sorted((key["kid"], key["kty"]) for key in jwks["keys"]) == \
        sorted([(header["kid"], "EC"), (old_kid, "RSA")])
    code, discovery = _call(srv, "GET", "/.well-known/openid-configuration")
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]

    srv.stop()
    config.write_text(json.dumps({"api": {"service-account-key-files": []}}))
    srv.start()
    assert whoami(srv, old)[0] == 401
    assert whoami(srv, new)[0] == 201
    code, jwks = _call(srv, "GET", "/openid/v1/jwks")
    assert [key["kid"] for key in jwks["keys"]] == [header["kid"]]
