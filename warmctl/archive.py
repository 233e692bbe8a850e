"""Reading podman checkpoint archives without extracting them.

One module over 450 lines: summary, structure check and configuration are views of one pass
over the tar stream (``_TarStream``, ``_Found``), which they share with its error wording.

``podman container checkpoint --export`` writes a tar archive (zstd-compressed by default, or
gzip, or plain) holding podman's metadata (config.dump, spec.dump, ...) and CRIU's images
under checkpoint/. This module reads such an archive as one stream, front to back: the few
small metadata members are read into memory, every other member is known only by its header's
size, and nothing is ever written to disk, so member names never become paths.

That single pass both describes the archive (``summarize``) and proves it whole
(``verify_structure``): every byte is decompressed, so a truncated or corrupted archive fails
here rather than halfway through a restore. Every problem is an ``IntegrityError`` naming the
archive, except a read the disk failed (EIO and its kin): that is a ``DiskIOError``, since the
archive itself may well be whole and must not be called damaged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import zstandard

from warmctl.errors import IntegrityError, WarmctlError, disk_read_error, is_disk_failure

Compression = Literal["zstd", "gzip", "none"]

CHUNK_SIZE = 1024 * 1024
# tarfile reads its source in pieces of this size (10 KiB by default) and copies what it has
# buffered on every header read: 64 KiB skips big members quickly without slowing small ones.
_TAR_BUFSIZE = 64 * 1024
# config.dump and spec.dump are tens of KiB and pstree.img a few bytes per process; anything
# beyond this is a hostile or broken archive, and reading it would only fill memory.
METADATA_LIMIT = 16 * 1024 * 1024
# Each member costs tarfile a few hundred bytes of memory. CRIU writes about ten images per
# process, so this allows ~10,000 processes while bounding what a hostile archive can cost.
MEMBER_LIMIT = 100_000

CONFIG = "config.dump"
SPEC = "spec.dump"
INVENTORY = "checkpoint/inventory.img"
PSTREE = "checkpoint/pstree.img"
ROOTFS_DIFF = "rootfs-diff.tar"
_REQUIRED = (CONFIG, SPEC, INVENTORY, PSTREE)
_PAGES = re.compile(r"checkpoint/pages-\d+\.img")  # process memory, one file per pagemap
_CORE = re.compile(r"checkpoint/core-\d+\.img")  # one per thread, named by its thread id
# podman exports each named volume's content as a tar of its own, volumes/NAME.tar.
VOLUME_TAR = re.compile(r"volumes/([A-Za-z0-9][A-Za-z0-9_.-]*)\.tar")

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_MAGIC_OFFSET = 257  # "ustar" in the first header, for the POSIX, PAX and GNU formats
# CRIU images start with two little-endian u32 magics: IMG_COMMON_MAGIC, then the image
# type's (here PSTREE_MAGIC). inventory.img is the exception, with only its own.
_CRIU_PSTREE_MAGICS = (0x54564319).to_bytes(4, "little") + (0x50273030).to_bytes(4, "little")

# What reading a damaged stream raises, from the decompressors and tarfile. BadGzipFile is
# an OSError; zlib.error and EOFError (a gzip stream cut short) are not.
_READ_ERRORS = (tarfile.TarError, zstandard.ZstdError, zlib.error, EOFError, OSError)
# What reading a damaged compressed stream raises (without tarfile's, and without OSError, which
# also means the disk failed).
STREAM_ERRORS = (zstandard.ZstdError, zlib.error, EOFError, gzip.BadGzipFile)


@dataclass(frozen=True)
class ArchiveSummary:
    compression: Compression
    container_name: str
    container_id: str
    image_name: str
    image_id: str
    runtime: str
    created: str  # config.dump's createdTime, RFC 3339 with nanoseconds, as podman wrote it
    memory_bytes: int  # sum of checkpoint/pages-*.img
    rootfs_diff_bytes: int  # rootfs-diff.tar, 0 when the container changed no files
    process_count: int  # entries in checkpoint/pstree.img
    thread_count: int  # checkpoint/core-*.img files
    member_count: int  # every tar entry, directories included
    uncompressed_bytes: int  # length of the tar stream after decompression
    # Named volumes: {"name", "destination", "bytes"} (bytes: the size of volumes/NAME.tar,
    # None when the archive holds no content for it).
    volumes: list[dict[str, Any]] = field(default_factory=list)
    # Host paths bind-mounted by the user: {"source", "destination"}. Not in the archive.
    bind_mounts: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def detect_compression(source: Path | bytes) -> Compression:
    """How an archive is compressed, from its magic bytes, not its file name.

    ``source`` is the archive's path or its first bytes (at least 262 for a plain tar).
    Raises IntegrityError when it is neither zstd, gzip nor tar.
    """
    head = _read_head(source) if isinstance(source, Path) else source
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "none"
    subject = str(source) if isinstance(source, Path) else "data"
    raise IntegrityError(f"{subject} is not a checkpoint archive: not zstd, gzip or tar")


def checks_itself(path: Path) -> bool:
    """Whether reading the archive detects damage by itself: a zstd frame with a content
    checksum (what warmctl and podman write), or gzip (CRC-32). A plain tar has no check."""
    head = _read_head(path)
    compression = detect_compression(head)
    if compression == "zstd":
        try:
            return bool(zstandard.get_frame_parameters(head).has_checksum)
        except zstandard.ZstdError:
            return False
    return compression == "gzip"


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256 as hex, read in 1 MiB chunks.

    ``progress`` is called after each chunk with that chunk's size (an increment, as rich's
    ``Progress.advance`` takes). Raises IntegrityError when the file cannot be read, DiskIOError
    when the disk failed the read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                digest.update(chunk)
                if progress is not None:
                    progress(len(chunk))
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return digest.hexdigest()


@contextmanager
def open_tar_stream(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a streaming TarFile (mode "r|"): members in order, each read once.

    Never call extract() or extractall() on it: warmctl reads members with extractfile().
    """
    with _open_tar(path, detect_compression(path)) as (tar, _):
        yield tar


