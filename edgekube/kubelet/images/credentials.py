"""Registry credentials from imagePullSecrets, matched as the kubelet's keyring matches them.

A secret of type `kubernetes.io/dockerconfigjson` holds `{"auths": {KEY: {auth | username,
password}}}` in `.dockerconfigjson`; the legacy `kubernetes.io/dockercfg` holds the `auths` map
itself in `.dockercfg`. KEY is a registry host, optionally with scheme, port, a path prefix, or a
`*.` glob per host label (`https://index.docker.io/v1/` is Docker Hub). An endpoint gets the
credentials whose key matches its host and whose path is a prefix of the repository; the most
specific key (longest path) wins. Credentials go only to the host they name: a mirror does not
receive the upstream registry's password unless a secret names the mirror too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from edgekube.kubelet.images import reference

_HUB_KEYS = {"index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com"}


@dataclasses.dataclass(frozen=True)
class Credential:
    host: str  # host[:port] pattern, may hold `*` labels
    path: str  # repository prefix, "" for any
    username: str
    password: str
    identity_token: str = ""
    token: str = ""  # a bearer token used as is (registries.yaml `token`)


def _normalise_key(key: str) -> tuple[str, str]:
    text = key if "://" in key else "//" + key
    parts = urlsplit(text)
    host = parts.netloc.lower()
    path = parts.path.strip("/")
    if host in _HUB_KEYS:
        host = reference.DOCKER_HUB
        if path in ("v1", "v2"):
            path = ""
    return host, path


def _entry(key: str, raw: Any) -> Credential | None:
    if not isinstance(raw, Mapping):
        return None
    user, password = str(raw.get("username") or ""), str(raw.get("password") or "")
    if raw.get("auth"):
        try:
            user, _, password = base64.b64decode(str(raw["auth"])).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
    host, path = _normalise_key(key)
    return Credential(host, path, user, password, str(raw.get("identitytoken") or ""))


def from_docker_config(auths: Mapping[str, Any]) -> list[Credential]:
    return [c for k, v in auths.items() if (c := _entry(str(k), v)) is not None]


def from_secrets(secrets: Iterable[Mapping[str, Any]]) -> list[Credential]:
    """Credentials from Secret objects (as the API returns them: `data` values base64)."""
    out: list[Credential] = []
    for secret in secrets:
        data = secret.get("data") or {}
        kind = secret.get("type")
        field = ".dockerconfigjson" if kind == "kubernetes.io/dockerconfigjson" else ".dockercfg"
        raw = data.get(field)
        if not raw:
            continue
        try:
            doc = orjson.loads(base64.b64decode(raw))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            continue  # a broken secret is the API's validation problem; it gives no credentials
        if not isinstance(doc, Mapping):
            continue
        auths = doc.get("auths") if field == ".dockerconfigjson" else doc
        if isinstance(auths, Mapping):
            out.extend(from_docker_config(auths))
    return out


def _host_matches(pattern: str, host: str) -> bool:
    if "*" not in pattern:
        return pattern == host
    p_name, _, p_port = pattern.partition(":")
    h_name, _, h_port = host.partition(":")
    p_labels, h_labels = p_name.split("."), h_name.split(".")
    if p_port != h_port or len(p_labels) != len(h_labels):
        return False
    return all(fnmatch.fnmatchcase(h, p) for p, h in zip(p_labels, h_labels, strict=True))


def lookup(creds: Iterable[Credential], *, host: str, repository: str) -> list[Credential]:
    """Matching credentials, most specific first (the puller tries them in turn)."""
    host = host.lower()
    if host in _HUB_KEYS:
        host = reference.DOCKER_HUB
    hits = [
        c for c in creds
        if _host_matches(c.host, host) and (not c.path or repository == c.path or repository.startswith(c.path + "/"))
    ]
    return sorted(hits, key=lambda c: ("*" in c.host, -len(c.path)))
