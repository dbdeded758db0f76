"""Section 11: what RBAC costs a request.

Through the real API server: GET and CREATE of ConfigMaps as `bench-user` (a client certificate
signed by the cluster CA, allowed by a RoleBinding, so every request goes to the RBAC index)
against the same requests as the admin certificate (`system:masters`, allowed before RBAC is
asked). Both use client certificates, so authentication costs the same. Each side has its own
connection and the requests alternate one by one (admin, user, admin, user, ...), so that
whatever else the machine does meanwhile (other jobs share its CPUs) falls on both alike; the
figure is the ratio of the median latencies, admin/user, which is the ratio of the rates
user/admin of one connection each (target >= 0.9).

GET as a service account's token (from TokenRequest; a signed JWT checked on every request:
signature, claims, the account still there) against the admin certificate, alternating the same
way: what token authentication costs over a client certificate, both through RBAC or
`system:masters` as above.

In process: the cost of one decision, in microseconds, with a realistic policy loaded (the
bootstrap roles plus 100 namespaces with a Role and two RoleBindings each): the gate's memoised
answer (what a request pays once the same attributes were seen), an RBAC walk without the memo
(what the first such request pays), and parsing the attributes from a URL; each as a share of
one GET's latency measured above.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from benchmarks import api_bench, common, servers
from edgekube.api.auth import attributes, authz, bootstrap, rbac
from edgekube.api.auth import user as user_mod

USER = "bench-user"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclasses.dataclass
class RbacResult:
    admin: dict[str, list[float]]  # "GET"/"CREATE" -> latencies (s), alternating with `user`
    user: dict[str, list[float]]
    token_admin: list[float]  # GET latencies (s) as admin, alternating with `token`
    token: list[float]  # GET latencies (s) with a service account's bearer token
    cached_us: float
    uncached_us: float
    parse_us: float

    def median_ms(self, who: str, name: str) -> float:
        return 1000.0 * common.percentile((self.admin if who == "admin" else self.user)[name], 50)

    def ratio(self, name: str) -> float:
        """user's rate / admin's rate on one connection each (= admin's median / user's)."""
        return self.median_ms("admin", name) / self.median_ms("user", name)

    def token_ratio(self) -> float:
        """The token's GET rate / the admin certificate's, on one connection each."""
        return common.percentile(self.token_admin, 50) / common.percentile(self.token, 50)

    def get_latency_us(self) -> float:
        return 1000.0 * self.median_ms("admin", "GET")


def _user_cert(tls: Path, out: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, USER)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    crt, pem = out / "bench-user.crt", out / "bench-user.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


async def _grant(base: str, ctx: ssl.SSLContext) -> None:
    """A Role on ConfigMaps in default and its RoleBinding to the bench user, plus bench-0."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "bench", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "bench", "namespace": "default"},
               "roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "bench"},
               "subjects": [{"apiGroup": rbac.GROUP, "kind": "User", "name": USER}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        for path, obj in (("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", role),
                          ("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", binding),
                          (api_bench.CREATE_PATH, common.configmap("bench-0"))):
            async with session.post(base + path, data=orjson.dumps(obj), headers=JSON) as r:
                if r.status not in (201, 409):
                    raise RuntimeError(f"setup POST {path} -> {r.status}: {(await r.text())[:300]}")


async def _wait_allowed(base: str, ctx: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        for _ in range(100):
            async with session.get(base + api_bench.GET_PATH, headers=JSON) as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError("the bench user was never allowed to GET bench-0")


def _decision_costs(repeats: int = 20000) -> tuple[float, float, float]:
    """(memoised decision, RBAC walk, attribute parse) in microseconds, with a realistic policy."""
    policy = rbac.RBAC(None, prefixes={})  # type: ignore[arg-type]  # the index alone
    for role in bootstrap.cluster_roles():
        policy.index.put(f"/rbac.authorization.k8s.io/clusterroles/{role['metadata']['name']}", role)
    for b in bootstrap.cluster_role_bindings():
        policy.index.put(f"/rbac.authorization.k8s.io/clusterrolebindings/{b['metadata']['name']}", b)
    for i in range(100):
        ns = f"team-{i}"
        policy.index.put(f"/rbac.authorization.k8s.io/roles/{ns}/reader",
                         {"rules": [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list"]}]})
        for j, who in enumerate((f"user-{i}", USER)):
            policy.index.put(f"/rbac.authorization.k8s.io/rolebindings/{ns}/b{j}",
                             {"roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "User", "name": who}]})
    gate = authz.Gate(authz.Chain([authz.Privileged(), policy]))
    who = user_mod.authenticated(USER)
    path = "/api/v1/namespaces/team-50/configmaps/bench-0"
    attrs = attributes.from_http(who, method="GET", path=path, query={})
    assert gate.decide(attrs).allowed

    def timed(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            best = min(best, (time.perf_counter() - t0) / repeats)
        return best * 1e6

    cached = timed(lambda: gate.decide(attrs))  # the memo's lookup (the attributes hashed afresh each time)
    parse = timed(lambda: attributes.from_http(who, method="GET", path=path, query={}))
    uncached = timed(lambda: policy.authorize(attrs))
    return cached, uncached, parse


async def _token(base: str, ctx: ssl.SSLContext) -> str:
    """A token of `bench-sa` in default (made, and bound to the bench Role)."""
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench-sa", "namespace": "default"}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "bench-sa", "namespace": "default"},
               "roleRef": {"apiGroup": rbac.GROUP, "kind": "Role", "name": "bench"},
               "subjects": [{"kind": "ServiceAccount", "name": "bench-sa", "namespace": "default"}]}
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        for path, obj in (("/api/v1/namespaces/default/serviceaccounts", account),
                          ("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", binding)):
            async with session.post(base + path, data=orjson.dumps(obj), headers=JSON) as r:
                if r.status not in (201, 409):
                    raise RuntimeError(f"setup POST {path} -> {r.status}: {(await r.text())[:300]}")
        async with session.post(base + "/api/v1/namespaces/default/serviceaccounts/bench-sa/token",
                                data=orjson.dumps(request), headers=JSON) as r:
            if r.status != 201:
                raise RuntimeError(f"TokenRequest -> {r.status}: {(await r.text())[:300]}")
            token: str = (await r.json())["status"]["token"]
    return token


async def _alternate(base: str, admin_ctx: ssl.SSLContext, user_ctx: ssl.SSLContext, *, name: str, path: str,
                     expect: int, count: int, user_headers: dict[str, str] | None = None) -> tuple[list[float], list[float]]:
    """`count` requests as each, one at a time, taking turns; the latencies of each side."""
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=ctx), headers=headers)
                for ctx, headers in ((admin_ctx, None), (user_ctx, user_headers))]
    out: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(-20, count):  # the first 20 warm the connections, unmeasured
            for side, session in enumerate(sessions):
                body = orjson.dumps(common.configmap(f"rbac-{name.lower()}-{side}-{i + 20}")) if name == "CREATE" else None
                t0 = time.perf_counter()
                async with session.request("POST" if body else "GET", base + path, data=body, headers=JSON) as r:
                    payload = await r.read()
                    if r.status != expect:
                        raise RuntimeError(f"{name} as {('admin', 'user')[side]}: {r.status} {payload[:200]!r}")
                if i >= 0:
                    out[side].append(time.perf_counter() - t0)
    finally:
        for session in sessions:
            await session.close()
    return out


async def _run(data_dir: Path, requests: int, log: Callable[[str], None]) -> RbacResult:
    server = servers.EdgekubeServer(data_dir)
    try:
        await server.wait_ready()
        admin_ctx = server.ssl_context()
        await _grant(server.base, admin_ctx)
        crt, key = _user_cert(server.tls, data_dir.parent)
        user_ctx = ssl.create_default_context(cafile=str(server.tls / "ca.crt"))
        user_ctx.load_cert_chain(str(crt), str(key))
        await _wait_allowed(server.base, user_ctx)
        lat: dict[tuple[str, str], list[float]] = {}
        for name, path, expect in (("GET", api_bench.GET_PATH, 200), ("CREATE", api_bench.CREATE_PATH, 201)):
            admin, user = await _alternate(server.base, admin_ctx, user_ctx, name=name, path=path, expect=expect,
                                           count=requests)
            lat[("admin", name)], lat[("user", name)] = admin, user
            log(f"  {name:6} x1, {len(admin)} each: admin p50 {1000 * common.percentile(admin, 50):.2f} ms, "
                f"user p50 {1000 * common.percentile(user, 50):.2f} ms")
        bearer = {"Authorization": f"Bearer {await _token(server.base, admin_ctx)}"}
        plain_ctx = ssl.create_default_context(cafile=str(server.tls / "ca.crt"))
        for _ in range(100):  # the binding reaches the authorizer through a watch
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=plain_ctx), headers=bearer) as s, \
                    s.get(server.base + api_bench.GET_PATH, headers=JSON) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        token_admin, token = await _alternate(server.base, admin_ctx, plain_ctx, name="GET", path=api_bench.GET_PATH,
                                              expect=200, count=requests, user_headers=bearer)
        log(f"  GET    x1, {len(token)} each: admin p50 {1000 * common.percentile(token_admin, 50):.2f} ms, "
            f"service account token p50 {1000 * common.percentile(token, 50):.2f} ms")
        server.check_alive()
    finally:
        server.stop()
    cached, uncached, parse = _decision_costs()
    log(f"  one decision: memoised {cached:.2f} us, RBAC walk {uncached:.2f} us, attributes parsed {parse:.2f} us")
    return RbacResult(admin={n: lat[("admin", n)] for n in ("GET", "CREATE")},
                      user={n: lat[("user", n)] for n in ("GET", "CREATE")},
                      token_admin=token_admin, token=token, cached_us=cached, uncached_us=uncached, parse_us=parse)


def run(requests: int, log: Callable[[str], None] = print) -> RbacResult:
    data_dir = common.temp_dir("rbac")
    try:
        return asyncio.run(_run(data_dir / "data", requests, log))
    finally:
        common.remove_dir(data_dir)


if __name__ == "__main__":
    res = run(2000)
    for n in ("GET", "CREATE"):
        print(f"{n}: user/admin {res.ratio(n):.3f}")
    print(f"GET with a service account token / admin certificate {res.token_ratio():.3f}")
    share = (res.cached_us + res.parse_us) / res.get_latency_us()
    print(f"decision (memoised + parse) {res.cached_us + res.parse_us:.2f} us = {100 * share:.2f}% of a GET")
