"""JWS signatures through OpenSSL's EVP interface: `RS256` (RSASSA-PKCS1-v1_5 with SHA-256) with
an RSA key, `ES256` (ECDSA on P-256 with SHA-256) with an EC key.

Why not `cryptography`: loading its RSA module keeps about 11 MiB resident in a process whose
idle RSS is a benchmark target (docs/performance.md), and service account tokens are signed and
checked by the long-running server on every request that carries one. The server already has
OpenSSL's libcrypto mapped for TLS (see `libcrypto`); reaching it through ctypes costs nothing
measurable. As `aesgcm` does for AES-GCM.

Nothing here is cryptography written by hand: key generation, PEM encoding, signing and
verification are OpenSSL's (`EVP_PKEY_keygen`, `PEM_write_bio_PrivateKey`, `EVP_DigestSign`,
`EVP_DigestVerify`). What is parsed here is DER, fixed and tiny structures: the public key's
SubjectPublicKeyInfo (from `i2d_PUBKEY`), for its algorithm and for a JWK's numbers (RSA's modulus
and exponent, the EC point's x and y); and an ECDSA signature, which OpenSSL writes as DER
(`SEQUENCE {r, s}`) and JWS as `r || s`, each 32 bytes (RFC 7518 3.4), so it is turned from one
to the other around each call.

Keys are opaque handles (`PrivateKey`, `PublicKey`) freed with the object. A key is only read
once loaded, so any thread may sign or verify with it (each call makes its own digest context).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
from collections.abc import Callable, Iterator
from typing import Any

from edgekube._cogs import libcrypto

_EVP_PKEY_RSA = 6
_EVP_PKEY_EC = 408
_NID_P256 = 415  # NID_X9_62_prime256v1
# EVP_PKEY_CTX_set_ec_paramgen_curve_nid is a macro over this control in OpenSSL 1.1 and a
# function in 3.x: the control works in both.
_EVP_PKEY_OP_PARAMGEN_KEYGEN = (1 << 1) | (1 << 2)
_EVP_PKEY_CTRL_EC_PARAMGEN_CURVE_NID = 0x1000 + 1
_BIO_CTRL_INFO = 3
RS256 = "RS256"
ES256 = "ES256"
_P256_COORDINATE = 32


class SignatureError(Exception):
    """OpenSSL could not be used, or a key could not be read or made, or is of a kind not served."""


def _declare(lib: ctypes.CDLL) -> None:
    vp, ip, cp, sz, lg = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long
    table: dict[str, tuple[Any, list[Any]]] = {
        "EVP_PKEY_CTX_new_id": (vp, [ip, vp]),
        "EVP_PKEY_CTX_free": (None, [vp]),
        "EVP_PKEY_keygen_init": (ip, [vp]),
        "EVP_PKEY_keygen": (ip, [vp, ctypes.POINTER(vp)]),
        "EVP_PKEY_free": (None, [vp]),
        "BIO_new": (vp, [vp]),
        "BIO_s_mem": (vp, []),
        "BIO_new_mem_buf": (vp, [cp, ip]),
        "BIO_ctrl": (lg, [vp, ip, lg, vp]),
        "BIO_free": (ip, [vp]),
        "PEM_write_bio_PrivateKey": (ip, [vp, vp, vp, vp, ip, vp, vp]),
        "PEM_read_bio_PrivateKey": (vp, [vp, vp, vp, vp]),
        "PEM_read_bio_PUBKEY": (vp, [vp, vp, vp, vp]),
        "PEM_write_bio_PUBKEY": (ip, [vp, vp]),
        "EVP_PKEY_CTX_ctrl": (ip, [vp, ip, ip, ip, ip, vp]),
        "i2d_PUBKEY": (ip, [vp, ctypes.POINTER(ctypes.c_char_p)]),
        "d2i_PUBKEY": (vp, [vp, ctypes.POINTER(ctypes.c_char_p), lg]),
        "EVP_MD_CTX_new": (vp, []),
        "EVP_MD_CTX_free": (None, [vp]),
        "EVP_sha256": (vp, []),
        "EVP_DigestSignInit": (ip, [vp, vp, vp, vp, vp]),
        "EVP_DigestSign": (ip, [vp, cp, ctypes.POINTER(sz), cp, sz]),
        "EVP_DigestVerifyInit": (ip, [vp, vp, vp, vp, vp]),
        "EVP_DigestVerify": (ip, [vp, cp, sz, cp, sz]),
        "ERR_clear_error": (None, []),
    }
    for name, (restype, argtypes) in table.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


_binding = libcrypto.Binding(_declare, error=SignatureError, need="token signatures")
_load = _binding.get


class _Key:
    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle
        self._algorithm = ""  # read once: each signature and verification asks

    @property
    def handle(self) -> int:
        assert self._handle is not None
        return self._handle

    @property
    def algorithm(self) -> str:
        """The JWS algorithm this key signs with: RS256 (RSA) or ES256 (EC P-256)."""
        if not self._algorithm:
            self._algorithm = algorithm_of(self.public_der())
        return self._algorithm

    def public_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (what upstream hashes into a key id)."""
        lib = _load()
        n = lib.i2d_PUBKEY(self.handle, None)
        if n <= 0:
            lib.ERR_clear_error()
            raise SignatureError("OpenSSL could not encode the public key")
        buf = ctypes.create_string_buffer(n)
        cursor = ctypes.c_char_p(ctypes.addressof(buf))
        lib.i2d_PUBKEY(self.handle, ctypes.byref(cursor))
        return buf.raw[:n]

    def __del__(self) -> None:
        lib = _binding.loaded
        if self._handle is not None and lib is not None:
            lib.EVP_PKEY_free(self._handle)
            self._handle = None


    def _pem(self, write: Callable[[ctypes.CDLL, int], int], what: str) -> bytes:
        lib = _load()
        bio = lib.BIO_new(lib.BIO_s_mem())
        if not bio:
            raise SignatureError("OpenSSL could not allocate a memory BIO")
        try:
            if write(lib, bio) != 1:
                lib.ERR_clear_error()
                raise SignatureError(f"OpenSSL could not write the {what} as PEM")
            return _bio_bytes(lib, bio)
        finally:
            lib.BIO_free(bio)

    def public_pem(self) -> bytes:
        """The public key as PEM (`PUBLIC KEY`, SubjectPublicKeyInfo)."""
        return self._pem(lambda lib, bio: int(lib.PEM_write_bio_PUBKEY(bio, self.handle)), "public key")


