"""Pull from registries over the OCI distribution API (aiohttp).

`Puller.resolve(ref)` asks each endpoint of the reference's registry in turn (mirrors first, from
`registries.yaml`, then the registry itself) for the manifest the tag or digest names, with every
manifest media type in Accept; the first endpoint that answers becomes the `Source` the rest of the
image (platform manifest, config, layers) is fetched from. Every document and blob is verified:
a document fetched by digest must hash to it, and a tag's document must hash to the
`Docker-Content-Digest` the registry claims; a blob must have the descriptor's size and digest
(checked while streaming, so a lying registry costs at most `size` bytes).

Authentication follows the distribution token spec: on `401` with `WWW-Authenticate: Bearer
realm=...,service=...,scope=...` a token is fetched from the realm (with Basic credentials when
there are some, or an OAuth2 refresh-token POST for identity tokens) and cached until it expires;
on `Basic realm=...` the credentials go straight to the registry. Credentials for an endpoint come
from `registries.yaml`'s `configs.<host>.auth`, then from the pod's imagePullSecrets matching the
endpoint's host (credentials.py); a static `token` is sent as a bearer token as is.

Failures are typed (errors.py) and name the reference and, per endpoint tried, what went wrong:
nothing found anywhere is ManifestUnknown, a refusal of credentials AuthenticationError, and
anything else (refused connections, TLS, 5xx) RegistryUnavailable.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from edgekube.kubelet.images import credentials, errors, oci, reference, registries

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]  # called with the bytes received since the last call
_CHUNK = 1 << 16
_WRITE_BATCH = 1 << 20
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclasses.dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower case
    params: dict[str, str]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """RFC 7235 challenges: `Bearer realm="...",service="...",scope="..."`, possibly several."""
    out: list[Challenge] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        m = re.match(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s*", header[pos:])
        if not m:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            pm = _AUTH_PARAM.match(header, pos)
            if not pm:
                break
            value = pm.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else (pm.group(3) or "")
            params[pm.group(1).lower()] = value
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


class _Status(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


def _registry_error(status: int, body: bytes) -> str:
    try:
        doc = orjson.loads(body)
        msgs = [f"{e.get('code')}: {e.get('message')}" for e in doc.get("errors", [])]
        if msgs:
            return "; ".join(msgs)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    return body[:200].decode("utf-8", "replace").strip() or "no details"


@dataclasses.dataclass
class _Token:
    header: str
    expires: float


class Source:
    """One endpoint that answered for a repository, with the credentials that worked there."""

    def __init__(self, puller: Puller, endpoint: registries.Endpoint, creds: Sequence[credentials.Credential],
                 ref: reference.Reference) -> None:
        self.puller = puller
        self.endpoint = endpoint
        self.creds = list(creds)
        self.ref = ref
        # Tokens are cached per set of credentials: a pod without the secret must not ride on
        # a token another pod's secret obtained.
        self.cred_key = hashlib.sha256(
            "\0".join(f"{c.username}\0{c.password}\0{c.identity_token}\0{c.token}" for c in self.creds).encode()
        ).hexdigest()

    def describe(self) -> str:
        return f"{self.endpoint.url}/v2/{self.endpoint.repository}"

    async def manifest(self, locator: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of the manifest or index `locator` (tag or digest) names."""
        url = f"{self.describe()}/manifests/{locator}"
        async with await self.puller._request(self, "GET", url, headers={"Accept": oci.ACCEPT}) as resp:
            body = await resp.content.read(oci.MAX_DOCUMENT_BYTES + 1)
            claimed = resp.headers.get("Docker-Content-Digest")
            ctype = resp.headers.get("Content-Type")
        where = f"manifest {locator} from {self.describe()}"
        if len(body) > oci.MAX_DOCUMENT_BYTES:
            raise errors.ContentError(f"{where}: larger than {oci.MAX_DOCUMENT_BYTES} bytes")
        digest = oci.sha256_digest(body)
        if locator.startswith("sha256:") and digest != locator:
            raise errors.ContentError(f"{where}: content has digest {digest}, not the {locator} asked for")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise errors.ContentError(f"{where}: content has digest {digest}, the registry claims {claimed}")
        return oci.media_type_of(body, header=ctype, where=where), body, digest

    async def blob_bytes(self, desc: oci.Descriptor) -> bytes:
        url = f"{self.describe()}/blobs/{desc.digest}"
        if desc.size > oci.MAX_DOCUMENT_BYTES:
            raise errors.ContentError(f"blob {desc.digest} from {self.describe()}: {desc.size} bytes is too large for a document")
        async with await self.puller._request(self, "GET", url) as resp:
            body = await resp.content.read(desc.size + 1)
        _verify(desc, len(body), oci.sha256_digest(body), where=f"blob {desc.digest} from {self.describe()}")
        return body

    async def blob_to_file(self, desc: oci.Descriptor, path: Path, *, progress: ProgressFn | None = None) -> None:
        """Stream the blob into `path` (created), verifying size and digest."""
        url = f"{self.describe()}/blobs/{desc.digest}"
        where = f"blob {desc.digest} from {self.describe()}"
        h = hashlib.sha256()
        got = 0
        f = await asyncio.to_thread(open, path, "wb")
        try:
            async with await self.puller._request(self, "GET", url) as resp:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    got += len(chunk)
                    if got > desc.size:
                        raise errors.ContentError(f"{where}: more than the {desc.size} bytes the manifest says")
                    h.update(chunk)
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    if pending_size >= _WRITE_BATCH:
                        await asyncio.to_thread(f.write, b"".join(pending))
                        pending, pending_size = [], 0
                if pending:
                    await asyncio.to_thread(f.write, b"".join(pending))
        finally:
            await asyncio.to_thread(f.close)
        _verify(desc, got, "sha256:" + h.hexdigest(), where=where)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _verify(desc: oci.Descriptor, size: int, digest: str, *, where: str) -> None:
    if size != desc.size:
        raise errors.ContentError(f"{where}: got {size} bytes, the manifest says {desc.size} (truncated?)")
    if digest != desc.digest:
        raise errors.ContentError(f"{where}: content has digest {digest}, expected {desc.digest}")


