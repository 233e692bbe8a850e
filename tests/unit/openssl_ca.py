"""Keys and certificates made with openssl, as an operator would make them: a signing key pair,
and a test certificate authority (a CA, a server certificate for 127.0.0.1 and a client
certificate it signed)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertAuthority:
    ca: Path  # ca.crt
    server_cert: Path
    server_key: Path
    client_cert: Path  # client.cert, as certs.d names a client certificate
    client_key: Path


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True,
                          check=True).stdout


def make_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """`openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt`, and its
    public key."""
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    raw = openssl("ecparam", "-name", "prime256v1", "-genkey")
    private.write_bytes(openssl("pkcs8", "-topk8", "-nocrypt", stdin=raw))
    public.write_bytes(openssl("ec", "-pubout", "-in", private))
    return private, public


def _issue(directory: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.key", directory / f"{name}.csr",
                      directory / f"{name}.pem")
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", subject)
    openssl("x509", "-req", "-in", csr, "-CA", directory / "ca.crt", "-CAkey",
             directory / "ca.key", "-CAcreateserial", "-out", cert, "-days", "2",
             "-extfile", ext)
    return cert, key


def make_cert_authority(directory: Path) -> CertAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", directory / "ca.key", "-out", directory / "ca.crt",
             "-subj", "/CN=warmctl test CA", "-days", "2")
    server_cert, server_key = _issue(
        directory, "server", "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n")
    client_cert, client_key = _issue(
        directory, "client", "/CN=warmctl test client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return CertAuthority(directory / "ca.crt", server_cert, server_key, client_cert, client_key)
