"""containers-policy.json(5) for the docker transport: scopes, requirements, identities, and
the decision over signatures (real ECDSA keys, made here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from warmctl.oci import cosign
from warmctl.oci.reference import parse_reference
from warmctl.oci.trust_policy import (
    BadPolicy,
    FoundSignature,
    Identity,
    Policy,
    PolicyRefused,
    Requirement,
    Verdict,
    decide,
    identity_matches,
    parse_policy,
    policy_file,
    scope_candidates,
)

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64


def policy(document: dict[str, Any]) -> Policy:
    return parse_policy(json.dumps(document).encode(), "test-policy.json")


def scopes(**docker: list[dict[str, Any]]) -> Policy:
    return policy({"default": [{"type": "reject"}], "transports": {"docker": docker}})


# --- where the policy is ----------------------------------------------------------------------


def test_policy_file_follows_podman(tmp_path: Path) -> None:
    explicit = tmp_path / "p.json"
    user = tmp_path / ".config" / "containers" / "policy.json"
    assert policy_file(explicit, {"HOME": str(tmp_path)}) == explicit
    assert policy_file(None, {"HOME": str(tmp_path)}) == Path("/etc/containers/policy.json")
    user.parent.mkdir(parents=True)
    user.write_text("{}")
    assert policy_file(None, {"HOME": str(tmp_path)}) == user
    assert policy_file(None, {}) == Path("/etc/containers/policy.json")


# --- scopes -----------------------------------------------------------------------------------


def test_scope_candidates_most_specific_first() -> None:
    ref = parse_reference("reg.example.com:5000/team/warm/mc:v1")
    assert scope_candidates(ref) == [
        "reg.example.com:5000/team/warm/mc:v1", "reg.example.com:5000/team/warm/mc",
        "reg.example.com:5000/team/warm", "reg.example.com:5000/team", "reg.example.com:5000",
        "*.example.com", "*.com",
    ]
    by_digest = parse_reference(f"localhost/mc@{DIGEST}")
    assert scope_candidates(by_digest) == [f"localhost/mc@{DIGEST}", "localhost/mc",
                                           "localhost"]


@pytest.mark.parametrize(("ref", "expected"), [
    ("reg.example.com/warm/mc:v1", "docker:reg.example.com/warm/mc:v1"),
    ("reg.example.com/warm/mc:v2", "docker:reg.example.com/warm/mc"),
    ("reg.example.com/warm/other:v1", "docker:reg.example.com/warm"),
    ("reg.example.com/cold/mc:v1", "docker:reg.example.com"),
    ("reg.example.com:5000/cold/mc:v1", "docker:*.example.com"),
    ("other.example.org/mc:v1", "default"),
])
def test_the_most_specific_scope_wins(ref: str, expected: str) -> None:
    accept = [{"type": "insecureAcceptAnything"}]
    chosen = scopes(**{
        "reg.example.com/warm/mc:v1": accept, "reg.example.com/warm/mc": accept,
        "reg.example.com/warm": accept, "reg.example.com": accept, "*.example.com": accept,
    }).scope_for(parse_reference(ref))
    assert chosen.name == expected


def test_the_docker_transports_own_default() -> None:
    parsed = scopes(**{"": [{"type": "insecureAcceptAnything"}]})
    assert parsed.scope_for(parse_reference("x.io/a:b")).requirements[0].kind \
        == "insecureAcceptAnything"


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "message"), [
    ({}, "has no 'default'"),
    ({"default": []}, "not a non-empty list"),
    ({"default": [{"keyPath": "/k"}]}, "without a type"),
    ({"default": [{"type": "reject"}], "extra": 1}, "unknown field 'extra'"),
    ({"default": [{"type": "sigstoreSigned"}]}, "exactly one of keyPath"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/a", "keyData": "AA=="}]},
     "exactly one of keyPath"),
    ({"default": [{"type": "sigstoreSigned", "keyData": "not base64!"}]}, "not base64"),
    ({"default": [{"type": "sigstoreSigned", "keyPaths": []}]}, "must be paths"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/k",
                   "signedIdentity": {"type": "exactReference", "dockerReference": "x"}}]},
     "is not a reference"),
])
def test_malformed_policies_are_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(BadPolicy, match=message):
        policy(document)


def test_not_json() -> None:
    with pytest.raises(BadPolicy, match="not JSON"):
        parse_policy(b"{", "p")


@pytest.mark.parametrize(("requirement", "why"), [
    ({"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}, "'signedBy'"),
    ({"type": "signedBaseLayer", "baseLayerIdentity": {"type": "matchExact"}},
     "'signedBaseLayer'"),
    ({"type": "sigstoreSigned", "fulcio": {}}, "sigstoreSigned with fulcio"),
    ({"type": "sigstoreSigned", "keyPath": "/k", "rekorPublicKeyPath": "/r"},
     "rekorPublicKeyPath"),
    ({"type": "sigstoreSigned", "keyPath": "/k", "pki": {}}, "pki"),
    ({"type": "sigstoreSigned", "keyPath": "/k", "newThing": 1}, "newThing"),
    ({"type": "sigstoreSigned", "keyPath": "/k",
      "signedIdentity": {"type": "remapIdentity", "prefix": "a", "signedPrefix": "b"}},
     "'remapIdentity'"),
    ({"type": "reject", "why": "x"}, "reject with fields"),
])
def test_what_is_not_implemented_refuses(requirement: dict[str, Any], why: str) -> None:
    parsed = policy({"default": [{"type": "insecureAcceptAnything"}],
                     "transports": {"docker": {"r.io": [requirement]}}})
    with pytest.raises(PolicyRefused, match="not implemented by warmctl") as caught:
        decide(parsed, parse_reference("r.io/a:1"), DIGEST, [], no_keys, never)
    assert why in caught.value.message
    assert "scope docker:r.io" in caught.value.message


def test_key_paths_and_datas() -> None:
    pem = b"-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"
    parsed = policy({"default": [
        {"type": "sigstoreSigned", "keyPaths": ["/a", "/b"]},
        {"type": "sigstoreSigned", "keyData": base64.b64encode(pem).decode()},
        {"type": "sigstoreSigned", "keyDatas": [base64.b64encode(pem).decode()] * 2,
         "signedIdentity": {"type": "matchRepository"}},
    ]})
    first, second, third = parsed.default.requirements
    assert first.key_paths == ("/a", "/b")
    assert second.key_datas == (pem,)
    assert second.identity == Identity("matchRepoDigestOrExact")
    assert third.key_datas == (pem, pem) and third.identity == Identity("matchRepository")


# --- identities -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "value", "image", "signed", "expected"), [
    ("matchRepoDigestOrExact", "", "r.io/a/b:v1", "r.io/a/b:v1", True),
    ("matchRepoDigestOrExact", "", "r.io/a/b:v1", "r.io/a/b:v2", False),
    ("matchRepoDigestOrExact", "", "r.io/a/b:v1", "r.io/a/b", False),  # cosign's, no tag
    ("matchRepoDigestOrExact", "", f"r.io/a/b@{DIGEST}", "r.io/a/b:v9", True),
    ("matchRepoDigestOrExact", "", f"r.io/a/b@{DIGEST}", "r.io/a/c:v9", False),
    ("matchExact", "", "r.io/a/b:v1", "r.io/a/b:v1", True),
    ("matchExact", "", f"r.io/a/b@{DIGEST}", "r.io/a/b:v1", False),
    ("matchRepository", "", "r.io/a/b:v1", "r.io/a/b", True),
    ("matchRepository", "", "r.io/a/b:v1", "r.io/a/b:other", True),
    ("matchRepository", "", "r.io/a/b:v1", "r.io/a/c:v1", False),
    ("matchRepository", "", "r.io/a/b:v1", "not a reference", False),
    ("exactReference", "q.io/x:1", "r.io/a/b:v1", "q.io/x:1", True),
    ("exactReference", "q.io/x:1", "r.io/a/b:v1", "r.io/a/b:v1", False),
    ("exactRepository", "q.io/x", "r.io/a/b:v1", "q.io/x:7", True),
    ("exactRepository", "q.io/x", "r.io/a/b:v1", "r.io/a/b:v1", False),
])
def test_identity_matches(kind: str, value: str, image: str, signed: str,
                          expected: bool) -> None:
    assert identity_matches(Identity(kind, value), parse_reference(image), signed) is expected


# --- the decision -----------------------------------------------------------------------------


def no_keys(_: Requirement) -> list[cosign.PublicKey]:
    return []


def never(*_: object) -> bool:
    return False


def verify(key: cosign.PublicKey, payload: bytes, signature: str) -> bool:
    return cosign.verifies(key.key, payload, signature)


class Signer:
    def __init__(self, name: str) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.public = cosign.PublicKey(name, self.private.public_key())
        self.pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, reference: str, digest: str = DIGEST) -> FoundSignature:
        payload = cosign.payload_for(reference, digest)
        return FoundSignature(payload, cosign.sign(self.private, payload))


@pytest.fixture
def trusted() -> Signer:
    return Signer("/etc/pki/trusted.pub")


@pytest.fixture
def stranger() -> Signer:
    return Signer("stranger")


def require(signer: Signer, **identity: str) -> Policy:
    requirement: dict[str, Any] = {"type": "sigstoreSigned", "keyPath": signer.public.source}
    if identity:
        requirement["signedIdentity"] = identity
    return policy({"default": [{"type": "insecureAcceptAnything"}],
                   "transports": {"docker": {"r.io/warm": [requirement]}}})


def keys_of(*signers: Signer) -> Any:
    return lambda requirement: [s.public for s in signers
                                if s.public.source in requirement.key_paths]


IMAGE = parse_reference("r.io/warm/mc:v1")


def test_a_signature_by_the_trusted_key_is_accepted(trusted: Signer, stranger: Signer) -> None:
    found = [stranger.sign("r.io/warm/mc:v1"), trusted.sign("r.io/warm/mc:v1")]
    verdict = decide(require(trusted), IMAGE, DIGEST, found, keys_of(trusted, stranger), verify)
    assert verdict == Verdict(verdict.scope, trusted.public)
    assert verdict.scope.name == "docker:r.io/warm"


@pytest.mark.parametrize(("case", "message"), [
    ("unsigned", "it is not signed; the policy requires a sigstore signature by "
                 "/etc/pki/trusted.pub"),
    ("stranger", "not by a trusted key"),
    ("other digest", "signed for another manifest (sha256:bbbbbbbbbbbb...)"),
    ("other tag", "signed as r.io/warm/mc:v2, which matchRepoDigestOrExact does not accept"),
    ("corrupt", "not by a trusted key"),
    ("not simple signing", "the payload's type is"),
])
def test_refusals(trusted: Signer, stranger: Signer, case: str, message: str) -> None:
    good = trusted.sign("r.io/warm/mc:v1")
    raw = bytearray(base64.b64decode(good.signature))
    raw[-3] ^= 0x01
    bad_payload = json.dumps({"critical": {"type": "something else"}}).encode()
    found = {
        "unsigned": [],
        "stranger": [stranger.sign("r.io/warm/mc:v1")],
        "other digest": [trusted.sign("r.io/warm/mc:v1", OTHER_DIGEST)],
        "other tag": [trusted.sign("r.io/warm/mc:v2")],
        "corrupt": [FoundSignature(good.payload, base64.b64encode(bytes(raw)).decode())],
        "not simple signing": [FoundSignature(bad_payload,
                                              cosign.sign(trusted.private, bad_payload))],
    }[case]
    with pytest.raises(PolicyRefused) as caught:
        decide(require(trusted), IMAGE, DIGEST, found, keys_of(trusted, stranger), verify)
    text = caught.value.message
    assert text.startswith("r.io/warm/mc:v1: refused by the signature policy "
                           "test-policy.json, scope docker:r.io/warm: ")
    assert message in text
    assert caught.value.exit_code == 5


def test_match_repository_accepts_cosigns_name_only_identity(trusted: Signer) -> None:
    found = [trusted.sign("r.io/warm/mc")]
    with pytest.raises(PolicyRefused):
        decide(require(trusted), IMAGE, DIGEST, found, keys_of(trusted), verify)
    verdict = decide(require(trusted, type="matchRepository"), IMAGE, DIGEST, found,
                     keys_of(trusted), verify)
    assert verdict.signed_by == trusted.public


def test_every_requirement_must_hold(trusted: Signer, stranger: Signer) -> None:
    both = policy({"default": [
        {"type": "sigstoreSigned", "keyPath": trusted.public.source},
        {"type": "sigstoreSigned", "keyPath": stranger.public.source},
    ]})
    one = [trusted.sign("r.io/warm/mc:v1")]
    with pytest.raises(PolicyRefused, match="by stranger"):
        decide(both, IMAGE, DIGEST, one, keys_of(trusted, stranger), verify)
    two = [*one, stranger.sign("r.io/warm/mc:v1")]
    assert decide(both, IMAGE, DIGEST, two, keys_of(trusted, stranger),
                  verify).signed_by == trusted.public
    accept_then_reject = policy({"default": [{"type": "insecureAcceptAnything"},
                                             {"type": "reject"}]})
    with pytest.raises(PolicyRefused, match="rejects everything"):
        decide(accept_then_reject, IMAGE, DIGEST, [], no_keys, never)


def test_insecure_accept_anything_needs_no_signature() -> None:
    parsed = policy({"default": [{"type": "insecureAcceptAnything"}]})
    assert not parsed.default.needs_signatures
    assert decide(parsed, IMAGE, DIGEST, [], no_keys, never).signed_by is None


def test_key_data_in_the_policy(trusted: Signer) -> None:
    parsed = policy({"default": [{"type": "sigstoreSigned",
                                  "keyData": base64.b64encode(trusted.pem).decode()}]})
    keys = cosign.load_public_keys(parsed.default.requirements[0].key_datas[0], "keyData")
    verdict = decide(parsed, IMAGE, DIGEST, [trusted.sign("r.io/warm/mc:v1")],
                     lambda _: keys, verify)
    assert verdict.signed_by is not None
    assert verdict.signed_by.fingerprint == trusted.public.fingerprint