def summarize(path: Path) -> ArchiveSummary:
    """Describe a checkpoint archive, reading it once from end to end.

    Raises IntegrityError when the archive is truncated or corrupt, lacks a member a restore
    needs, or has metadata podman would not write.
    """
    compression = detect_compression(path)
    try:
        with _open_tar(path, compression) as (tar, stream):
            found = _read_members(tar)
            stream.read_to_end()
            _check_end_of_archive(tar.offset, stream)
    except _BadContent as exc:
        raise IntegrityError(f"{path} is not a valid checkpoint archive: {exc}") from None
    except _READ_ERRORS as exc:
        raise _damaged(path, exc) from exc
    missing = _missing_members(found)
    if missing:
        raise IntegrityError(f"{path} is incomplete: it has no {', '.join(missing)}")
    return _summary(compression, found, stream.length)


def verify_structure(path: Path) -> ArchiveSummary:
    """Check that the archive is whole and has what a restore needs; return its summary.

    The same single pass as summarize(): a summary is only ever given for a whole archive.
    It proves the archive readable, not restorable: CRIU's images are not decoded beyond
    pstree.img. Catching later damage to a stored archive is the recorded SHA-256's job.
    """
    return summarize(path)


# After the last member a plain tar has its end marker and padding: zeros, never this much.
_TRAILER_LIMIT = 1 << 20


def verify_checkpoint_quickly(path: Path) -> None:
    """verify_structure() for a plain tar, reading only headers and metadata: it seeks over
    the memory images (0.74 s saved at 1.2 GB, even from the page cache). Any other archive is
    read whole, as verify_structure() does. Raises IntegrityError as it does."""
    if detect_compression(path) != "none":
        verify_structure(path)
        return
    try:
        with tarfile.open(path, "r:") as tar:  # a regular file: tarfile seeks over data
            found = _read_members(tar)
            end = tar.offset
        with path.open("rb") as file:
            trailer_length = file.seek(0, os.SEEK_END) - end
            file.seek(end)
            trailer = file.read(min(trailer_length, _TRAILER_LIMIT))
        if trailer_length < 2 * tarfile.BLOCKSIZE or trailer_length > _TRAILER_LIMIT \
                or trailer.strip(b"\0"):
            raise tarfile.ReadError(f"no proper end of archive after byte {end}")
    except _BadContent as exc:
        raise IntegrityError(f"{path} is not a valid checkpoint archive: {exc}") from None
    except _READ_ERRORS as exc:
        raise _damaged(path, exc) from exc
    missing = _missing_members(found)
    if missing:
        raise IntegrityError(f"{path} is incomplete: it has no {', '.join(missing)}")


