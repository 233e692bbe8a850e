"""cosign's signature format: the payload, the .sig tag and manifest, keys, and signatures an
independent reader (openssl) accepts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from openssl_ca import openssl

from warmctl.errors import UsageError, WarmctlError
from warmctl.oci import cosign

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_signature_tag() -> None:
    assert cosign.signature_tag(DIGEST) == f"sha256-{'0123456789abcdef' * 4}.sig"
    with pytest.raises(ValueError):
        cosign.signature_tag("sha512:00")


def test_payload_is_simple_signing() -> None:
    payload = cosign.payload_for("r.io/warm/mc:v1", DIGEST)
    critical = json.loads(payload)["critical"]
    assert critical == {"identity": {"docker-reference": "r.io/warm/mc:v1"},
                        "image": {"docker-manifest-digest": DIGEST},
                        "type": "cosign container image signature"}
    assert cosign.parse_payload(payload) == cosign.Payload("r.io/warm/mc:v1", DIGEST)


@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"critical": 1}',
    b'{"critical": {"type": "atomic container signature"}}',
    b'{"critical": {"type": "cosign container image signature", "image": {}}}',
])
def test_bad_payloads(payload: bytes) -> None:
    with pytest.raises(cosign.BadPayload):
        cosign.parse_payload(payload)


def test_signature_manifest_round_trip() -> None:
    layers = [cosign.SignatureLayer("sha256:" + "1" * 64, 200, "MEUC..."),
              cosign.SignatureLayer("sha256:" + "2" * 64, 210, "MEYC...")]
    config = cosign.signature_config(layers)
    manifest = cosign.signature_manifest(layers, config,
                                         "application/vnd.oci.image.manifest.v1+json")
    document = json.loads(manifest)
    assert document["layers"][0] == {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": "sha256:" + "1" * 64, "size": 200,
        "annotations": {"dev.cosignproject.cosign/signature": "MEUC..."}}
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer.digest for layer in layers]
    assert cosign.signature_layers(manifest) == layers


def test_signature_layers_pass_over_what_is_not_a_signature() -> None:
    manifest = json.dumps({"layers": [
        {"mediaType": "application/octet-stream", "digest": "sha256:" + "1" * 64, "size": 1},
        {"mediaType": cosign.PAYLOAD_MEDIA_TYPE, "digest": "sha256:../../x", "size": 1,
         "annotations": {cosign.SIGNATURE_ANNOTATION: "x"}},
        {"mediaType": cosign.PAYLOAD_MEDIA_TYPE, "digest": "sha256:" + "1" * 64,
         "size": 10 ** 9, "annotations": {cosign.SIGNATURE_ANNOTATION: "x"}},
        {"mediaType": cosign.PAYLOAD_MEDIA_TYPE, "digest": "sha256:" + "1" * 64, "size": 5},
    ]}).encode()
    assert cosign.signature_layers(manifest) == []
    assert cosign.signature_layers(b"garbage") == []


def test_a_signature_openssl_verifies(tmp_path: Path) -> None:
    raw = openssl("ecparam", "-name", "prime256v1", "-genkey")
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(openssl("pkcs8", "-topk8", "-nocrypt", stdin=raw))
    pub_path = tmp_path / "pub.pem"
    pub_path.write_bytes(openssl("ec", "-pubout", "-in", str(key_path)))
    key = cosign.load_private_key(key_path)
    payload = cosign.payload_for("r.io/a:1", DIGEST)
    signature = cosign.sign(key, payload)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(signature))
    out = openssl("dgst", "-sha256", "-verify", str(pub_path), "-signature",
                  str(tmp_path / "sig.der"), str(tmp_path / "payload"))
    assert out.strip() == b"Verified OK"
    public = cosign.load_public_keys(pub_path.read_bytes(), str(pub_path))
    assert len(public) == 1
    assert public[0].fingerprint == cosign.fingerprint(key.public_key())
    assert cosign.verifies(public[0].key, payload, signature)
    assert not cosign.verifies(public[0].key, payload + b" ", signature)
    assert not cosign.verifies(public[0].key, payload, "%%% not base64")
    # A SEC1 key ("BEGIN EC PRIVATE KEY"), as openssl ecparam writes it, is read too.
    (tmp_path / "sec1.pem").write_bytes(raw)
    assert cosign.load_private_key(tmp_path / "sec1.pem").curve.name == "secp256r1"


def test_keys_of_the_wrong_kind(tmp_path: Path) -> None:
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(openssl("ecparam", "-name", "secp384r1", "-genkey"))
    with pytest.raises(UsageError, match="not an EC P-256"):
        cosign.load_private_key(p384)
    (tmp_path / "junk").write_text("hello")
    with pytest.raises(UsageError, match="not a PEM private key"):
        cosign.load_private_key(tmp_path / "junk")
    (tmp_path / "cosign.key").write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
                                         "eyJrZGYiOnt9fQ==\n"
                                         "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    (tmp_path / "pass").write_text("x\n")
    with pytest.raises(UsageError, match="not a cosign private key that can be read"):
        cosign.load_private_key(tmp_path / "cosign.key", tmp_path / "pass")
    with pytest.raises(UsageError, match="does not exist"):
        cosign.load_private_key(tmp_path / "missing")
    with pytest.raises(WarmctlError, match="no PEM public key"):
        cosign.load_public_keys(b"hello", "k")
    p384_pub = openssl("ec", "-pubout", "-in", str(p384))
    with pytest.raises(WarmctlError, match="not an EC P-256 public key"):
        cosign.load_public_keys(p384_pub, "k")


def test_private_key_of_another_curve_from_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert cosign.fingerprint(key.public_key()).startswith("sha256:")


def test_help_does_not_load_cryptography() -> None:
    probe = ("import sys\nfrom warmctl.cli.main import main\nmain(['push', '--help'])\n"
             "print('LOADED', [m for m in sys.modules if m.startswith('cryptography')])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert "LOADED []" in result.stdout


def test_encrypted_keys_and_passphrases(tmp_path: Path) -> None:
    raw = openssl("ecparam", "-name", "prime256v1", "-genkey")
    (tmp_path / "pass").write_text("s3cret\n")
    (tmp_path / "empty").write_text("")
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(openssl("pkcs8", "-topk8", "-passout", f"file:{tmp_path / 'pass'}",
                                  stdin=raw))
    plain = tmp_path / "plain.pem"
    plain.write_bytes(openssl("pkcs8", "-topk8", "-nocrypt", stdin=raw))
    assert cosign.load_private_key(encrypted, tmp_path / "pass").curve.name == "secp256r1"
    cases = [(encrypted, None, "is encrypted: give its passphrase"),
             (encrypted, tmp_path / "empty", "wrong passphrase"),
             (plain, tmp_path / "pass", "is not encrypted")]
    for key, passphrase, message in cases:
        with pytest.raises(UsageError, match=message):
            cosign.load_private_key(key, passphrase)


# --- cosign's own encrypted private keys ------------------------------------------------------

def cosign_key_file(path: Path, der: bytes, passphrase: bytes, *, pem_type: str = "SIGSTORE",
                    params: tuple[int, int, int] = (65536, 8, 1)) -> None:
    """A private key as cosign generate-key-pair writes it (go-securesystemslib's encrypted
    format), sealed by libsodium through PyNaCl: the reference implementation of secretbox,
    not warmctl's own."""
    import hashlib
    import os

    import nacl.secret

    salt, nonce = os.urandom(32), os.urandom(24)
    n, r, p = params
    key = hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**28)
    box = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    b64 = base64.b64encode
    sealed = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p},
                      "salt": b64(salt).decode()},
              "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce).decode()},
              "ciphertext": b64(box).decode()}
    body = base64.encodebytes(json.dumps(sealed).encode()).decode()
    path.write_text(f"-----BEGIN ENCRYPTED {pem_type} PRIVATE KEY-----\n{body}"
                    f"-----END ENCRYPTED {pem_type} PRIVATE KEY-----\n")


