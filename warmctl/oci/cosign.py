"""Signatures as cosign stores them (sigstore's "simple signing" in an OCI registry).

The format, so that cosign, podman (``use-sigstore-attachments``) and skopeo find and check
what warmctl writes, and warmctl checks what they write:

- the signed payload is a small JSON document ("simple signing")::

      {"critical": {"identity": {"docker-reference": "HOST/REPO:TAG"},
                    "image": {"docker-manifest-digest": "sha256:<the snapshot's manifest>"},
                    "type": "cosign container image signature"},
       "optional": {"creator": "warmctl ..."}}

- signatures of the manifest ``sha256:<hex>`` live in the same repository under the tag
  ``sha256-<hex>.sig``: an OCI image manifest whose layers are payloads (media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``), each with the base64 of its
  ECDSA-P256/SHA-256 signature (ASN.1 DER) in the layer annotation
  ``dev.cosignproject.cosign/signature``. Signing again adds a layer; the config is the
  minimal image config cosign writes (its diff_ids list the layers).

The identity is the reference pushed to, tag included, as podman writes it: containers/image's
default ``matchRepoDigestOrExact`` refuses an identity without a tag (cosign's own), which
``matchRepository`` accepts.

Keys are PEM: PKCS#8 or SEC1 EC P-256 private keys, PKCS#8 encrypted with a passphrase,
cosign's own encrypted private keys (``cosign generate-key-pair``: scrypt and NaCl secretbox,
opened by libsodium through PyNaCl), and SubjectPublicKeyInfo public keys. ``cryptography``
and PyNaCl are imported only by the functions that sign, open or verify: ``warmctl --help``
and completion never load them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmctl import __version__
from warmctl.errors import UsageError, WarmctlError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD_BYTES = 64 * 1024  # a payload is a few hundred bytes; cap what is downloaded
MAX_SIGNATURES = 32  # layers of one .sig manifest that are looked at
_DIGEST_RE = re.compile(r"sha256:([a-f0-9]{64})")


def signature_tag(manifest_digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``, where cosign keeps the signatures."""
    match = _DIGEST_RE.fullmatch(manifest_digest)
    if match is None:
        raise ValueError(f"not a sha256 digest: {manifest_digest!r}")
    return f"sha256-{match.group(1)}.sig"


# --- the payload ------------------------------------------------------------------------------


def payload_for(docker_reference: str, manifest_digest: str) -> bytes:
    """The simple-signing payload that says: ``docker_reference`` is the manifest with this
    digest."""
    payload = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": {"creator": f"warmctl {__version__}"},
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Payload:
    docker_reference: str
    manifest_digest: str


class BadPayload(ValueError):
    """A payload that is not a cosign container image signature."""


def parse_payload(data: bytes) -> Payload:
    """What a payload claims; BadPayload when it is not simple signing as cosign writes it."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"the payload is not JSON ({exc})") from exc
    critical = document.get("critical") if isinstance(document, dict) else None
    if not isinstance(critical, dict):
        raise BadPayload("the payload has no 'critical' object")
    if critical.get("type") != SIGNATURE_TYPE:
        raise BadPayload(f"the payload's type is {critical.get('type')!r}, not "
                         f"{SIGNATURE_TYPE!r}")
    identity, image = critical.get("identity"), critical.get("image")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(reference, str) or not reference:
        raise BadPayload("the payload names no docker-reference")
    if not isinstance(digest, str) or not digest:
        raise BadPayload("the payload names no docker-manifest-digest")
    return Payload(reference, digest)


# --- the .sig manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureLayer:
    """One signature in a .sig manifest: the payload blob and the base64 signature of it."""

    digest: str
    size: int
    signature: str  # base64 of the DER signature, as in the annotation

    def to_descriptor(self) -> dict[str, Any]:
        return {"mediaType": PAYLOAD_MEDIA_TYPE, "digest": self.digest, "size": self.size,
                "annotations": {SIGNATURE_ANNOTATION: self.signature}}


def signature_layers(manifest: bytes) -> list[SignatureLayer]:
    """The signatures a .sig manifest holds; layers of other kinds are passed over."""
    try:
        document = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        return []
    layers = document.get("layers") if isinstance(document, dict) else None
    found: list[SignatureLayer] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_MEDIA_TYPE:
            continue
        digest, size = layer.get("digest"), layer.get("size")
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) \
            if isinstance(annotations, dict) else None
        if (isinstance(digest, str) and _DIGEST_RE.fullmatch(digest)
                and isinstance(size, int) and 0 <= size <= MAX_PAYLOAD_BYTES
                and isinstance(signature, str) and signature):
            found.append(SignatureLayer(digest, size, signature))
    return found[:MAX_SIGNATURES]


def signature_config(layers: list[SignatureLayer]) -> bytes:
    """The image config cosign writes for a .sig manifest: empty, its diff_ids the layers."""
    config = {
        "architecture": "", "os": "", "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def signature_manifest(layers: list[SignatureLayer], config: bytes, media_type: str) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config),
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
        "layers": [layer.to_descriptor() for layer in layers],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A key a policy trusts: where it came from (a path, or ``keyData``) and the key."""

    source: str
    key: EllipticCurvePublicKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def fingerprint(key: EllipticCurvePublicKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: the same for the private key's half."""
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_private_key(path: Path, passphrase_file: Path | None = None) \
        -> EllipticCurvePrivateKey:
    """An EC P-256 private key from a PEM file; UsageError (exit 2) with one line otherwise."""
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "signing key")
    if _COSIGN_PEM.search(data):
        return _check_p256(path, _load_cosign_key(path, data, passphrase_file))
    passphrase = None
    if passphrase_file is not None:
        # Without the line end, as podman reads --sign-passphrase-file.
        passphrase = _read(passphrase_file, "passphrase file").rstrip(b"\r\n")
    # PKCS#8's "ENCRYPTED PRIVATE KEY", or the legacy "Proc-Type: 4,ENCRYPTED".
    encrypted = b"ENCRYPTED" in data
    if encrypted and passphrase_file is None:
        raise UsageError(f"signing key {path} is encrypted: give its passphrase with "
                         "--sign-passphrase-file")
    if not encrypted and passphrase_file is not None:
        raise UsageError(f"signing key {path} is not encrypted: leave out "
                         "--sign-passphrase-file")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (TypeError, ValueError) as exc:
        if encrypted:
            raise UsageError(f"signing key {path}: wrong passphrase in {passphrase_file}"
                             ) from exc
        raise UsageError(f"signing key {path} is not a PEM private key (make one with "
                         "openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 "
                         "-nocrypt)") from exc
    except Exception as exc:  # cryptography raises its own types for odd encodings
        raise UsageError(f"signing key {path} cannot be read: {exc}") from exc
    return _check_p256(path, key)


