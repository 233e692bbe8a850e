"""Compressing archives for the catalogue and expanding them for podman, in one pass each.

Why warmctl compresses rather than podman (measured, README "Performance"): podman's zstd is
single-threaded on both sides, and its ``restore --import`` of a zstd archive took three times
as long as of a plain tar. So warmctl asks podman for a plain tar, compresses it with
multi-threaded zstd while hashing what it writes, and on resume expands it into a plain tar
while hashing what it reads, before podman sees it. A digest mismatch is found before podman
runs, and the bytes are read once, not twice.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from warmctl.archive import detect_compression
from warmctl.errors import IntegrityError

Advance = Callable[[int], None]

ZSTD_LEVEL = 3  # zstd's default: about podman's ratio at ~1 GB/s with two threads
_IO_SIZE = 4 * 1024 * 1024


def _ignore(_: int) -> None:
    return None


class _HashingReader:
    """A binary file that hashes, and reports, every byte read through it."""

    def __init__(self, file: Any, advance: Advance) -> None:
        self._file = file
        self._advance = advance
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._file.read(size)
        self.digest.update(data)
        self._advance(len(data))
        return data

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


def _io(stream: _HashingReader | _HashingWriter) -> IO[bytes]:
    """The wrappers implement just the file methods zstandard, gzip and shutil call."""
    return cast(IO[bytes], stream)


def compress_zstd(source: Path, dest: Path, advance: Advance = _ignore) -> str:
    """Write ``source`` zstd-compressed (all cores, with a content checksum) into ``dest``;
    returns the SHA-256 of what was written."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
    with source.open("rb") as raw, dest.open("r+b") as out:
        out.truncate(0)
        writer = _HashingWriter(out)
        compressor.copy_stream(_io(_HashingReader(raw, advance)), _io(writer),
                               read_size=_IO_SIZE, write_size=_IO_SIZE)
    return writer.digest.hexdigest()


def expand(source: Path, dest: Path, advance: Advance = _ignore) -> str:
    """Write ``source`` as a plain tar into ``dest``; returns the SHA-256 of ``source``.

    Raises IntegrityError when the compressed stream is damaged.
    """
    compression = detect_compression(source)
    try:
        with source.open("rb") as raw, dest.open("r+b") as out:
            out.truncate(0)
            hashing = _HashingReader(raw, advance)
            if compression == "zstd":
                decompressor = zstandard.ZstdDecompressor()
                with decompressor.stream_reader(_io(hashing), read_size=_IO_SIZE,
                                                read_across_frames=True) as reader:
                    shutil.copyfileobj(reader, out, _IO_SIZE)
            elif compression == "gzip":
                with gzip.GzipFile(fileobj=_io(hashing), mode="rb") as reader:
                    shutil.copyfileobj(reader, out, _IO_SIZE)
            else:
                shutil.copyfileobj(_io(hashing), out, _IO_SIZE)
            # Whatever follows the last frame still belongs to the file's digest.
            while hashing.read(_IO_SIZE):
                pass
    except (zstandard.ZstdError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise IntegrityError(f"archive {source} is damaged: {exc}") from exc
    return hashing.digest.hexdigest()
