"""A client for OCI registries (the distribution HTTP API), on the standard library alone.

One module over 450 lines for one class: ``RegistryClient``'s methods share one state (the
connections per host, the scheme connect() found, the authorization a challenge earned), and
the upload and download loops retry through it; references, credentials, challenges, errors
and the transfer helpers live beside it (reference.py, credentials.py, auth.py, errors.py,
transfer.py).

Just what push and pull need: references as podman writes them, credentials from the auth files
``podman login`` writes, Basic and Bearer-token auth, HEAD/GET/PUT of blobs and manifests, and
chunked blob uploads that resume after a dropped connection. No registry library: the API is
small, the standard library's http.client streams a gigabyte without holding it in memory, and
warmctl's start-up time (``--version`` within 150 ms) stays what it is.

Errors follow warmctl's exit codes: an unreachable registry or refused credentials are the
environment (6), a missing repository, tag or blob is not found (3), bytes that do not hash to
their digest are integrity (5). Nothing here prints.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import quote, urlencode, urljoin, urlsplit

from warmctl.errors import IntegrityError, NotFoundError, WarmctlError
from warmctl.oci import transport
from warmctl.oci.auth import Challenge, parse_challenge
from warmctl.oci.credentials import Credentials
from warmctl.oci.errors import (
    _RETRYABLE,
    RegistryAuthError,
    RegistryUnreachable,
    _error_detail,
    _Transient,
)
from warmctl.oci.reference import Reference, _api_host
from warmctl.oci.transfer import (
    _IO_SIZE,
    Advance,
    _backoff,
    _describe,
    _Download,
    _drain,
    _FileSlice,
    _Meter,
    _range_end,
    _SequentialHash,
    sha256_digest,
)

DEFAULT_TIMEOUT = 60.0
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
# Consecutive failures of one upload or download before giving up; progress resets the count.
MAX_ATTEMPTS = 5
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the spec's suggested limit: anything larger is not ours
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Asked for on pull so that a registry answers with what it has (an image index or a Docker
# image manifest, say) and warmctl can say that it is not a snapshot, rather than "not found".
_ACCEPT_MANIFESTS = ", ".join((
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


@dataclass
class _Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""


# --- the client -------------------------------------------------------------------------------


class RegistryClient:
    """One repository on one registry, for one push or pull.

    Connections are kept alive per host. ``connect()`` first: it finds the scheme (HTTPS, or
    with ``tls_verify=False`` plain HTTP when the registry does not speak TLS, as podman
    falls back), and takes the auth challenge so that no large body is ever sent only to be
    refused.
    """

    def __init__(self, ref: Reference, *, push: bool, tls_verify: bool = True,
                 credentials: Credentials | None = None, timeout: float = DEFAULT_TIMEOUT,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 sleep: Callable[[float], None] = time.sleep, cert_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.ref = ref
        self.tls_verify = tls_verify
        self.credentials = credentials
        self.chunk_size = chunk_size
        self._netloc = _api_host(ref.registry)
        self._scheme = "https"
        self._timeout = timeout
        self._sleep = sleep
        self._scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self._authorization = ""
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._cert_dir = cert_dir  # --cert-dir: for this registry, instead of certs.d
        self._environ = os.environ if environ is None else environ

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return f"{self._scheme}://{self._netloc}/v2/{self.ref.repository}/{path}"

    def _login_hint(self) -> str:
        insecure = "" if self.tls_verify else "--tls-verify=false "
        return f"podman login {insecure}{self.ref.registry}"

    @contextlib.contextmanager
    def _network(self, what: str) -> Iterator[None]:
        """Turn socket-level failures into one line naming the registry."""
        try:
            yield
        except _RETRYABLE as exc:
            raise self._as_error(exc, what) from exc

    def _as_error(self, exc: BaseException, what: str) -> WarmctlError:
        """A failure that retrying did not cure, as warmctl reports it: exit 6 when the
        registry cannot be reached at all, exit 1 when it answers with errors."""
        where = f"registry {self.ref.registry}"
        if isinstance(exc, _Transient):
            return WarmctlError(str(exc), hint="retry later; the registry's log may say more")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return RegistryUnreachable(
                f"{where}: {what}: certificate not trusted ({exc.verify_message})",
                hint=f"put its CA in /etc/containers/certs.d/{self.ref.registry}/ca.crt (or "
                     "--cert-dir DIR), as for podman",
            )
        if isinstance(exc, ssl.SSLError):
            return RegistryUnreachable(
                f"{where}: {what}: TLS failed ({exc.reason or exc})",
                hint="a registry serving plain HTTP needs --tls-verify=false",
            )
        return RegistryUnreachable(
            f"{where} is unreachable: {what}: {_describe(exc)}",
            hint="check that the registry runs and the address is right",
        )

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn = self._connections.get((scheme, netloc))
        if conn is None:
            # As podman: certs.d (or --cert-dir) and the proxy the environment names.
            context = transport.tls_context(
                transport.cert_dir_for(netloc, cert_dir=self._cert_dir, environ=self._environ),
                verify=self.tls_verify) if scheme == "https" else None
            conn = transport.connection(
                scheme, netloc, context=context,
                proxy=transport.proxy_for(scheme, netloc, self._environ),
                timeout=self._timeout, blocksize=_IO_SIZE)
            self._connections[(scheme, netloc)] = conn
        return conn

    def _transport(self, method: str, url: str, headers: Mapping[str, str],
                   body: bytes | IO[bytes] | None) -> http.client.HTTPResponse:
        """One HTTP exchange; the response is returned unread. A connection that fails is
        dropped, so that the next request starts a fresh one."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn = self._connection(*key)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            return conn.getresponse()
        except BaseException:
            conn.close()
            self._connections.pop(key, None)
            raise

    def _send(self, method: str, url: str, headers: Mapping[str, str] | None = None,
              body: Callable[[], bytes | IO[bytes]] | None = None) -> http.client.HTTPResponse:
        """A request with auth and redirects handled; the response is returned unread.

        ``body`` makes a fresh body for each attempt: after a 401 the request is sent again.
        Redirects (blob storage elsewhere) are followed for GET and HEAD only, and the
        registry's credentials never go to another host.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._send_authorized(method, url, headers or {}, body)
            if resp.status not in _REDIRECTS or method not in ("GET", "HEAD"):
                return resp
            location = resp.getheader("Location") or ""
            _drain(resp)
            if not location:
                raise WarmctlError(f"registry {self.ref.registry}: redirect without a Location")
            url = urljoin(url, location)
        raise WarmctlError(f"registry {self.ref.registry}: too many redirects for {url}")

    def _send_authorized(self, method: str, url: str, headers: Mapping[str, str],
                         body: Callable[[], bytes | IO[bytes]] | None) -> http.client.HTTPResponse:
        # Credentials belong to the origin that asked for them: scheme, host and port. A
        # redirect elsewhere, or from https to http on the same host, gets none.
        parts = urlsplit(url)
        ours = (parts.scheme, parts.netloc) == (self._scheme, self._netloc)

        def send() -> http.client.HTTPResponse:
            sent = dict(headers)
            if ours and self._authorization:
                sent["Authorization"] = self._authorization
            return self._transport(method, url, sent, body() if body else None)

        resp = send()
        if resp.status == 401 and ours:
            # A token expires (Docker Hub's after 5 minutes): take the new challenge, once.
            challenge = parse_challenge(resp.getheader("WWW-Authenticate") or "")
            _drain(resp)
            self._authenticate(challenge)
            resp = send()
        return resp

    def _authenticate(self, challenge: Challenge | None) -> None:
        if challenge is not None and challenge.scheme == "bearer":
            self._authorization = "Bearer " + self._fetch_token(challenge)
        elif challenge is not None and challenge.scheme == "basic" and self.credentials:
            self._authorization = self.credentials.basic()
        else:
            raise self._auth_error(401)

    def _fetch_token(self, challenge: Challenge) -> str:
        realm = challenge.params.get("realm", "")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise WarmctlError(f"registry {self.ref.registry} sent an auth challenge without "
                               f"a usable realm: {realm!r}")
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        query.append(("scope", self._scope))
        # A password goes in clear over http: only to a realm on https, or when the user
        # turned TLS verification off for this registry.
        send_password = self.credentials is not None and (
            urlsplit(realm).scheme == "https" or not self.tls_verify)
        headers = {"Authorization": self.credentials.basic()} if (
            self.credentials and send_password) else {}
        sep = "&" if "?" in realm else "?"
        with self._network("token request"):
            resp = self._transport("GET", f"{realm}{sep}{urlencode(query)}", headers, None)
            body = resp.read()
        if resp.status in (401, 403):
            raise self._auth_error(resp.status)
        if resp.status != 200:
            raise WarmctlError(f"registry {self.ref.registry}: token request failed: "
                               f"{_error_detail(resp.status, body)}")
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise WarmctlError(f"registry {self.ref.registry}: the token server's answer has "
                               "no token")
        return token

    def _auth_error(self, status: int) -> RegistryAuthError:
        who = (f"the credentials from {self.credentials.source}" if self.credentials
               else "anonymous access")
        verb = "refused" if status == 401 else "denied"
        return RegistryAuthError(
            f"registry {self.ref.registry} {verb} {who} to {self.ref.repository} "
            f"(HTTP {status})",
            hint=self._login_hint(),
        )

    def _call(self, method: str, url: str, *, expect: tuple[int, ...], what: str,
              headers: Mapping[str, str] | None = None,
              body: Callable[[], bytes | IO[bytes]] | None = None) -> _Reply:
        """A request whose answer is small: read whole, checked against ``expect``."""
        resp = self._send(method, url, headers, body)
        data = resp.read()  # b"" for HEAD; read all the same, to free the connection
        reply = _Reply(resp.status, resp.headers, data, url)
        if reply.status not in expect:
            self._raise_for(reply, what)
        return reply

    def _raise_for(self, reply: _Reply, what: str) -> None:
        detail = _error_detail(reply.status, reply.body)
        where = f"registry {self.ref.registry}: {what}"
        if reply.status in (401, 403):
            raise self._auth_error(reply.status)
        if reply.status == 404:
            raise NotFoundError(f"{where}: not found ({detail})",
                                hint="check the repository and tag")
        if reply.status in (408, 416, 429) or reply.status >= 500:
            raise _Transient(f"{where}: {detail}")
        if b"DIGEST_INVALID" in reply.body:
            raise IntegrityError(f"{where}: the registry computed another digest ({detail})")
        raise WarmctlError(f"{where}: {detail}")

    # --- the API ------------------------------------------------------------------------------

    def connect(self) -> None:
        """GET /v2/: pick the scheme, satisfy the auth challenge, fail early and clearly."""
        with self._network("connect"):
            try:
                self._ping()
            except (ssl.SSLError, ConnectionError, http.client.BadStatusLine):
                if self.tls_verify:
                    raise
                # podman's --tls-verify=false: HTTPS without verification, and plain HTTP
                # when the registry does not speak TLS at all. A plain HTTP server answers a
                # TLS hello with a 400 and a close, which reaches the client, by timing, as an
                # SSL error, a reset, a broken pipe or a disconnect: each means "no TLS here"
                # (catching only the first two failed about one unit-test run in three).
                self._scheme = "http"
                self._ping()

    def _ping(self) -> None:
        url = f"{self._scheme}://{self._netloc}/v2/"
        resp = self._transport("GET", url, {}, None)
        body = resp.read()
        if resp.status == 401:
            challenge = parse_challenge(resp.getheader("WWW-Authenticate") or "")
            self._authenticate(challenge)
            if challenge is None or challenge.scheme != "basic":
                return  # a token was granted: the token server has checked the credentials
            # Basic credentials are checked only when used: check them now, not after the
            # first gigabyte.
            resp = self._transport("GET", url, {"Authorization": self._authorization}, None)
            body = resp.read()
            if resp.status == 401:
                raise self._auth_error(401)
        if resp.status == 404:
            raise WarmctlError(f"{self.ref.registry} does not serve the OCI distribution API "
                               "(/v2/ not found): is it a registry?")
        if resp.status != 200:
            self._raise_for(_Reply(resp.status, resp.headers, body, url), "connect")

    def blob_size(self, digest: str) -> int | None:
        """The size of a blob already in the repository, or None when it is not there."""
        with self._network(f"look up blob {digest[:19]}"):
            reply = self._call("HEAD", self._url(f"blobs/{digest}"), expect=(200, 404),
                               what=f"look up blob {digest}")
        if reply.status == 404:
            return None
        return int(reply.header("Content-Length") or 0)

    def push_blob(self, data: bytes, digest: str) -> None:
        """A small blob (a config) in one request; again from the start after a failure."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._commit(self._start_upload(), digest, data)
                return
            except _RETRYABLE as exc:
                if self._has_blob(digest):  # committed, with the answer lost
                    return
                if attempt == MAX_ATTEMPTS:
                    raise self._as_error(exc, "upload config") from exc
                self._sleep(_backoff(attempt))

    def push_blob_file(self, file: IO[bytes], size: int, digest: str,
                       advance: Advance) -> None:
        """Upload ``size`` bytes of ``file`` in chunks, hashing them as they go.

        After a failure the registry is asked how much it holds (GET on the upload URL) and
        the upload goes on from there; a registry that has dropped the upload gets it again
        from the start. The upload is committed only when the bytes sent hash to ``digest``
        (else IntegrityError, and the registry discards it).
        """
        fd = file.fileno()
        hasher = _SequentialHash(fd)
        meter = _Meter(advance)
        with self._network("start upload"):
            location = self._start_upload()
        offset, failures, resume = 0, 0, False
        while offset < size or resume:
            try:
                if resume:
                    location, offset = self._resume_point(location)
                    meter.to(offset)
                    resume = False
                    continue
                length = min(self.chunk_size, size - offset)
                location = self._patch(location, fd, offset, length, hasher, meter)
                offset += length
                failures = 0
            except _RETRYABLE as exc:
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise self._as_error(exc, "upload blob") from exc
                self._sleep(_backoff(failures))
                resume = True
        hasher.catch_up(size)
        if hasher.hexdigest() != digest.removeprefix("sha256:"):
            with contextlib.suppress(*_RETRYABLE, WarmctlError):
                self._call("DELETE", location, expect=(204, 404), what="cancel upload")
            raise IntegrityError(
                f"the bytes read for upload hash to sha256:{hasher.hexdigest()[:16]}..., not "
                f"{digest[:23]}...: nothing was committed"
            )
        self._commit_retrying(location, digest)

    def _start_upload(self) -> str:
        reply = self._call("POST", self._url("blobs/uploads/"), expect=(202,),
                           what="start upload", headers={"Content-Length": "0"},
                           body=lambda: b"")
        # The spec lets a registry ask for a minimum chunk size.
        minimum = reply.header("OCI-Chunk-Min-Length")
        if minimum.isdigit():
            self.chunk_size = max(self.chunk_size, int(minimum))
        return self._location(reply)

    def _location(self, reply: _Reply) -> str:
        location = reply.header("Location")
        if not location:
            raise WarmctlError(f"registry {self.ref.registry}: upload answer without Location")
        return urljoin(reply.url, location)

    def _patch(self, location: str, fd: int, offset: int, length: int,
               hasher: _SequentialHash, meter: _Meter) -> str:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }

        def body() -> IO[bytes]:
            meter.to(offset)  # a second attempt re-reads the chunk from its start
            # _FileSlice has the one method http.client calls on a body: read().
            return cast(IO[bytes], _FileSlice(fd, offset, length, hasher, meter))

        try:
            reply = self._call("PATCH", location, expect=(202,), what="upload chunk",
                               headers=headers, body=body)
        except NotFoundError as exc:  # the upload expired: _resume_point starts another
            raise _Transient(exc.message) from exc
        return self._location(reply)

    def _resume_point(self, location: str) -> tuple[str, int]:
        """Where an interrupted upload stands: (URL to go on with, bytes the registry holds).
        A new upload from byte 0 when the registry no longer knows this one (distribution
        2.x forgets an upload whose last chunk broke off halfway)."""
        resp = self._send("GET", location)
        reply = _Reply(resp.status, resp.headers, resp.read(), location)
        if reply.status in (200, 204):
            end = _range_end(reply.header("Range"))
            # "0-0" means either nothing or one byte: start again rather than guess.
            if end is not None and end > 0:
                return (self._location(reply) if reply.header("Location") else location,
                        end + 1)
        elif reply.status in (401, 403) or reply.status >= 500:
            self._raise_for(reply, "resume upload")
        return self._start_upload(), 0

    def _commit(self, location: str, digest: str, data: bytes) -> None:
        """PUT ?digest=: the registry checks the digest and makes the blob visible."""
        sep = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{sep}{urlencode({'digest': digest})}", expect=(201,),
                   what=f"commit blob {digest}",
                   headers={"Content-Type": "application/octet-stream",
                            "Content-Length": str(len(data))},
                   body=lambda: data)

    def _commit_retrying(self, location: str, digest: str) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._commit(location, digest, b"")
                return
            except (*_RETRYABLE, NotFoundError) as exc:
                # The commit may have happened with its answer lost (then the upload URL is
                # gone too, and the blob is there).
                if self._has_blob(digest):
                    return
                if attempt == MAX_ATTEMPTS or isinstance(exc, NotFoundError):
                    raise (self._as_error(exc, "commit blob")
                           if isinstance(exc, _RETRYABLE) else exc) from exc
                self._sleep(_backoff(attempt))

    def _has_blob(self, digest: str) -> bool:
        """Whether the blob is there; False too when the registry cannot say."""
        try:
            reply = self._call("HEAD", self._url(f"blobs/{digest}"), expect=(200, 404),
                               what=f"look up blob {digest}")
        except (*_RETRYABLE, WarmctlError):
            return False
        return reply.status == 200

    def put_manifest(self, tag: str, manifest: bytes, media_type: str) -> str:
        """Store a manifest under ``tag``; returns its digest."""
        with self._network("write manifest"):
            reply = self._call("PUT", self._url(f"manifests/{quote(tag)}"), expect=(200, 201),
                               what=f"write manifest {tag}",
                               headers={"Content-Type": media_type,
                                        "Content-Length": str(len(manifest))},
                               body=lambda: manifest)
        return reply.header("Docker-Content-Digest") or sha256_digest(manifest)

    def find_manifest(self, tag: str) -> tuple[bytes, str, str] | None:
        """The manifest under ``tag`` in this repository (a signature's, say), or None."""
        try:
            return self.get_manifest(tag)
        except NotFoundError:
            return None

    def get_manifest(self, reference: str | None = None) -> tuple[bytes, str, str]:
        """The manifest ``ref`` names, or ``reference`` (a tag or digest) in the same
        repository: (bytes, media type, digest), its digest checked."""
        explicit = reference is not None
        reference = reference or self.ref.manifest_reference
        with self._network("read manifest"):
            resp = self._send("GET", self._url(f"manifests/{reference}"),
                              {"Accept": _ACCEPT_MANIFESTS})
            body = resp.read(MAX_MANIFEST_BYTES + 1)
            reply = _Reply(resp.status, resp.headers, body, self._url("manifests"))
            if reply.status != 200:
                self._raise_for(reply, f"read manifest {reference}")
            if len(body) > MAX_MANIFEST_BYTES:
                raise IntegrityError(f"{self.ref}: manifest larger than "
                                     f"{MAX_MANIFEST_BYTES} bytes: not a warmctl snapshot")
        digest = sha256_digest(body)
        claimed = (None if explicit else self.ref.digest) or reply.header("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(f"{self.ref}: the manifest received hashes to {digest[:23]}..., "
                                 f"not {claimed[:23]}...")
        media_type = reply.header("Content-Type").split(";")[0].strip()
        return body, media_type, digest

    def fetch_blob(self, digest: str, size: int, out: IO[bytes], advance: Advance) -> str:
        """Write a blob into ``out`` (empty, at 0); returns the sha256 hex of what was written.

        A dropped connection is resumed with a Range request, or from the start when the
        registry ignores ranges. More bytes than ``size`` is IntegrityError at once.
        """
        download = _Download(out, _Meter(advance))
        failures = 0
        while True:
            try:
                self._fetch_rest(digest, size, download)
                return download.hash.hexdigest()
            except _RETRYABLE as exc:
                failures += 1
                if failures >= MAX_ATTEMPTS:
                    raise self._as_error(exc, f"download blob {digest[:19]}") from exc
                self._sleep(_backoff(failures))

    def _fetch_rest(self, digest: str, size: int, download: _Download) -> None:
        url = self._url(f"blobs/{digest}")
        headers = {"Range": f"bytes={download.written}-"} if download.written else {}
        resp = self._send("GET", url, headers)
        if resp.status not in (200, 206):
            self._raise_for(_Reply(resp.status, resp.headers, resp.read(), url),
                            f"download blob {digest}")
        if download.written and resp.status == 200:  # ranges ignored: from the start
            download.restart()
        while block := resp.read(_IO_SIZE):
            if download.written + len(block) > size:
                raise IntegrityError(f"blob {digest[:23]}... is larger than the "
                                     f"{size} bytes its manifest says")
            download.write(block)
        if download.written < size:
            raise http.client.IncompleteRead(b"", size - download.written)
