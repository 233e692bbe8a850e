"""Compressing the archive podman exports, in one pass while podman is still writing it.

Why warmctl compresses rather than podman (measured, docs/benchmark.md): podman's zstd is
single-threaded on both sides, and its ``restore --import`` of a zstd archive took three times
as long as of a plain tar. So warmctl asks podman for a plain tar, compresses it with
multi-threaded zstd while podman is still writing it and hashes what it writes. On resume,
warmctl/feed.py decompresses it for podman.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

Advance = Callable[[int], None]

# Level 1, not zstd's default 3: on checkpoints of memcached (random values) and of a JVM the
# archive came out the same size (824.0 against 823.2 MB; 128.3 against 128.9 MB; podman's own
# zstd 821.6 and 133.7 MB) at about half the CPU, which on two cores shortened snapshot by a
# fifth, since podman is writing the plain tar on the same cores.
ZSTD_LEVEL = 1
_IO_SIZE = 4 * 1024 * 1024
SYNC_EVERY = 32 * 1024 * 1024  # bytes of archive between background syncs
_FOLLOW_POLL = 0.005  # seconds between looks at a file another process is still writing


def _ignore(_: int) -> None:
    return None


class _CountingReader:
    """A binary file that reports how many bytes were read through it.

    With ``still_growing``, the file is being written by another process: at its current
    end, wait for more until ``still_growing()`` turns false, then read to the real end.
    """

    def __init__(self, file: Any, advance: Advance,
                 still_growing: Callable[[], bool] | None = None) -> None:
        self._file = file
        self._advance = advance
        self._still_growing = still_growing

    def read(self, size: int = -1) -> bytes:
        while True:
            # Asked before reading: once the writer is done, one more read finds the rest.
            growing = self._still_growing is not None and self._still_growing()
            data: bytes = self._file.read(size)
            if data or not growing:
                self._advance(len(data))
                return data
            time.sleep(_FOLLOW_POLL)

    def readable(self) -> bool:
        return True


class _HashingWriter:
    """A binary file that hashes every byte written through it."""

    def __init__(self, file: Any, syncer: concurrent.futures.Executor | None = None) -> None:
        self._file = file
        self.digest = hashlib.sha256()
        self._syncer = syncer
        self._unsynced = 0
        self._syncing: concurrent.futures.Future[None] | None = None

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self._file.write(data)
        self._unsynced += len(data)
        if self._syncer is not None and self._unsynced >= SYNC_EVERY:
            self._sync_in_background(self._syncer)
        return len(data)

    def _sync_in_background(self, syncer: concurrent.futures.Executor) -> None:
        """Start writing what is written so far to disk, so that the fsync before publishing
        finds little left: on two cores it cost 70 ms at 256 MiB, 270 ms at 1 GiB, after
        the compression. One sync at a time; a failed one is retried by that fsync."""
        if self._syncing is not None and not self._syncing.done():
            return
        self._unsynced = 0
        self._syncing = syncer.submit(_datasync, self._file.fileno())


def _io(stream: _CountingReader | _HashingWriter) -> IO[bytes]:
    """The wrappers implement just the file methods zstandard, gzip and shutil call."""
    return cast(IO[bytes], stream)


def compress_zstd(source: Path, dest: Path, advance: Advance = _ignore, *,
                  still_growing: Callable[[], bool] | None = None) -> str:
    """Write ``source`` zstd-compressed (all cores, with a content checksum) into ``dest``;
    returns the SHA-256 of what was written.

    ``still_growing``: another process is still writing ``source`` (sequentially, as podman
    exports), and compression follows it until this returns false.
    """
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
    with source.open("rb") as raw, dest.open("r+b") as out, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as syncer:
        out.truncate(0)
        writer = _HashingWriter(out, syncer)
        reader = _CountingReader(raw, advance, still_growing)
        compressor.copy_stream(_io(reader), _io(writer), read_size=_IO_SIZE, write_size=_IO_SIZE)
    return writer.digest.hexdigest()


def _datasync(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fdatasync(fd)