def configuration_tar(path: Path, *, within: int,
                      edit_spec: Callable[[bytes, bytes], bytes] | None = None,
                      edit_dumps: Callable[[bytes, bytes], tuple[bytes, bytes]] | None = None,
                      ) -> bytes | None:
    """A small tar of the archive's config.dump and spec.dump: what podman reads to create the
    container. They are looked for in the first ``within`` bytes of the tar stream only
    (podman writes them first); None when they are not there. ``edit_dumps`` gets both
    files' bytes and returns new ones; then ``edit_spec`` gets both and returns spec.dump's.

    Raises IntegrityError when that part of the archive is damaged.
    """
    found = _configuration_members(path, within)
    if found is None:
        return None
    if edit_dumps is not None:
        config, spec = edit_dumps(found[CONFIG][1], found[SPEC][1])
        found[CONFIG], found[SPEC] = (found[CONFIG][0], config), (found[SPEC][0], spec)
    if edit_spec is not None:
        member, data = found[SPEC]
        found[SPEC] = (member, edit_spec(found[CONFIG][1], data))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as copy:
        for name in (CONFIG, SPEC):
            member, data = found[name]
            header = tarfile.TarInfo(name)
            header.size, header.mode, header.mtime = len(data), member.mode & 0o777, member.mtime
            copy.addfile(header, io.BytesIO(data))
    return out.getvalue()


def configuration_files(path: Path, *, within: int) -> tuple[bytes, bytes] | None:
    """config.dump and spec.dump as podman will read them (see configuration_tar), read from
    the tar stream, never extracted; None when they are not in the first ``within`` bytes."""
    found = _configuration_members(path, within)
    return (found[CONFIG][1], found[SPEC][1]) if found else None


def _configuration_members(path: Path, within: int) \
        -> dict[str, tuple[tarfile.TarInfo, bytes]] | None:
    found: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    try:
        with _open_tar(path, detect_compression(path)) as (tar, stream):
            for member in tar:
                if member.name in (CONFIG, SPEC) and member.isfile():
                    found[member.name] = (member, _read_small(tar, member))
                if len(found) == 2 or stream.length > within:
                    break
    except _BadContent as exc:
        raise IntegrityError(f"{path} is not a valid checkpoint archive: {exc}") from None
    except _READ_ERRORS as exc:
        raise _damaged(path, exc) from exc
    return found if len(found) == 2 else None


@contextmanager
def open_plain(path: Path) -> Iterator[_Readable]:
    """The archive's tar stream, decompressed as it is read.

    Reading raises what the decompressor raises on damage (see STREAM_ERRORS).
    """
    with _open_decompressed(path, detect_compression(path)) as source:
        yield source


class _BadContent(Exception):
    """The stream reads fine but what it holds is not what podman writes."""


