"""Container images for the kubelet: a content-addressed store with shared unpacked layers,
pulls over the OCI distribution API, tarball imports, and garbage collection (DESIGN §5).

    store = ImageStore(data_dir / "image-store", registry_config=registries.load(path))
    info = await store.ensure("busybox:1.36", PullPolicy.IF_NOT_PRESENT, pull_secrets, on_event=fn)
    lowers = store.layers(info)          # overlayfs lower dirs, lowest first
    await store.import_dir(data_dir / "images")   # at boot, no network
    await store.gc(high_percent=85, low_percent=80, in_use=lambda image: ...)
"""

from edgekube.kubelet.images.errors import (
    ArchiveError,
    AuthenticationError,
    ContentError,
    ImageError,
    ImageNeverPull,
    ImageNotFound,
    InvalidImageName,
    ManifestUnknown,
    NoMatchingPlatform,
    PullError,
    RegistryUnavailable,
    UnsafeLayerError,
    UnsupportedMediaType,
)
from edgekube.kubelet.images.oci import ImageConfig, Platform, host_platform, parse_platform
from edgekube.kubelet.images.registries import Registries, RegistriesError
from edgekube.kubelet.images.registries import load as load_registries
from edgekube.kubelet.images.store import (
    GcResult,
    ImageInfo,
    ImageStore,
    ImportResult,
    PullEvent,
    PullPolicy,
)

STORE_DIR = "image-store"  # under the data dir
IMPORT_DIR = "images"  # under the data dir: tarballs imported at boot

__all__ = [
    "IMPORT_DIR",
    "STORE_DIR",
    "ArchiveError",
    "AuthenticationError",
    "ContentError",
    "GcResult",
    "ImageConfig",
    "ImageError",
    "ImageInfo",
    "ImageNeverPull",
    "ImageNotFound",
    "ImageStore",
    "ImportResult",
    "InvalidImageName",
    "ManifestUnknown",
    "NoMatchingPlatform",
    "Platform",
    "PullError",
    "PullEvent",
    "PullPolicy",
    "Registries",
    "RegistriesError",
    "RegistryUnavailable",
    "UnsafeLayerError",
    "UnsupportedMediaType",
    "host_platform",
    "load_registries",
    "parse_platform",
]
