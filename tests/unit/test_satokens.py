"""Service account tokens in process, with fake time: expiry and its leeway, the signing key kept
across restarts, forged and foreign tokens, and the kubelet's token rotation (at 80% of a
token's life, or after 24 hours). The real signatures (OpenSSL) and the real registry are used;
only the clock is fake. The end-to-end behaviour is in tests/e2e/test_service_account_tokens.py
and tests/e2e/test_incluster_client.py."""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube._cogs import clock as clock_mod
from edgekube._cogs import jwsig
from edgekube.api import errors
from edgekube.api.auth import satokens
from edgekube.api.registry import resources, rest, saadmission
from edgekube.client.local import LocalClient
from edgekube.kubelet import tokens as kubelet_tokens
from edgekube.store import store as store_mod

ISSUER = "https://kubernetes.default.svc.cluster.local"


class Env:
    def __init__(self, client: LocalClient, tokens: satokens.ServiceAccountTokens, clock: clock_mod.FakeClock,
                 tls: Path) -> None:
        self.client = client
        self.tokens = tokens
        self.clock = clock
        self.tls = tls

    async def request(self, name: str = "robot", **spec: Any) -> str:
        out = await self.client.create_subresource("v1", "ServiceAccount", name=name, namespace="default",
                                                   subresource="token", body={"spec": spec})
        return str(out["status"]["token"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    catalog = resources.Catalog()
    store = store_mod.Store(store_mod.StoreConfig(path=tmp_path / "db", compaction_interval_seconds=0),
                            memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier])
    await store.start()
    clock = clock_mod.FakeClock()
    registry = rest.Registry(store, catalog=catalog, clock=clock, network=rest.ServiceNetwork())
    await registry.ensure_system_namespaces()
    tokens = satokens.ServiceAccountTokens(store, catalog=catalog, key=satokens.ensure_key(tmp_path / "tls"),
                                           settings=satokens.Settings(issuer=ISSUER, audiences=(ISSUER,)), clock=clock)

    async def token_request(ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await tokens.token_request(namespace=ns, name=name, body=body)

    registry.subresource_creators["serviceaccounts/token"] = token_request
    client = LocalClient(registry)
    await client.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot", "namespace": "default"}})
    try:
        yield Env(client, tokens, clock, tmp_path / "tls")
    finally:
        await store.close()


async def test_expiry_counts_a_minute_of_leeway(env: Env) -> None:
    token = await env.request(expirationSeconds=600)
    assert env.tokens.authenticate_token(token) is not None
    env.clock.advance(600 + 59)
    assert env.tokens.authenticate_token(token) is not None
    env.clock.advance(2)
    with pytest.raises(satokens.Refused, match="service account token has expired"):
        env.tokens.review(token, ())
    with pytest.raises(errors.APIError) as refused:
        env.tokens.authenticate_token(token)
    assert refused.value.code == 401


async def test_the_signing_key_is_kept_private_and_across_restarts(env: Env) -> None:
    path = env.tls / satokens.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = satokens.ensure_key(env.tls)
    assert satokens.key_id(again.public_der()) == env.tokens.kid
    token = await env.request()
    other = satokens.ServiceAccountTokens(env.tokens._store, catalog=resources.Catalog(), key=again,
                                          settings=env.tokens.settings, clock=env.clock)
    assert other.authenticate_token(token) is not None  # a restarted server still accepts it


async def test_forged_and_foreign_tokens(env: Env) -> None:
    token = await env.request()
    stranger = satokens.ServiceAccountTokens(env.tokens._store, catalog=resources.Catalog(), key=jwsig.generate(),
                                             settings=env.tokens.settings, clock=env.clock)
    sa = env.client.get("v1", "ServiceAccount", name="robot", namespace="default")
    forged = stranger.issue(stranger.bound_claims(sa, audiences=[ISSUER], expiration_seconds=3600))
    with pytest.raises(satokens.Refused, match="invalid signature"):
        env.tokens.review(forged, ())
    foreign = satokens.ServiceAccountTokens(env.tokens._store, catalog=resources.Catalog(), key=jwsig.generate(),
                                            settings=satokens.Settings(issuer="https://other", audiences=("x",)),
                                            clock=env.clock)
    assert env.tokens.authenticate_token(foreign.issue({"iss": "https://other"})) is None  # not ours: passed on
    assert env.tokens.authenticate_token("abcdef.0123456789abcdef") is None
    header, claims, sig = token.split(".")
    assert env.tokens.authenticate_token(f"{header}.{claims}.{sig}") is not None


async def test_token_request_validation_and_cap(env: Env) -> None:
    with pytest.raises(errors.APIError) as short:
        await env.request(expirationSeconds=599)
    assert short.value.code == 422
    with pytest.raises(errors.APIError) as long:
        await env.request(expirationSeconds=(1 << 32) + 1)
    assert "may not specify a duration larger than 2^32 seconds" in long.value.message
    with pytest.raises(errors.APIError) as kind:
        await env.request(boundObjectRef={"kind": "ConfigMap", "apiVersion": "v1", "name": "x"})
    assert kind.value.code == 400 and kind.value.message == "cannot bind token to object of type /v1, Kind=ConfigMap"
    env.tokens.settings = satokens.Settings(issuer=ISSUER, audiences=(ISSUER,), max_expiration_seconds=1200)
    out = await env.client.create_subresource("v1", "ServiceAccount", name="robot", namespace="default",
                                              subresource="token", body={"spec": {"expirationSeconds": 7200}})
    assert out["spec"]["expirationSeconds"] == 1200


async def test_the_kubelet_rotates_at_80_percent_or_after_a_day(env: Env) -> None:
    pod = await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                                   "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "x"}]}})
    manager = kubelet_tokens.TokenManager(env.client, clock=env.clock)
    first = await manager.get(pod, audience="", expiration_seconds=3607)
    claims = satokens._parse(first)
    assert claims is not None and claims[1]["kubernetes.io"]["pod"]["uid"] == pod["metadata"]["uid"]
    due = manager.refresh_in(pod["metadata"]["uid"])
    assert due is not None and 3607 * 0.8 - 10 <= due <= 3607 * 0.8
    env.clock.advance(3607 * 0.8 - 11)
    assert await manager.get(pod, audience="", expiration_seconds=3607) == first
    env.clock.advance(12)
    second = await manager.get(pod, audience="", expiration_seconds=3607)
    assert second != first
    day = await manager.get(pod, audience="vault", expiration_seconds=7 * 24 * 3600)
    env.clock.advance(24 * 3600 - 11)
    assert await manager.get(pod, audience="vault", expiration_seconds=7 * 24 * 3600) == day
    env.clock.advance(12)
    assert await manager.get(pod, audience="vault", expiration_seconds=7 * 24 * 3600) != day
    manager.forget(pod["metadata"]["uid"])
    assert manager.refresh_in(pod["metadata"]["uid"]) is None


async def test_a_missing_default_account_is_looked_up_again_before_refusing(env: Env) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    admission = saadmission.ServiceAccountAdmission(env.tokens._store, catalog=resources.Catalog(), sleep=sleep)
    await env.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}})
    pod = {"metadata": {"name": "p", "namespace": "fresh"}, "spec": {"serviceAccountName": "default",
                                                                    "containers": [{"name": "c"}]}}
    with pytest.raises(errors.APIError) as refused:
        await admission.admit(pod, rest.Options())
    assert refused.value.code == 403 and len(slept) == 9 and all(0.1 <= s <= 0.2 for s in slept)
    slept.clear()
    pod["spec"]["serviceAccountName"] = "other"
    with pytest.raises(errors.APIError):
        await admission.admit(pod, rest.Options())
    assert slept == []  # only `default` is waited for


