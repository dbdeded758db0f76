"""`registries.yaml` in k3s's format: mirrors (endpoint lists, optional rewrites) and per-host
configs (auth, TLS).

    mirrors:
      docker.io:
        endpoint: ["https://mirror.local:5000", "http://10.0.0.2:5000"]
        rewrite:
          "^library/(.*)": "dockerhub/$1"
      "*":
        endpoint: ["https://catch-all.local"]
    configs:
      "mirror.local:5000":
        auth: {username: u, password: p}      # or auth: <base64 user:pass>, or token
        tls: {ca_file: ..., cert_file: ..., key_file: ..., insecure_skip_verify: true}

Semantics kept from k3s/containerd: a registry's endpoints are tried in order, and the registry's
own default endpoint is tried last unless it is already listed (docker.io's is
`https://registry-1.docker.io`). `*` names the mirrors of every registry without an entry of its
own. Rewrites apply to mirror endpoints only, first matching pattern wins, Go's `$1`/`${1}`
replacement syntax. An `http://` endpoint is a plain-HTTP (insecure) registry. Loopback
registries (`localhost`, 127.0.0.0/8, ::1) default to plain HTTP as Docker treats them as insecure.
Configs are looked up by the endpoint's host[:port]. Unknown keys are errors naming the file and
key: a typo must not silently send an edge device to the wrong registry.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from edgekube.kubelet.images import reference

DEFAULT_FILE = Path("/etc/edgekube/registries.yaml")


class RegistriesError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Auth:
    username: str = ""
    password: str = ""
    token: str = ""  # a bearer token sent as is (k3s `token`)
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.token or self.identity_token)


@dataclasses.dataclass(frozen=True)
class TLS:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclasses.dataclass(frozen=True)
class HostConfig:
    auth: Auth | None = None
    tls: TLS | None = None


@dataclasses.dataclass(frozen=True)
class Mirror:
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[tuple[str, str], ...] = ()  # (pattern, python replacement)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One place to try: base URL (`https://host:port`), the repository path there, whether it is
    a mirror (rewritten) or the registry itself."""

    url: str
    host: str  # host[:port], the key of configs
    repository: str
    is_mirror: bool

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")


@dataclasses.dataclass(frozen=True)
class Registries:
    mirrors: Mapping[str, Mirror] = dataclasses.field(default_factory=dict)
    configs: Mapping[str, HostConfig] = dataclasses.field(default_factory=dict)
    source: str = "built-in defaults"

    def endpoints(self, ref: reference.Reference) -> list[Endpoint]:
        """Where to look for `ref`'s repository, in order."""
        mirror = self.mirrors.get(ref.domain) or self.mirrors.get("*")
        out: list[Endpoint] = []
        default = default_endpoint(ref.domain)
        if mirror is not None:
            for url in mirror.endpoints:
                base, host = _split_endpoint(url)
                repo = _rewrite(ref.path, mirror.rewrites)
                out.append(Endpoint(url=base, host=host, repository=repo, is_mirror=base != default))
        if all(e.url != default for e in out):
            out.append(Endpoint(url=default, host=urlsplit(default).netloc, repository=ref.path, is_mirror=False))
        # The registry's own endpoint listed as a mirror is not rewritten.
        return [
            dataclasses.replace(e, repository=ref.path) if e.url == default else e
            for e in out
        ]

    def host_config(self, host: str) -> HostConfig:
        return self.configs.get(host) or HostConfig()

    def ssl_context(self, host: str) -> ssl.SSLContext:
        tls = self.host_config(host).tls or TLS()
        ctx = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1:name.index("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_endpoint(domain: str) -> str:
    if domain == reference.DOCKER_HUB:
        return "https://registry-1.docker.io"
    return f"http://{domain}" if is_loopback(domain) else f"https://{domain}"


def _split_endpoint(url: str) -> tuple[str, str]:
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistriesError(f"endpoint {url!r} must be http(s)://host[:port]")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}", parts.netloc


def _rewrite(path: str, rewrites: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in rewrites:
        if re.search(pattern, path):
            return re.sub(pattern, replacement, path, count=1)
    return path


def _go_replacement(text: str) -> str:
    """Go regexp's `$1`, `${1}`, `${name}` into Python's `\\g<1>`; backslashes are literal in Go."""
    text = text.replace("\\", "\\\\")
    text = re.sub(r"\$\{(\w+)\}", r"\\g<\1>", text)
    return re.sub(r"\$(\d+)", r"\\g<\1>", text)


def _expect_keys(value: Any, allowed: set[str], *, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RegistriesError(f"{where} must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise RegistriesError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(allowed))})")
    return value


def _mapping(value: Any, *, where: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RegistriesError(f"{where} must be a mapping")
    return value


def parse(doc: Any, *, source: str) -> Registries:
    top = _expect_keys(doc, {"mirrors", "configs"}, where=source)
    mirrors: dict[str, Mirror] = {}
    for name, raw in _mapping(top.get("mirrors"), where=f"{source}: mirrors").items():
        where = f"{source}: mirrors.{name}"
        body = _expect_keys(raw, {"endpoint", "rewrite"}, where=where)
        endpoints = body.get("endpoint") or []
        if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
            raise RegistriesError(f"{where}.endpoint must be a list of URLs")
        for e in endpoints:
            try:
                _split_endpoint(e)
            except RegistriesError as exc:
                raise RegistriesError(f"{where}.endpoint: {exc}") from None
        rewrites: list[tuple[str, str]] = []
        for pattern, repl in _mapping(body.get("rewrite"), where=f"{where}.rewrite").items():
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise RegistriesError(f"{where}.rewrite: pattern {pattern!r} is not a valid regex ({exc})") from None
            rewrites.append((str(pattern), _go_replacement(str(repl))))
        mirrors[str(name)] = Mirror(tuple(_split_endpoint(e)[0] for e in endpoints), tuple(rewrites))
    configs: dict[str, HostConfig] = {}
    for host, raw in _mapping(top.get("configs"), where=f"{source}: configs").items():
        where = f"{source}: configs.{host}"
        body = _expect_keys(raw, {"auth", "tls"}, where=where)
        auth = None
        if body.get("auth") is not None:
            a = _expect_keys(body["auth"], {"username", "password", "auth", "token", "identitytoken", "identity_token"},
                             where=f"{where}.auth")
            user, pw = str(a.get("username") or ""), str(a.get("password") or "")
            if a.get("auth"):
                try:
                    user, _, pw = base64.b64decode(str(a["auth"])).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RegistriesError(f"{where}.auth.auth is not base64 of user:password") from None
            auth = Auth(user, pw, str(a.get("token") or ""), str(a.get("identitytoken") or a.get("identity_token") or ""))
        tls = None
        if body.get("tls") is not None:
            t = _expect_keys(body["tls"], {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}, where=f"{where}.tls")
            tls = TLS(str(t.get("ca_file") or ""), str(t.get("cert_file") or ""), str(t.get("key_file") or ""),
                      bool(t.get("insecure_skip_verify", False)))
        configs[str(host)] = HostConfig(auth, tls)
    return Registries(mirrors=mirrors, configs=configs, source=source)


def load(path: Path | None = None) -> Registries:
    """Read `path` (default /etc/edgekube/registries.yaml); a missing file means no mirrors."""
    path = path or DEFAULT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registries()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistriesError(f"{path} is not valid YAML: {exc}") from None
    return parse(doc, source=str(path))