@dataclass
class _Found:
    """What the pass has collected so far, member by member."""

    member_count: int = 0
    required: set[str] = field(default_factory=set)  # the _REQUIRED names seen
    config: dict[str, Any] = field(default_factory=dict)
    process_count: int = 0
    pages_images: int = 0
    memory_bytes: int = 0
    thread_count: int = 0
    rootfs_diff_bytes: int = 0
    spec_mounts: list[Any] = field(default_factory=list)
    volume_tars: dict[str, int] = field(default_factory=dict)  # volume name -> tar size


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _TarStream(io.BufferedIOBase):
    """Passes the decompressed tar stream to tarfile, counting its length and noting where its
    last non-zero byte is, so the end of the archive can be checked once tarfile is done."""

    def __init__(self, source: _Readable) -> None:
        super().__init__()
        self._source = source
        self.length = 0
        self.content_end = 0  # offset just past the last non-zero byte

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = self._source.read(-1 if size is None else size)
        content = chunk.rstrip(b"\0")
        if content:
            self.content_end = self.length + len(content)
        self.length += len(chunk)
        return chunk

    def read_to_end(self) -> None:
        """Consume what tarfile left (end-of-archive blocks, padding), so that the decompressor
        reaches the zstd or gzip trailer and checks the frame checksum or CRC."""
        while self.read(CHUNK_SIZE):
            pass


@contextmanager
def _open_tar(path: Path, compression: Compression) -> Iterator[tuple[tarfile.TarFile, _TarStream]]:
    with _open_decompressed(path, compression) as source:
        stream = _TarStream(source)
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFSIZE) as tar:
            yield tar, stream


@contextmanager
def _open_decompressed(path: Path, compression: Compression) -> Iterator[_Readable]:
    with path.open("rb") as file:
        if compression == "zstd":
            # When the input stops inside a frame, stream_reader just ends its output, without
            # an error. A truncation therefore shows up as a truncated tar stream, which the
            # tar checks catch -- except a cut inside the final 4-byte checksum, which loses
            # no data. podman writes that checksum, so a flipped byte fails the frame.
            decompressor = zstandard.ZstdDecompressor()
            with decompressor.stream_reader(file, read_across_frames=True) as reader:
                yield reader
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=file, mode="rb") as reader:
                yield reader
        else:
            yield file


def _read_members(tar: tarfile.TarFile) -> _Found:
    found = _Found()
    for member in tar:
        found.member_count += 1
        if found.member_count > MEMBER_LIMIT:
            raise _BadContent(f"more than {MEMBER_LIMIT} members")
        # Links, devices and directories carry no data; a symlink named like an image must
        # not count as one.
        if member.isreg():
            _note_member(tar, member, found)
    return found


def _note_member(tar: tarfile.TarFile, member: tarfile.TarInfo, found: _Found) -> None:
    name = member.name
    if name in _REQUIRED:
        found.required.add(name)
    if name == CONFIG:
        found.config = _json_object(name, _read_small(tar, member))
    elif name == SPEC:
        mounts = _json_object(name, _read_small(tar, member)).get("mounts")
        found.spec_mounts = mounts if isinstance(mounts, list) else []
    elif name == PSTREE:
        found.process_count = _count_processes(_read_small(tar, member))
    elif name == ROOTFS_DIFF:
        found.rootfs_diff_bytes = member.size
    elif _PAGES.fullmatch(name):
        found.pages_images += 1
        found.memory_bytes += member.size
    elif _CORE.fullmatch(name):
        found.thread_count += 1
    elif volume := VOLUME_TAR.fullmatch(name):
        found.volume_tars[volume.group(1)] = member.size


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > METADATA_LIMIT:
        raise _BadContent(
            f"{member.name} is {member.size} bytes, more than the {METADATA_LIMIT} bytes "
            "allowed for metadata"
        )
    reader = tar.extractfile(member)
    if reader is None:  # only for non-regular members, which the caller skips
        raise _BadContent(f"{member.name} is not a regular file")
    return reader.read()


