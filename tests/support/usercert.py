"""Client certificates for other users than the admin, signed by a test server's CA with the
real `openssl` (CN the user, O each group), as an administrator would issue them by hand."""

from __future__ import annotations

import dataclasses
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Server
from tests.support.waiting import until


@dataclasses.dataclass(frozen=True)
class UserCert:
    name: str
    cert: Path
    key: Path
    server: Server

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.server.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def kubeconfig(self) -> Path:
        """A kubeconfig for this user, next to its certificate."""
        path = self.cert.with_suffix(".kubeconfig")
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": self.server.url, "certificate-authority": str(self.server.ca)}}],
            "users": [{"name": self.name, "user": {"client-certificate": str(self.cert), "client-key": str(self.key)}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": self.name}}],
        }))
        return path


def issue(server: Server, name: str, *, groups: tuple[str, ...] = (), into: Path) -> UserCert:
    into.mkdir(parents=True, exist_ok=True)
    stem = into / name.replace(":", "_")
    key, csr, cert = stem.with_suffix(".key"), stem.with_suffix(".csr"), stem.with_suffix(".crt")
    subject = "/CN=" + name + "".join(f"/O={g}" for g in groups)
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-subj", subject, "-out", str(csr)], check=True, capture_output=True)
    tls = server.data_dir / "tls"
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.crt"), "-CAkey", str(tls / "ca.key"),
                    "-CAcreateserial", "-CAserial", str(into / "ca.srl"), "-days", "2", "-out", str(cert)],
                   check=True, capture_output=True)
    return UserCert(name=name, cert=cert, key=key, server=server)


def grant(server: Server, *, group: str, cluster_role: str, probe: dict[str, str]) -> None:
    """Bind `cluster_role` to `group` cluster-wide (as the admin), then wait until the authorizer,
    which follows bindings through a watch as upstream's informers do, allows `probe` (the
    `resourceAttributes` or, with a "path", the `nonResourceAttributes` of a SubjectAccessReview)."""
    admin = server.admin_context()
    name = f"{group}-{cluster_role}".replace(":", "-")
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}
    try:
        _post(server, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding, admin)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # bound already, by an earlier test on the same server
            raise
    attrs = {"nonResourceAttributes": probe} if "path" in probe else {"resourceAttributes": probe}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"someone-in-{group}", "groups": [group], **attrs}}
    until(lambda: _post(server, "/apis/authorization.k8s.io/v1/subjectaccessreviews", review, admin)["status"]
          .get("allowed"), timeout=10, what=f"{cluster_role} bound to {group} taking effect")


def _post(server: Server, path: str, body: dict[str, Any], context: ssl.SSLContext) -> dict[str, Any]:
    req = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=context, timeout=30) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out