def _check_p256(path: Path, key: object) -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UsageError(f"signing key {path} is not an EC P-256 (prime256v1) key")
    return key


# cosign generate-key-pair's private key: PEM around JSON (go-securesystemslib's "encrypted"
# format): {"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"}, "cipher": {"name":
# "nacl/secretbox", "nonce"}, "ciphertext"}, byte strings in base64; the plaintext is the key's
# PKCS#8 DER. Older cosign wrote "COSIGN" in the PEM type, newer "SIGSTORE".
_COSIGN_PEM = re.compile(
    rb"-----BEGIN ENCRYPTED (SIGSTORE|COSIGN) PRIVATE KEY-----\s*(.*?)\s*"
    rb"-----END ENCRYPTED \1 PRIVATE KEY-----", re.DOTALL)
# The scrypt parameters cosign's library accepts (legacy, standard, OWASP): anything else is
# refused there, and here, rather than let a crafted file ask for gigabytes of memory.
_COSIGN_SCRYPT = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}


SECRETBOX_KEY_SIZE = 32


class SecretboxError(Exception):
    """A secretbox that does not open: wrong key or nonce, or tampered bytes."""


def open_secretbox(box: bytes, nonce: bytes, key: bytes) -> bytes:
    """The plaintext of NaCl's secretbox ``box`` (Poly1305 tag, then the ciphertext, as
    Go's nacl/secretbox.Seal writes it), opened by libsodium (PyNaCl, imported only here)."""
    import nacl.exceptions
    import nacl.secret

    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(box, nonce))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise SecretboxError(str(exc)) from exc


def _load_cosign_key(path: Path, data: bytes, passphrase_file: Path | None) -> object:
    from cryptography.hazmat.primitives import serialization

    if passphrase_file is None:
        raise UsageError(f"signing key {path} is encrypted (cosign's format): give its "
                         "passphrase with --sign-passphrase-file")
    passphrase = _read(passphrase_file, "passphrase file").rstrip(b"\r\n")
    match = _COSIGN_PEM.search(data)
    assert match is not None
    damaged = f"signing key {path} is not a cosign private key that can be read"
    try:
        sealed = json.loads(base64.b64decode(match.group(2), validate=False))
        kdf, cipher = sealed["kdf"], sealed["cipher"]
        params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        box = base64.b64decode(sealed["ciphertext"], validate=True)
        names = (kdf["name"], cipher["name"])
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise UsageError(damaged) from exc
    if names != ("scrypt", "nacl/secretbox"):
        raise UsageError(f"{damaged}: it is sealed with {names[0]} and {names[1]}, not scrypt "
                         "and nacl/secretbox")
    if params not in _COSIGN_SCRYPT:
        raise UsageError(f"{damaged}: scrypt parameters N={params[0]} r={params[1]} "
                         f"p={params[2]} are not cosign's")
    n, r, p = params
    key = hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=SECRETBOX_KEY_SIZE,
                         maxmem=2 * 128 * r * n)  # scrypt's own need is 128 * r * N bytes
    try:
        der = open_secretbox(box, nonce, key)
    except SecretboxError as exc:
        raise UsageError(f"signing key {path}: wrong passphrase in {passphrase_file}"
                         ) from exc
    try:
        return serialization.load_der_private_key(der, password=None)
    except (TypeError, ValueError) as exc:
        raise UsageError(damaged) from exc


def load_public_keys(data: bytes, source: str) -> list[PublicKey]:
    """The EC P-256 public keys of a PEM file (one or more); WarmctlError if there are none
    or one is of another kind: a policy that names a key it cannot use refuses."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", data,
                        re.DOTALL)
    if not blocks:
        raise WarmctlError(f"{source} holds no PEM public key")
    keys: list[PublicKey] = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block)
        except Exception as exc:
            raise WarmctlError(f"{source}: a public key that cannot be read ({exc})") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise WarmctlError(f"{source}: not an EC P-256 public key")
        keys.append(PublicKey(source, key))
    return keys


def sign(key: EllipticCurvePrivateKey, payload: bytes) -> str:
    """base64 of the ASN.1 DER ECDSA-SHA256 signature of ``payload``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verifies(key: EllipticCurvePublicKey, payload: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64 DER) is ``key``'s signature of ``payload``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc
