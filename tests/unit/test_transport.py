"""TLS and proxies as podman has them (warmctl/oci/transport.py), and credentials kept to their
origin: against the fake registry speaking TLS on a certificate from a CA made with openssl,
and a CONNECT proxy in a thread."""

from __future__ import annotations

import base64
import hashlib
import io
import select
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_registry import FakeRegistry
from openssl_ca import CertAuthority, make_cert_authority

from warmctl.errors import ExitCode, HostError
from warmctl.oci import transport
from warmctl.oci.client import RegistryClient
from warmctl.oci.credentials import Credentials
from warmctl.oci.reference import parse_reference

BLOB = b"the storage's bytes" * 100
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_cert_authority(tmp_path_factory.mktemp("ca"))


def server_context(ca: CertAuthority, *, client_certs: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.server_cert, ca.server_key)
    if client_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca.ca)
    return context


def certs_dir(ca: CertAuthority, directory: Path, *, client: bool = False) -> Path:
    directory.mkdir(parents=True)
    shutil.copy(ca.ca, directory / "ca.crt")
    if client:
        shutil.copy(ca.client_cert, directory / "client.cert")
        shutil.copy(ca.client_key, directory / "client.key")
    return directory


def client(registry: FakeRegistry, *, environ: dict[str, str] | None = None,
           cert_dir: Path | None = None, credentials: Credentials | None = None,
           tls_verify: bool = True) -> RegistryClient:
    return RegistryClient(parse_reference(f"{registry.host}/warm/mc"), push=False,
                          tls_verify=tls_verify, credentials=credentials, timeout=10,
                          sleep=lambda _: None, cert_dir=cert_dir, environ=environ or {})


def fetch(c: RegistryClient) -> bytes:
    out = io.BytesIO()
    c.connect()
    c.fetch_blob(DIGEST, len(BLOB), out, lambda _: None)
    return out.getvalue()


# --- certs.d ----------------------------------------------------------------------------------


def test_cert_dir_lookup_follows_podman(tmp_path: Path) -> None:
    home = tmp_path / "home"
    system = (tmp_path / "etc-containers", tmp_path / "etc-docker")
    assert transport.cert_dir_for("r.io:5000", environ={"HOME": str(home)},
                                  system_dirs=system) is None
    (system[1] / "r.io:5000").mkdir(parents=True)
    assert transport.cert_dir_for("r.io:5000", environ={"HOME": str(home)},
                                  system_dirs=system) == system[1] / "r.io:5000"
    (system[0] / "r.io:5000").mkdir(parents=True)
    assert transport.cert_dir_for("r.io:5000", environ={"HOME": str(home)},
                                  system_dirs=system) == system[0] / "r.io:5000"
    user = home / ".config" / "containers" / "certs.d" / "r.io:5000"
    user.mkdir(parents=True)
    assert transport.cert_dir_for("r.io:5000", environ={"HOME": str(home)},
                                  system_dirs=system) == user
    assert transport.cert_dir_for("r.io", environ={"HOME": str(home)},
                                  system_dirs=system) is None
    assert transport.cert_dir_for("r.io:5000", cert_dir=tmp_path, environ={},
                                  system_dirs=system) == tmp_path


def test_a_private_ca_in_certs_d_is_trusted(ca: CertAuthority, tmp_path: Path) -> None:
    with FakeRegistry(tls=server_context(ca), blobs={DIGEST: BLOB}) as registry:
        home = tmp_path / "home"
        with pytest.raises(HostError) as caught:
            fetch(client(registry, environ={"HOME": str(home)}))
        assert caught.value.exit_code == ExitCode.ENVIRONMENT
        assert "certificate not trusted" in caught.value.message
        assert caught.value.hint and f"certs.d/{registry.host}/ca.crt" in caught.value.hint
        certs_dir(ca, home / ".config" / "containers" / "certs.d" / registry.host)
        assert fetch(client(registry, environ={"HOME": str(home)})) == BLOB
        assert {scheme for scheme, _, _ in registry.seen} == {"https"}


def test_a_ca_without_key_usage_is_trusted_as_podman_trusts_it() -> None:
    """openssl req -x509 makes a CA without keyUsage: Python >= 3.13's default context refuses
    it (VERIFY_X509_STRICT), podman does not; warmctl must not either."""
    assert not transport.tls_context(None, verify=True).verify_flags & ssl.VERIFY_X509_STRICT


