"""warmctl.archive against synthetic archives built here, and one real podman export."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from warmctl import archive
from warmctl.archive import (
    Compression,
    detect_compression,
    open_tar_stream,
    sha256_file,
    summarize,
    verify_structure,
)
from warmctl.errors import ExitCode, IntegrityError

COMPRESSIONS: list[Compression] = ["zstd", "gzip", "none"]
# `podman container checkpoint --export` of a busybox container: a sh loop and its `sleep`.
REAL_ARCHIVE = Path(__file__).parent / "data" / "podman-checkpoint-busybox.tar"

CONFIG = {
    "id": "4f1c0ffee",
    "name": "web",
    "rootfsImageName": "localhost/app:1.2",
    "rootfsImageID": "abc123",
    "runtime": "crun",
    "createdTime": "2026-01-02T03:04:05.123456789Z",
    "RawImageName": "localhost/app",
}
PAGES_1 = random.Random(1).randbytes(64 * 1024)  # random: compression must not shrink it away
PAGES_2 = random.Random(2).randbytes(32 * 1024)


def pstree_image(*entries: bytes) -> bytes:
    """A CRIU pstree.img: the common and pstree magics, then length-prefixed messages."""
    out = (0x54564319).to_bytes(4, "little") + (0x50273030).to_bytes(4, "little")
    for entry in entries:
        out += len(entry).to_bytes(4, "little") + entry
    return out


def pstree_entry(pid: int, ppid: int, threads: list[int]) -> bytes:
    """A PstreeEntry protobuf (pid < 128): pid=1, ppid=2, pgid=3, sid=4, threads=5 packed."""
    return bytes([0x08, pid, 0x10, ppid, 0x18, pid, 0x20, 1, 0x2A, len(threads), *threads])


def checkpoint_members() -> dict[str, bytes]:
    """The members podman writes, small: 3 processes, 4 threads, 96 KiB of memory."""
    return {
        "config.dump": json.dumps(CONFIG).encode(),
        "spec.dump": json.dumps({"ociVersion": "1.0.2", "process": {}}).encode(),
        "network.status": b"[]",
        "stats-dump": b"{}",
        "ctr.log": b"",
        "checkpoint/inventory.img": b"\x16\x31\x31\x58\x02\x00\x00\x00\x08\x02",
        "checkpoint/pstree.img": pstree_image(
            pstree_entry(1, 0, [1]), pstree_entry(7, 1, [7, 8]), pstree_entry(9, 1, [9])
        ),
        "checkpoint/core-1.img": b"core",
        "checkpoint/core-7.img": b"core",
        "checkpoint/core-8.img": b"core",
        "checkpoint/core-9.img": b"core",
        "checkpoint/pagemap-1.img": b"not memory",  # pagemap-, not pages-: not counted
        "checkpoint/pages-1.img": PAGES_1,
        "checkpoint/pages-2.img": PAGES_2,
        "rootfs-diff.tar": bytes(3 * 512),
    }


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)  # as podman's are
    if compression == "gzip":
        return gzip.compress(data)
    return data


def write_archive(
    path: Path, members: dict[str, bytes] | None = None, compression: Compression = "zstd"
) -> Path:
    path.write_bytes(
        compress(tar_bytes(checkpoint_members() if members is None else members), compression)
    )
    return path


def header_offset(tar_data: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar_data)) as tar:
        return tar.getmember(name).offset


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


# detect_compression


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_detect_compression_by_magic(tmp_path: Path, compression: Compression) -> None:
    path = write_archive(tmp_path / "a.tar", compression=compression)
    assert detect_compression(path) == compression
    assert detect_compression(path.read_bytes()[:512]) == compression


@pytest.mark.parametrize("data", [b"", b"hello, world\n", bytes(1024), b"PK\x03\x04" + bytes(600)])
def test_detect_compression_rejects_other_data(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "not.tar"
    path.write_bytes(data)
    with pytest.raises(IntegrityError, match="not a checkpoint archive") as err:
        detect_compression(path)
    assert str(path) in err.value.message
    assert err.value.exit_code == ExitCode.INTEGRITY
    with pytest.raises(IntegrityError, match="not a checkpoint archive"):
        detect_compression(data)


# summarize


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_summarize_reports_every_field(tmp_path: Path, compression: Compression) -> None:
    path = write_archive(tmp_path / "a.tar", compression=compression)

    summary = summarize(path)

    assert summary.compression == compression
    assert summary.container_name == "web"
    assert summary.container_id == "4f1c0ffee"
    assert summary.image_name == "localhost/app:1.2"
    assert summary.image_id == "abc123"
    assert summary.runtime == "crun"
    assert summary.created == "2026-01-02T03:04:05.123456789Z"
    assert summary.memory_bytes == len(PAGES_1) + len(PAGES_2)
    assert summary.rootfs_diff_bytes == 3 * 512
    assert summary.process_count == 3
    assert summary.thread_count == 4
    assert summary.member_count == len(checkpoint_members())
    assert summary.uncompressed_bytes == len(tar_bytes(checkpoint_members()))
    assert verify_structure(path) == summary


def test_summarize_defaults_for_optional_parts(tmp_path: Path) -> None:
    members = checkpoint_members()
    del members["rootfs-diff.tar"]
    members["config.dump"] = json.dumps({"RawImageName": "docker.io/library/busybox"}).encode()

    summary = summarize(write_archive(tmp_path / "a.tar", members))

    assert summary.rootfs_diff_bytes == 0
    assert summary.image_name == "docker.io/library/busybox"  # fallback when unresolved
    assert summary.container_name == summary.image_id == summary.created == ""


def test_summary_to_dict_is_json(tmp_path: Path) -> None:
    summary = summarize(write_archive(tmp_path / "a.tar"))
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["container_name"] == "web"
    assert data["process_count"] == 3
    assert data["compression"] == "zstd"


def test_summarize_reads_zstd_across_frames(tmp_path: Path) -> None:
    data = tar_bytes(checkpoint_members())
    middle = len(data) // 2
    path = tmp_path / "a.tar"
    path.write_bytes(compress(data[:middle], "zstd") + compress(data[middle:], "zstd"))
    assert summarize(path).uncompressed_bytes == len(data)


def test_unpacked_pstree_threads_count_the_same(tmp_path: Path) -> None:
    """pstree.img as the real CRIU writes it (threads not packed), from the real fixture."""
    members = checkpoint_members()
    members["checkpoint/pstree.img"] = bytes.fromhex(
        "19435654 30302750"  # the two magics
        " 0a000000 0801 1000 1801 2001 2801"  # length 10; pid 1, ppid 0, threads 1
        " 0a000000 080b 1001 1801 2001 280b"  # length 10; pid 11, ppid 1, threads 11
    )
    assert summarize(write_archive(tmp_path / "a.tar", members)).process_count == 2


def test_open_tar_stream_lists_members_in_order(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a.tar")
    with open_tar_stream(path) as tar:
        names = [member.name for member in tar]
    assert names == list(checkpoint_members())


# damage


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_archive_cut_in_half_is_an_integrity_error(
    tmp_path: Path, compression: Compression
) -> None:
    path = write_archive(tmp_path / "a.tar", compression=compression)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="damaged or truncated") as err:
        verify_structure(path)
    assert str(path) in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_tar_cut_at_a_member_boundary_is_an_integrity_error(
    tmp_path: Path, compression: Compression
) -> None:
    """tarfile alone reads such a stream as a shorter but complete archive."""
    data = tar_bytes(checkpoint_members())
    cut = data[: header_offset(data, "checkpoint/pages-2.img")]
    path = tmp_path / "a.tar"
    path.write_bytes(compress(cut, compression))
    with pytest.raises(IntegrityError, match="without its end marker"):
        verify_structure(path)


def test_flipped_byte_in_zstd_archive_fails_its_checksum(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a.tar", compression="zstd")
    flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(IntegrityError, match="damaged or truncated"):
        verify_structure(path)


def test_flipped_byte_in_gzip_archive_is_an_integrity_error(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a.tar", compression="gzip")
    flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(IntegrityError, match="damaged or truncated"):
        verify_structure(path)


@pytest.mark.parametrize("member", ["config.dump", "checkpoint/pages-2.img"])
def test_flipped_byte_in_a_tar_header_is_an_integrity_error(tmp_path: Path, member: str) -> None:
    """The first header's bad checksum makes tarfile fail; a later one makes it stop early."""
    path = write_archive(tmp_path / "a.tar", compression="none")
    flip_byte(path, header_offset(path.read_bytes(), member) + 3)  # inside the name field
    with pytest.raises(IntegrityError, match="damaged or truncated"):
        verify_structure(path)