class Puller:
    """Registry access for one image store; holds the HTTP session and cached tokens."""

    def __init__(self, *, registry_config: registries.Registries, user_agent: str = "edgekube") -> None:
        self.registries = registry_config
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._ssl: dict[str, ssl.SSLContext] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15, sock_read=60),
                headers={"User-Agent": self.user_agent},
            )
        return self._session

    def _ssl_for(self, endpoint: registries.Endpoint) -> ssl.SSLContext | bool:
        if endpoint.plain_http:
            return False
        ctx = self._ssl.get(endpoint.host)
        if ctx is None:
            ctx = self._ssl[endpoint.host] = self.registries.ssl_context(endpoint.host)
        return ctx

    def credentials_for(self, endpoint: registries.Endpoint,
                        pull: Sequence[credentials.Credential]) -> list[credentials.Credential]:
        out: list[credentials.Credential] = []
        auth = self.registries.host_config(endpoint.host).auth
        if auth is not None and not auth.empty:
            out.append(credentials.Credential(endpoint.host, "", auth.username, auth.password,
                                              auth.identity_token, auth.token))
        out.extend(credentials.lookup(pull, host=endpoint.host, repository=endpoint.repository))
        return out

    async def resolve(self, ref: reference.Reference, *,
                      pull_credentials: Sequence[credentials.Credential]) -> tuple[Source, str, bytes, str]:
        """Find an endpoint that has `ref`: (source, media type, body, digest) of its manifest."""
        problems: list[str] = []
        kinds: set[str] = set()
        for endpoint in self.registries.endpoints(ref):
            source = Source(self, endpoint, self.credentials_for(endpoint, pull_credentials), ref)
            try:
                media_type, body, digest = await source.manifest(ref.locator)
                return source, media_type, body, digest
            except _Status as exc:
                kinds.add("notfound" if exc.status == 404 else "other")
                problems.append(f"{source.describe()}: {exc}")
            except errors.AuthenticationError as exc:
                kinds.add("auth")
                problems.append(str(exc))
            except errors.ContentError as exc:
                kinds.add("content")
                problems.append(str(exc))
            except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
                kinds.add("other")
                problems.append(f"{source.describe()}: {type(exc).__name__}: {exc}")
            log.info("pull %s: endpoint %s failed: %s", ref, endpoint.url, problems[-1])
        detail = "; ".join(problems)
        if kinds == {"notfound"}:
            raise errors.ManifestUnknown(f"{ref}: not found ({detail})")
        if "auth" in kinds:
            raise errors.AuthenticationError(f"{ref}: {detail}")
        if "content" in kinds:
            raise errors.ContentError(f"{ref}: {detail}")
        raise errors.RegistryUnavailable(f"{ref}: no endpoint answered ({detail})")

    # --- HTTP with auth -----------------------------------------------------------------------

    async def _request(self, source: Source, method: str, url: str, *,
                       headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """A response with status 200 (the caller closes it), or _Status / AuthenticationError."""
        endpoint = source.endpoint
        scope = f"repository:{endpoint.repository}:pull"
        key = (endpoint.url, scope, source.cred_key)
        hdrs = dict(headers or {})
        cached = self._cached_header(source, key)
        if cached:
            hdrs["Authorization"] = cached
        resp = await self._http().request(method, url, headers=hdrs, ssl=self._ssl_for(endpoint))
        if resp.status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.release()
            auth_header = await self._authorize(source, challenge, scope=scope)
            hdrs["Authorization"] = auth_header
            resp = await self._http().request(method, url, headers=hdrs, ssl=self._ssl_for(endpoint))
            if resp.status in (401, 403):
                resp.release()
                given = "with credentials" if source.creds else "without credentials"
                raise errors.AuthenticationError(f"{source.describe()}: access denied {given} (HTTP {resp.status})")
        if resp.status == 403:
            resp.release()
            raise errors.AuthenticationError(f"{source.describe()}: access denied (HTTP 403)")
        if resp.status != 200:
            body = await resp.read()
            resp.release()
            raise _Status(resp.status, _registry_error(resp.status, body))
        return resp

    def _cached_header(self, source: Source, key: tuple[str, str, str]) -> str | None:
        tok = self._tokens.get(key)
        if tok is not None and tok.expires > time.monotonic():
            return tok.header
        return None

    async def _authorize(self, source: Source, header: str, *, scope: str) -> str:
        challenges = parse_www_authenticate(header)
        endpoint = source.endpoint
        for ch in challenges:
            if ch.scheme == "bearer" and ch.params.get("realm"):
                static = [c for c in source.creds if c.token]
                if static:
                    value = "Bearer " + static[0].token
                else:
                    value = await self._bearer(source, ch, scope=ch.params.get("scope") or scope)
                self._tokens[(endpoint.url, scope, source.cred_key)] = _Token(value, time.monotonic() + 50)
                return value
            if ch.scheme == "basic":
                basic = [c for c in source.creds if c.username or c.password]
                if not basic:
                    raise errors.AuthenticationError(
                        f"{source.describe()}: the registry asks for a username and password and no "
                        "imagePullSecret or registries.yaml auth matches this host"
                    )
                c = basic[0]
                value = _basic(c.username, c.password)
                self._tokens[(endpoint.url, scope, source.cred_key)] = _Token(value, time.monotonic() + 3600)
                return value
        raise errors.AuthenticationError(f"{source.describe()}: unauthorized, with no usable challenge ({header!r})")

    async def _bearer(self, source: Source, ch: Challenge, *, scope: str) -> str:
        realm = ch.params["realm"]
        params = {"scope": scope}
        if ch.params.get("service"):
            params["service"] = ch.params["service"]
        candidates: list[credentials.Credential | None] = [
            c for c in source.creds if c.username or c.password or c.identity_token
        ]
        candidates.append(None)  # anonymous, last: public images behind token auth
        problems: list[str] = []
        for cred in candidates:
            try:
                if cred is not None and cred.identity_token:
                    form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                            "client_id": "edgekube", **params}
                    ctx = self._http().post(realm, data=form)
                else:
                    hdrs = {"Authorization": _basic(cred.username, cred.password)} if cred is not None else {}
                    ctx = self._http().get(realm, params=params, headers=hdrs)
                async with ctx as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        problems.append(f"token server {realm} answered HTTP {resp.status}"
                                        f" {'as ' + cred.username if cred is not None else 'anonymously'}")
                        continue
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise errors.RegistryUnavailable(f"{source.describe()}: token server {realm}: {exc}") from None
            try:
                doc: Any = orjson.loads(body)
                token = doc.get("token") or doc.get("access_token")
            except (orjson.JSONDecodeError, AttributeError):
                token = None
            if not isinstance(token, str) or not token:
                problems.append(f"token server {realm} sent no token")
                continue
            return f"Bearer {token}"
        raise errors.AuthenticationError(f"{source.describe()}: {'; '.join(problems)}")
