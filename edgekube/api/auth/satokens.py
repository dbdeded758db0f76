"""Service account tokens: signed JWTs issued by the TokenRequest API and checked on every request.

Upstream's model (pkg/serviceaccount, pkg/registry/core/serviceaccount/storage/token.go), kept:

- **Keys.** One signing key in the data dir's `tls/service.key` (k3s's name), made at first boot
  (RSA-2048; 0600, written through a temporary file and a rename), or put there by the
  administrator: an RSA key signs RS256, an EC P-256 key ES256, as upstream's
  --service-account-signing-key-file. Tokens are JWS compact serializations with `kid` the
  base64url SHA-256 of the public key's DER, as upstream computes it. Tokens are accepted when
  signed by that key or by any of the verification keys the configuration lists (upstream's
  repeated --service-account-key-file: the old key after a rotation, `edgekube
  service-account-key rotate`), tried by `kid` first and then each in turn, as upstream tries
  every key; the OIDC discovery documents (`openid_configuration`, `jwks`) list them all, so any
  OIDC library checks the tokens. Signatures are OpenSSL's, reached through `_cogs.jwsig` (see
  there why not `cryptography`).
- **Bound tokens** (`token_request`, the `serviceaccounts/<name>/token` subresource, what
  `kubectl create token` and the kubelet call): claims iss, sub, aud, exp, iat, nbf, jti and the
  private `kubernetes.io` claim (namespace, serviceaccount{name,uid}, and pod{name,uid} (plus
  the pod's node{name,uid}) or secret{name,uid} or node{name,uid} when bound to an object).
  expirationSeconds defaults to 3600, may not be under 600 nor over 2^32, and is cut to the
  configured maximum. A pod-bound token asked for with 3607 seconds (what ServiceAccount
  admission writes in every pod) is issued for a year with `warnafter` at 3607 s when
  expiration extension is on, as upstream's migration aid; the status reports 3607 s.
- **Legacy tokens** (`legacy_token`, for the token controller filling
  `kubernetes.io/service-account-token` Secrets): iss `kubernetes/serviceaccount`, no expiry, no
  audience, the `kubernetes.io/serviceaccount/...` claims; valid while the Secret holds that very
  token and names the account's uid.
- **Authentication** (`authenticate_token`, a `authn.TokenAuthenticator`; `review` for
  TokenReview with its own audiences): a token is ours when it is a JWS whose issuer is ours or
  the legacy one; anything else is passed on (None). Ours are then refused (401) unless the
  signature holds, the time is within [nbf, exp] (a minute of leeway, as go-jose's), the
  audiences meet the ones asked for (the API's own by default), and the ServiceAccount and the
  bound Pod/Secret/Node still exist with the uid in the claims (not deleted more than the
  leeway ago), read through the registry at that moment: a token of a deleted pod stops working
  at once. The user is `system:serviceaccount:<ns>:<name>` with uid the account's, groups
  `system:serviceaccounts`, `system:serviceaccounts:<ns>` (and `system:authenticated`), extra
  `authentication.kubernetes.io/pod-name`, `pod-uid`, `node-name`, `node-uid` and
  `credential-id` (`JTI=<jti>`), exactly upstream's, so RBAC bindings written for a cluster
  apply here unchanged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import hmac
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from edgekube._cogs import clock as clock_mod
from edgekube._cogs import files, jwsig
from edgekube.api import errors
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources
from edgekube.store import errors as store_errors
from edgekube.store import store as store_mod

JSON = dict[str, Any]
log = logging.getLogger(__name__)

KEY_FILE = "service.key"
OIDC_CONFIG_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
LEGACY_ISSUER = "kubernetes/serviceaccount"
GROUP = "authentication.k8s.io"
# Upstream's constants (pkg/serviceaccount/claims.go, apis/authentication/validation).
WARN_ONLY_EXPIRATION_SECONDS = 60 * 60 + 7
EXTENDED_EXPIRATION_SECONDS = 24 * 365 * 60 * 60
DEFAULT_EXPIRATION_SECONDS = 60 * 60
MIN_EXPIRATION_SECONDS = 10 * 60
MAX_EXPIRATION_SECONDS = 1 << 32
LEEWAY_SECONDS = 60  # go-jose's jwt.DefaultLeeway
# user.Info extra keys (k8s.io/apiserver/pkg/authentication/serviceaccount).
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"
# Legacy Secret-based tokens.
SECRET_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
_LEGACY = "kubernetes.io/serviceaccount/"


@dataclasses.dataclass(frozen=True)
class Settings:
    issuer: str  # "https://kubernetes.default.svc.cluster.local" by default, as k3s
    audiences: tuple[str, ...]  # the API's own audiences (upstream's --api-audiences: the issuer)
    max_expiration_seconds: int = 0  # 0: no cap beyond upstream's 2^32 s
    extend_expiration: bool = True  # upstream's --service-account-extend-token-expiration
    # Where the OIDC discovery document says the keys are (upstream: https://<external
    # address>/openid/v1/jwks unless --service-account-jwks-uri); "" for the issuer's host.
    jwks_uri: str = ""


def default_issuer(cluster_domain: str) -> str:
    return f"https://kubernetes.default.svc.{cluster_domain}"


def ensure_key(tls_dir: Path) -> jwsig.PrivateKey:
    """The signing key, made (0600) at first boot."""
    path = tls_dir / KEY_FILE
    try:
        return jwsig.load_private(path.read_bytes())
    except FileNotFoundError:
        pass
    except jwsig.SignatureError as exc:
        raise jwsig.SignatureError(f"{path}: {exc} (remove it to have a new key made; every issued token is then void)") from None
    key = jwsig.generate()
    tls_dir.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, key.pem(), mode=0o600)
    log.info("made the service account signing key %s", path)
    return key


def rotate_key(tls_dir: Path, *, algorithm: str, now: datetime.datetime) -> tuple[Path, str]:
    """A new signing key in `tls/service.key` (RS256: RSA-2048, ES256: EC P-256), the old key's
    public half kept beside it as `service-account-<UTC time>.pub`, to be listed in
    `api.service-account-key-files` until the tokens it signed have expired. Returns that file
    and the new key's kid. The files only: a running server signs with the old key until it restarts."""
    path = tls_dir / KEY_FILE
    try:
        old = jwsig.load_private(path.read_bytes())
    except jwsig.SignatureError as exc:
        raise jwsig.SignatureError(f"{path}: {exc}") from None
    kept = tls_dir / f"service-account-{now.strftime('%Y%m%dT%H%M%SZ')}.pub"
    files.write_atomic(kept, old.public_pem(), mode=0o600)  # before the key it belongs to is gone
    new = jwsig.generate(algorithm)
    files.write_atomic(path, new.pem(), mode=0o600)
    return kept, key_id(new.public_der())


