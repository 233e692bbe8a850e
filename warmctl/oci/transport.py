"""How the registry client reaches a registry, as podman does: TLS trust from certs.d, and
the proxy from the environment.

TLS (containers-certs.d(5)): the first of ``$HOME/.config/containers/certs.d/HOST[:PORT]``,
``/etc/containers/certs.d/HOST[:PORT]`` and ``/etc/docker/certs.d/HOST[:PORT]`` that exists
(or the directory ``--cert-dir`` names, for every registry) adds to the system's CAs: every
``*.crt`` is a CA certificate, every ``*.cert`` a client certificate whose key is the
``*.key`` of the same name. The standard library's ssl does all of it; no HTTP library is
needed (see docs/design.md).

Proxy: ``HTTPS_PROXY`` for https, ``HTTP_PROXY`` for http (lower-case too), unless
``NO_PROXY`` names the host; an ``http://[user:password@]host:port`` proxy, reached with
CONNECT, so that TLS still runs end to end with the registry.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from warmctl.errors import HostError, UsageError

CERTS_D = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def cert_dir_for(netloc: str, *, cert_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None,
                 system_dirs: tuple[Path, ...] = CERTS_D) -> Path | None:
    """The directory whose certificates apply to ``netloc`` (host[:port]), or None."""
    if cert_dir is not None:
        return cert_dir
    env = environ or {}
    roots = [Path(env["HOME"]) / ".config" / "containers" / "certs.d"] if env.get("HOME") \
        else []
    for root in [*roots, *system_dirs]:
        candidate = root / netloc
        if candidate.is_dir():
            return candidate
    return None


def tls_context(directory: Path | None, *, verify: bool) -> ssl.SSLContext:
    """A client context: the system's CAs plus the directory's, its client certificate."""
    context = ssl.create_default_context()
    # Python 3.13 made the default context strict (RFC 5280): a CA certificate without a
    # keyUsage extension, as `openssl req -x509` makes one, is refused. podman (Go) accepts such
    # a CA from the same certs.d, and the trust a host configures once must hold for both.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if directory is None:
        return context
    try:
        files = sorted(directory.iterdir())
    except FileNotFoundError:
        raise UsageError(f"certificate directory {directory} does not exist") from None
    except OSError as exc:
        raise HostError(f"cannot read certificate directory {directory}: {exc.strerror}"
                        ) from exc
    for path in files:
        try:
            if path.suffix == ".crt" and verify:
                context.load_verify_locations(cafile=str(path))
            elif path.suffix == ".cert":
                key = path.with_suffix(".key")
                if not key.exists():
                    raise HostError(f"client certificate {path} has no key {key.name} beside it")
                context.load_cert_chain(str(path), str(key))
            elif path.suffix == ".key" and not path.with_suffix(".cert").exists():
                raise HostError(f"client key {path} has no certificate {path.stem}.cert "
                                "beside it")
        except (ssl.SSLError, OSError) as exc:
            if isinstance(exc, HostError):
                raise
            raise HostError(f"cannot use {path}: {getattr(exc, 'reason', None) or exc}",
                            hint="a PEM certificate (or key) is expected there") from exc
    return context


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # Proxy-Authorization header value


def proxy_for(scheme: str, host: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy the environment names for ``scheme``://``host``, or None."""
    name = "https_proxy" if scheme == "https" else "http_proxy"
    value = environ.get(name) or environ.get(name.upper())
    if not value or _bypassed(host, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{name.upper()}={value}: only an http://HOST:PORT proxy is supported")
    authorization = None
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl and Go read it: ``*``, host names (a leading dot optional, matching
    subdomains too), with or without a port."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if entry == host.lower():
            return True
        entry = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        entry = entry.strip("[]").lstrip(".")
        if name == entry or name.endswith("." + entry):
            return True
    return False


def connection(scheme: str, netloc: str, *, context: ssl.SSLContext | None,
               proxy: Proxy | None, timeout: float,
               blocksize: int) -> http.client.HTTPConnection:
    """A connection to ``netloc``, through ``proxy`` (CONNECT) when there is one."""
    host, port = netloc, None
    if proxy is not None:
        host, port = proxy.host, proxy.port
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context,
                                           blocksize=blocksize)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout, blocksize=blocksize)
    if proxy is not None:
        target, _, target_port = netloc.rpartition(":") if not netloc.endswith("]") \
            else (netloc, "", "")
        if not target or not target_port.isdigit():
            target, target_port = netloc, "443" if scheme == "https" else "80"
        headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
        conn.set_tunnel(target.strip("[]"), int(target_port), headers=headers)
    return conn