def test_es256_signatures_are_jose_r_s_and_verify_through_openssl() -> None:
    key = jwsig.generate(jwsig.ES256)
    assert key.algorithm == jwsig.ES256 and jwsig.load_private(key.pem()).algorithm == jwsig.ES256
    signature = key.sign(b"header.claims")
    assert len(signature) == 64  # r || s, 32 bytes each (RFC 7518 3.4), not DER
    public = jwsig.load_public(key.public_pem())
    assert public.verify(signature, b"header.claims")
    assert not public.verify(signature, b"header.claimz")
    assert not public.verify(signature[:-1], b"header.claims")
    assert not jwsig.generate(jwsig.ES256).public().verify(signature, b"header.claims")
    # Checked independently of OpenSSL's own DER form, with `cryptography` (test only).
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    checker = serialization.load_pem_public_key(key.public_pem())
    assert isinstance(checker, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    checker.verify(utils.encode_dss_signature(r, s), b"header.claims", ec.ECDSA(hashes.SHA256()))
    jwk = public.jwk("k")
    numbers = checker.public_numbers()
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256"
    assert satokens._unb64(jwk["x"]) == numbers.x.to_bytes(32, "big")
    assert satokens._unb64(jwk["y"]) == numbers.y.to_bytes(32, "big")


async def test_an_ec_signing_key_issues_es256_tokens(env: Env) -> None:
    (env.tls / satokens.KEY_FILE).write_bytes(jwsig.generate(jwsig.ES256).pem())
    key = satokens.ensure_key(env.tls)
    tokens = satokens.ServiceAccountTokens(env.tokens._store, catalog=resources.Catalog(), key=key,
                                           settings=env.tokens.settings, clock=env.clock)
    sa = env.client.get("v1", "ServiceAccount", name="robot", namespace="default")
    token = tokens.issue(tokens.bound_claims(sa, audiences=[ISSUER], expiration_seconds=3600))
    header = satokens._parse(token)
    assert header is not None and header[0] == {"alg": "ES256", "kid": tokens.kid}
    found = tokens.authenticate_token(token)
    assert found is not None and found.name == "system:serviceaccount:default:robot"
    assert tokens.openid_configuration()["id_token_signing_alg_values_supported"] == ["ES256"]
    assert [k["kty"] for k in tokens.jwks()["keys"]] == ["EC"]
    # The same signature under a header claiming RS256 is refused (no algorithm confusion).
    _, claims, signature = token.split(".")
    lying = satokens._b64(b'{"alg":"RS256","kid":"' + tokens.kid.encode() + b'"}')
    with pytest.raises(satokens.Refused, match="invalid signature"):
        tokens.review(f"{lying}.{claims}.{signature}", ())


async def test_extra_verification_keys_accept_old_tokens_and_are_served(env: Env, tmp_path: Path) -> None:
    old_token = await env.request()
    old_key = satokens.ensure_key(env.tls)
    kept, new_kid = satokens.rotate_key(env.tls, algorithm=jwsig.ES256,
                                        now=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
    assert kept.name == "service-account-20300102T030405Z.pub" and stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    new_key = satokens.ensure_key(env.tls)
    assert new_key.algorithm == jwsig.ES256 and satokens.key_id(new_key.public_der()) == new_kid != env.tokens.kid

    def restarted(*key_files: Path) -> satokens.ServiceAccountTokens:
        return satokens.ServiceAccountTokens(env.tokens._store, catalog=resources.Catalog(), key=new_key,
                                             settings=env.tokens.settings, clock=env.clock,
                                             verification_keys=satokens.verification_keys(key_files))

    with_old = restarted(kept)
    assert with_old.authenticate_token(old_token) is not None
    jwks = with_old.jwks()["keys"]
    assert [(k["kid"], k["kty"]) for k in jwks] == [(new_kid, "EC"), (env.tokens.kid, "RSA")]
    assert with_old.openid_configuration()["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    sa = env.client.get("v1", "ServiceAccount", name="robot", namespace="default")
    new_token = with_old.issue(with_old.bound_claims(sa, audiences=[ISSUER], expiration_seconds=3600))
    assert with_old.authenticate_token(new_token) is not None
    # A token whose kid names no key is still tried against each (upstream ignores kid).
    _, claims, _ = old_token.split(".")
    unnamed = satokens._b64(b'{"alg":"RS256"}') + "." + claims
    assert with_old.authenticate_token(f"{unnamed}.{satokens._b64(old_key.sign(unnamed.encode()))}") is not None
    without = restarted()
    with pytest.raises(satokens.Refused, match="invalid signature"):
        without.review(old_token, ())
    assert without.authenticate_token(new_token) is not None
    # A private key file serves as well (its public half); a bad file names itself.
    assert satokens.verification_keys([env.tls / satokens.KEY_FILE])[0].jwk("k")["kty"] == "EC"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(jwsig.SignatureError, match=f"service account verification key {junk}"):
        satokens.verification_keys([junk])
