"""A client for OCI registries (the distribution HTTP API), on the standard library alone.

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

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote, urlencode, urljoin, urlsplit

from warmctl.errors import (
    HostError,
    IntegrityError,
    NotFoundError,
    UsageError,
    WarmctlError,
    disk_read_error,
    is_disk_failure,
)
from warmctl.oci import transport

Advance = Callable[[int], None]

DEFAULT_TIMEOUT = 60.0
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
# Consecutive failures of one upload or download before giving up; progress resets the count.
MAX_ATTEMPTS = 5
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the spec's suggested limit: anything larger is not ours
_IO_SIZE = 1024 * 1024
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


# --- references -------------------------------------------------------------------------------

_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Reference:
    """``HOST[:PORT]/PATH/NAME[:TAG][@sha256:DIGEST]``, as podman and docker write it."""

    registry: str  # host[:port]
    repository: str  # path/name
    tag: str | None = None
    digest: str | None = None

    @property
    def manifest_reference(self) -> str:
        """What follows /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse a registry reference; the registry host must be written out.

    podman would expand a short name such as ``memcached`` through registries.conf, perhaps to
    Docker Hub. A snapshot holds a process's memory, secrets included: warmctl never guesses
    where to send one, so the host is required (``localhost`` counts).
    """
    body = text.removeprefix("docker://")
    body, at, digest = body.partition("@")
    host, slash, rest = body.partition("/")
    if not slash or not _looks_like_host(host):
        raise UsageError(
            f"{text!r} does not name a registry: write HOST[:PORT]/PATH[:TAG], "
            "e.g. registry.example.com/warm/memcached:v1 or localhost:5000/memcached"
        )
    _, colon_, port = host.rpartition(":")
    if colon_ and not host.endswith("]") and not 1 <= int(port) <= 65535:
        raise UsageError(f"invalid registry port {port} in {text!r}: a port is 1 to 65535")
    repository, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        repository, tag = rest[:colon], rest[colon + 1:]
    if not _REPOSITORY_RE.fullmatch(repository) or len(repository) > 255:
        raise UsageError(
            f"invalid repository {repository!r} in {text!r}: lower-case letters, digits and "
            "separators (. _ __ -) between /-separated components"
        )
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise UsageError(f"invalid tag {tag!r} in {text!r}: up to 128 of A-Z a-z 0-9 _ . -")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise UsageError(f"invalid digest {digest!r} in {text!r}: expected sha256:<64 hex>")
    return Reference(host, repository, tag, digest or None)


def _looks_like_host(component: str) -> bool:
    # docker's rule: the first component is a registry when it has a dot or a port, or is
    # localhost; otherwise it would be a Docker Hub namespace.
    hostish = "." in component or ":" in component or component == "localhost"
    return hostish and _HOST_RE.fullmatch(component) is not None


def _api_host(registry: str) -> str:
    """Docker Hub's API does not live at the name people write."""
    return "registry-1.docker.io" if registry in _DOCKER_HUB else registry


# --- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # the auth file they came from, for messages

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def auth_files(environ: Mapping[str, str] | None = None, *, uid: int | None = None,
               home: Path | None = None) -> list[Path]:
    """Where podman looks for credentials, in its order (containers-auth.json(5)).

    ``REGISTRY_AUTH_FILE`` replaces the list, as podman's ``--authfile`` does.
    """
    env = os.environ if environ is None else environ
    if env.get("REGISTRY_AUTH_FILE"):
        return [Path(env["REGISTRY_AUTH_FILE"])]
    uid = os.getuid() if uid is None else uid
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    # `podman login` writes here; as root without XDG_RUNTIME_DIR, under /run/containers/0/.
    primary = (Path(runtime_dir) / "containers" if runtime_dir
               else Path(f"/run/containers/{uid}"))
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    docker_dir = Path(env.get("DOCKER_CONFIG") or home / ".docker")
    return [primary / "auth.json", config_home / "containers" / "auth.json",
            docker_dir / "config.json"]


def find_credentials(ref: Reference, *, authfile: Path | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials podman would use for ``ref``: the first file with a matching entry.

    Credential helpers (``credHelpers``, ``credsStore``) are not run: an entry written by
    ``podman login`` is what warmctl reads.
    """
    for path in [authfile] if authfile is not None else auth_files(environ):
        auths = _read_auths(path, explicit=authfile is not None)
        found = credentials_in(auths, ref, str(path))
        if found is not None:
            return found
    return None


def _read_auths(path: Path, *, explicit: bool) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"auth file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise HostError(f"cannot read auth file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise WarmctlError(f"auth file {path} is not valid JSON: {exc}",
                           hint="log in again with podman login") from exc
    auths = data.get("auths") if isinstance(data, dict) else None
    return auths if isinstance(auths, dict) else {}


def credentials_in(auths: Mapping[str, Any], ref: Reference, source: str) -> Credentials | None:
    """The entry of an ``auths`` object that applies to ``ref``: the most specific key
    (``host/namespace/repo`` before ``host/namespace`` before ``host``), as containers/image
    matches them. Docker's legacy keys (``https://host/v1/``) count as their host."""
    entries = {_normalize_key(key): value for key, value in auths.items()}
    for key in _lookup_keys(ref):
        entry = entries.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str) and entry["auth"]:
            username, password = decode_auth(entry["auth"], source)
            return Credentials(username, password, source)
    return None