def verification_keys(paths: Sequence[Path]) -> list[jwsig.PublicKey]:
    """The extra keys tokens may be signed with (`api.service-account-key-files`), each file a PEM
    public key or private key (its public half is used); a file that cannot be read stops the boot."""
    keys = []
    for path in paths:
        try:
            keys.append(jwsig.load_public(path.read_bytes()))
        except (OSError, jwsig.SignatureError) as exc:
            raise jwsig.SignatureError(f"service account verification key {path}: {exc}") from None
    return keys


def key_id(public_der: bytes) -> str:
    """Upstream's keyIDFromPublicKey: base64url (no padding) of SHA-256 over the DER PKIX key."""
    return _b64(hashlib.sha256(public_der).digest())


_b64 = jwsig.b64url


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Refused(Exception):
    """A token of ours that does not authenticate; the message is upstream's reason."""


@dataclasses.dataclass(frozen=True)
class Verified:
    user: user_mod.UserInfo
    audiences: tuple[str, ...]


class ServiceAccountTokens:
    """Issues and checks service account tokens (see the module docstring)."""

    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog, key: jwsig.PrivateKey,
                 settings: Settings, clock: clock_mod.Clock, verification_keys: Sequence[jwsig.PublicKey] = ()) -> None:
        self._store = store
        self._catalog = catalog
        self._key = key
        self.kid = key_id(key.public_der())
        # Every key a token may be signed with, by kid: the signing key's first, then the extras.
        self._keys: dict[str, jwsig.PublicKey] = {self.kid: key.public()}
        for extra in verification_keys:
            self._keys.setdefault(key_id(extra.public_der()), extra)
        self.settings = settings
        self._clock = clock
        self._header = _b64(orjson.dumps({"alg": key.algorithm, "kid": self.kid}))
        # Per-request costs, kept small for a Pi: claims of tokens whose signature was checked
        # (a pod presents the same token for an hour), and the uid and deletionTimestamp of the
        # accounts and bound objects, valid while the store's revision is unchanged. Both are
        # bounded (oldest dropped first); neither ever skips the checks of time and existence.
        self._verified: dict[str, JSON] = {}
        self._users: dict[str, user_mod.UserInfo] = {}  # the user of each of those, once it passed
        self._metadata_seen: dict[str, tuple[int, int, JSON]] = {}

    # --- reading objects ------------------------------------------------------------------

    def _get(self, plural: str, namespace: str | None, name: str) -> JSON | None:
        info = self._catalog.lookup("", "v1", plural)
        assert info is not None, plural
        try:
            item = self._store.get(info.key(name, namespace))
            return None if item is None else item.object()
        except store_errors.CorruptRecordError:
            return None

    def _metadata(self, plural: str, namespace: str | None, name: str) -> JSON | None:
        """{"metadata": {uid, deletionTimestamp}} of an object (None: absent). Not read again
        while the store published no write since (its revision is read before the object, so a
        write landing meanwhile bumps it), and not decoded again while the object's own
        revision is unchanged."""
        info = self._catalog.lookup("", "v1", plural)
        assert info is not None, plural
        key = info.key(name, namespace)
        published = self._store.revision
        held = self._metadata_seen.get(key)
        if held is not None and held[0] == published:
            return {"metadata": held[2]}
        try:
            item = self._store.get(key)
            if item is None:
                self._metadata_seen.pop(key, None)
                return None
            if held is not None and held[1] == item.revision:
                small = held[2]
            else:
                meta = item.fields(_METADATA).get("metadata") or {}
                small = {"uid": meta.get("uid"), "deletionTimestamp": meta.get("deletionTimestamp")}
        except store_errors.CorruptRecordError:
            return None
        _remember(self._metadata_seen, key, (published, item.revision, small), limit=_METADATA_CACHE)
        return {"metadata": small}

    # --- issuing --------------------------------------------------------------------------

    def _sign(self, claims: Mapping[str, Any]) -> str:
        signing_input = f"{self._header}.{_b64(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))}"
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def bound_claims(self, sa: Mapping[str, Any], *, audiences: Sequence[str], expiration_seconds: int,
                     warn_after: int = 0, pod: Mapping[str, Any] | None = None,
                     secret: Mapping[str, Any] | None = None, node: Mapping[str, Any] | None = None) -> JSON:
        meta = sa.get("metadata") or {}
        now = self._now()
        private: JSON = {"namespace": meta.get("namespace"),
                         "serviceaccount": {"name": meta.get("name"), "uid": meta.get("uid")}}
        for key, obj in (("pod", pod), ("secret", secret), ("node", node)):
            if obj is not None:
                om = obj.get("metadata") or {}
                private[key] = {"name": om.get("name"), "uid": om.get("uid")}
        if warn_after:
            private["warnafter"] = now + warn_after
        return {"iss": self.settings.issuer, "sub": user_mod.service_account_name(meta["namespace"], meta["name"]),
                "aud": list(audiences), "exp": now + expiration_seconds, "iat": now, "nbf": now,
                "jti": str(uuid.uuid4()), "kubernetes.io": private}

    def issue(self, claims: Mapping[str, Any]) -> str:
        return self._sign(claims)

    def legacy_token(self, sa: Mapping[str, Any], *, secret: Mapping[str, Any]) -> str:
        """The token a `kubernetes.io/service-account-token` Secret holds (upstream's LegacyClaims)."""
        sm, am = secret.get("metadata") or {}, sa.get("metadata") or {}
        ns = str(am.get("namespace"))
        return self._sign({"iss": LEGACY_ISSUER, "sub": user_mod.service_account_name(ns, str(am.get("name"))),
                           _LEGACY + "namespace": ns, _LEGACY + "secret.name": sm.get("name"),
                           _LEGACY + "service-account.name": am.get("name"),
                           _LEGACY + "service-account.uid": am.get("uid")})

    async def token_request(self, *, namespace: str, name: str, body: JSON) -> JSON:
        """serviceaccounts/<name>/token: a TokenRequest answered with its status (201)."""
        spec = body.get("spec")
        spec = dict(spec) if isinstance(spec, dict) else {}
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = DEFAULT_EXPIRATION_SECONDS
        causes = []
        if not isinstance(expiration, int) or isinstance(expiration, bool):
            causes.append(errors.Cause("spec.expirationSeconds", f"Invalid value: {expiration!r}: must be an integer",
                                       "FieldValueInvalid"))
        elif expiration < MIN_EXPIRATION_SECONDS:
            causes.append(errors.Cause("spec.expirationSeconds", f"Invalid value: {expiration}: may not specify a "
                                       "duration less than 10 minutes", "FieldValueInvalid"))
        elif expiration > MAX_EXPIRATION_SECONDS:
            causes.append(errors.Cause("spec.expirationSeconds", f"Invalid value: {expiration}: may not specify a "
                                       "duration larger than 2^32 seconds", "FieldValueInvalid"))
        audiences = spec.get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            causes.append(errors.Cause("spec.audiences", "Invalid value: must be a list of strings", "FieldValueInvalid"))
        if causes:
            raise errors.invalid("TokenRequest", "", causes, group=GROUP)
        sa = self._get("serviceaccounts", namespace, name)
        if sa is None:
            raise errors.not_found("serviceaccounts", name)
        pod = secret = node = None
        ref = spec.get("boundObjectRef")
        if isinstance(ref, dict) and ref:
            kind, api_version = ref.get("kind"), ref.get("apiVersion") or "v1"
            ref_name = str(ref.get("name") or "")
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            bound: JSON | None
            if group == "" and kind == "Pod":
                pod = self._get("pods", namespace, ref_name)
                if pod is None:
                    raise errors.not_found("pods", ref_name)
                if (pod.get("spec") or {}).get("serviceAccountName") != name:
                    raise errors.bad_request(f'cannot bind token for serviceaccount "{name}" to pod running with '
                                             "different serviceaccount name.")
                bound = pod
                node_name = (pod.get("spec") or {}).get("nodeName")
                if node_name:
                    node = self._get("nodes", None, str(node_name))
                    if node is None:  # a pod bound to a node that is gone still gets the node's name
                        node = {"metadata": {"name": node_name}}
            elif group == "" and kind == "Secret":
                secret = bound = self._get("secrets", namespace, ref_name)
                if bound is None:
                    raise errors.not_found("secrets", ref_name)
            elif group == "" and kind == "Node":
                node = bound = self._get("nodes", None, ref_name)
                if bound is None:
                    raise errors.not_found("nodes", ref_name)
            else:
                gvk = f"{group}/{api_version.rsplit('/', 1)[-1]}, Kind={kind}"
                raise errors.bad_request(f"cannot bind token to object of type {gvk}")
            uid = (bound.get("metadata") or {}).get("uid")
            if ref.get("uid") and ref.get("uid") != uid:
                raise errors.conflict(str(kind), ref_name, why=(
                    f"the UID in the bound object reference ({ref.get('uid')}) does not match the UID in record. "
                    "The object might have been deleted and then recreated"))
        if not audiences:
            audiences = list(self.settings.audiences)
        if self.settings.max_expiration_seconds and expiration > self.settings.max_expiration_seconds:
            expiration = self.settings.max_expiration_seconds
        exp, warn_after = expiration, 0
        if (self.settings.extend_expiration and pod is not None and expiration == WARN_ONLY_EXPIRATION_SECONDS
                and set(audiences) <= set(self.settings.audiences)):
            exp, warn_after = EXTENDED_EXPIRATION_SECONDS, expiration
        now = self._now()
        claims = self.bound_claims(sa, audiences=audiences, expiration_seconds=exp, warn_after=warn_after,
                                   pod=pod, secret=secret, node=node if pod is not None or secret is None else None)
        spec["audiences"] = audiences
        spec["expirationSeconds"] = expiration
        expires = datetime.datetime.fromtimestamp(now + expiration, datetime.UTC)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return {"kind": "TokenRequest", "apiVersion": f"{GROUP}/v1",
                "metadata": {**(meta or {}), "name": name, "namespace": namespace,
                             "creationTimestamp": None},
                "spec": spec,
                "status": {"token": self.issue(claims), "expirationTimestamp": clock_mod.rfc3339(expires)}}

    # --- checking -------------------------------------------------------------------------

    def authenticate_token(self, token: str) -> user_mod.UserInfo | None:
        try:
            found = self.review(token, ())
        except Refused as exc:
            # As upstream's "Unable to authenticate the request": the reason is in the log only.
            log.info("unable to authenticate a service account token: %s", exc)
            raise errors.unauthorized() from exc
        return None if found is None else found.user

    def review(self, token: str, audiences: Iterable[str]) -> Verified | None:
        """The user of one of our tokens (None: not ours) for `audiences` (empty: the API's);
        `Refused` with upstream's reason when it is ours and does not authenticate."""
        claims = self._verified.get(token)
        if claims is None:
            parsed = _parse(token)
            if parsed is None:
                return None
            header, claims, signing_input, signature = parsed
            if claims.get("iss") not in (self.settings.issuer, LEGACY_ISSUER):
                return None
            if not self._signed(header, signature, signing_input):
                raise Refused("invalid signature")
            _remember(self._verified, token, claims, limit=_VERIFIED_CACHE)
        issuer = claims.get("iss")
        wanted = tuple(audiences) or self.settings.audiences
        if issuer == LEGACY_ISSUER:
            return Verified(self._legacy_user(token, claims), tuple(a for a in wanted if a in self.settings.audiences))
        token_auds = claims.get("aud")
        if isinstance(token_auds, str):
            token_auds = [token_auds]
        if not isinstance(token_auds, list) or not token_auds:
            token_auds = list(self.settings.audiences)
        met = tuple(a for a in token_auds if a in wanted)
        if not met:
            raise Refused(f"token audiences {_go_list(token_auds)} is invalid for the target audiences {_go_list(wanted)}")
        user = self._bound_user(claims, known=self._users.get(token))
        _remember(self._users, token, user, limit=_VERIFIED_CACHE)
        return Verified(user, met)

    def _signed(self, header: Mapping[str, Any], signature: bytes, signing_input: bytes) -> bool:
        """Whether one of our keys signed it, with the algorithm the header names: the key its
        `kid` names, else each key in turn (upstream ignores `kid` and tries them all)."""
        named = self._keys.get(str(header.get("kid") or ""))
        candidates = [named] if named is not None else list(self._keys.values())
        alg = header.get("alg")
        return any(k.algorithm == alg and k.verify(signature, signing_input) for k in candidates)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._now()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not isinstance(exp, int | float) or now > exp + LEEWAY_SECONDS:
            raise Refused("service account token has expired")
        if isinstance(nbf, int | float) and now + LEEWAY_SECONDS < nbf:
            raise Refused("service account token is not valid yet")
        if isinstance(iat, int | float) and now + LEEWAY_SECONDS < iat:
            raise Refused("service account token is not valid yet")

    def _alive(self, plural: str, namespace: str | None, ref: Any, *, what: str) -> JSON:
        """The object `ref` ({name, uid}) names, if it is still that object and not deleted more
        than the leeway ago."""
        if not isinstance(ref, dict) or not ref.get("name"):
            raise Refused("service account token has been invalidated")
        obj = self._metadata(plural, namespace, str(ref["name"]))
        if obj is None or _deleted_before(obj, self._now() - LEEWAY_SECONDS):
            raise Refused("service account token has been invalidated")
        uid = (obj.get("metadata") or {}).get("uid")
        if uid != ref.get("uid"):
            raise Refused(f"{what} UID ({uid}) does not match service account {what} ref claim ({ref.get('uid')})")
        return obj

    def _bound_user(self, claims: Mapping[str, Any], *, known: user_mod.UserInfo | None) -> user_mod.UserInfo:
        """The token's user once every check passed (`known`: as built for it before)."""
        self._check_times(claims)
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            raise Refused("service account token claims could not be validated due to unexpected private claim")
        namespace = str(private.get("namespace") or "")
        saref = private.get("serviceaccount") or {}
        if not isinstance(saref, dict):
            raise Refused("service account token claims could not be validated due to unexpected private claim")
        sa = self._metadata("serviceaccounts", namespace, str(saref.get("name") or ""))
        if sa is None:
            raise Refused(f'serviceaccounts "{saref.get("name")}" not found')
        if _deleted_before(sa, self._now() - LEEWAY_SECONDS):
            raise Refused(f"service account {namespace}/{saref.get('name')} has been deleted")
        sa_uid = (sa.get("metadata") or {}).get("uid")
        if sa_uid != saref.get("uid"):
            raise Refused(f"service account UID ({sa_uid}) does not match claim ({saref.get('uid')})")
        if private.get("secret") is not None:
            self._alive("secrets", namespace, private["secret"], what="secret")
        podref = private.get("pod")
        found_node = private.get("node")
        noderef: JSON = found_node if isinstance(found_node, dict) else {}
        if podref is not None:
            self._alive("pods", namespace, podref, what="pod")
        node_bound = bool(noderef.get("name"))
        if node_bound and podref is None:  # bound to the node itself: it must live on
            self._alive("nodes", None, noderef, what="node")
        if known is not None:
            return known
        extra: dict[str, list[str]] = {}
        if podref is not None:
            extra[POD_NAME_KEY] = [str(podref["name"])]
            extra[POD_UID_KEY] = [str(podref["uid"])]
        if node_bound:
            extra[NODE_NAME_KEY] = [str(noderef["name"])]
            if noderef.get("uid"):
                extra[NODE_UID_KEY] = [str(noderef["uid"])]
        if claims.get("jti"):
            extra[CREDENTIAL_ID_KEY] = [f"JTI={claims['jti']}"]
        return user_mod.authenticated(user_mod.service_account_name(namespace, str(saref.get("name"))),
                                      groups=user_mod.service_account_groups(namespace), uid=str(sa_uid), extra=extra)

    def _legacy_user(self, token: str, claims: Mapping[str, Any]) -> user_mod.UserInfo:
        namespace = str(claims.get(_LEGACY + "namespace") or "")
        name = str(claims.get(_LEGACY + "service-account.name") or "")
        uid = claims.get(_LEGACY + "service-account.uid")
        secret_name = str(claims.get(_LEGACY + "secret.name") or "")
        if not namespace or not name or not secret_name:
            raise Refused("service account token claims could not be validated due to unexpected private claim")
        secret = self._get("secrets", namespace, secret_name)
        if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp"):
            raise Refused("service account token has been invalidated")
        held = (secret.get("data") or {}).get("token")
        try:
            stored = base64.b64decode(str(held or ""), validate=True)
        except (binascii.Error, ValueError):
            stored = b""
        if not hmac.compare_digest(stored, token.encode()):
            raise Refused("service account token has been invalidated")
        sa = self._get("serviceaccounts", namespace, name)
        if sa is None or (sa.get("metadata") or {}).get("deletionTimestamp"):
            raise Refused(f'serviceaccounts "{name}" not found')
        sa_uid = (sa.get("metadata") or {}).get("uid")
        if sa_uid != uid:
            raise Refused(f"service account UID ({sa_uid}) does not match claim ({uid})")
        return user_mod.authenticated(user_mod.service_account_name(namespace, name),
                                      groups=user_mod.service_account_groups(namespace), uid=str(sa_uid))

    # --- OIDC discovery -------------------------------------------------------------------

    def openid_configuration(self) -> JSON:
        """Upstream's openidConfigResponse for the issuer."""
        jwks_uri = self.settings.jwks_uri or self.settings.issuer.rstrip("/") + JWKS_PATH
        return {"issuer": self.settings.issuer, "jwks_uri": jwks_uri, "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": sorted({k.algorithm for k in self._keys.values()})}

    def jwks(self) -> JSON:
        """Every key tokens may be signed with, each under its own kid."""
        return {"keys": [k.jwk(kid) for kid, k in self._keys.items()]}


