"""Verified HTTPS with a private CA, as podman does it: Debian's docker-registry serving TLS
on a certificate from a CA this test makes with openssl. The CA in certs.d (or --cert-dir)
makes push and pull work without --tls-verify=false; without it they are refused (exit 6).
Then the whole trust story over it, as a new user would try it: a key made with openssl, a
signed push, a policy requiring that key, a pull that works, and an unsigned snapshot from
the same scope refused (exit 5)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import Containers, Warmctl, free_port
from test_core_verbs import start_looper
from test_registry_roundtrip import serving_registry

pytestmark = pytest.mark.podman

_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
  secret: warmctl-test-{port}
  tls:
    certificate: {cert}
    key: {key}
"""


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """ca.crt, and a server certificate and key for 127.0.0.1 that the CA signed."""
    directory.mkdir()
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=warmctl test CA",
            "-days", "2")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
    return ca_crt, cert, key


@dataclass(frozen=True)
class TlsRegistry:
    host: str
    ca: Path


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[TlsRegistry]:
    ca, cert, key = make_ca(tmp_path / "ca")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(_CONFIG.format(storage=tmp_path / "storage", port=port, cert=cert,
                                     key=key))
    ready = ssl.create_default_context(cafile=str(ca))
    # Python >= 3.13 (Debian 13) refuses this CA, as openssl made it (no keyUsage), by default;
    # warmctl accepts it as podman does (warmctl/oci/transport.py), and so does this check.
    ready.verify_flags &= ~ssl.VERIFY_X509_STRICT
    with serving_registry(config, f"https://127.0.0.1:{port}/v2/", tmp_path / "registry.log",
                          ready):
        yield TlsRegistry(f"127.0.0.1:{port}", ca)


def test_private_ca_in_certs_d_then_signed_push_and_policy_on_pull(
    warmctl: Warmctl, containers: Containers, tls_registry: TlsRegistry, tmp_path: Path
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "signed", "--leave-running")
    warmctl("snapshot", looper, "unsigned", "--leave-running")
    base = f"{tls_registry.host}/warm"
    home = tmp_path / "user-home"  # $HOME/.config/containers/certs.d, as podman reads it
    as_user = {"HOME": str(home)}

    # Without the CA: refused, one line, exit 6; nothing sent.
    refused = warmctl("push", "signed", f"{base}/signed:v1", check=False, env=as_user)
    assert refused.returncode == 6, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "certificate not trusted" in refused.stderr
    assert f"certs.d/{tls_registry.host}/ca.crt" in refused.stderr

    # --cert-dir, as podman spells it.
    cert_dir = tmp_path / "cert-dir"
    cert_dir.mkdir()
    shutil.copy(tls_registry.ca, cert_dir / "ca.crt")
    warmctl("push", "unsigned", f"{base}/unsigned:v1", "--cert-dir", str(cert_dir), env=as_user)

    # The CA in certs.d/HOST:PORT: no option needed from here on.
    certs_d = home / ".config" / "containers" / "certs.d" / tls_registry.host
    certs_d.mkdir(parents=True)
    shutil.copy(tls_registry.ca, certs_d / "ca.crt")
    key, pub = tmp_path / "warm.key", tmp_path / "warm.pub"
    raw = subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey"],
                         capture_output=True, check=True).stdout
    key.write_bytes(subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt"], input=raw,
                                   capture_output=True, check=True).stdout)
    openssl("ec", "-in", key, "-pubout", "-out", pub)
    warmctl("push", "signed", f"{base}/signed:v1", "--sign-by-sigstore-private-key", str(key),
            env=as_user)

    # The README's policy: the key required for this registry's warm/, the rest as it was.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {base: [{"type": "sigstoreSigned", "keyPath": str(pub)}]}},
    }))
    other = Warmctl(tmp_path / "other")
    pulled = other("pull", f"{base}/signed:v1", "--signature-policy", str(policy), "--json",
                   env=as_user).json()
    assert isinstance(pulled, dict)
    assert pulled["ref"] == "signed@1"
    assert pulled["pulled"]["signed_by"]["key"] == str(pub)
    unsigned = other("pull", f"{base}/unsigned:v1", "--signature-policy", str(policy),
                     check=False, env=as_user)
    assert unsigned.returncode == 5, unsigned.stderr
    assert unsigned.stderr.count("\n") == 1
    assert f"scope docker:{base}: it is not signed" in unsigned.stderr
    listed = other("list", "--json").json()
    assert isinstance(listed, list)
    assert [s["ref"] for s in listed] == ["signed@1"]