def _lookup_keys(ref: Reference) -> list[str]:
    hosts = list(_DOCKER_HUB) if ref.registry in _DOCKER_HUB else [ref.registry]
    parts = ref.repository.split("/")
    keys: list[str] = []
    for count in range(len(parts), -1, -1):
        for host in hosts:
            keys.append("/".join([host, *parts[:count]]))
    return keys


def _normalize_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key)
    key = re.sub(r"/v[12]/?$", "", key)
    return key.rstrip("/")


def decode_auth(value: str, source: str) -> tuple[str, str]:
    """An ``auth`` field: base64 of ``user:password``."""
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise WarmctlError(f"auth file {source} has an entry that is not base64 user:password",
                           hint="log in again with podman login") from exc
    username, sep, password = decoded.partition(":")
    if not sep:
        raise WarmctlError(f"auth file {source} has an entry without a password",
                           hint="log in again with podman login")
    return username, password


# --- challenges -------------------------------------------------------------------------------

_PARAM_RE = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate`` header: ``Bearer realm="...",service="...",scope="..."``."""

    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None or match.end() == position:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return Challenge(scheme.lower(), params)


# --- errors -----------------------------------------------------------------------------------


class RegistryUnreachable(HostError):
    """No connection, no TLS, no answer: the registry is down or elsewhere."""


class RegistryAuthError(HostError):
    """The registry wants credentials it did not get, or refused them."""


class _Transient(Exception):
    """A failure worth another try: a 5xx, a 408/429, a registry that lost track of an offset."""


# What a dropped connection, a stalled registry or a reset look like to http.client.
_RETRYABLE = (OSError, http.client.HTTPException, _Transient)


def _error_detail(status: int, body: bytes) -> str:
    """The registry's own words: the first entry of the spec's error body, else the status."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
        if text:
            return f"HTTP {status} {text}"
    except (ValueError, AttributeError, IndexError, TypeError):
        pass
    reason = http.client.responses.get(status, "")
    return f"HTTP {status} {reason}".strip()


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


# --- helpers ----------------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _range_end(header: str) -> int | None:
    """'0-1023' -> 1023 (the Range header of an upload's status), else None."""
    match = re.fullmatch(r"(?:bytes=)?0-([0-9]+)", header.strip())
    return int(match.group(1)) if match else None


def _backoff(failures: int) -> float:
    """Seconds to wait after the n-th failure in a row: 0.5, 1, 2, 4, then 8."""
    return float(min(2.0 ** (failures - 2), 8.0))


def _drain(resp: http.client.HTTPResponse) -> None:
    with contextlib.suppress(*_RETRYABLE):
        resp.read()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class _Meter:
    """Progress that can step back: a resumed transfer re-sends what was not committed."""

    def __init__(self, advance: Advance) -> None:
        self._advance = advance
        self.position = 0

    def add(self, count: int) -> None:
        self.position += count
        self._advance(count)

    def to(self, position: int) -> None:
        if position != self.position:
            self._advance(position - self.position)
            self.position = position


class _Download:
    """A blob being written to a file: how far, and the hash so far."""

    def __init__(self, out: IO[bytes], meter: _Meter) -> None:
        self.out = out
        self.meter = meter
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, block: bytes) -> None:
        self.out.write(block)
        self.hash.update(block)
        self.written += len(block)
        self.meter.add(len(block))

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hash = hashlib.sha256()
        self.written = 0
        self.meter.to(0)


def _read_archive(fd: int, size: int, offset: int) -> bytes:
    """pread of the archive being pushed. The disk failing it is no network failure: it is
    not retried, and the error says what failed."""
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        if is_disk_failure(exc):
            raise disk_read_error("the archive", exc) from exc
        raise


class _SequentialHash:
    """SHA-256 of a file's bytes in order, fed from chunks that may be read more than once
    (a chunk sent again after a failure is not hashed twice)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._hash = hashlib.sha256()
        self.position = 0

    def update_at(self, offset: int, data: bytes) -> None:
        if offset > self.position:
            self.catch_up(offset)
        skip = self.position - offset
        if skip < len(data):
            self._hash.update(data[skip:] if skip else data)
            self.position = offset + len(data)

    def catch_up(self, position: int) -> None:
        """Hash what lies between here and ``position`` (a registry held more than we read)."""
        while self.position < position:
            data = _read_archive(self._fd, min(_IO_SIZE, position - self.position),
                                 self.position)
            if not data:
                raise IntegrityError("the archive became shorter while it was uploaded")
            self._hash.update(data)
            self.position += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _FileSlice:
    """``length`` bytes of a file from ``offset``, as a request body: read with pread (no
    shared file position), hashed and counted on the way."""

    def __init__(self, fd: int, offset: int, length: int, hasher: _SequentialHash,
                 meter: _Meter) -> None:
        self._fd = fd
        self._position = offset
        self._end = offset + length
        self._hasher = hasher
        self._meter = meter

    def read(self, size: int = -1) -> bytes:
        remaining = self._end - self._position
        if remaining <= 0:
            return b""
        size = remaining if size < 0 else min(size, remaining)
        data = _read_archive(self._fd, size, self._position)
        if not data:
            raise IntegrityError("the archive became shorter while it was uploaded")
        self._hasher.update_at(self._position, data)
        self._position += len(data)
        self._meter.add(len(data))
        return data