def _json_object(name: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise _BadContent(f"{name} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise _BadContent(f"{name} is not a JSON object")
    return value


def _count_processes(pstree: bytes) -> int:
    """Entries in CRIU's pstree.img: after the magics, each process is a protobuf message
    preceded by its u32 little-endian length. Counting needs no protobuf decoding."""
    if not pstree.startswith(_CRIU_PSTREE_MAGICS):
        raise _BadContent(f"{PSTREE} is not a CRIU process tree image")
    count = 0
    offset = len(_CRIU_PSTREE_MAGICS)
    while offset < len(pstree):
        length_field = pstree[offset : offset + 4]
        if len(length_field) < 4:
            raise _BadContent(f"{PSTREE} is truncated")
        offset += 4 + int.from_bytes(length_field, "little")
        if offset > len(pstree):
            raise _BadContent(f"{PSTREE} is truncated")
        count += 1
    if count == 0:
        raise _BadContent(f"{PSTREE} lists no process")
    return count


def _check_end_of_archive(tar_end: int, stream: _TarStream) -> None:
    """Require a proper end: two zero blocks after the last member, and only zeros after.

    tarfile stops without complaint at the first header it cannot parse, unless it is the very
    first one. So a stream cut at a member boundary, or with a corrupted header in the middle,
    would otherwise read as a shorter, complete archive. ``tar_end`` is where tarfile stopped.
    """
    if stream.length - tar_end < 2 * tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"the archive ends at byte {stream.length} without its end marker")
    if stream.content_end > tar_end:
        raise tarfile.ReadError(f"unreadable tar header at byte {tar_end}")


def _missing_members(found: _Found) -> list[str]:
    missing = [name for name in _REQUIRED if name not in found.required]
    if found.pages_images == 0:
        missing.append("checkpoint/pages-*.img")
    return missing


def _summary(compression: Compression, found: _Found, uncompressed_bytes: int) -> ArchiveSummary:
    config = found.config
    return ArchiveSummary(
        compression=compression,
        container_name=_text(config, "name"),
        container_id=_text(config, "id"),
        # rootfsImageName is the resolved name with its tag; RawImageName is what the user
        # typed, the only name there is when podman could not resolve one.
        image_name=_text(config, "rootfsImageName") or _text(config, "RawImageName"),
        image_id=_text(config, "rootfsImageID"),
        runtime=_text(config, "runtime"),
        created=_text(config, "createdTime"),
        memory_bytes=found.memory_bytes,
        rootfs_diff_bytes=found.rootfs_diff_bytes,
        process_count=found.process_count,
        thread_count=found.thread_count,
        member_count=found.member_count,
        uncompressed_bytes=uncompressed_bytes,
        volumes=[{**volume, "bytes": found.volume_tars.get(volume["name"])}
                 for volume in named_volumes(config)],
        bind_mounts=bind_mounts(config, found.spec_mounts),
    )


def named_volumes(config: dict[str, Any]) -> list[dict[str, str]]:
    """The named volumes config.dump says the container mounts: {"name", "destination"}."""
    volumes = config.get("namedVolumes")
    return [{"name": v["volumeName"], "destination": str(v.get("dest", ""))}
            for v in volumes if isinstance(v, dict) and isinstance(v.get("volumeName"), str)] \
        if isinstance(volumes, list) else []


def bind_mounts(config: dict[str, Any], spec_mounts: list[Any]) -> list[dict[str, str]]:
    """The host paths the user bind-mounted (spec mounts at config.dump's userVolumes that
    are no named volume): podman's checkpoint holds none of their content."""
    user = config.get("userVolumes")
    wanted = set(user) if isinstance(user, list) else set()
    wanted -= {v["destination"] for v in named_volumes(config)}
    return [{"source": str(m.get("source", "")), "destination": m["destination"]}
            for m in spec_mounts
            if isinstance(m, dict) and m.get("type") == "bind" and m.get("destination") in wanted]


def _text(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    return value if isinstance(value, str) else ""


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(tarfile.BLOCKSIZE)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: OSError) -> WarmctlError:
    if is_disk_failure(exc):
        return disk_read_error(path, exc)
    return IntegrityError(f"cannot read {path}: {exc.strerror or one_line(exc)}")


def _damaged(path: Path, exc: BaseException) -> WarmctlError:
    if is_disk_failure(exc):
        return disk_read_error(path, exc)
    return IntegrityError(f"{path} is damaged or truncated: {_read_error(path, exc)}")


def _read_error(path: Path, exc: BaseException) -> str:
    text = one_line(exc)
    if text == "empty file":  # tarfile's words when the stream decompressed to nothing
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            return f"{size} bytes that decompress to no tar data" if size else text
    return text


def one_line(exc: BaseException) -> str:
    """An exception's text on one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
