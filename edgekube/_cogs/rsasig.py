"""RSA signatures (RSASSA-PKCS1-v1_5 with SHA-256: JWS `RS256`) through OpenSSL's EVP interface.

Why not `cryptography`: loading its RSA module keeps about 11 MiB resident in a process whose
idle RSS is a benchmark target (docs/performance.md), and service account tokens are signed and
checked by the long-running server on every request that carries one. The server already has
OpenSSL's libcrypto mapped for TLS (see `libcrypto`); reaching it through ctypes costs nothing
measurable. As `aesgcm` does for AES-GCM.

Nothing here is cryptography written by hand: key generation, PEM encoding, signing and
verification are OpenSSL's (`EVP_PKEY_keygen`, `PEM_write_bio_PrivateKey`, `EVP_DigestSign`,
`EVP_DigestVerify`). The one thing parsed here is the public key's DER (SubjectPublicKeyInfo,
from `i2d_PUBKEY`) to read its modulus and exponent for a JWK: a fixed, tiny structure.

Keys are opaque handles (`PrivateKey`, `PublicKey`) freed with the object. A key is only read
once loaded, so any thread may sign or verify with it (each call makes its own digest context).
"""

from __future__ import annotations

import ctypes
from typing import Any

from edgekube._cogs import libcrypto

_EVP_PKEY_RSA = 6
_BIO_CTRL_INFO = 3


class RsaError(Exception):
    """OpenSSL could not be used, or a key could not be read or made."""




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


_binding = libcrypto.Binding(_declare, error=RsaError, need="RSA signatures")
_load = _binding.get


class _Key:
    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle

    @property
    def handle(self) -> int:
        assert self._handle is not None
        return self._handle

    def public_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (what upstream hashes into a key id)."""
        lib = _load()
        n = lib.i2d_PUBKEY(self.handle, None)
        if n <= 0:
            lib.ERR_clear_error()
            raise RsaError("OpenSSL could not encode the public key")
        buf = ctypes.create_string_buffer(n)
        cursor = ctypes.c_char_p(ctypes.addressof(buf))
        lib.i2d_PUBKEY(self.handle, ctypes.byref(cursor))
        return buf.raw[:n]

    def __del__(self) -> None:
        lib = _binding.loaded
        if self._handle is not None and lib is not None:
            lib.EVP_PKEY_free(self._handle)
            self._handle = None


class PrivateKey(_Key):
    def pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (the file holding it is 0600)."""
        lib = _load()
        bio = lib.BIO_new(lib.BIO_s_mem())
        if not bio:
            raise RsaError("OpenSSL could not allocate a memory BIO")
        try:
            if lib.PEM_write_bio_PrivateKey(bio, self.handle, None, None, 0, None, None) != 1:
                lib.ERR_clear_error()
                raise RsaError("OpenSSL could not write the private key as PEM")
            return _bio_bytes(lib, bio)
        finally:
            lib.BIO_free(bio)

    def public(self) -> PublicKey:
        return public_from_der(self.public_der())

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over SHA-256 of `data` (JWS RS256)."""
        lib = _load()
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise RsaError("OpenSSL could not allocate a digest context")
        try:
            if lib.EVP_DigestSignInit(ctx, None, lib.EVP_sha256(), None, self.handle) != 1:
                lib.ERR_clear_error()
                raise RsaError("OpenSSL could not start an RS256 signature")
            size = ctypes.c_size_t(0)
            if lib.EVP_DigestSign(ctx, None, ctypes.byref(size), data, len(data)) != 1:
                lib.ERR_clear_error()
                raise RsaError("OpenSSL could not size an RS256 signature")
            out = ctypes.create_string_buffer(size.value)
            if lib.EVP_DigestSign(ctx, out, ctypes.byref(size), data, len(data)) != 1:
                lib.ERR_clear_error()
                raise RsaError("OpenSSL could not make an RS256 signature")
            return out.raw[:size.value]
        finally:
            lib.EVP_MD_CTX_free(ctx)


class PublicKey(_Key):
    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` is this key's RS256 signature of `data`."""
        lib = _load()
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise RsaError("OpenSSL could not allocate a digest context")
        try:
            if lib.EVP_DigestVerifyInit(ctx, None, lib.EVP_sha256(), None, self.handle) != 1:
                lib.ERR_clear_error()
                raise RsaError("OpenSSL could not start an RS256 verification")
            ok = bool(lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) == 1)
            if not ok:
                lib.ERR_clear_error()
            return ok
        finally:
            lib.EVP_MD_CTX_free(ctx)

    def numbers(self) -> tuple[int, int]:
        """(modulus n, public exponent e), read from the DER SubjectPublicKeyInfo."""
        return rsa_numbers(self.public_der())


