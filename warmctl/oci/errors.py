"""A registry's failures as warmctl reports them: unreachable or refused credentials are the
environment (6); a transient failure (5xx, 408/429, a dropped connection) is worth another try;
an error body is reduced to the registry's own words."""

from __future__ import annotations

import http.client
import json

from warmctl.errors import HostError


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
