"""A small OCI registry in a thread on 127.0.0.1, for unit tests of warmctl's registry client.

It speaks the distribution API as the spec describes it (chunked uploads that can be resumed
from the offset the registry reports), and can be told to misbehave: drop the connection in
the middle of a chunk or of a download, forget uploads, or want Basic or Bearer auth.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "t0ken"


@dataclass
class FakeRegistry:
    auth: str | None = None  # None, "basic" or "bearer"
    username: str = "alice"
    password: str = "secret"
    token: str = TOKEN  # what the token server hands out, and the only token accepted
    resumable: bool = True  # False: forget an upload whose chunk broke off (distribution 2.x)
    drop_patches: list[int] = field(default_factory=list)  # PATCH numbers (1-based) to break
    drop_download_after: int | None = None  # bytes of the next blob GET before hanging up
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # "METHOD /path"
    token_scopes: list[str] = field(default_factory=list)
    patches: int = 0
    # TLS: connections that start with a TLS handshake get it; plain HTTP is served on the
    # same port too (so that https and http of one host:port can be told apart).
    tls: ssl.SSLContext | None = None
    downgrade_blobs: bool = False  # blob GETs over TLS: 307 to http:// on the same host:port
    redirect_blobs_to: str | None = None  # blob GETs: 307 to this base URL (another registry)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # scheme, request, auth
    # Every request but /v2/ gets this answer: (status, body, headers), as a broken or
    # hostile registry gives it.
    canned: tuple[int, bytes, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.registry = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repo, tag)] = self.manifests[(repo, digest)] = (body, media_type)
        return digest


class _Server(ThreadingHTTPServer):
    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.registry.tls  # type: ignore[attr-defined]
        if tls is not None:
            request.settimeout(5)
            try:
                first = request.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first == b"\x16":  # a TLS handshake record
                try:
                    request = tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
        super().finish_request(request, client_address)


_BLOB = re.compile(r"/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})")
_UPLOADS = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/(?P<id>[0-9a-f]*)")
_MANIFEST = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def reg(self) -> FakeRegistry:
        registry: FakeRegistry = self.server.registry  # type: ignore[attr-defined]
        return registry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing -----------------------------------------------------------------------------

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               *, length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
        self._reply(status, body, {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _authorized(self, repo: str) -> bool:
        reg = self.reg
        if reg.auth is None:
            return True
        given = self.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        if reg.auth == "basic" and given == basic:
            return True
        if reg.auth == "bearer" and given == f"Bearer {reg.token}":
            return True
        self._body()
        if reg.auth == "basic":
            challenge = 'Basic realm="fake"'
        else:
            challenge = (f'Bearer realm="http://{reg.host}/token",service="fake",'
                         f'scope="repository:{repo}:pull"')
        self._error_with(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
        return False

    def _error_with(self, status: int, code: str, headers: dict[str, str]) -> None:
        body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
        self._reply(status, body, {"Content-Type": "application/json", **headers})

    def _route(self) -> None:
        reg = self.reg
        path = urlsplit(self.path).path
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        with reg._lock:
            reg.requests.append(f"{self.command} {path}")
            reg.seen.append((scheme, f"{self.command} {path}",
                             self.headers.get("Authorization", "")))
        match = _BLOB.fullmatch(path)
        if match and self.command == "GET" and (reg.redirect_blobs_to or reg.downgrade_blobs):
            if scheme == "https" or reg.redirect_blobs_to:
                base = reg.redirect_blobs_to or f"http://{reg.host}"
                if self._authorized(match.group("repo")):
                    self._reply(307, b"", {"Location": f"{base}{path}"})
                return
            self._blob(match)  # the storage behind the redirect: no auth of its own
            return
        if path == "/token":
            self._token()
            return
        if path == "/v2/":
            if self._authorized(""):
                self._reply(200, b"{}")
            return
        if reg.canned is not None:
            self._body()
            status, body, headers = reg.canned
            self._reply(status, body, headers)
            return
        for pattern, handler in ((_UPLOADS, self._uploads), (_BLOB, self._blob),
                                 (_MANIFEST, self._manifest)):
            match = pattern.fullmatch(path)
            if match:
                if self._authorized(match.group("repo")):
                    handler(match)
                return
        self._error(404, "NAME_UNKNOWN")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _route

    # --- endpoints ----------------------------------------------------------------------------

    def _token(self) -> None:
        reg = self.reg
        basic = "Basic " + base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        if self.headers.get("Authorization") != basic:
            self._error(401, "UNAUTHORIZED")
            return
        query = parse_qs(urlsplit(self.path).query)
        reg.token_scopes += query.get("scope", [])
        self._reply(200, json.dumps({"token": reg.token}).encode())

    def _blob(self, match: re.Match[str]) -> None:
        data = self.reg.blobs.get(match.group("digest"))
        if data is None:
            self._error(404, "BLOB_UNKNOWN")
            return
        start = 0
        wanted = re.fullmatch(r"bytes=([0-9]+)-", self.headers.get("Range", ""))
        if wanted and self.command == "GET":
            start = int(wanted.group(1))
        cut = self.reg.drop_download_after
        if cut is not None and self.command == "GET":
            self.reg.drop_download_after = None
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self._hang_up()
            return
        if start:
            self._reply(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/"
                                                             f"{len(data)}"})
        else:
            self._reply(200, data, {"Docker-Content-Digest": match.group("digest")})

    def _upload_headers(self, repo: str, upload_id: str) -> dict[str, str]:
        size = len(self.reg.uploads[upload_id])
        return {"Location": f"/v2/{repo}/blobs/uploads/{upload_id}",
                "Range": f"0-{max(size - 1, 0)}", "Docker-Upload-UUID": upload_id}

    def _uploads(self, match: re.Match[str]) -> None:
        reg, repo, upload_id = self.reg, match.group("repo"), match.group("id")
        if self.command == "POST":
            self._body()
            upload_id = uuid.uuid4().hex
            reg.uploads[upload_id] = bytearray()
            self._reply(202, b"", self._upload_headers(repo, upload_id))
            return
        if upload_id not in reg.uploads:
            self._body()
            self._error(404, "BLOB_UPLOAD_UNKNOWN")
            return
        if self.command == "PATCH":
            self._patch(repo, upload_id)
        elif self.command == "GET":
            self._reply(204, b"", self._upload_headers(repo, upload_id))
        elif self.command == "PUT":
            self._commit(repo, upload_id)
        elif self.command == "DELETE":
            del reg.uploads[upload_id]
            self._reply(204)

    def _patch(self, repo: str, upload_id: str) -> None:
        reg = self.reg
        reg.patches += 1
        length = int(self.headers.get("Content-Length") or 0)
        start = int(self.headers.get("Content-Range", "0-0").split("-")[0])
        if start != len(reg.uploads[upload_id]):
            self.rfile.read(length)
            self._error(416, "BLOB_UPLOAD_INVALID")
            return
        if reg.patches in reg.drop_patches:
            # Half the chunk arrives, then the connection breaks.
            reg.uploads[upload_id] += self.rfile.read(length // 2)
            if not reg.resumable:
                del reg.uploads[upload_id]
            self._hang_up()
            return
        reg.uploads[upload_id] += self.rfile.read(length)
        self._reply(202, b"", self._upload_headers(repo, upload_id))

    def _commit(self, repo: str, upload_id: str) -> None:
        reg = self.reg
        data = bytes(reg.uploads.pop(upload_id) + self._body())
        digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            self._error(400, "DIGEST_INVALID")
            return
        reg.blobs[digest] = data
        self._reply(201, b"", {"Location": f"/v2/{repo}/blobs/{digest}",
                               "Docker-Content-Digest": digest})

    def _manifest(self, match: re.Match[str]) -> None:
        reg, repo, ref = self.reg, match.group("repo"), match.group("ref")
        if self.command == "PUT":
            body = self._body()
            digest = reg.put_manifest(repo, ref, body, self.headers.get("Content-Type", ""))
            self._reply(201, b"", {"Docker-Content-Digest": digest})
            return
        found = reg.manifests.get((repo, ref))
        if found is None:
            self._error(404, "MANIFEST_UNKNOWN")
            return
        body, media_type = found
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._reply(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest})
