"""The FIFO that hands an archive to podman: what each read gets, and what a damaged archive
does to the stream. Readers here open the FIFO by path, as podman does."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fakes import REAL_ARCHIVE, plain_archive_bytes, tar_member_names
from hypothesis import given
from hypothesis import strategies as st

from warmctl.errors import IntegrityError
from warmctl.lifecycle.feed import ArchiveFeed, _HeldEnd


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_all(path: Path) -> bytes:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(path.read_bytes).result(timeout=30)


def test_two_configuration_reads_then_the_whole_archive() -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE)) as feed:
        reads = [read_all(feed.path) for _ in range(3)]
    feed.verify()
    assert feed.reads == ["config", "config", "archive"]
    assert tar_member_names(reads[0]) == ["config.dump", "spec.dump"]
    assert reads[1] == reads[0]
    assert reads[2] == plain_archive_bytes()
    assert feed.archive_was_read
    with tarfile.open(fileobj=io.BytesIO(reads[0])) as tar, \
            tarfile.open(fileobj=io.BytesIO(reads[2])) as whole:
        for name in ("config.dump", "spec.dump"):
            assert tar.extractfile(name).read() == whole.extractfile(name).read()  # type: ignore[union-attr]


def test_without_configuration_reads_every_read_gets_the_whole_archive() -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), config_reads=0) as feed:
        reads = [read_all(feed.path) for _ in range(2)]
    assert reads == [plain_archive_bytes()] * 2
    assert feed.reads == ["archive", "archive"]


def test_a_plain_archive_is_fed_as_it_is(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(plain_archive_bytes())
    with ArchiveFeed(plain, sha256(plain)) as feed:
        reads = [read_all(feed.path) for _ in range(3)]
    feed.verify()
    assert reads[2] == plain.read_bytes()


def test_a_reader_that_stops_early_does_not_disturb_the_next(tmp_path: Path) -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), config_reads=0) as feed:
        with feed.path.open("rb") as early:
            assert early.read(512)
        assert read_all(feed.path) == plain_archive_bytes()
    assert feed.reads == ["archive", "archive"]


def test_closing_with_no_reader_or_half_way_does_not_hang() -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE)):
        pass
    with pytest.raises(RuntimeError), ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE)) as feed:
        read_all(feed.path)
        raise RuntimeError("podman failed")


def test_the_fifo_is_private() -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE)) as feed:
        assert stat.S_ISFIFO(os.stat(feed.path).st_mode)
        assert stat.S_IMODE(os.stat(feed.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(feed.path.parent).st_mode) == 0o700
        directory = feed.path.parent
    assert not directory.exists()


def damaged(tmp_path: Path, *, offset_from_end: int) -> Path:
    data = bytearray(REAL_ARCHIVE.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path = tmp_path / "damaged.tar"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("offset_from_end", [2, 1000, 50_000])
def test_a_damaged_archive_ends_in_a_stream_no_tar_reader_accepts(
    tmp_path: Path, offset_from_end: int
) -> None:
    path = damaged(tmp_path, offset_from_end=offset_from_end)
    with ArchiveFeed(path, sha256(REAL_ARCHIVE), config_reads=0) as feed:
        imported = read_all(feed.path)
    assert len(imported) % 512 == 256
    assert imported.endswith(b"\xff" * 1024)
    with pytest.raises(IntegrityError, match="corrupt"):
        feed.verify()


def test_a_digest_mismatch_alone_spoils_the_stream(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(plain_archive_bytes())
    with ArchiveFeed(plain, "0" * 64, config_reads=0) as feed:
        imported = read_all(feed.path)
    assert imported[: -1024 - 256] == plain.read_bytes()[: len(imported) - 1024 - 256]
    assert len(imported) % 512 == 256
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        feed.verify()


def test_an_archive_damaged_at_its_start_fails_before_podman_is_asked(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(b"\xff" * 4096)
    path = tmp_path / "bad.tar"
    path.write_bytes(data)
    with pytest.raises(IntegrityError):
        ArchiveFeed(path, sha256(path))


# --- holding back the end of the stream -------------------------------------------------------

chunks = st.lists(st.one_of(st.binary(max_size=700), st.integers(1, 3000).map(bytes)),
                  max_size=20)


@given(chunks)
def test_held_end_never_sends_trailing_zeros_before_finish(pieces: list[bytes]) -> None:
    sent = bytearray()
    stream = _HeldEnd(sent.extend)
    for piece in pieces:
        stream.write(piece)
        assert not sent.endswith(b"\0")
    whole = b"".join(pieces)
    assert bytes(sent) == whole.rstrip(b"\0")
    stream.finish()
    assert bytes(sent) == whole


@given(chunks)
def test_held_end_spoils_to_a_length_no_tar_block_ends_at(pieces: list[bytes]) -> None:
    sent = bytearray()
    stream = _HeldEnd(sent.extend)
    for piece in pieces:
        stream.write(piece)
    stream.spoil()
    assert len(sent) % 512 == 256 and sent.endswith(b"\xff" * 1024)


# --- an archive that checks itself, with its plain size recorded -----------------------------

def test_a_self_checking_archive_of_the_recorded_size_is_released_before_the_digest() -> None:
    """zstd's content checksum and the recorded plain size prove the stream whole as it is
    decoded, so podman gets it all without waiting for the digest; verify() still compares
    the digest afterwards (the caller then removes what podman made)."""
    plain = plain_archive_bytes()
    with ArchiveFeed(REAL_ARCHIVE, "0" * 64, plain_bytes=len(plain), config_reads=0) as feed:
        assert read_all(feed.path) == plain
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        feed.verify()


def test_a_self_checking_archive_of_another_size_is_spoiled(tmp_path: Path) -> None:
    plain = plain_archive_bytes()
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), plain_bytes=len(plain) + 512,
                     config_reads=0) as feed:
        imported = read_all(feed.path)
    assert len(imported) % 512 == 256
    with pytest.raises(IntegrityError, match="not the recorded"):
        feed.verify()


def test_a_truncated_zstd_archive_is_spoiled_even_with_its_size_recorded(tmp_path: Path) -> None:
    """python-zstandard ends its output quietly when the input stops inside a frame: the
    recorded plain size is what catches it."""
    data = REAL_ARCHIVE.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with ArchiveFeed(cut, sha256(REAL_ARCHIVE), plain_bytes=len(plain_archive_bytes()),
                     config_reads=0) as feed:
        imported = read_all(feed.path)
    assert len(imported) % 512 == 256
    with pytest.raises(IntegrityError):
        feed.verify()


def test_a_plain_archive_waits_for_its_digest_whatever_its_size(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(plain_archive_bytes())
    with ArchiveFeed(plain, "0" * 64, plain_bytes=plain.stat().st_size, config_reads=0) as feed:
        imported = read_all(feed.path)
    assert len(imported) % 512 == 256


def test_a_failing_feed_is_reported_and_does_not_leave_podman_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: ArchiveFeed, fd: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ArchiveFeed, "_feed_archive", broken)
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), config_reads=0) as feed:
        assert read_all(feed.path) == b""  # the failed read
        # A later read does not wait for a writer: it finds the FIFO gone, or (if it opened
        # it just before) is released with nothing. read_all gives up after 30 s.
        with contextlib.suppress(FileNotFoundError):
            assert read_all(feed.path) == b""
    with pytest.raises(RuntimeError, match="a bug"):
        feed.verify()


def test_abandoning_a_read_at_a_member_boundary_leaves_no_whole_looking_tar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """warmctl leaves (a second Ctrl-C) while this thread waits between two members: had the
    pipe ended there, the stream would pass for a whole, shorter tar. abandon() adds a byte:
    the stream ends in a truncated block, and podman's tar reader fails."""
    import threading

    plain = plain_archive_bytes()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        boundary = tar.getmembers()[1].offset  # where the second member's header starts
    prefix = plain[:boundary]
    sent, leave = threading.Event(), threading.Event()

    def stops_between_members(self: ArchiveFeed, stream: Any) -> None:
        stream.write(prefix + bytes(512))  # a member and padding; zeros are held back
        sent.set()
        leave.wait(30)
        raise BrokenPipeError  # the thread ends as if warmctl had exited

    monkeypatch.setattr(ArchiveFeed, "_copy_archive", stops_between_members)
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), config_reads=0) as feed, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(feed.path.read_bytes)
        assert sent.wait(30)
        feed.abandon()
        leave.set()
        got = reading.result(timeout=30)
    assert got.startswith(prefix.rstrip(b"\0"))
    assert got.endswith(b"\xff") and len(got) % 512 != 0
    assert not feed.fed_whole


def test_abandoning_after_the_whole_archive_was_fed_adds_nothing() -> None:
    with ArchiveFeed(REAL_ARCHIVE, sha256(REAL_ARCHIVE), config_reads=0) as feed:
        assert read_all(feed.path) == plain_archive_bytes()
        feed.abandon()
    assert feed.fed_whole
