"""Where a snapshot came from and what vouched for it, in words for `list` and `show`.

A pulled snapshot's record holds ``extra["pulled"]`` (artifact.record_from_config): its
source, and ``signed_by``, the key that verified its signature at pull (``{"key": PATH or
"keyData", "fingerprint": "sha256:..."}``), or None when the host's signature policy asked for
no signature, as Debian's default ``insecureAcceptAnything`` does. Resuming it runs its memory
as root and has CRIU parse its images as root: whether anyone vouched for it is worth a column.
``policy_scope`` names the scope of the policy that decided (recorded since warmctl said so;
older records lack it).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from warmctl.catalogue import Snapshot

# Fingerprint characters in list's column: enough to tell keys apart at a glance.
_SHORT_FINGERPRINT = len("sha256:") + 12


def pulled_record(snapshot: Snapshot) -> dict[str, Any] | None:
    pulled = snapshot.extra.get("pulled")
    return pulled if isinstance(pulled, dict) else None


def signer(snapshot: Snapshot) -> dict[str, str] | None:
    """The key that verified a pulled snapshot's signature, else None."""
    pulled = pulled_record(snapshot)
    signed_by = pulled.get("signed_by") if pulled else None
    if isinstance(signed_by, dict) and isinstance(signed_by.get("key"), str) \
            and isinstance(signed_by.get("fingerprint"), str):
        return signed_by
    return None


def trust_column(snapshot: Snapshot) -> str:
    """list's ORIGIN column: ``local``, ``signed by warm.pub sha256:0123456789ab``, or
    ``pulled, UNSIGNED``."""
    if pulled_record(snapshot) is None:
        return "local"
    key = signer(snapshot)
    if key is None:
        return "pulled, UNSIGNED"
    return f"signed by {PurePath(key['key']).name} {key['fingerprint'][:_SHORT_FINGERPRINT]}"


def trust_field(snapshot: Snapshot) -> str:
    """show's ``origin`` field, in a sentence."""
    pulled = pulled_record(snapshot)
    if pulled is None:
        return "taken on this host or an earlier one (not pulled)"
    source = pulled.get("source", "a registry")
    key = signer(snapshot)
    if key is not None:
        return f"pulled from {source}, signed by {key['key']} ({key['fingerprint']})"
    scope = pulled.get("policy_scope")
    decided = f"the signature policy (scope {scope})" if scope else "the signature policy"
    return (f"pulled from {source}, UNSIGNED: {decided} asked for no signature, so nobody "
            "vouched for what resume hands CRIU as root")
