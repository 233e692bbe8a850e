"""Opening cosign's secretbox (PyNaCl): what libsodium sealed opens, nothing tampered does."""

from __future__ import annotations

import os

import nacl.secret
import pytest

from warmctl.oci.cosign import SecretboxError, open_secretbox


@pytest.mark.parametrize("length", [0, 1, 31, 32, 63, 64, 65, 127, 128, 500, 1000])
def test_opens_what_libsodium_sealed(length: int) -> None:
    key, nonce, message = os.urandom(32), os.urandom(24), os.urandom(length)
    box = nacl.secret.SecretBox(key).encrypt(message, nonce).ciphertext
    assert open_secretbox(box, nonce, key) == message


def test_a_wrong_key_nonce_or_byte_does_not_open() -> None:
    key, nonce, message = os.urandom(32), os.urandom(24), b"a private key" * 10
    box = nacl.secret.SecretBox(key).encrypt(message, nonce).ciphertext
    for bad_box, bad_nonce, bad_key in [
        (box, nonce, os.urandom(32)),
        (box, os.urandom(24), key),
        (box[:20] + bytes([box[20] ^ 1]) + box[21:], nonce, key),  # a ciphertext bit
        (bytes([box[0] ^ 1]) + box[1:], nonce, key),  # a tag bit
        (box[:15], nonce, key),
    ]:
        with pytest.raises(SecretboxError):
            open_secretbox(bad_box, bad_nonce, bad_key)
    with pytest.raises(SecretboxError):
        open_secretbox(box, nonce[:16], key)
