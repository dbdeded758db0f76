"""Typed errors of the image store, each carrying the kubelet's waiting reason.

The kubelet turns these into container states and Events; backoff (`ImagePullBackOff`) is the
kubelet's business, so the store only raises. Every message names what the user must look at:
the image reference, the registry endpoint, the file or blob, and what was expected.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of everything the image store raises on purpose."""

    reason = "ErrImagePull"


class InvalidImageName(ImageError):
    """The reference does not parse (upper case in the path, bad tag or digest, ...)."""

    reason = "InvalidImageName"


class ImageNeverPull(ImageError):
    """`imagePullPolicy: Never` and the image is not present."""

    reason = "ErrImageNeverPull"


class ImageNotFound(ImageError):
    """No local image answers to the reference (`images rm`, `layers`)."""

    reason = "ErrImageNotFound"


class PullError(ImageError):
    """A pull failed; the kubelet reports ErrImagePull and backs off."""


class RegistryUnavailable(PullError):
    """No endpoint for the registry answered (connection refused, TLS, 5xx)."""


class ManifestUnknown(PullError):
    """Every endpoint answered, and none knows the repository or tag."""


class AuthenticationError(PullError):
    """The registry refused the credentials, or asked for credentials none were given for."""


class NoMatchingPlatform(PullError):
    """The image index has no manifest for this node's platform."""


class UnsupportedMediaType(PullError):
    """A manifest or layer type the store does not handle (schema 1, foreign layers, zstd)."""


class ContentError(PullError):
    """Content failed verification: digest or size mismatch, truncated or corrupt data."""


class UnsafeLayerError(ContentError):
    """A layer tries to write outside its directory (absolute path, `..`, through a symlink,
    a hard link to outside); the whole layer is refused."""


class ArchiveError(ImageError):
    """An image tarball cannot be imported; the message names the file."""

    reason = "ErrImageImport"
