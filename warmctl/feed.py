"""Handing a snapshot to ``podman container restore --import`` through a named pipe.

Why (measured, README "Performance"): podman 4 and 5 read the archive three times: twice for
the container's configuration (once to learn the runtime, once to create the container) and
once to import the checkpoint, decompressing zstd on one core each time. Expanding the archive
to a plain file first took as long as the import itself. Through a FIFO, warmctl answers the
configuration reads with a small tar of config.dump and spec.dump, and the import read with the
archive decompressed on the fly, while a low-priority thread computes the archive's digest.

What keeps this safe:
- The import read never sees the end of the archive before the archive proved whole: the
  stream's trailing zeros, where the end-of-archive blocks are, are held back until then. On
  damage the stream ends in bytes no tar reader accepts, so podman fails before CRIU runs.
- "Proved whole" is, for an archive that checks itself (zstd with a content checksum, which
  warmctl and podman write, or gzip) and whose plain size is recorded: decoded without error
  to exactly that size. That costs nothing extra, so the digest (half a second of CPU per GiB)
  is not on the restore's critical path. Otherwise it is the digest itself.
- ``verify()`` compares the digest after podman returns, in every case; the caller removes
  whatever podman made from an archive that fails it.
- A podman that reads differently fails safely: an import from the configuration tar finds no
  checkpoint images and fails; an extra configuration read gets the full stream, only slower.
  ``reads`` tells the caller which happened (resume then retries with full streams only), and
  an integration test pins the pattern of the podman this project runs.
- Each read gets a fresh FIFO (renamed over the last one), so a reader that is still draining
  one answer can never receive the start of the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import select
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from warmctl import archive, spec_policy
from warmctl.criu_config import spec_for_restore
from warmctl.errors import DiskIOError, IntegrityError, disk_read_error, is_disk_failure
from warmctl.waiting import in_daemon_thread

log = logging.getLogger(__name__)

CONFIG_READS = 2  # podman 4.3 to 5.x: CRGetRuntimeFromArchive, then CRImportCheckpointConfigOnly
_CONFIG_SEARCH_LIMIT = 64 * 1024 * 1024  # podman writes them first; past this, give up looking
_CHUNK = 1024 * 1024
_PIPE_SIZE = 1024 * 1024
_ZEROS = bytes(_CHUNK)
_STOP_POLL = 0.05  # seconds

Advance = Callable[[int], None]


class ArchiveFeed:
    """Serves one archive to podman through a FIFO at ``path`` while the context is open.

    ``plain_bytes``: the recorded size of the plain tar, if known. ``config_reads``: how many
    reads get only the configuration tar (0: every read gets the whole archive). ``advance``
    receives the number of bytes fed to an import read. The configuration tar's spec loses
    any CRIU configuration file an earlier warmctl restore named (see criu_config.py).
    ``edit_dumps``: edits config.dump and spec.dump for the configuration reads (a clone's own
    volumes, see volumes.py); with it, an archive whose configuration cannot be found is
    refused. ``mark_spec``: edits that spec further (claim.py marks the container the restore
    creates). ``confine``: a snapshot from a registry: its spec loses the annotations that
    steer CRIU or the runtime (spec_policy.py) before warmctl's own edits, and it is never fed
    without that edit.
    """

    def __init__(self, source: Path, expected_sha256: str, *, plain_bytes: int | None = None,
                 label: str = "", config_reads: int = CONFIG_READS,
                 advance: Advance | None = None,
                 edit_dumps: Callable[[bytes, bytes], tuple[bytes, bytes]] | None = None,
                 mark_spec: Callable[[bytes], bytes] | None = None,
                 confine: bool = False) -> None:
        self.source = source
        self.label = label or source.name  # names the archive in errors: a snapshot's ref
        self.reads: list[str] = []  # "config" or "archive", one per read podman made
        self.fed_whole = False  # an import read got the whole archive, its end included
        # A second descriptor for the import read's pipe, for abandon(); under the lock, so
        # that it is never written after the read is over (its number may be reused then).
        self._import_fd: int | None = None
        self._import_fd_lock = threading.Lock()
        self._expected = expected_sha256
        self._plain_bytes = plain_bytes if archive.checks_itself(source) else None

        def edit_spec(config_dump: bytes, spec_dump: bytes) -> bytes:
            if confine:  # a registry's annotations out first, then warmctl's own edits
                spec_dump = spec_policy.confine(config_dump, spec_dump)
            spec = spec_for_restore(config_dump, spec_dump)
            return mark_spec(spec) if mark_spec is not None else spec

        self._config_tar = (archive.configuration_tar(source, within=_CONFIG_SEARCH_LIMIT,
                                                      edit_spec=edit_spec,
                                                      edit_dumps=edit_dumps)
                            if config_reads else None)
        if (edit_dumps is not None or confine) and self._config_tar is None:
            raise IntegrityError(f"archive of {self.label}: its configuration must be edited "
                                 "for this restore, and it has none where podman writes it")
        self._config_reads = config_reads if self._config_tar is not None else 0
        self._advance = advance or (lambda _: None)
        self._damage: str | None = None
        # The disk failed a read: the archive may be whole, so it is not called corrupt.
        self._disk_failure: DiskIOError | None = None
        self._crash: BaseException | None = None
        self._stopping = threading.Event()
        self._stack = contextlib.ExitStack()
        self._directory = Path()
        self.path = Path()

    # --- lifetime ------------------------------------------------------------------------------

    def __enter__(self) -> ArchiveFeed:
        with contextlib.ExitStack() as stack:
            # mkdtemp makes a 0700 directory: the FIFO carries the container's memory.
            self._directory = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="warmctl-feed-")))
            self.path = self._directory / "archive.tar"
            os.mkfifo(self.path, 0o600)
            # A daemon thread, as the server: nothing waits for it when warmctl leaves.
            self._hashing = in_daemon_thread(functools.partial(_sha256_in_background,
                                                               self.source), name="hash")
            # A daemon thread: when the user abandons a restore (a second Ctrl-C), warmctl
            # exits without waiting for podman to finish reading.
            self._server = threading.Thread(target=self._serve, name="feed", daemon=True)
            self._server.start()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self._stop(wait=kind is None)
        finally:
            self._stack.close()

    def _stop(self, *, wait: bool) -> None:
        """End the server thread, which may be waiting for a reader that never comes.

        Called once podman has exited, the thread is at most blocked in open(): a reader
        opened here without blocking releases it.
        """
        self._stopping.set()
        while self._server.is_alive():
            fd = None
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._server.join(_STOP_POLL)
            if fd is not None:
                os.close(fd)
            if not wait:
                return

    # --- results -------------------------------------------------------------------------------

    def verify(self) -> None:
        """Raise IntegrityError if the archive is damaged (waits for the digest), DiskIOError
        if the disk failed a read of it."""
        if self._crash is not None:
            raise self._crash
        if self._damage is None and not self._digest_matches():
            self._damage = "its sha256 does not match the recorded one"
        if self._disk_failure is not None:
            raise self._disk_failure
        if self._damage is not None:
            raise IntegrityError(f"archive of {self.label} is corrupt: {self._damage}",
                                 hint=f"remove it with: warmctl rm {self.label}")

    def abandon(self, patience: float = 1.0) -> None:
        """warmctl is leaving while podman may still read (a second Ctrl-C, the time limit):
        when warmctl exits, the pipe ends wherever this thread was. Cut at a member's end,
        that would pass for a whole, shorter tar. One more byte (0xff) makes whatever podman
        has read, or will read, end in a truncated block: its import fails, before CRIU.
        Waits at most ``patience`` seconds for room in the pipe."""
        with self._import_fd_lock:
            fd = self._import_fd
            if fd is None or self.fed_whole:
                return
            deadline = time.monotonic() + patience
            with contextlib.suppress(OSError):
                os.set_blocking(fd, False)  # this thread's writes too: it ends with warmctl
                while True:
                    try:
                        os.write(fd, b"\xff")
                        return
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            log.debug("feed: no room in the pipe to spoil the stream")
                            return
                        select.select([], [fd], [], _STOP_POLL)

    @property
    def archive_was_read(self) -> bool:
        """Whether some read got the whole archive. A restore that failed without one may
        have imported the configuration tar: podman read differently than CONFIG_READS says."""
        return "archive" in self.reads

    def _digest_matches(self) -> bool:
        try:
            return self._hashing.result() == self._expected
        except DiskIOError as err:
            self._disk_failure = err
            return False
        except IntegrityError as err:  # the archive could not be read at all
            self._damage = err.message
            return False

    # --- the server thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._serve_reads()
        except BaseException as err:  # a bug: warmctl reports it, and podman must not hang
            self._crash = err
            log.debug("feed: failed", exc_info=True)
            self._release_waiting_reader()

    def _release_waiting_reader(self) -> None:
        """Let a podman blocked opening the FIFO go on (it reads nothing, and fails), and
        make later opens fail at once."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)  # unblocks a reader's open()
            os.unlink(self.path)
            os.close(fd)

    def _serve_reads(self) -> None:
        while not self._stopping.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY)  # waits until podman opens it to read
            except OSError as err:
                log.debug("feed: cannot open %s: %s", self.path, err)
                return
            try:
                if self._stopping.is_set():
                    return
                self._renew_fifo()
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
                kind = "config" if len(self.reads) < self._config_reads else "archive"
                self.reads.append(kind)
                log.debug("feed: podman's read %d gets the %s", len(self.reads),
                          "configuration tar" if kind == "config" else "whole archive")
                try:
                    if kind == "config":
                        assert self._config_tar is not None
                        _write_all(fd, self._config_tar)
                    else:
                        with self._import_fd_lock:
                            self._import_fd = os.dup(fd)
                        self._feed_archive(fd)
                except BrokenPipeError:
                    pass  # podman stopped reading (its tar reader ends at the end marker)
            finally:
                with self._import_fd_lock:
                    if self._import_fd is not None:
                        os.close(self._import_fd)
                        self._import_fd = None
                os.close(fd)

    def _renew_fifo(self) -> None:
        """A new FIFO for the next read: the current reader keeps the old one to drain."""
        fresh = self._directory / "next.tar"
        os.mkfifo(fresh, 0o600)
        os.replace(fresh, self.path)

    def _feed_archive(self, fd: int) -> None:
        stream = _HeldEnd(lambda data: _write_all(fd, data))
        started = time.monotonic()
        try:
            self._copy_archive(stream)
            log.debug("feed: %d bytes fed in %.2f s", stream.sent, time.monotonic() - started)
        except BrokenPipeError:
            raise
        except BaseException:  # a bug here must not let podman restore a partial tar
            stream.spoil()
            raise
        if self._damage is None and self._proved_whole(stream.length):
            stream.finish()
            self.fed_whole = True
        else:
            stream.spoil()

    def _proved_whole(self, plain_length: int) -> bool:
        if self._plain_bytes is not None:
            if plain_length == self._plain_bytes:
                return True  # checked by the format as it decoded; the digest comes later
            self._damage = (f"it holds {plain_length} bytes of tar, "
                            f"not the recorded {self._plain_bytes}")
            return False
        return self._digest_matches()

    def _copy_archive(self, stream: _HeldEnd) -> None:
        try:
            with archive.open_plain(self.source) as plain:
                while chunk := plain.read(_CHUNK):
                    stream.write(chunk)
                    self._advance(len(chunk))
        except archive.STREAM_ERRORS as err:
            self._damage = archive.one_line(err)
        except BrokenPipeError:
            raise
        except OSError as err:
            self._damage = f"cannot read it: {err.strerror or err}"
            if is_disk_failure(err):
                self._disk_failure = disk_read_error(self.source, err)


