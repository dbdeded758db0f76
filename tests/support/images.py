"""Test images and registries, for the image store's tests and (later) the kubelet's.

- `LayoutWriter`: an OCI image layout written by hand (layers from `TarEntry` lists, configs,
  manifests, multi-platform indexes), for images whose every byte a test chooses: whiteouts,
  malicious layers, several platforms.
- `busybox_layout()`: a busybox image built with umoci from Debian's busybox-static
  (`umoci init/new/unpack/repack/config`; `umoci insert` of 0.4.7 writes tar streams without
  their trailer, which no runtime accepts, so files are added by repacking a rootfs).
- `skopeo_copy()`: push a layout to a registry, or write `oci-archive:`/`docker-archive:` tarballs.
- `Registry`: Debian's `docker-registry` on 127.0.0.1:<free port> with storage in a temp dir,
  optionally behind htpasswd (bcrypt) basic auth or distribution token auth; `TokenServer` is
  the token issuer for the latter (an aiohttp app on its own thread, signing RS256 JWTs with a
  self-signed certificate the registry trusts through `x5c`).
Everything listens on 127.0.0.1 only, and every process started here is stopped by `close()`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- tar layers ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TarEntry:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, fifo
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink/hardlink target
    uid: int = 0
    gid: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()


def file(name: str, data: bytes = b"", mode: int = 0o644) -> TarEntry:
    return TarEntry(name, "file", data, mode)


def directory(name: str, mode: int = 0o755) -> TarEntry:
    return TarEntry(name, "dir", mode=mode)


def symlink(name: str, target: str) -> TarEntry:
    return TarEntry(name, "symlink", mode=0o777, target=target)


def hardlink(name: str, target: str) -> TarEntry:
    return TarEntry(name, "hardlink", target=target)


def whiteout(path: str) -> TarEntry:
    """`.wh.NAME` hiding `path` from the layers below."""
    parent, _, base = path.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(directory_path: str) -> TarEntry:
    return file(f"{directory_path.rstrip('/')}/.wh..wh..opq")


def tar_bytes(entries: Iterable[TarEntry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 1_700_000_000
            payload: io.BytesIO | None = None
            if e.kind == "file":
                info.size = len(e.data)
                payload = io.BytesIO(e.data)
            elif e.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif e.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                raise ValueError(e.kind)
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs}
            tar.addfile(info, payload)
    return buf.getvalue()


# --- OCI layouts written by hand -----------------------------------------------------------------


class LayoutWriter:
    """An OCI image layout in `path`; `ref()` names what `skopeo_copy` reads (`oci:PATH:TAG`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def layer(self, entries: Iterable[TarEntry] | bytes, *, compress: bool = True) -> tuple[dict[str, Any], str]:
        raw = entries if isinstance(entries, bytes) else tar_bytes(entries)
        data = gzip.compress(raw, mtime=0) if compress else raw
        return self.blob(data, OCI_LAYER_GZIP if compress else OCI_LAYER), sha256(raw)

    def image(
        self,
        layers: Sequence[tuple[dict[str, Any], str]],
        *,
        arch: str = "amd64",
        variant: str = "",
        config: dict[str, Any] | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": config if config is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        }
        if variant:
            cfg["variant"] = variant
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(json.dumps(cfg).encode(), OCI_CONFIG),
            "layers": [desc for desc, _ in layers],
        }
        desc = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        desc["platform"] = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
        if tag is not None:
            self._tag(desc, tag)
        return desc

    def multi(self, manifests: Sequence[dict[str, Any]], *, tag: str) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        desc = self.blob(json.dumps(index).encode(), OCI_INDEX)
        self._tag(desc, tag)
        return desc

    def _tag(self, desc: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index = [e for e in self.index if e["annotations"]["org.opencontainers.image.ref.name"] != tag]
        self.index.append(entry)
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.index}))

    def ref(self, tag: str) -> str:
        return f"oci:{self.path}:{tag}"

    def archive(self, dest: Path) -> Path:
        """The layout as a tarball (what `oci-archive:` is)."""
        with tarfile.open(dest, "w") as tar:
            for p in sorted(self.path.rglob("*")):
                tar.add(p, arcname=str(p.relative_to(self.path)), recursive=False)
        return dest


