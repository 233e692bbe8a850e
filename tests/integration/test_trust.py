"""Signed snapshots through a real registry (Debian's docker-registry, as in
test_registry_roundtrip.py): keys made with openssl, `push --sign-by-sigstore-private-key`,
and `pull` under a signature policy. The stored signature is read back over the registry's
HTTP API and checked with `openssl dgst -verify`, as any reader of cosign's format would; the
forged and moved signatures are written the same way, without warmctl."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import IMAGES, Containers, Warmctl, podman
from test_core_verbs import assert_all_back, fill, start_looper, start_memcached
from test_registry_roundtrip import Registry, registry

pytestmark = pytest.mark.podman
__all__ = ["registry"]  # the fixture, imported for the tests below

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True,
                          check=True).stdout


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    raw = openssl("ecparam", "-name", "prime256v1", "-genkey")
    private.write_bytes(openssl("pkcs8", "-topk8", "-nocrypt", stdin=raw))
    public.write_bytes(openssl("ec", "-pubout", "-in", str(private)))
    return private, public


# --- the registry's API, spoken directly -----------------------------------------------------


def api(registry: Registry, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(f"http://{registry.host}/v2/{path}", data=body,
                                     method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, resp.read(), resp.headers


def get_manifest(registry: Registry, repo: str, reference: str) -> bytes:
    return api(registry, "GET", f"{repo}/manifests/{reference}",
               headers={"Accept": OCI_MANIFEST})[1]


def put_manifest(registry: Registry, repo: str, tag: str, manifest: bytes) -> None:
    api(registry, "PUT", f"{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})


def get_blob(registry: Registry, repo: str, digest: str) -> bytes:
    return api(registry, "GET", f"{repo}/blobs/{digest}")[1]


def put_blob(registry: Registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, _, headers = api(registry, "POST", f"{repo}/blobs/uploads/", b"")
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    url = f"{location}{sep}digest={digest}"
    url = url.split("/v2/", 1)[1]  # distribution answers with an absolute URL or a path
    api(registry, "PUT", url, data, {"Content-Type": "application/octet-stream"})
    return digest


def sig_tag(manifest_digest: str) -> str:
    return manifest_digest.replace(":", "-") + ".sig"


def signature_manifest(registry: Registry, repo: str, payload: bytes, signature: str) -> bytes:
    """A .sig manifest as cosign writes one, with one signature."""
    payload_digest = put_blob(registry, repo, payload)
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [payload_digest]}}).encode()
    config_digest = put_blob(registry, repo, config)
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": PAYLOAD_TYPE, "digest": payload_digest, "size": len(payload),
                    "annotations": {SIGNATURE_ANNOTATION: signature}}],
    }).encode()


def openssl_sign(key: Path, payload: bytes, scratch: Path) -> str:
    (scratch / "payload").write_bytes(payload)
    der = openssl("dgst", "-sha256", "-sign", str(key), str(scratch / "payload"))
    return base64.b64encode(der).decode()


def write_policy(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def requires(public: Path, scope: str) -> dict[str, Any]:
    """docs/sharing-and-trust.md's policy: the key required for one scope, the rest accepted."""
    return {"default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {scope: [{"type": "sigstoreSigned",
                                               "keyPath": str(public)}]}}}


# --- tests ------------------------------------------------------------------------------------


def test_signed_push_pull_under_a_policy_requiring_the_key_and_resume_every_value(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    private, public = key_pair(tmp_path, "warm")
    name, port = start_memcached(containers)
    items = fill(port, 32, seed=14)
    warmctl("snapshot", name, "mc")
    dest = f"{registry.host}/warm/mc:v1"
    pushed = warmctl("push", "mc", dest, "--tls-verify=false", "--json",
                     "--sign-by-sigstore-private-key", str(private)).json()
    assert isinstance(pushed, dict)
    digest = pushed["manifest_digest"]
    assert pushed["signature"]["tag"] == sig_tag(digest)

    # What an independent reader of cosign's format finds: the .sig tag, one simple-signing
    # layer naming this manifest and reference, and a signature openssl accepts.
    sig_manifest = json.loads(get_manifest(registry, "warm/mc", sig_tag(digest)))
    [layer] = sig_manifest["layers"]
    assert layer["mediaType"] == PAYLOAD_TYPE
    payload = get_blob(registry, "warm/mc", layer["digest"])
    critical = json.loads(payload)["critical"]
    assert critical == {"identity": {"docker-reference": dest},
                        "image": {"docker-manifest-digest": digest},
                        "type": "cosign container image signature"}
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(layer["annotations"][
        SIGNATURE_ANNOTATION]))
    verified = openssl("dgst", "-sha256", "-verify", str(public), "-signature",
                       str(tmp_path / "sig.der"), str(tmp_path / "payload"))
    assert verified.strip() == b"Verified OK"

    warmctl("rm", "mc")
    podman("rm", "--force", "--time", "0", name)
    policy = write_policy(tmp_path / "policy.json", requires(public, f"{registry.host}/warm"))
    elsewhere = Warmctl(tmp_path / "elsewhere")
    pulled = elsewhere("pull", dest, "--tls-verify=false", "--signature-policy", str(policy),
                       "--json").json()
    assert isinstance(pulled, dict)
    fingerprint = pushed["signature"]["key_fingerprint"]
    assert pulled["pulled"]["signed_by"] == {"key": str(public), "fingerprint": fingerprint}
    listed = elsewhere("list", "--json").json()
    assert isinstance(listed, list)
    assert listed[0]["pulled"]["signed_by"]["fingerprint"] == fingerprint
    assert re.search(rf"^pulled\.signed_by +{re.escape(f'{public} ({fingerprint})')}$",
                     elsewhere("show", "mc").stdout, re.MULTILINE)
    assert elsewhere("resume", "mc").stdout.strip() == name
    assert_all_back(port, items)


