"""Signing on push and the signature policy on pull, in-process against the fake registry,
with keys made by openssl as a user would make them. The real registry's tests are in
tests/integration/test_trust.py."""

from __future__ import annotations

import json
import re
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


def readme_policy() -> str:
    """The policy README's trust section gives for forbidding unsigned snapshots."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks: list[str] = re.findall(r"```json\n(.*?)```", readme, re.DOTALL)
    [block] = [b for b in blocks if '"default": [{"type": "reject"}]' in b]
    return block


def test_list_and_show_say_whether_a_signature_vouched_for_each_snapshot_and_whose(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_key_pair(tmp_path, "k")
    code, out, err = run(capsys, "push", "mc", f"{registry.host}/warm/mc:v1",
                         "--tls-verify=false", "--json", "--sign-by-sigstore-private-key",
                         str(private))
    assert code == ExitCode.OK, err
    fingerprint = json.loads(out)["signature"]["key_fingerprint"]
    assert run(capsys, "push", "other", f"{registry.host}/open/other:v1",
               "--tls-verify=false")[0] == ExitCode.OK
    # The key for warm/, anything from elsewhere: README's first example.
    policy = write_policy(tmp_path / "policy.json", f"{registry.host}/warm", public)
    pulls = [(f"{registry.host}/warm/mc:v1", "signed"), (f"{registry.host}/open/other:v1",
                                                         "unsigned")]
    for source, name in pulls:
        code, _, err = run(capsys, "pull", source, name, "--tls-verify=false",
                           "--signature-policy", str(policy))
        assert code == ExitCode.OK, err

    code, out, _ = run(capsys, "list")
    origin = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert f"signed by k.pub {fingerprint[:19]}" in origin["signed@1"]
    assert "pulled, UNSIGNED" in origin["unsigned@1"]
    assert " local " in origin["mc@1"] + " "
    assert out.splitlines()[0].split()[-2:] == ["ORIGIN", "LABELS"]

    code, out, _ = run(capsys, "show", "signed")
    [origin_line] = [line for line in out.splitlines() if line.startswith("origin ")]
    assert (f"pulled from {registry.host}/warm/mc:v1, signed by {public} "
            f"({fingerprint})") in origin_line
    code, out, _ = run(capsys, "show", "unsigned")
    assert (f"pulled from {registry.host}/open/other:v1, UNSIGNED: the signature policy "
            "(scope default) asked for no signature") in out
    code, out, _ = run(capsys, "show", "mc")
    assert "taken on this host or an earlier one (not pulled)" in out

    code, out, _ = run(capsys, "list", "--json")
    pulled = {s["ref"]: s["pulled"] for s in json.loads(out)}
    assert pulled["mc@1"] is None
    assert pulled["signed@1"]["signed_by"] == {"key": str(public), "fingerprint": fingerprint}
    assert pulled["signed@1"]["policy_scope"] == f"docker:{registry.host}/warm"
    assert pulled["unsigned@1"]["signed_by"] is None
    assert pulled["unsigned@1"]["policy_scope"] == "default"
    code, out, _ = run(capsys, "show", "unsigned", "--json")
    assert json.loads(out)["pulled"]["signed_by"] is None


def test_the_readme_policy_forbids_unsigned_snapshots_and_admits_signed_ones(
        home: Path, tmp_path: Path, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_key_pair(tmp_path, "k")
    policy = tmp_path / "policy.json"
    policy.write_text(readme_policy()
                      .replace("registry.example.com/warm", f"{registry.host}/warm")
                      .replace("/etc/containers/warm.pub", str(public)))
    assert run(capsys, "push", "mc", f"{registry.host}/warm/mc:signed", "--tls-verify=false",
               "--sign-by-sigstore-private-key", str(private))[0] == ExitCode.OK
    for dest in (f"{registry.host}/warm/other:unsigned", f"{registry.host}/elsewhere/mc:v1"):
        assert run(capsys, "push", dest.split("/")[-1].split(":")[0], dest,
                   "--tls-verify=false")[0] == ExitCode.OK
    other = tmp_path / "other"
    for source, why in ((f"{registry.host}/warm/other:unsigned", "it is not signed"),
                        (f"{registry.host}/elsewhere/mc:v1", "the scope rejects everything")):
        code, _, err = run(capsys, "--home", str(other), "pull", source, "--tls-verify=false",
                           "--signature-policy", str(policy))
        assert code == ExitCode.INTEGRITY and why in err, err
    code, _, err = run(capsys, "--home", str(other), "pull", f"{registry.host}/warm/mc:signed",
                       "--tls-verify=false", "--signature-policy", str(policy))
    assert code == ExitCode.OK, err
    code, out, _ = run(capsys, "--home", str(other), "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["mc@1"]
    assert "signed by k.pub" in out
