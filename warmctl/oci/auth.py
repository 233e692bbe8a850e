"""Auth challenges: a registry's ``WWW-Authenticate`` header parsed (Basic, or Bearer with the
token server's realm, service and scope). The client answers them (client.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
