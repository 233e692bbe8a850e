"""Registry references as podman and docker write them: ``HOST[:PORT]/PATH/NAME[:TAG][@DIGEST]``,
the host always written out (warmctl never guesses where to send a snapshot), and Docker Hub's
API host."""

from __future__ import annotations

import re
from dataclasses import dataclass

from warmctl.errors import UsageError

_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Reference:
    """``HOST[:PORT]/PATH/NAME[:TAG][@sha256:DIGEST]``, as podman and docker write it."""

    registry: str  # host[:port]
    repository: str  # path/name
    tag: str | None = None
    digest: str | None = None

    @property
    def manifest_reference(self) -> str:
        """What follows /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse a registry reference; the registry host must be written out.

    podman would expand a short name such as ``memcached`` through registries.conf, perhaps to
    Docker Hub. A snapshot holds a process's memory, secrets included: warmctl never guesses
    where to send one, so the host is required (``localhost`` counts).
    """
    body = text.removeprefix("docker://")
    body, at, digest = body.partition("@")
    host, slash, rest = body.partition("/")
    if not slash or not _looks_like_host(host):
        raise UsageError(
            f"{text!r} does not name a registry: write HOST[:PORT]/PATH[:TAG], "
            "e.g. registry.example.com/warm/memcached:v1 or localhost:5000/memcached"
        )
    _, colon_, port = host.rpartition(":")
    if colon_ and not host.endswith("]") and not 1 <= int(port) <= 65535:
        raise UsageError(f"invalid registry port {port} in {text!r}: a port is 1 to 65535")
    repository, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        repository, tag = rest[:colon], rest[colon + 1:]
    if not _REPOSITORY_RE.fullmatch(repository) or len(repository) > 255:
        raise UsageError(
            f"invalid repository {repository!r} in {text!r}: lower-case letters, digits and "
            "separators (. _ __ -) between /-separated components"
        )
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise UsageError(f"invalid tag {tag!r} in {text!r}: up to 128 of A-Z a-z 0-9 _ . -")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise UsageError(f"invalid digest {digest!r} in {text!r}: expected sha256:<64 hex>")
    return Reference(host, repository, tag, digest or None)


def _looks_like_host(component: str) -> bool:
    # docker's rule: the first component is a registry when it has a dot or a port, or is
    # localhost; otherwise it would be a Docker Hub namespace.
    hostish = "." in component or ":" in component or component == "localhost"
    return hostish and _HOST_RE.fullmatch(component) is not None


def _api_host(registry: str) -> str:
    """Docker Hub's API does not live at the name people write."""
    return "registry-1.docker.io" if registry in _DOCKER_HUB else registry
