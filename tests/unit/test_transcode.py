"""Compressing podman's plain export: the archive decompresses to the very bytes, its digest
is of what was written, and it is pushed to disk while it is written."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import zstandard

from warmctl import transcode


def test_compress_zstd_round_trips_and_hashes_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(transcode, "SYNC_EVERY", 64 * 1024)
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    data = random.Random(3).randbytes(3 * 1024 * 1024)  # incompressible: the archive is as big
    source, dest = tmp_path / "plain.tar", tmp_path / "archive.tar"
    source.write_bytes(data)
    dest.touch()
    digest = transcode.compress_zstd(source, dest)
    written = dest.read_bytes()
    assert digest == hashlib.sha256(written).hexdigest()
    assert zstandard.ZstdDecompressor().stream_reader(written).read() == data
    assert synced  # pushed to disk during the compression, not only by the final fsync
