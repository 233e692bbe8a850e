"""The host's signature policy, as podman reads it: containers-policy.json(5), docker transport.

Pure: this module parses a policy document and decides; it reads no file and makes no request
(the caller passes the signatures found and the functions that load keys and check a
signature). What it implements:

- ``default`` and ``transports.docker`` scopes, the most specific match winning: the
  reference with its tag or digest, the repository, each enclosing namespace, the host[:port],
  then ``*.domain`` wildcards (without a port), then ``default``;
- requirements ``insecureAcceptAnything``, ``reject`` and ``sigstoreSigned`` with ``keyPath``,
  ``keyPaths``, ``keyData`` or ``keyDatas``, and ``signedIdentity`` ``matchRepoDigestOrExact``
  (the default), ``matchExact``, ``matchRepository``, ``exactReference``, ``exactRepository``.

Every requirement of the scope must hold; a ``sigstoreSigned`` holds when at least one
signature is by one of its keys, for this manifest digest, with an identity it accepts. What it
does not implement (``signedBy`` GPG keys, ``signedBaseLayer``, Fulcio, PKI, Rekor,
``remapIdentity``, a field it does not know) refuses: never a silent accept.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmctl.errors import IntegrityError, UsageError
from warmctl.oci.cosign import BadPayload, PublicKey, parse_payload
from warmctl.oci.reference import Reference, parse_reference

SYSTEM_POLICY = Path("/etc/containers/policy.json")


class PolicyRefused(IntegrityError):
    """The policy does not accept the snapshot (exit 5)."""


class BadPolicy(IntegrityError):
    """A policy file that cannot be read as containers-policy.json(5): nothing is accepted
    under it (exit 5, as podman refuses to pull)."""


def policy_file(explicit: Path | None, environ: Mapping[str, str],
                exists: Callable[[Path], bool] = Path.exists) -> Path:
    """Where podman reads the policy: ``--signature-policy``, else
    ``$HOME/.config/containers/policy.json``, else /etc/containers/policy.json."""
    if explicit is not None:
        return explicit
    home = environ.get("HOME")
    if home:
        user = Path(home) / ".config" / "containers" / "policy.json"
        if exists(user):
            return user
    return SYSTEM_POLICY


# --- the document -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """signedIdentity: which docker-reference in a signature is acceptable."""

    kind: str  # matchRepoDigestOrExact, matchExact, matchRepository, exactReference, ...
    value: str = ""  # dockerReference or dockerRepository of the exact* kinds


@dataclass(frozen=True)
class Requirement:
    kind: str  # insecureAcceptAnything, reject, sigstoreSigned, or unsupported
    key_paths: tuple[str, ...] = ()
    key_datas: tuple[bytes, ...] = ()
    identity: Identity = field(default_factory=lambda: Identity("matchRepoDigestOrExact"))
    unsupported: str = ""  # why it cannot be honoured, for kind == "unsupported"

    def describe(self) -> str:
        if self.kind != "sigstoreSigned":
            return self.kind
        keys = ", ".join(self.key_paths) or f"{len(self.key_datas)} key(s) in keyData"
        return f"a sigstore signature by {keys}"


@dataclass(frozen=True)
class Scope:
    name: str  # "default" or "docker:SCOPE", for messages
    requirements: tuple[Requirement, ...]

    @property
    def needs_signatures(self) -> bool:
        return any(r.kind == "sigstoreSigned" for r in self.requirements)


@dataclass(frozen=True)
class Policy:
    source: str
    default: Scope
    docker: Mapping[str, Scope]

    def scope_for(self, ref: Reference) -> Scope:
        for candidate in scope_candidates(ref):
            if candidate in self.docker:
                return self.docker[candidate]
        return self.default


def scope_candidates(ref: Reference) -> list[str]:
    """The docker transport's scopes for ``ref``, most specific first (containers/image's
    PolicyConfigurationIdentity, then PolicyConfigurationNamespaces)."""
    repository = f"{ref.registry}/{ref.repository}"
    candidates: list[str] = []
    if ref.digest:
        candidates.append(f"{repository}@{ref.digest}")
    elif ref.tag:
        candidates.append(f"{repository}:{ref.tag}")
    parts = repository.split("/")
    for count in range(len(parts), 0, -1):
        candidates.append("/".join(parts[:count]))
    host = ref.registry.split(":")[0] if not ref.registry.startswith("[") else ""
    while "." in host:
        host = host.split(".", 1)[1]
        candidates.append(f"*.{host}")
    return candidates


def parse_policy(data: bytes, source: str) -> Policy:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPolicy(f"signature policy {source} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadPolicy(f"signature policy {source} is not a JSON object")
    unknown = set(document) - {"default", "transports"}
    if unknown:
        raise BadPolicy(f"signature policy {source}: unknown field {sorted(unknown)[0]!r}")
    if "default" not in document:
        raise BadPolicy(f"signature policy {source} has no 'default'")
    default = Scope("default", _requirements(document["default"], source, "default"))
    transports = document.get("transports") or {}
    if not isinstance(transports, dict):
        raise BadPolicy(f"signature policy {source}: 'transports' is not an object")
    docker_scopes = transports.get("docker") or {}
    if not isinstance(docker_scopes, dict):
        raise BadPolicy(f"signature policy {source}: transports.docker is not an object")
    docker: dict[str, Scope] = {}
    for name, value in docker_scopes.items():
        label = f"docker:{name}" if name else "docker"
        docker[name] = Scope(label, _requirements(value, source, label))
    # The transport's own default (scope ""), when given, comes before the global one.
    if "" in docker:
        default = docker.pop("")
    return Policy(source, default, docker)


def _requirements(value: Any, source: str, scope: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise BadPolicy(f"signature policy {source}: scope {scope} is not a non-empty list of "
                        "requirements")
    return tuple(_requirement(item, source, scope) for item in value)


_SIGSTORE_FIELDS = {"type", "keyPath", "keyPaths", "keyData", "keyDatas", "signedIdentity"}
_UNSUPPORTED_SIGSTORE = ("fulcio", "pki", "rekorPublicKeyPath", "rekorPublicKeyPaths",
                         "rekorPublicKeyData", "rekorPublicKeyDatas")


def _requirement(item: Any, source: str, scope: str) -> Requirement:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise BadPolicy(f"signature policy {source}: scope {scope} has a requirement "
                        "without a type")
    kind = item["type"]
    if kind in ("insecureAcceptAnything", "reject"):
        if set(item) != {"type"}:
            return _unsupported(f"{kind} with fields {sorted(set(item) - {'type'})}")
        return Requirement(kind)
    if kind != "sigstoreSigned":
        # signedBy (GPG), signedBaseLayer, and anything newer.
        return _unsupported(f"requirement type {kind!r}")
    for name in _UNSUPPORTED_SIGSTORE:
        if name in item:
            return _unsupported(f"sigstoreSigned with {name}")
    unknown = set(item) - _SIGSTORE_FIELDS
    if unknown:
        return _unsupported(f"sigstoreSigned with {sorted(unknown)[0]}")
    paths = _key_paths(item, source, scope)
    datas = _key_datas(item, source, scope)
    if len([name for name in ("keyPath", "keyPaths", "keyData", "keyDatas") if name in item]) != 1:
        raise BadPolicy(f"signature policy {source}: a sigstoreSigned requirement of scope "
                        f"{scope} needs exactly one of keyPath, keyPaths, keyData, keyDatas")
    identity = _identity(item.get("signedIdentity"), source, scope)
    if isinstance(identity, str):
        return _unsupported(identity)
    return Requirement(kind, key_paths=paths, key_datas=datas, identity=identity)


def _key_paths(item: dict[str, Any], source: str, scope: str) -> tuple[str, ...]:
    paths: list[Any] = []
    if "keyPath" in item:
        paths = [item["keyPath"]]
    elif "keyPaths" in item:
        paths = item["keyPaths"] if isinstance(item["keyPaths"], list) else [None]
    if not all(isinstance(p, str) and p for p in paths) or ("keyPaths" in item and not paths):
        raise BadPolicy(f"signature policy {source}: scope {scope}: keyPath(s) must be paths")
    return tuple(paths)


def _key_datas(item: dict[str, Any], source: str, scope: str) -> tuple[bytes, ...]:
    values: list[Any] = []
    if "keyData" in item:
        values = [item["keyData"]]
    elif "keyDatas" in item:
        values = item["keyDatas"] if isinstance(item["keyDatas"], list) else [None]
    try:
        decoded = tuple(base64.b64decode(v, validate=True) for v in values
                        if isinstance(v, str))
    except (binascii.Error, ValueError) as exc:
        raise BadPolicy(f"signature policy {source}: scope {scope}: keyData is not base64"
                        ) from exc
    if len(decoded) != len(values) or ("keyDatas" in item and not values):
        raise BadPolicy(f"signature policy {source}: scope {scope}: keyData(s) must be "
                        "base64 strings")
    return decoded


_IDENTITY_VALUE = {"exactReference": "dockerReference", "exactRepository": "dockerRepository"}
_IDENTITY_KINDS = ("matchRepoDigestOrExact", "matchExact", "matchRepository", *_IDENTITY_VALUE)


def _identity(value: Any, source: str, scope: str) -> Identity | str:
    """The signedIdentity, or why it is not supported."""
    if value is None:
        return Identity("matchRepoDigestOrExact")
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadPolicy(f"signature policy {source}: scope {scope}: signedIdentity has no type")
    kind = value["type"]
    if kind not in _IDENTITY_KINDS:
        return f"signedIdentity {kind!r}"
    needed = _IDENTITY_VALUE.get(kind)
    expected_fields = {"type", needed} if needed else {"type"}
    if set(value) != expected_fields:
        return f"signedIdentity {kind} with fields {sorted(set(value) - {'type'})}"
    if needed is None:
        return Identity(kind)
    text = value[needed]
    if not isinstance(text, str) or _parse(text) is None:
        raise BadPolicy(f"signature policy {source}: scope {scope}: {needed} {text!r} is not "
                        "a reference")
    return Identity(kind, text)


def _unsupported(what: str) -> Requirement:
    return Requirement("unsupported", unsupported=f"{what} is not implemented by warmctl")


# --- identities -------------------------------------------------------------------------------


def _parse(text: str) -> Reference | None:
    try:
        return parse_reference(text)
    except UsageError:
        return None


def _name(ref: Reference) -> str:
    return f"{ref.registry}/{ref.repository}"


def _exact(ref: Reference) -> str | None:
    """The reference with its tag or digest; None when it has neither (name-only)."""
    if ref.digest:
        return f"{_name(ref)}@{ref.digest}"
    if ref.tag:
        return f"{_name(ref)}:{ref.tag}"
    return None


def identity_matches(identity: Identity, image: Reference, signed: str) -> bool:
    """Whether a signature claiming ``signed`` as its docker-reference is acceptable for
    ``image`` (containers/image's policy_reference_match.go)."""
    claimed = _parse(signed)
    if claimed is None:
        return False
    if identity.kind == "matchRepository":
        return _name(claimed) == _name(image)
    if identity.kind == "exactRepository":
        repo = _parse(identity.value)
        return repo is not None and _name(claimed) == _name(repo)
    if _exact(claimed) is None:  # every other kind wants a tag or digest in the signature
        return False
    if identity.kind == "matchExact":
        return _exact(image) is not None and _exact(claimed) == _exact(image)
    if identity.kind == "exactReference":
        wanted = _parse(identity.value)
        return wanted is not None and _exact(claimed) == _exact(wanted)
    # matchRepoDigestOrExact: a tag must match exactly; a digest needs the repository only
    # (the digest itself is compared with the payload's elsewhere).
    if image.tag and not image.digest:
        return _exact(claimed) == _exact(image)
    if image.digest:
        return _name(claimed) == _name(image)
    return False


# --- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundSignature:
    """A signature as read from the registry: the payload blob and its base64 signature."""

    payload: bytes
    signature: str


@dataclass(frozen=True)
class Verdict:
    scope: Scope
    signed_by: PublicKey | None  # the key that verified the first sigstoreSigned requirement


KeysFor = Callable[[Requirement], list[PublicKey]]
Verifies = Callable[[PublicKey, bytes, str], bool]


def decide(policy: Policy, image: Reference, manifest_digest: str,
           signatures: Sequence[FoundSignature], keys_for: KeysFor,
           verifies: Verifies) -> Verdict:
    """Accept (a Verdict) or refuse (PolicyRefused, one line naming the scope and what was
    missing). ``signatures`` need only be given when the scope needs them."""
    scope = policy.scope_for(image)
    signed_by: PublicKey | None = None
    for requirement in scope.requirements:
        if requirement.kind == "insecureAcceptAnything":
            continue
        if requirement.kind == "reject":
            raise _refuse(policy, image, scope, "the scope rejects everything")
        if requirement.kind == "unsupported":
            raise _refuse(policy, image, scope, requirement.unsupported)
        key = _signed(requirement, image, manifest_digest, signatures, keys_for, verifies,
                      lambda why: _refuse(policy, image, scope, why))
        signed_by = signed_by or key
    return Verdict(scope, signed_by)


def _signed(requirement: Requirement, image: Reference, manifest_digest: str,
            signatures: Sequence[FoundSignature], keys_for: KeysFor, verifies: Verifies,
            refuse: Callable[[str], PolicyRefused]) -> PublicKey:
    wanted = requirement.describe()
    if not signatures:
        raise refuse(f"it is not signed; the policy requires {wanted}")
    keys = keys_for(requirement)
    problems: list[str] = []
    for found in signatures:
        key = next((k for k in keys if verifies(k, found.payload, found.signature)), None)
        if key is None:
            problems.append("not by a trusted key")
            continue
        try:
            payload = parse_payload(found.payload)
        except BadPayload as exc:
            problems.append(str(exc))
            continue
        if payload.manifest_digest != manifest_digest:
            problems.append(f"signed for another manifest ({payload.manifest_digest[:19]}...)")
            continue
        if not identity_matches(requirement.identity, image, payload.docker_reference):
            problems.append(f"signed as {payload.docker_reference}, which "
                            f"{requirement.identity.kind} does not accept")
            continue
        return key
    seen = "; ".join(dict.fromkeys(problems))
    count = f"{len(signatures)} signature{'s' if len(signatures) != 1 else ''}"
    raise refuse(f"no valid signature: the policy requires {wanted} ({count}: {seen})")


def _refuse(policy: Policy, image: Reference, scope: Scope, why: str) -> PolicyRefused:
    return PolicyRefused(
        f"{image}: refused by the signature policy {policy.source}, scope {scope.name}: {why}",
        hint="nothing was downloaded past the manifest and signatures",
    )
