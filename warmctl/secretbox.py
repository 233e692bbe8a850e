"""NaCl's secretbox (XSalsa20-Poly1305), opening only: what cosign encrypts its private keys
with (``cosign generate-key-pair``: scrypt for the key, secretbox for the PKCS#8 bytes).

``cryptography`` has Poly1305 but no Salsa20, and a second crypto library for one key file of
a few hundred bytes is not worth a dependency: Salsa20 is written out here from its
specification (D. J. Bernstein, "The Salsa20 family of stream ciphers", and "Extending the
Salsa20 nonce" for XSalsa20 and HSalsa20). Pure Python is slow (about 20 microseconds a
64-byte block), which for a key file does not matter; never use it for bulk data.
tests/unit/test_secretbox.py checks it against libsodium (PyNaCl, a test-only dependency).
"""

from __future__ import annotations

import hmac
import struct

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16

# "expand 32-byte k", the constants of a 256-bit key.
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
_MASK = 0xFFFFFFFF


class OpenError(ValueError):
    """The box did not open: wrong key (for cosign, a wrong passphrase) or damaged bytes."""


def open_box(box: bytes, nonce: bytes, key: bytes) -> bytes:
    """The plaintext of ``box`` (Poly1305 tag, then the ciphertext, as NaCl's secretbox and
    Go's nacl/secretbox.Seal write it); OpenError when the tag does not match."""
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise OpenError("secretbox needs a 32-byte key and a 24-byte nonce")
    if len(box) < TAG_SIZE:
        raise OpenError("secretbox too short")
    tag, ciphertext = box[:TAG_SIZE], box[TAG_SIZE:]
    # XSalsa20: HSalsa20 of the key and the nonce's first 16 bytes is the key of a Salsa20
    # stream under the nonce's last 8. The stream's first 32 bytes are Poly1305's one-time
    # key; the message is XORed with what follows.
    subkey = _hsalsa20(key, nonce[:16])
    stream = _salsa20_stream(subkey, nonce[16:], 32 + len(ciphertext))
    expected = Poly1305.generate_tag(stream[:32], ciphertext)
    if not hmac.compare_digest(expected, tag):
        raise OpenError("secretbox authentication failed")
    return bytes(c ^ s for c, s in zip(ciphertext, stream[32:], strict=True))


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _double_rounds(state: list[int]) -> list[int]:
    """Salsa20's 20 rounds (10 column-and-row double rounds) over a copy of ``state``."""
    x = list(state)

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
        x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
        x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
        x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)

    for _ in range(10):
        quarter(0, 4, 8, 12)  # columns
        quarter(5, 9, 13, 1)
        quarter(10, 14, 2, 6)
        quarter(15, 3, 7, 11)
        quarter(0, 1, 2, 3)  # rows
        quarter(5, 6, 7, 4)
        quarter(10, 11, 8, 9)
        quarter(15, 12, 13, 14)
    return x


def _state(key: bytes, middle: bytes) -> list[int]:
    """The 16-word input: constants on the diagonal, the key around them, and 16 bytes
    (nonce and block counter, or HSalsa20's input) in words 6 to 9."""
    k = struct.unpack("<8I", key)
    m = struct.unpack("<4I", middle)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *m, _SIGMA[2], *k[4:], _SIGMA[3]]


def _hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    x = _double_rounds(_state(key, nonce16))
    return struct.pack("<8I", *(x[i] for i in (0, 5, 10, 15, 6, 7, 8, 9)))


def _salsa20_stream(key: bytes, nonce8: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        state = _state(key, nonce8 + struct.pack("<Q", counter))
        mixed = _double_rounds(state)
        out += struct.pack("<16I", *((a + b) & _MASK for a, b in zip(mixed, state, strict=True)))
        counter += 1
    return bytes(out[:length])