def test_data_after_the_end_marker_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    path.write_bytes(tar_bytes(checkpoint_members()) + b"trailing garbage")
    with pytest.raises(IntegrityError, match="unreadable tar header"):
        verify_structure(path)


@pytest.mark.parametrize(
    "missing",
    [
        "config.dump",
        "spec.dump",
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "checkpoint/pages-*.img",
    ],
)
def test_missing_required_member_is_named(tmp_path: Path, missing: str) -> None:
    members = checkpoint_members()
    for name in fnmatch.filter(list(members), missing):
        del members[name]
    path = write_archive(tmp_path / "a.tar", members)
    with pytest.raises(IntegrityError, match="incomplete") as err:
        verify_structure(path)
    assert missing in err.value.message
    assert str(path) in err.value.message


def test_missing_file_is_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="cannot read"):
        verify_structure(tmp_path / "absent.tar")


# hostile or malformed content


@pytest.mark.parametrize(
    ("member", "data", "message"),
    [
        ("config.dump", b"{not json", "config.dump is not valid JSON"),
        ("config.dump", b"\xff\xfe", "config.dump is not valid JSON"),
        ("config.dump", b"[" * 100_000 + b"]" * 100_000, "config.dump is not valid JSON"),
        ("config.dump", b'["a list"]', "config.dump is not a JSON object"),
        ("spec.dump", b"", "spec.dump is not valid JSON"),
        ("checkpoint/pstree.img", b"\x00" * 12, "not a CRIU process tree image"),
        ("checkpoint/pstree.img", pstree_image(b"\x08\x01")[:-1], "pstree.img is truncated"),
        ("checkpoint/pstree.img", pstree_image(b"\x08\x01") + b"\x05\x00", "is truncated"),
        ("checkpoint/pstree.img", pstree_image(), "lists no process"),
    ],
)
def test_malformed_metadata_is_an_integrity_error(
    tmp_path: Path, member: str, data: bytes, message: str
) -> None:
    members = checkpoint_members()
    members[member] = data
    with pytest.raises(IntegrityError, match="not a valid checkpoint archive") as err:
        verify_structure(write_archive(tmp_path / "a.tar", members))
    assert message in err.value.message


