"""Exception types and the exit codes they map to.

The exit codes are a contract with shell scripts: README, the man page and the tests
pin them. Every failure warmctl reports is one of these exceptions; the single
boundary in ``warmctl.cli.main.main`` turns them into one line on stderr and an exit code.
"""

from __future__ import annotations

import errno
import signal
from enum import IntEnum
from pathlib import Path
from typing import TypeGuard


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    INTEGRITY = 5
    ENVIRONMENT = 6
    PODMAN_FAILED = 7
    BUSY = 8
    NOT_READY = 9
    IO_ERROR = 10
    TOO_OLD = 11
    TIMED_OUT = 124
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "any failure not listed below",
    ExitCode.USAGE: "usage: unknown option, missing argument, malformed name, reference, port "
                    "or label, a --home that is not a catalogue (or a link to nothing)",
    ExitCode.NOT_FOUND: "not found: no such snapshot, generation or container",
    ExitCode.CONFLICT: "conflict: container name, port or volume already in use",
    ExitCode.INTEGRITY: "integrity: digest mismatch, truncated or unreadable archive or "
                        "catalogue, a pull the signature policy refuses",
    ExitCode.ENVIRONMENT: "environment: podman or CRIU missing or unusable, not root, a registry "
                          "unreachable or untrusted, a pulled snapshot asking for host access, "
                          "a write to a catalogue on a read-only file system",
    ExitCode.PODMAN_FAILED: "podman or CRIU failed to checkpoint or restore",
    ExitCode.BUSY: "catalogue busy or locked beyond the wait",
    ExitCode.NOT_READY: "warm: warm-up failed or the service never became ready",
    ExitCode.IO_ERROR: "I/O error: the disk failed a read or write (EIO, no space); the data "
                       "may be whole: nothing was removed, check the disk and retry",
    ExitCode.TOO_OLD: "resume --max-age: the snapshot is older than the bound; nothing was "
                      "changed",
    ExitCode.TIMED_OUT: "a checkpoint or restore outlasted --time-limit: podman goes on "
                        "alone, the message says where the container stands",
    ExitCode.HANGUP: "interrupted by SIGHUP (a closed terminal): as for Ctrl-C (130)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C): temporary files removed, nothing half-recorded; "
                          "a second Ctrl-C leaves podman to finish alone, as the message says",
    ExitCode.TERMINATED: "interrupted by SIGTERM (kill, timeout(1), systemd's stop): as for "
                         "Ctrl-C (130)",
}


class WarmctlError(Exception):
    """Base of every error warmctl reports. ``hint`` is a one-line fix, when one is known."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(WarmctlError):
    exit_code = ExitCode.USAGE


class NotFoundError(WarmctlError):
    exit_code = ExitCode.NOT_FOUND


class ConflictError(WarmctlError):
    exit_code = ExitCode.CONFLICT


class IntegrityError(WarmctlError):
    exit_code = ExitCode.INTEGRITY


class HostError(WarmctlError):
    """The host cannot do what was asked: podman or CRIU missing or unusable, not root."""

    exit_code = ExitCode.ENVIRONMENT


class PodmanError(WarmctlError):
    """podman exited non-zero. Carries its stderr and, for checkpoint/restore, CRIU's log."""

    exit_code = ExitCode.FAILURE

    def __init__(
        self,
        message: str,
        *,
        argv: list[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
        criu_log: Path | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr
        self.criu_log = criu_log


class PodmanConflictError(PodmanError):
    """podman refused because a container name or port is already in use."""

    exit_code = ExitCode.CONFLICT


class CheckpointError(PodmanError):
    """podman or CRIU failed to checkpoint or restore."""

    exit_code = ExitCode.PODMAN_FAILED


class CatalogueBusyError(WarmctlError):
    exit_code = ExitCode.BUSY


class NotReadyError(WarmctlError):
    exit_code = ExitCode.NOT_READY


class DiskIOError(WarmctlError):
    """The disk failed a read or write: the data may well be whole, so nothing is removed."""

    exit_code = ExitCode.IO_ERROR


class TooOldError(WarmctlError):
    """resume --max-age: the snapshot to resume is older than the bound (freshness.py)."""

    exit_code = ExitCode.TOO_OLD


class Interrupted(WarmctlError):
    exit_code = ExitCode.INTERRUPTED


class LeftUnfinished(Interrupted):
    """A second Ctrl-C: warmctl left podman to finish a checkpoint or restore alone."""


class TimedOut(WarmctlError):
    """warmctl stopped waiting for a checkpoint or restore (--time-limit); podman goes on."""

    exit_code = ExitCode.TIMED_OUT


# The errnos with which a read fails because the disk or the file system did, not because of
# the bytes stored: the same read may succeed later, or on another copy.
_DISK_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM,
                          errno.EREMOTEIO, errno.ESTALE, errno.EUCLEAN})


def is_disk_failure(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is the disk failing a read or write (EIO...), not bad data: gzip's
    BadGzipFile is an OSError without an errno, and so never counts."""
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def disk_read_error(what: Path | str, exc: OSError, *, doing: str = "read") -> DiskIOError:
    """The error for a read of ``what`` that the disk failed: it says so and, since the file
    may well be whole, suggests checking the disk, never removing anything."""
    return DiskIOError(
        f"cannot {doing} {what}: {exc.strerror or exc}: the disk failed a {doing}; the data "
        f"itself may be whole",
        hint="nothing was removed: check the disk (dmesg, smartctl), then retry")


# SIGTERM or SIGHUP, when one interrupted warmctl (cli/main.py's handler notes it): they are
# handled as Ctrl-C, and messages name them, so that a journal says what stopped warmctl.
_termination_signal: int | None = None

_INTERRUPTION_NAMES: dict[int, str] = {signal.SIGTERM: "terminated (SIGTERM)",
                                       signal.SIGHUP: "hung up (SIGHUP)"}
_SIGNAL_NAMES: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def note_termination_signal(signum: int | None) -> None:
    global _termination_signal
    _termination_signal = signum


def termination_signal() -> int | None:
    """The SIGTERM or SIGHUP that interrupted warmctl, if one did (None: none, or Ctrl-C)."""
    return _termination_signal


def interruption() -> str:
    """What interrupted warmctl, as messages begin: "interrupted" (Ctrl-C), "terminated
    (SIGTERM)" or "hung up (SIGHUP)"."""
    if _termination_signal is None:
        return "interrupted"
    return _INTERRUPTION_NAMES.get(_termination_signal, "interrupted")


def named_interruption(message: str) -> str:
    """``message``, an interruption's ("interrupted ..."), naming the signal that caused it."""
    if _termination_signal is not None and message.startswith("interrupted"):
        return interruption() + message[len("interrupted"):]
    return message


def interrupt_again() -> str:
    """What leaves at once, the wait for podman included: as the user would do it again."""
    if _termination_signal not in _SIGNAL_NAMES:
        return "Ctrl-C again"
    return f"another {_SIGNAL_NAMES[_termination_signal]}"
