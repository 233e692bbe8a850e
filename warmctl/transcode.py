"""Compressing archives for the catalogue and expanding them for podman, in one pass each.

Why warmctl compresses rather than podman (measured, README "Performance"): podman's zstd is
single-threaded on both sides, and its ``restore --import`` of a zstd archive took three times
as long as of a plain tar. So warmctl asks podman for a plain tar, compresses it with
multi-threaded zstd while podman is still writing it and hashes what it writes; on resume it
expands the archive into a plain tar while another thread checks its digest, before podman
sees anything.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from warmctl.archive import detect_compression, sha256_file
from warmctl.errors import IntegrityError

Advance = Callable[[int], None]

ZSTD_LEVEL = 3  # zstd's default: about podman's ratio at ~1 GB/s with two threads
_IO_SIZE = 4 * 1024 * 1024
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

    def __init__(self, file: Any) -> None:
        self._file = file
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self._file.write(data)
        return len(data)


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
    with source.open("rb") as raw, dest.open("r+b") as out:
        out.truncate(0)
        writer = _HashingWriter(out)
        reader = _CountingReader(raw, advance, still_growing)
        compressor.copy_stream(_io(reader), _io(writer), read_size=_IO_SIZE, write_size=_IO_SIZE)
    return writer.digest.hexdigest()


def expand(source: Path, dest: Path, advance: Advance = _ignore) -> str:
    """Write ``source`` as a plain tar into ``dest``; returns the SHA-256 of ``source``.

    The digest is computed by a second thread reading the same file (from the page cache)
    while this one decompresses: on two cores that hides the hashing entirely.
    Raises IntegrityError when the compressed stream is damaged.
    """
    compression = detect_compression(source)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(sha256_file, source)
        try:
            with source.open("rb") as raw, dest.open("r+b") as out:
                out.truncate(0)
                reader = _io(_CountingReader(raw, advance))
                if compression == "zstd":
                    decompressor = zstandard.ZstdDecompressor()
                    with decompressor.stream_reader(reader, read_size=_IO_SIZE,
                                                    read_across_frames=True) as plain:
                        shutil.copyfileobj(plain, out, _IO_SIZE)
                elif compression == "gzip":
                    with gzip.GzipFile(fileobj=reader, mode="rb") as plain:
                        shutil.copyfileobj(plain, out, _IO_SIZE)
                else:
                    shutil.copyfileobj(reader, out, _IO_SIZE)
        except (zstandard.ZstdError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise IntegrityError(f"archive {source} is damaged: {exc}") from exc
        return hashing.result()