class PrivateKey(_Key):
    def pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (the file holding it is 0600)."""
        return self._pem(lambda lib, bio: int(lib.PEM_write_bio_PrivateKey(bio, self.handle, None, None, 0, None, None)),
                         "private key")

    def public(self) -> PublicKey:
        return public_from_der(self.public_der())

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of `data`: RS256 with an RSA key, ES256 (`r || s`) with an EC key."""
        with _digest("DigestSignInit", self.handle) as (lib, ctx):
            size = ctypes.c_size_t(0)
            if lib.EVP_DigestSign(ctx, None, ctypes.byref(size), data, len(data)) != 1:
                lib.ERR_clear_error()
                raise SignatureError("OpenSSL could not size a signature")
            out = ctypes.create_string_buffer(size.value)
            if lib.EVP_DigestSign(ctx, out, ctypes.byref(size), data, len(data)) != 1:
                lib.ERR_clear_error()
                raise SignatureError("OpenSSL could not make a signature")
            signature = out.raw[:size.value]
        return _ecdsa_to_jose(signature) if self.algorithm == ES256 else signature


class PublicKey(_Key):
    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` is this key's JWS signature of `data` (RS256, or ES256 as `r || s`)."""
        if self.algorithm == ES256:
            if len(signature) != 2 * _P256_COORDINATE:
                return False
            signature = _jose_to_ecdsa(signature)
        with _digest("DigestVerifyInit", self.handle) as (lib, ctx):
            ok = bool(lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) == 1)
            if not ok:
                lib.ERR_clear_error()
            return ok

    def numbers(self) -> tuple[int, int]:
        """(modulus n, public exponent e), read from the DER SubjectPublicKeyInfo."""
        return rsa_numbers(self.public_der())

    def jwk(self, kid: str) -> dict[str, str]:
        """The key as a JSON Web Key (RFC 7517/7518), as upstream's OIDC discovery serves it."""
        der = self.public_der()
        if algorithm_of(der) == ES256:
            x, y = ec_point(der)
            return {"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": ES256, "x": b64url(x), "y": b64url(y)}
        n, e = rsa_numbers(der)
        return {"use": "sig", "kty": "RSA", "kid": kid, "alg": RS256, "n": b64url(_unsigned(n)), "e": b64url(_unsigned(e))}


@contextlib.contextmanager
def _digest(init: str, key: int) -> Iterator[tuple[ctypes.CDLL, int]]:
    """A SHA-256 digest context set up by `EVP_<init>` (sign or verify) for `key`, freed after."""
    lib = _load()
    ctx = lib.EVP_MD_CTX_new()
    if not ctx:
        raise SignatureError("OpenSSL could not allocate a digest context")
    try:
        if getattr(lib, f"EVP_{init}")(ctx, None, lib.EVP_sha256(), None, key) != 1:
            lib.ERR_clear_error()
            raise SignatureError(f"OpenSSL could not start a signature or verification (EVP_{init})")
        yield lib, ctx
    finally:
        lib.EVP_MD_CTX_free(ctx)


def _bio_bytes(lib: ctypes.CDLL, bio: int) -> bytes:
    ptr = ctypes.c_void_p()
    n = lib.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(ptr))
    if n <= 0 or not ptr.value:
        raise SignatureError("OpenSSL wrote nothing")
    return ctypes.string_at(ptr.value, n)


def generate(algorithm: str = RS256) -> PrivateKey:
    """A new key: RS256, 2048-bit RSA (OpenSSL's default size and exponent 65537); ES256, EC P-256."""
    if algorithm not in (RS256, ES256):
        raise SignatureError(f"cannot make a key for {algorithm!r}: expected {RS256} or {ES256}")
    lib = _load()
    ctx = lib.EVP_PKEY_CTX_new_id(_EVP_PKEY_EC if algorithm == ES256 else _EVP_PKEY_RSA, None)
    if not ctx:
        raise SignatureError("OpenSSL could not allocate a key generation context")
    try:
        key = ctypes.c_void_p()
        if (lib.EVP_PKEY_keygen_init(ctx) != 1
                or (algorithm == ES256 and lib.EVP_PKEY_CTX_ctrl(ctx, _EVP_PKEY_EC, _EVP_PKEY_OP_PARAMGEN_KEYGEN,
                                                                 _EVP_PKEY_CTRL_EC_PARAMGEN_CURVE_NID, _NID_P256, None) <= 0)
                or lib.EVP_PKEY_keygen(ctx, ctypes.byref(key)) != 1 or not key.value):
            lib.ERR_clear_error()
            raise SignatureError(f"OpenSSL could not generate an {algorithm} key")
        return PrivateKey(key.value)
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def _read_pem(pem: bytes, read: Callable[[ctypes.CDLL, int], int], what: str) -> int:
    """The EVP_PKEY handle `read` (a PEM_read_bio_* call) makes of `pem`."""
    lib = _load()
    bio = lib.BIO_new_mem_buf(pem, len(pem))
    if not bio:
        raise SignatureError("OpenSSL could not allocate a memory BIO")
    try:
        key = read(lib, bio)
        if not key:
            lib.ERR_clear_error()
            raise SignatureError(f"not a PEM {what} OpenSSL can read")
        return key
    finally:
        lib.BIO_free(bio)


def load_private(pem: bytes) -> PrivateKey:
    out = PrivateKey(_read_pem(pem, lambda lib, bio: int(lib.PEM_read_bio_PrivateKey(bio, None, None, None) or 0),
                               "private key"))
    algorithm_of(out.public_der())  # an RSA or P-256 key, not another kind
    return out


def load_public(pem: bytes) -> PublicKey:
    """A PEM public key (`PUBLIC KEY`), or the public half of a PEM private key, as upstream's
    --service-account-key-file takes either."""
    if b"PRIVATE KEY-----" in pem:
        return load_private(pem).public()
    out = PublicKey(_read_pem(pem, lambda lib, bio: int(lib.PEM_read_bio_PUBKEY(bio, None, None, None) or 0),
                              "public or private key"))
    algorithm_of(out.public_der())
    return out


def public_from_der(der: bytes) -> PublicKey:
    lib = _load()
    cursor = ctypes.c_char_p(der)
    key = lib.d2i_PUBKEY(None, ctypes.byref(cursor), len(der))
    if not key:
        lib.ERR_clear_error()
        raise SignatureError("not a DER public key OpenSSL can read")
    return PublicKey(key)


# --- the public key's numbers (DER) ---------------------------------------------------------------

_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_EC_OID = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1 id-ecPublicKey
_P256_OID = bytes.fromhex("2a8648ce3d030107")  # 1.2.840.10045.3.1.7 prime256v1


def _tlv(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    """The value of the DER element of `tag` at `at`, and where the next element starts."""
    if at + 2 > len(data) or data[at] != tag:
        raise SignatureError(f"malformed public key: expected DER tag {tag:#x} at byte {at}")
    size, at = data[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise SignatureError("malformed public key: bad DER length")
        size, at = int.from_bytes(data[at:at + count], "big"), at + count
    if at + size > len(data):
        raise SignatureError("malformed public key: DER element longer than the key")
    return data[at:at + size], at + size


def _spki(spki: bytes) -> tuple[bytes, bytes | None, bytes]:
    """(algorithm OID, its parameter OID if any, the key's bits) of a DER SubjectPublicKeyInfo."""
    outer, _ = _tlv(spki, 0, 0x30)
    algorithm, rest = _tlv(outer, 0, 0x30)
    oid, after = _tlv(algorithm, 0, 0x06)
    param = _tlv(algorithm, after, 0x06)[0] if after < len(algorithm) and algorithm[after] == 0x06 else None
    bits, _ = _tlv(outer, rest, 0x03)
    if not bits or bits[0] != 0:
        raise SignatureError("malformed public key: bit string with unused bits")
    return oid, param, bits[1:]


def algorithm_of(spki: bytes) -> str:
    """RS256 for an RSA key, ES256 for an EC P-256 key; any other kind is refused."""
    oid, param, _ = _spki(spki)
    if oid == _RSA_OID:
        return RS256
    if oid == _EC_OID and param == _P256_OID:
        return ES256
    if oid == _EC_OID:
        raise SignatureError("the key is an EC key on a curve other than P-256 (ES256 needs P-256)")
    raise SignatureError("the key is neither an RSA nor an EC P-256 key")


def ec_point(spki: bytes) -> tuple[bytes, bytes]:
    """(x, y), 32 bytes each, of a DER SubjectPublicKeyInfo holding an uncompressed P-256 point."""
    if algorithm_of(spki) != ES256:
        raise SignatureError("the key is not an EC P-256 key")
    point = _spki(spki)[2]
    if len(point) != 1 + 2 * _P256_COORDINATE or point[0] != 4:
        raise SignatureError("the EC public key is not an uncompressed P-256 point")
    return point[1:1 + _P256_COORDINATE], point[1 + _P256_COORDINATE:]


def rsa_numbers(spki: bytes) -> tuple[int, int]:
    """(n, e) of a DER SubjectPublicKeyInfo holding an RSA key."""
    oid, _, bits = _spki(spki)
    if oid != _RSA_OID:
        raise SignatureError("the key is not an RSA key")
    pair, _ = _tlv(bits, 0, 0x30)
    n, after = _tlv(pair, 0, 0x02)
    e, _ = _tlv(pair, after, 0x02)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


# --- ECDSA signatures: DER (OpenSSL) and r || s (JWS) ---------------------------------------------

def _ecdsa_to_jose(der: bytes) -> bytes:
    """DER `SEQUENCE {INTEGER r, INTEGER s}` to `r || s`, each left-padded to 32 bytes."""
    pair, _ = _tlv(der, 0, 0x30)
    r, after = _tlv(pair, 0, 0x02)
    s, _ = _tlv(pair, after, 0x02)
    return b"".join(int.from_bytes(v, "big").to_bytes(_P256_COORDINATE, "big") for v in (r, s))


def _der_integer(value: bytes) -> bytes:
    body = value.lstrip(b"\0") or b"\0"
    if body[0] & 0x80:
        body = b"\0" + body  # positive: DER integers are signed
    return b"\x02" + bytes([len(body)]) + body


def _jose_to_ecdsa(signature: bytes) -> bytes:
    """`r || s` (64 bytes) to the DER OpenSSL verifies."""
    body = _der_integer(signature[:_P256_COORDINATE]) + _der_integer(signature[_P256_COORDINATE:])
    return b"\x30" + bytes([len(body)]) + body  # at most 70 bytes: a short-form length


def _unsigned(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def b64url(data: bytes) -> str:
    """base64url without padding, as JWS writes every part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