def test_refusals_leave_the_catalogue_unchanged(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    trusted, trusted_pub = key_pair(tmp_path, "trusted")
    stranger, _ = key_pair(tmp_path, "stranger")
    looper = start_looper(containers)
    # One snapshot per case: a signature belongs to a manifest, whatever its tag.
    for snapshot in ("signed", "stranger", "unsigned", "moved", "forged", "corrupt"):
        warmctl("snapshot", looper, snapshot, "--leave-running")
    repo = "warm/looper"
    base = f"{registry.host}/{repo}"

    def push(snapshot: str, *key: str) -> str:
        args = ["--sign-by-sigstore-private-key", key[0]] if key else []
        result = warmctl("push", snapshot, f"{base}:{snapshot}", "--tls-verify=false",
                         "--json", *args).json()
        assert isinstance(result, dict)
        digest: str = result["manifest_digest"]
        return digest

    signed = push("signed", str(trusted))
    push("stranger", str(stranger))
    push("unsigned")
    # A valid signature of "signed" moved onto another snapshot's .sig tag.
    moved = push("moved")
    put_manifest(registry, repo, sig_tag(moved),
                 get_manifest(registry, repo, sig_tag(signed)))
    # A payload, signed by the trusted key, that names another digest than its tag's.
    forged_digest = push("forged")
    forged = json.dumps({"critical": {
        "identity": {"docker-reference": f"{base}:forged"},
        "image": {"docker-manifest-digest": signed},
        "type": "cosign container image signature"}, "optional": None}).encode()
    put_manifest(registry, repo, sig_tag(forged_digest), signature_manifest(
        registry, repo, forged, openssl_sign(trusted, forged, tmp_path)))
    # A corrupted signature: one byte of the DER flipped.
    corrupt = push("corrupt", str(trusted))
    manifest = json.loads(get_manifest(registry, repo, sig_tag(corrupt)))
    der = bytearray(base64.b64decode(manifest["layers"][0]["annotations"][SIGNATURE_ANNOTATION]))
    der[-5] ^= 0x10
    manifest["layers"][0]["annotations"][SIGNATURE_ANNOTATION] = base64.b64encode(der).decode()
    put_manifest(registry, repo, sig_tag(corrupt), json.dumps(manifest).encode())

    scope = f"{registry.host}/warm"
    require_trusted = requires(trusted_pub, scope)
    cases = [
        ("stranger", require_trusted, "no valid signature", "not by a trusted key"),
        ("unsigned", require_trusted, "it is not signed", f"scope docker:{scope}:"),
        ("signed", {"default": [{"type": "reject"}]}, "scope default: the scope rejects", ""),
        ("moved", require_trusted, "signed for another manifest", f"({signed[:19]}...)"),
        ("forged", require_trusted, "signed for another manifest", ""),
        ("corrupt", require_trusted, "not by a trusted key", ""),
        # The host-wide scope requires the key; a more specific one rejects this tag.
        ("signed", {**require_trusted, "transports": {"docker": {
            **require_trusted["transports"]["docker"], f"{base}:signed": [{"type": "reject"}]}}},
         f"scope docker:{base}:signed: the scope rejects", ""),
    ]
    other = Warmctl(tmp_path / "other")
    other("pull", f"{base}:signed", "--tls-verify=false", "--signature-policy",
          str(write_policy(tmp_path / "ok.json", require_trusted)))
    before = other("list", "--json").json()
    # The snapshots' own blobs (config and archive), which a refused pull must not fetch.
    snapshot_blobs = {
        descriptor["digest"]
        for tag in ("stranger", "unsigned", "moved", "forged", "corrupt")
        for manifest in [json.loads(get_manifest(registry, repo, tag))]
        for descriptor in [manifest["config"], *manifest["layers"]]}
    log_start = registry.log.stat().st_size
    for tag, document, expected, detail in cases:
        policy = write_policy(tmp_path / "policy.json", document)
        result = other("pull", f"{base}:{tag}", "--tls-verify=false", "--signature-policy",
                       str(policy), check=False)
        assert result.returncode == 5, (tag, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"warmctl: error: {base}:{tag}: refused by the "
                                        f"signature policy {policy}, scope "), result.stderr
        assert expected in result.stderr and detail in result.stderr, (tag, result.stderr)
        assert other("list", "--json").json() == before, tag
        assert list((other.home / "tmp").iterdir()) == [], tag
    with registry.log.open("rb") as log:
        log.seek(log_start)
        fetched = re.findall(rb'"GET /v2/warm/looper/blobs/(sha256:[0-9a-f]{64})', log.read())
    assert fetched, "the access log shows the signature payloads fetched"
    assert not {digest.decode() for digest in fetched} & snapshot_blobs

    # insecureAcceptAnything, in a scope more specific than one that requires the key, takes
    # the unsigned snapshot.
    lenient = {**require_trusted, "transports": {"docker": {
        scope: require_trusted["transports"]["docker"][scope],
        f"{base}": [{"type": "insecureAcceptAnything"}]}}}
    pulled = other("pull", f"{base}:unsigned", "--tls-verify=false", "--signature-policy",
                   str(write_policy(tmp_path / "lenient.json", lenient)), "--json").json()
    assert isinstance(pulled, dict)
    assert pulled["ref"] == "unsigned@1" and pulled["pulled"]["signed_by"] is None
    assert re.search(r"^pulled\.signed_by +- \(not verified\)$", other("show", "unsigned").stdout,
                     re.MULTILINE)


def test_a_pulled_snapshot_cannot_reach_past_its_container(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    """A container with a host directory bind-mounted and annotations that would steer
    CRIU and crun: pulled elsewhere, resume refuses the host path (exit 6) until
    --allow-host-access, and the restored container has none of the pusher's annotations."""
    shared = tmp_path / "host-dir"
    shared.mkdir()
    pusher_conf = tmp_path / "pusher-criu.conf"
    pwned = tmp_path / "pwned.log"  # where CRIU logs when it obeys the pusher's file
    pusher_conf.write_text(f"log-file {pwned}\n")
    name = containers.name("bound")
    podman("run", "--detach", "--name", name, "--volume", f"{shared}:/shared",
           "--annotation", f"org.criu.config={pusher_conf}",
           "--annotation", "run.oci.keep_original_groups=1",
           "--annotation", "custom.note=pusher", IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i > /shared/count; sleep 0.1; done")
    warmctl("snapshot", name, "bound")
    runtime = podman("info", "--format", "{{.Host.OCIRuntime.Name}}").stdout.strip()
    if runtime == "runc":
        # runc hands CRIU the file the annotation names: the checkpoint, on the pusher's
        # host, obeyed it. (crun does so only from 1.26, with libcriu >= 4.2.)
        assert pwned.exists()
    else:
        print(f"{runtime}: the pusher's own checkpoint obeyed its CRIU file: {pwned.exists()}")
    pwned.unlink(missing_ok=True)
    podman("rm", "--force", "--time", "0", name)
    dest = f"{registry.host}/warm/bound:v1"
    warmctl("push", "bound", dest, "--tls-verify=false")
    accept = write_policy(tmp_path / "accept.json",
                          {"default": [{"type": "insecureAcceptAnything"}]})

    # On the recording host it is not refused; show lists the access all the same.
    assert f"host path {shared} at /shared" in warmctl("show", "bound").stdout
    elsewhere = Warmctl(tmp_path / "elsewhere")
    elsewhere("pull", dest, "--tls-verify=false", "--signature-policy", str(accept))
    shown = elsewhere("show", "bound", "--json").json()
    assert isinstance(shown, dict)
    assert shown["host_access"] == [f"host path {shared} at /shared"]
    report = elsewhere("doctor", "--snapshot", "bound", "--json", check=False).json()
    assert isinstance(report, dict)
    [access] = [c for c in report["checks"] if c["name"] == "access"]
    assert access["status"] == "warn" and str(shared) in access["detail"]

    refused = elsewhere("resume", "bound", check=False)
    assert refused.returncode == 6, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert (f"bound@1 came from a registry and asks for host access: host path {shared} at "
            "/shared") in refused.stderr
    assert podman("container", "exists", name, check=False).returncode == 1

    assert elsewhere("resume", "bound", "--allow-host-access").stdout.strip() == name
    annotations = json.loads(podman("container", "inspect", "--format",
                                    "{{json .Config.Annotations}}", name).stdout)
    assert "custom.note" not in annotations
    assert "run.oci.keep_original_groups" not in annotations
    assert annotations.get("org.criu.config", "/run/warmctl/criu/").startswith(
        "/run/warmctl/criu/")
    assert not pwned.exists()