@pytest.mark.parametrize("pem_type", ["SIGSTORE", "COSIGN"])
def test_a_key_in_cosigns_own_encrypted_format_signs(tmp_path: Path, pem_type: str) -> None:
    pem = openssl("ecparam", "-name", "prime256v1", "-genkey")
    der = openssl("pkcs8", "-topk8", "-nocrypt", "-outform", "DER", stdin=pem)
    public = openssl("ec", "-pubout", stdin=pem)
    key_file, passphrase = tmp_path / "cosign.key", tmp_path / "pass"
    cosign_key_file(key_file, der, b"s3cret", pem_type=pem_type)
    passphrase.write_text("s3cret\n")  # the line end is not part of it, as for podman
    key = cosign.load_private_key(key_file, passphrase)
    payload = cosign.payload_for("r.io/warm/mc:v1", DIGEST)
    signature = cosign.sign(key, payload)
    # openssl, with the public key openssl wrote, accepts what the decrypted key signed.
    (tmp_path / "pub.pem").write_bytes(public)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(signature))
    openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
            str(tmp_path / "sig"), str(tmp_path / "payload"))

    passphrase.write_text("wrong\n")
    with pytest.raises(UsageError, match="wrong passphrase"):
        cosign.load_private_key(key_file, passphrase)
    with pytest.raises(UsageError, match="give its passphrase with --sign-passphrase-file"):
        cosign.load_private_key(key_file)


def test_a_cosign_key_with_parameters_cosign_would_refuse_is_refused(tmp_path: Path) -> None:
    """scrypt's memory is 128 * r * N bytes: a crafted file must not make warmctl take
    gigabytes; cosign itself accepts only its three parameter sets."""
    key_file, passphrase = tmp_path / "cosign.key", tmp_path / "pass"
    passphrase.write_text("p")
    cosign_key_file(key_file, b"not used", b"p", params=(1024, 8, 1))
    with pytest.raises(UsageError, match="N=1024 r=8 p=1 are not cosign's"):
        cosign.load_private_key(key_file, passphrase)
