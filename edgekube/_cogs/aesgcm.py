"""AES-256-GCM through OpenSSL's EVP interface, on the libcrypto that Python's `ssl` already loads.

Why not `cryptography`: importing its AEAD module adds about 10 MiB of resident memory to a
process whose idle RSS is a benchmark target (docs/performance.md), while the server already has
OpenSSL mapped for TLS. Reaching that same library through ctypes costs well under 0.1 MiB. The
library is found by the path the loader mapped it from (`/proc/self/maps`, after importing
`_ssl`), so the Nuitka binary uses the copy it carries, and a system with two OpenSSL versions
never mixes them; `ctypes.util.find_library` is only the fallback.

The interface is the one of an AEAD: `seal(key, nonce, plaintext, aad)` returns ciphertext
followed by the 16-byte tag; `open_(...)` checks the tag and raises `AuthenticationError` when
the data, the nonce, the associated data or the key differ. Each call makes its own cipher
context, so any thread may call (ctypes releases the GIL during the calls).
"""

from __future__ import annotations

import ctypes

from edgekube._cogs import libcrypto

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

# EVP_CIPHER_CTX_ctrl commands for GCM (openssl/evp.h; the same numbers in 1.1 and 3.x).
_CTRL_GCM_SET_IVLEN = 0x9
_CTRL_GCM_GET_TAG = 0x10
_CTRL_GCM_SET_TAG = 0x11


class AesGcmError(Exception):
    """OpenSSL could not be used (missing library or symbol, a failed call)."""


class AuthenticationError(AesGcmError):
    """The tag does not match: wrong key, or the data, nonce or associated data changed."""


def _declare(lib: ctypes.CDLL) -> None:
    vp, ip, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    pint = ctypes.POINTER(ctypes.c_int)
    lib.EVP_CIPHER_CTX_new.restype = vp
    lib.EVP_CIPHER_CTX_new.argtypes = []
    lib.EVP_CIPHER_CTX_free.restype = None
    lib.EVP_CIPHER_CTX_free.argtypes = [vp]
    lib.EVP_aes_256_gcm.restype = vp
    lib.EVP_aes_256_gcm.argtypes = []
    lib.EVP_CIPHER_CTX_ctrl.restype = ip
    lib.EVP_CIPHER_CTX_ctrl.argtypes = [vp, ip, ip, vp]
    for name in ("EVP_EncryptInit_ex", "EVP_DecryptInit_ex"):
        fn = getattr(lib, name)
        fn.restype = ip
        fn.argtypes = [vp, vp, vp, cp, cp]
    for name in ("EVP_EncryptUpdate", "EVP_DecryptUpdate"):
        fn = getattr(lib, name)
        fn.restype = ip
        fn.argtypes = [vp, vp, pint, cp, ip]
    for name in ("EVP_EncryptFinal_ex", "EVP_DecryptFinal_ex"):
        fn = getattr(lib, name)
        fn.restype = ip
        fn.argtypes = [vp, vp, pint]


_binding = libcrypto.Binding(_declare, error=AesGcmError, need="AES-GCM")
_load = _binding.get


def library() -> str:
    """The path of the libcrypto in use (loads it): for status output and tests."""
    lib = _load()
    return str(lib._name)


def _check(ok: int, what: str) -> None:
    if ok != 1:
        raise AesGcmError(f"OpenSSL {what} failed")


def _run(*, key: bytes, nonce: bytes, data: bytes, aad: bytes, tag: bytes | None) -> tuple[bytes, bytes]:
    if len(key) != KEY_SIZE:
        raise AesGcmError(f"an AES-256 key is {KEY_SIZE} bytes, not {len(key)}")
    if len(nonce) != NONCE_SIZE:
        raise AesGcmError(f"an AES-GCM nonce is {NONCE_SIZE} bytes here, not {len(nonce)}")
    lib = _load()
    encrypt = tag is None
    init = lib.EVP_EncryptInit_ex if encrypt else lib.EVP_DecryptInit_ex
    update = lib.EVP_EncryptUpdate if encrypt else lib.EVP_DecryptUpdate
    final = lib.EVP_EncryptFinal_ex if encrypt else lib.EVP_DecryptFinal_ex
    ctx = lib.EVP_CIPHER_CTX_new()
    if not ctx:
        raise AesGcmError("OpenSSL could not allocate a cipher context")
    try:
        _check(init(ctx, lib.EVP_aes_256_gcm(), None, None, None), "cipher init")
        _check(lib.EVP_CIPHER_CTX_ctrl(ctx, _CTRL_GCM_SET_IVLEN, NONCE_SIZE, None), "IV length")
        _check(init(ctx, None, None, key, nonce), "key and IV")
        n = ctypes.c_int(0)
        if aad:
            _check(update(ctx, None, ctypes.byref(n), aad, len(aad)), "associated data")
        out = ctypes.create_string_buffer(len(data) + 16)
        _check(update(ctx, out, ctypes.byref(n), data, len(data)), "update")
        written = n.value
        if not encrypt:
            assert tag is not None
            tag_buf = ctypes.create_string_buffer(tag, TAG_SIZE)
            _check(lib.EVP_CIPHER_CTX_ctrl(ctx, _CTRL_GCM_SET_TAG, TAG_SIZE, tag_buf), "set tag")
        ok = final(ctx, ctypes.byref(out, written), ctypes.byref(n))
        if not encrypt and ok != 1:
            raise AuthenticationError("the AES-GCM tag does not match (wrong key or damaged data)")
        _check(ok, "final")
        written += n.value
        out_tag = b""
        if encrypt:
            tag_out = ctypes.create_string_buffer(TAG_SIZE)
            _check(lib.EVP_CIPHER_CTX_ctrl(ctx, _CTRL_GCM_GET_TAG, TAG_SIZE, tag_out), "get tag")
            out_tag = tag_out.raw
        return out.raw[:written], out_tag
    finally:
        lib.EVP_CIPHER_CTX_free(ctx)


def seal(key: bytes, *, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Ciphertext followed by the tag."""
    ciphertext, tag = _run(key=key, nonce=nonce, data=plaintext, aad=aad, tag=None)
    return ciphertext + tag


def open_(key: bytes, *, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """The plaintext of `seal`'s output; AuthenticationError when anything does not match."""
    if len(sealed) < TAG_SIZE:
        raise AuthenticationError(f"the sealed data is {len(sealed)} bytes, shorter than its {TAG_SIZE}-byte tag")
    plaintext, _ = _run(key=key, nonce=nonce, data=sealed[:-TAG_SIZE], aad=aad, tag=sealed[-TAG_SIZE:])
    return plaintext
