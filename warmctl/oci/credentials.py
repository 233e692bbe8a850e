"""Credentials from the auth files ``podman login`` writes (containers-auth.json(5)): where
podman looks, in its order, and the entry that applies to a reference."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmctl.errors import HostError, UsageError, WarmctlError
from warmctl.oci.reference import _DOCKER_HUB, Reference


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