def busybox_layer() -> list[TarEntry]:
    """/bin/busybox and the applets the tests use, as symlinks."""
    entries = [directory("bin"), file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [symlink(f"bin/{a}", "busybox") for a in ("sh", "cat", "echo", "ls", "sleep", "true", "id")]
    entries += [directory("tmp", 0o1777), directory("etc"), file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")]
    return entries


def run(*cmd: str, timeout: float = 120) -> str:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def busybox_layout(path: Path, *, tag: str = "1.0", extra: dict[str, bytes] | None = None,
                   config: Sequence[str] = ()) -> str:
    """A busybox image built with umoci in the layout `path`; returns `oci:PATH:TAG`. `extra`
    adds files (path in the image -> content) in a second layer; `config` adds `umoci config`
    flags (`--config.entrypoint=...`)."""
    if not (path / "index.json").exists():
        run("umoci", "init", "--layout", str(path))
    run("umoci", "new", "--image", f"{path}:{tag}")
    bundle = path.parent / f".bundle-{secrets.token_hex(4)}"
    try:
        run("umoci", "unpack", "--image", f"{path}:{tag}", str(bundle))
        rootfs = bundle / "rootfs"
        (rootfs / "bin").mkdir(exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "cat", "echo", "ls", "sleep", "true", "id"):
            os.symlink("busybox", rootfs / "bin" / applet)
        (rootfs / "etc").mkdir(exist_ok=True)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        (rootfs / "tmp").mkdir(exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        run("umoci", "repack", "--image", f"{path}:{tag}", str(bundle))
        if extra:
            for name, data in extra.items():
                target = rootfs / name.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            run("umoci", "repack", "--image", f"{path}:{tag}", str(bundle))
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "config", "--image", f"{path}:{tag}", "--os", "linux", "--architecture", "amd64",
        "--config.cmd", "/bin/sh", "--config.env", "PATH=/bin", *config)
    return f"oci:{path}:{tag}"


def skopeo_copy(src: str, dest: str, *, creds: str | None = None, all_platforms: bool = False) -> None:
    """`skopeo copy SRC DEST`; `docker://` destinations are plain-HTTP registries on 127.0.0.1."""
    cmd = ["skopeo", "copy", "-q", "--dest-tls-verify=false"]
    if creds:
        cmd += ["--dest-creds", creds]
    if all_platforms:
        cmd.append("--all")
    run(*cmd, src, dest)


# --- registries ----------------------------------------------------------------------------------


def bcrypt_htpasswd(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Python 3.11's libcrypt binding: bcrypt, as the registry's htpasswd wants

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return f"{user}:{hashed}\n"


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>. `auth` is None, ("htpasswd", {user: pw})
    or ("token", TokenServer)."""

    def __init__(self, workdir: Path, *, auth: tuple[str, Any] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)},
        }
        if auth is not None and auth[0] == "htpasswd":
            (workdir / "htpasswd").write_text("".join(bcrypt_htpasswd(u, p) for u, p in auth[1].items()))
            cfg["auth"] = {"htpasswd": {"realm": "test-realm", "path": str(workdir / "htpasswd")}}
        elif auth is not None and auth[0] == "token":
            token: TokenServer = auth[1]
            cfg["auth"] = {"token": {"realm": token.realm, "service": token.service, "issuer": token.issuer,
                                     "rootcertbundle": str(token.cert_path)}}
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(json.dumps(cfg))  # YAML is a superset of JSON

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, *, timeout: float = 20.0) -> Registry:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config_path)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1):
                    return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"docker-registry not answering after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self, *, method: str = "GET", path_part: str = "", agent: str = "edgekube") -> int:
        """How many access-log lines show `method` on a path containing `path_part` by `agent`."""
        count = 0
        for line in self.log().splitlines():
            if f'"{method} /v2/' in line and path_part in line.split('"')[1] and f'"{agent}' in line:
                count += 1
        return count

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A distribution token issuer on 127.0.0.1: Basic credentials from `users` get the actions
    they ask for; anyone else gets a token granting nothing. `requests` records (user, scope)."""

    def __init__(self, workdir: Path, *, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.port = free_port()
        self.service = "edgekube-test-registry"
        self.issuer = "edgekube-test-issuer"
        self.requests: list[tuple[str, str]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def _sign(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def _token_for(self, user: str, scopes: list[str]) -> str:
        access = []
        if user:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        return self._sign({"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
                           "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access})

    def start(self) -> TokenServer:
        from aiohttp import web

        async def token(request: web.Request) -> web.Response:
            user = ""
            header = request.headers.get("Authorization", "")
            if header.startswith("Basic "):
                u, _, p = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(u) != p:
                    self.requests.append((f"!{u}", ",".join(request.query.getall("scope", []))))
                    return web.json_response({"details": "bad credentials"}, status=401)
                user = u
            scopes = request.query.getall("scope", [])
            self.requests.append((user, ",".join(scopes)))
            return web.json_response({"token": self._token_for(user, scopes), "expires_in": 300})

        ready = threading.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/token", token)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        def thread_main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=thread_main, name="token-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("token server did not start")
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None


def dockerconfig_secret(registry: str, user: str, password: str, *, name: str = "pull") -> dict[str, Any]:
    """A `kubernetes.io/dockerconfigjson` Secret object as the API returns it."""
    auths = {registry: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}
    data = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": data}}
