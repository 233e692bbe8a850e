"""Signing on push and the signature policy on pull, in-process against the fake registry,
with keys made by openssl as a user would make them. The real registry's tests are in
tests/integration/test_trust.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman
from openssl_ca import make_key_pair, openssl

from warmctl.catalogue import Catalogue
from warmctl.cli import main as cli_main
from warmctl.errors import ExitCode
from warmctl.oci import cosign
from warmctl.output import Progress
from warmctl.snapshots import SnapshotOptions, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("WARMCTL_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    podman = FakePodman()
    podman.add("mc")
    podman.add("other")
    with Catalogue(home).open() as cat:
        for name in ("mc", "other"):
            take_snapshot(cat, podman, name, name, SnapshotOptions(leave_running=True),
                          Progress())
    return home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_policy(path: Path, scope: str, public: Path) -> Path:
    path.write_text(json.dumps({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {scope: [{"type": "sigstoreSigned", "keyPath": str(public)}]}},
    }))
    return path


def test_signed_push_then_pull_under_a_policy_that_requires_the_key(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_key_pair(tmp_path, "k")
    dest = f"{registry.host}/warm/mc"
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json",
                         "--sign-by-sigstore-private-key", str(private))
    assert code == ExitCode.OK, err
    pushed = json.loads(out)
    tag = cosign.signature_tag(pushed["manifest_digest"])
    assert pushed["signature"]["tag"] == tag
    assert (tag, "warm/mc") in {(t, r) for r, t in registry.manifests}
    policy = write_policy(tmp_path / "policy.json", f"{registry.host}/warm", public)

    other = tmp_path / "other"
    code, out, err = run(capsys, "--home", str(other), "pull", f"{dest}:mc-1",
                         "--tls-verify=false", "--signature-policy", str(policy), "--json")
    assert code == ExitCode.OK, err
    signed_by = json.loads(out)["pulled"]["signed_by"]
    assert signed_by == {"key": str(public), "fingerprint": pushed["signature"]["key_fingerprint"]}
    code, out, _ = run(capsys, "--home", str(other), "show", "mc")
    assert f"{public} ({signed_by['fingerprint']})" in out

    # Unsigned, from the same scope: refused, nothing recorded, no blob downloaded.
    code, out, err = run(capsys, "push", "other", f"{registry.host}/warm/other",
                         "--tls-verify=false")
    assert code == ExitCode.OK, err
    registry.requests.clear()
    code, out, err = run(capsys, "--home", str(other), "pull",
                         f"{registry.host}/warm/other:other-1", "--tls-verify=false",
                         "--signature-policy", str(policy))
    assert code == ExitCode.INTEGRITY
    assert err.count("\n") == 1
    assert f"scope docker:{registry.host}/warm: it is not signed" in err
    assert not [r for r in registry.requests if "/blobs/" in r]
    code, out, _ = run(capsys, "--home", str(other), "list", "--json")
    assert [s["ref"] for s in json.loads(out)] == ["mc@1"]


def test_encrypted_key_and_signing_again_keeps_one_signature_per_key(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse\n")
    raw = openssl("ecparam", "-name", "prime256v1", "-genkey")
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(openssl("pkcs8", "-topk8", "-passout", f"file:{passphrase}",
                                  stdin=raw))
    dest = f"{registry.host}/warm/mc:v1"
    code, _, err = run(capsys, "push", "mc", dest, "--tls-verify=false",
                       "--sign-by-sigstore-private-key", str(encrypted))
    assert code == ExitCode.USAGE and "--sign-passphrase-file" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    code, _, err = run(capsys, "push", "mc", dest, "--tls-verify=false",
                       "--sign-by-sigstore-private-key", str(encrypted),
                       "--sign-passphrase-file", str(wrong))
    assert code == ExitCode.USAGE and "wrong passphrase" in err
    assert not registry.manifests  # the key is read before anything is sent
    for _ in range(2):
        code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json",
                             "--sign-by-sigstore-private-key", str(encrypted),
                             "--sign-passphrase-file", str(passphrase))
        assert code == ExitCode.OK, err
    other_key, _ = make_key_pair(tmp_path, "other")
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json",
                         "--sign-by-sigstore-private-key", str(other_key))
    assert code == ExitCode.OK, err
    tag = json.loads(out)["signature"]["tag"]
    manifest, _ = registry.manifests[("warm/mc", tag)]
    assert len(cosign.signature_layers(manifest)) == 2


def test_policy_refusals_name_the_scope(home: Path, tmp_path: Path, registry: FakeRegistry,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    dest = f"{registry.host}/warm/mc:v1"
    assert run(capsys, "push", "mc", dest, "--tls-verify=false")[0] == ExitCode.OK
    policy = tmp_path / "policy.json"
    cases = [
        ({"default": [{"type": "reject"}]}, "scope default: the scope rejects everything"),
        ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]},
         "requirement type 'signedBy' is not implemented by warmctl"),
        ({"default": [{"type": "insecureAcceptAnything"}],
          "transports": {"docker": {dest: [{"type": "reject"}]}}},
         f"scope docker:{dest}: the scope rejects everything"),
    ]
    for document, expected in cases:
        policy.write_text(json.dumps(document))
        code, _, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                           "--tls-verify=false", "--signature-policy", str(policy))
        assert code == ExitCode.INTEGRITY, err
        assert expected in err and err.count("\n") == 1
    policy.write_text("{not json")
    code, _, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                       "--tls-verify=false", "--signature-policy", str(policy))
    assert code == ExitCode.INTEGRITY and "is not JSON" in err
    code, _, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                       "--tls-verify=false", "--signature-policy", str(tmp_path / "none"))
    assert code == ExitCode.INTEGRITY and "no signature policy" in err
    code, out, _ = run(capsys, "--home", str(tmp_path / "h"), "list", "--json")
    assert json.loads(out) == []


def test_the_users_policy_file_comes_before_the_systems(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    dest = f"{registry.host}/warm/mc:v1"
    assert run(capsys, "push", "mc", dest, "--tls-verify=false")[0] == ExitCode.OK
    user_policy = tmp_path / ".config" / "containers" / "policy.json"  # HOME is tmp_path
    user_policy.parent.mkdir(parents=True)
    user_policy.write_text(json.dumps({"default": [{"type": "reject"}]}))
    code, _, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                       "--tls-verify=false")
    assert code == ExitCode.INTEGRITY and str(user_policy) in err


def test_a_signature_whose_payload_is_missing_counts_as_none(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_key_pair(tmp_path, "k")
    dest = f"{registry.host}/warm/mc:v1"
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json",
                         "--sign-by-sigstore-private-key", str(private))
    assert code == ExitCode.OK, err
    manifest, _ = registry.manifests[("warm/mc", json.loads(out)["signature"]["tag"])]
    [layer] = cosign.signature_layers(manifest)
    del registry.blobs[layer.digest]
    policy = write_policy(tmp_path / "policy.json", f"{registry.host}/warm", public)
    code, _, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                       "--tls-verify=false", "--signature-policy", str(policy))
    assert code == ExitCode.INTEGRITY, err
    assert "it is not signed" in err


def test_a_snapshot_already_in_the_registry_is_signed_by_pushing_it_again(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_key_pair(tmp_path, "k")
    dest = f"{registry.host}/warm/mc:v1"
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out)["signature"] is None
    registry.requests.clear()
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json",
                         "--sign-by-sigstore-private-key", str(private))
    assert code == ExitCode.OK, err
    again = json.loads(out)
    assert again["skipped_existing"] is True and again["bytes_uploaded"] == 0
    assert again["signature"]["tag"] == cosign.signature_tag(again["manifest_digest"])
    uploads = [r for r in registry.requests if r.startswith(("POST", "PATCH"))]
    assert len(uploads) == 2  # the payload and the .sig config, nothing of the snapshot
    policy = write_policy(tmp_path / "policy.json", f"{registry.host}/warm/mc", public)
    code, out, err = run(capsys, "--home", str(tmp_path / "h"), "pull", dest,
                         "--tls-verify=false", "--signature-policy", str(policy), "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out)["pulled"]["signed_by"]["key"] == str(public)