_METADATA = frozenset({"metadata"})
_METADATA_CACHE = 1024
_VERIFIED_CACHE = 128


def _remember(cache: dict[str, Any], key: str, value: Any, *, limit: int) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > limit:
        del cache[next(iter(cache))]


def _go_list(values: Iterable[str]) -> str:
    """A []string as Go's %q prints it: ["a" "b"]."""
    return "[" + " ".join(orjson.dumps(v).decode() for v in values) + "]"


def _deleted_before(obj: Mapping[str, Any], limit: int) -> bool:
    stamp = (obj.get("metadata") or {}).get("deletionTimestamp")
    if not stamp:
        return False
    try:
        when = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return True
    return when.timestamp() < limit


def _parse(token: str) -> tuple[JSON, JSON, bytes, bytes] | None:
    """(header, claims, signing input, signature) of a JWS compact token; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        header = orjson.loads(_unb64(parts[0]))
        claims = orjson.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def tokens_for(store: store_mod.Store, *, catalog: resources.Catalog, tls_dir: Path, settings: Settings,
               clock: clock_mod.Clock, key_files: Sequence[Path] = ()) -> ServiceAccountTokens:
    return ServiceAccountTokens(store, catalog=catalog, key=ensure_key(tls_dir), settings=settings, clock=clock,
                                verification_keys=verification_keys(key_files))

