"""CRIU's logs: kept in the catalogue after a failure (podman removes its copy with the
container), their error lines, and the fix for a known failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from warmctl.catalogue import Catalogue
from warmctl.errors import (
    CheckpointError,
    WarmctlError,
)
from warmctl.host import facts as host
from warmctl.host.diagnose import criu_errors, diagnose

log = logging.getLogger(__name__)


def keep_criu_log(catalogue: Catalogue, err: CheckpointError, label: str) -> CheckpointError:
    """Copy CRIU's log into the catalogue's logs/ (podman removes its copy with the
    container), add CRIU's first error line to the message, and a fix as the hint when the
    failure is a known one."""
    criu_lines: list[str] = []
    if err.criu_log is not None and err.criu_log.is_file():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = catalogue.logs_dir / f"{stamp}-{label}.log"
        try:
            shutil.copyfile(err.criu_log, kept)
            os.chmod(kept, 0o600)
        except OSError:
            pass
        else:
            err.criu_log = kept
            criu_lines = criu_error_lines(kept)
            if criu_lines:
                err.message += f"; CRIU: {criu_lines[0]}"
            err.message += f"; log: {kept}"
    err.hint = failure_hint(err.stderr, "\n".join(criu_lines)) or err.hint
    return err


def failure_hint(stderr: str, criu_log_text: str = "") -> str | None:
    """diagnose(), told this host's CRIU version and kernel so that an upgrade names the
    release this host needs."""
    criu_version = ""
    with contextlib.suppress(WarmctlError):
        criu_version = host.criu_version()
    return diagnose(stderr, criu_log_text, criu_version=criu_version,
                    kernel=host.kernel_release())


def criu_error_lines(log_path: Path) -> list[str]:
    """CRIU's error lines in its log file, in order (see diagnose.criu_errors)."""
    try:
        with open(log_path, errors="replace") as log:
            return criu_errors(log)
    except OSError:
        return []