def test_oversized_metadata_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "METADATA_LIMIT", 64)  # rather than writing 16 MiB
    with pytest.raises(IntegrityError, match=r"config.dump is \d+ bytes, more than the 64"):
        verify_structure(write_archive(tmp_path / "a.tar"))


def test_too_many_members_is_an_integrity_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "MEMBER_LIMIT", 5)
    with pytest.raises(IntegrityError, match="more than 5 members"):
        verify_structure(write_archive(tmp_path / "a.tar"))


def test_hostile_member_names_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work" / "dir"
    workdir.mkdir(parents=True)
    buffer = io.BytesIO(tar_bytes(checkpoint_members()))
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        for name in ("../../escaped", f"{tmp_path}/absolute-escaped"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("checkpoint/pages-9.img")  # a symlink is not memory
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    path = tmp_path / "a.tar"
    path.write_bytes(compress(buffer.getvalue(), "zstd"))
    monkeypatch.chdir(workdir)
    before = sorted(tmp_path.rglob("*"))

    summary = verify_structure(path)

    assert sorted(tmp_path.rglob("*")) == before
    assert summary.member_count == len(checkpoint_members()) + 3
    assert summary.memory_bytes == len(PAGES_1) + len(PAGES_2)


# sha256_file


def test_sha256_file_matches_hashlib_and_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = random.Random(3).randbytes(2 * archive.CHUNK_SIZE + 12345)
    path.write_bytes(data)
    seen: list[int] = []

    digest = sha256_file(path, progress=seen.append)

    assert digest == hashlib.sha256(data).hexdigest()
    assert seen == [archive.CHUNK_SIZE, archive.CHUNK_SIZE, 12345]
    assert sha256_file(path) == digest


def test_sha256_file_of_missing_file_is_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="cannot read"):
        sha256_file(tmp_path / "absent")


# a real podman export


def test_real_podman_archive_summarizes() -> None:
    summary = verify_structure(REAL_ARCHIVE)

    assert summary.compression == "zstd"
    assert summary.container_name == "t1"
    assert summary.image_name == "localhost/warmctl-test/busybox:latest"
    assert summary.image_id.startswith("bedc602ff690")
    assert summary.runtime == "runc"
    assert summary.created == "2026-11-27T11:50:06.880212092Z"
    assert summary.process_count == 2  # the sh loop and its sleep
    assert summary.thread_count == 2
    assert summary.memory_bytes == 73728 + 61440
    assert summary.rootfs_diff_bytes == 0
    assert summary.member_count == 38
