"""Client certificates for other users than the admin, signed by a test server's CA with the
real `openssl` (CN the user, O each group), as an administrator would issue them by hand."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
from pathlib import Path

import yaml

from tests.conftest import Server


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