def test_cert_dir_and_client_certificates(ca: CertAuthority, tmp_path: Path) -> None:
    with FakeRegistry(tls=server_context(ca, client_certs=True),
                      blobs={DIGEST: BLOB}) as registry:
        without_client = certs_dir(ca, tmp_path / "ca-only")
        with pytest.raises(HostError):
            fetch(client(registry, cert_dir=without_client))
        both = certs_dir(ca, tmp_path / "both", client=True)
        assert fetch(client(registry, cert_dir=both)) == BLOB


def test_a_client_certificate_without_its_key(ca: CertAuthority, tmp_path: Path) -> None:
    directory = certs_dir(ca, tmp_path / "d", client=True)
    (directory / "client.key").unlink()
    with pytest.raises(HostError, match=r"has no key client\.key"):
        transport.tls_context(directory, verify=True)


# --- credentials stay with their origin --------------------------------------------------------


def test_a_redirect_from_https_to_http_on_the_same_host_gets_no_credentials(
        ca: CertAuthority, tmp_path: Path) -> None:
    with FakeRegistry(tls=server_context(ca), auth="basic", downgrade_blobs=True,
                      blobs={DIGEST: BLOB}) as registry:
        creds = Credentials(registry.username, registry.password, "test")
        basic = "Basic " + base64.b64encode(b"alice:secret").decode()
        assert fetch(client(registry, cert_dir=certs_dir(ca, tmp_path / "c"),
                            credentials=creds)) == BLOB
        blob_requests = [(scheme, auth) for scheme, request, auth in registry.seen
                         if request == f"GET /v2/warm/mc/blobs/{DIGEST}"]
        assert blob_requests == [("https", basic), ("http", "")]


def test_a_redirect_to_another_host_gets_no_credentials(tmp_path: Path) -> None:
    with FakeRegistry(blobs={DIGEST: BLOB}) as storage, \
            FakeRegistry(auth="basic", redirect_blobs_to=f"http://{storage.host}",
                         blobs={DIGEST: BLOB}) as registry:
        creds = Credentials(registry.username, registry.password, "test")
        assert fetch(client(registry, credentials=creds, tls_verify=False)) == BLOB
        assert [auth for _, _, auth in storage.seen] == [""]
        assert any(auth.startswith("Basic ") for _, _, auth in registry.seen)


# --- proxies ----------------------------------------------------------------------------------


class ConnectProxy:
    """A CONNECT-only proxy: records each target, then relays bytes both ways."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.authorizations: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].decode().split(" ", 2)
            self.targets.append(f"{method} {target}")
            for line in lines[1:]:
                if line.lower().startswith(b"proxy-authorization:"):
                    self.authorizations.append(line.split(b":", 1)[1].strip().decode())
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port))) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(conn, upstream)

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([a, b], [], [], 10)
            if not ready:
                return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    made = ConnectProxy()
    yield made
    made.close()


def test_https_proxy_is_used_with_tls_end_to_end(ca: CertAuthority, tmp_path: Path,
                                                  proxy: ConnectProxy) -> None:
    with FakeRegistry(tls=server_context(ca), blobs={DIGEST: BLOB}) as registry:
        environ = {"HTTPS_PROXY": f"http://user:p%40ss@{proxy.address}"}
        assert fetch(client(registry, environ=environ,
                            cert_dir=certs_dir(ca, tmp_path / "c"))) == BLOB
        assert proxy.targets and set(proxy.targets) == {f"CONNECT {registry.host}"}
        assert set(proxy.authorizations) == {"Basic " + base64.b64encode(b"user:p@ss").decode()}
        assert {scheme for scheme, _, _ in registry.seen} == {"https"}


def test_no_proxy_bypasses_the_proxy(proxy: ConnectProxy) -> None:
    with FakeRegistry(blobs={DIGEST: BLOB}) as registry:
        environ = {"http_proxy": f"http://{proxy.address}", "no_proxy": "localhost,127.0.0.1"}
        assert fetch(client(registry, environ=environ, tls_verify=False)) == BLOB
        assert proxy.targets == []
        environ = {"http_proxy": f"http://{proxy.address}"}
        assert fetch(client(registry, environ=environ, tls_verify=False)) == BLOB
        assert proxy.targets


@pytest.mark.parametrize(("host", "no_proxy", "bypassed"), [
    ("r.example.com:5000", "example.com", True),
    ("r.example.com:5000", ".example.com", True),
    ("r.example.com:5000", "r.example.com:5000", True),
    ("r.example.com:5000", "*", True),
    ("r.example.com:5000", "other.com, x.example.org", False),
    ("notexample.com", "example.com", False),
    ("127.0.0.1:5000", "127.0.0.1", True),
])
def test_no_proxy_rules(host: str, no_proxy: str, bypassed: bool) -> None:
    environ = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    assert (transport.proxy_for("https", host, environ) is None) is bypassed
