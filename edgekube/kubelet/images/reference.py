"""Image references, normalised the way Docker and containerd do.

`busybox` means `docker.io/library/busybox:latest`; `user/app` means `docker.io/user/app:latest`;
the first path component is a registry host only when it holds a `.` or a `:` or is `localhost`
(distribution's reference rules). `index.docker.io` is the same registry as `docker.io`. A
reference with a digest is pinned to it: the tag beside it is kept for display, but the digest is
what the store looks up and what the registry is asked for. Upper case in a repository path is
invalid, as upstream has it, and reported as `InvalidImageName`.
"""

from __future__ import annotations

import dataclasses
import re

from edgekube.kubelet.images import errors

DOCKER_HUB = "docker.io"
_LEGACY_HUB_HOSTS = frozenset({"index.docker.io", "registry-1.docker.io"})

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:localhost|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class Reference:
    domain: str  # registry host[:port], normalised (docker.io for Docker Hub)
    path: str  # repository path, e.g. library/busybox
    tag: str | None
    digest: str | None  # sha256:<hex>

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def locator(self) -> str:
        """What the registry is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def name(self) -> str:
        """The store's key for this reference: `repo@digest` when pinned, else `repo:tag`."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Parse and normalise `text`; raise InvalidImageName with the reason otherwise."""
    original = text
    if not text or text != text.strip():
        raise errors.InvalidImageName(f"invalid image reference {original!r}: empty or surrounded by spaces")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise errors.InvalidImageName(f"invalid image reference {original!r}: digest {digest!r} is not sha256:<64 hex>")
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG.match(tag):
            raise errors.InvalidImageName(f"invalid image reference {original!r}: tag {tag!r} is not valid")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first, rest
        if not _DOMAIN.match(domain):
            raise errors.InvalidImageName(f"invalid image reference {original!r}: registry host {domain!r} is not valid")
    else:
        domain, path = DOCKER_HUB, text
    if domain in _LEGACY_HUB_HOSTS:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise errors.InvalidImageName(f"invalid image reference {original!r}: no repository")
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            hint = " (repository names must be lower case)" if component.lower() != component else ""
            raise errors.InvalidImageName(
                f"invalid image reference {original!r}: path component {component!r} is not valid{hint}"
            )
    if len(domain) + 1 + len(path) > 255:
        raise errors.InvalidImageName(f"invalid image reference {original!r}: repository name longer than 255")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest)