def _bio_bytes(lib: ctypes.CDLL, bio: int) -> bytes:
    ptr = ctypes.c_void_p()
    n = lib.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(ptr))
    if n <= 0 or not ptr.value:
        raise RsaError("OpenSSL wrote nothing")
    return ctypes.string_at(ptr.value, n)


def generate() -> PrivateKey:
    """A new 2048-bit RSA key (OpenSSL's default size and exponent 65537)."""
    lib = _load()
    ctx = lib.EVP_PKEY_CTX_new_id(_EVP_PKEY_RSA, None)
    if not ctx:
        raise RsaError("OpenSSL could not allocate a key generation context")
    try:
        key = ctypes.c_void_p()
        if lib.EVP_PKEY_keygen_init(ctx) != 1 or lib.EVP_PKEY_keygen(ctx, ctypes.byref(key)) != 1 or not key.value:
            lib.ERR_clear_error()
            raise RsaError("OpenSSL could not generate an RSA key")
        return PrivateKey(key.value)
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def load_private(pem: bytes) -> PrivateKey:
    lib = _load()
    bio = lib.BIO_new_mem_buf(pem, len(pem))
    if not bio:
        raise RsaError("OpenSSL could not allocate a memory BIO")
    try:
        key = lib.PEM_read_bio_PrivateKey(bio, None, None, None)
        if not key:
            lib.ERR_clear_error()
            raise RsaError("not a PEM private key OpenSSL can read")
        out = PrivateKey(key)
    finally:
        lib.BIO_free(bio)
    rsa_numbers(out.public_der())  # an RSA key, not another kind
    return out


def public_from_der(der: bytes) -> PublicKey:
    lib = _load()
    cursor = ctypes.c_char_p(der)
    key = lib.d2i_PUBKEY(None, ctypes.byref(cursor), len(der))
    if not key:
        lib.ERR_clear_error()
        raise RsaError("not a DER public key OpenSSL can read")
    return PublicKey(key)


# --- the public key's numbers (DER) ---------------------------------------------------------------

_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption


def _tlv(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    """The value of the DER element of `tag` at `at`, and where the next element starts."""
    if at + 2 > len(data) or data[at] != tag:
        raise RsaError(f"malformed public key: expected DER tag {tag:#x} at byte {at}")
    size, at = data[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise RsaError("malformed public key: bad DER length")
        size, at = int.from_bytes(data[at:at + count], "big"), at + count
    if at + size > len(data):
        raise RsaError("malformed public key: DER element longer than the key")
    return data[at:at + size], at + size


def rsa_numbers(spki: bytes) -> tuple[int, int]:
    """(n, e) of a DER SubjectPublicKeyInfo holding an RSA key."""
    outer, _ = _tlv(spki, 0, 0x30)
    algorithm, rest = _tlv(outer, 0, 0x30)
    oid, _ = _tlv(algorithm, 0, 0x06)
    if oid != _RSA_OID:
        raise RsaError("the key is not an RSA key")
    bits, _ = _tlv(outer, rest, 0x03)
    if not bits or bits[0] != 0:
        raise RsaError("malformed public key: bit string with unused bits")
    pair, _ = _tlv(bits[1:], 0, 0x30)
    n, after = _tlv(pair, 0, 0x02)
    e, _ = _tlv(pair, after, 0x02)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")