class _HeldEnd:
    """Writes a tar stream but holds back each run of zeros until data follows it.

    A tar stream ends with zero blocks, and a reader that sees two stops reading (podman then
    goes on to run CRIU), so holding back the trailing zeros keeps the reader waiting until
    ``finish()``. ``spoil()`` instead ends the stream with 0xff bytes up to a length that is
    not a multiple of 512: whatever the reader was reading, it gets a bad header or a short
    read, and fails.
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._zeros = 0
        self.sent = 0

    @property
    def length(self) -> int:
        """Bytes written so far, sent or held back."""
        return self.sent + self._zeros

    def write(self, chunk: bytes) -> None:
        content = len(chunk.rstrip(b"\0"))
        if content == 0:
            self._zeros += len(chunk)
            return
        self._send_zeros()
        self._send(chunk[:content] if content < len(chunk) else chunk)
        self._zeros = len(chunk) - content

    def finish(self) -> None:
        self._send_zeros()

    def spoil(self) -> None:
        self._send(b"\xff" * (1024 + (256 - self.sent) % 512))

    def _send_zeros(self) -> None:
        while self._zeros:
            count = min(self._zeros, len(_ZEROS))
            self._send(_ZEROS[:count])
            self._zeros -= count

    def _send(self, data: bytes) -> None:
        self._write(data)
        self.sent += len(data)


def _sha256_in_background(path: Path) -> str:
    """The digest, computed at low priority: while podman unpacks, the cores are better spent
    decompressing for it; CRIU's restore, which follows, leaves a core free."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only
    return archive.sha256_file(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
