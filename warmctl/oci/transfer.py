"""The transfer helpers of the registry client: backoff between attempts, progress that can
step back, a download's hash so far, and an upload's chunks read from the archive with pread,
hashed once in order however often a chunk is sent."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
from collections.abc import Callable
from typing import IO

from warmctl.errors import IntegrityError, disk_read_error, is_disk_failure
from warmctl.oci.errors import _RETRYABLE

Advance = Callable[[int], None]

_IO_SIZE = 1024 * 1024


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
