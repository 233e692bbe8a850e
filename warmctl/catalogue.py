"""The catalogue: named, numbered snapshots in one directory.

One module over 450 lines: the home's checks, the sweeps, publishing and the queries are
methods of one ``Catalogue`` sharing its connection, its write lock and the home's mark, and
the publishing protocol below holds only of them together.

Layout (see docs/design.md)::

    HOME/                 0700
      catalogue.db        SQLite: one row per snapshot, plus the next generation per name
      archives/NAME@GEN.tar   published checkpoint archives, 0600
      tmp/                exports in progress and links held by running resumes
      logs/               CRIU logs kept from failed checkpoints and restores
      rescued/            checkpoints that stopped their container but could not be recorded

How an archive is published: podman exports into ``tmp/``; the file is hashed; then, inside one
immediate (write-locked) SQLite transaction, it is renamed into ``archives/`` and its row
inserted. A crash before the rename leaves a temporary file, swept by the next command that
opens the catalogue; between rename and commit, an archive without a row, swept by the next
rm or prune (under the write lock). A row never points at a missing or half-written archive.

A temporary file is owned through an exclusive ``flock`` held by the process that made it;
the sweep deletes only files whose lock it can take, i.e. whose owner has died, and only
under the names warmctl gives them (``PID-UUID.partial`` ...), in a directory whose
catalogue.db carries warmctl's mark (``PRAGMA application_id``). A directory that is not
empty and not a catalogue is refused before anything in it is created or deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sqlite3
import stat
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmctl.errors import (
    CatalogueBusyError,
    HostError,
    IntegrityError,
    NotFoundError,
    UsageError,
    WarmctlError,
)
from warmctl.ownership import owner_is_gone
from warmctl.refs import NAME_PATTERN, Ref, format_ref, validate_name

SCHEMA_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 30.0
PUBLISH_LOCK_TIMEOUT = 600.0
STALE_CREATING_SECONDS = 3600
# catalogue.db's mark (PRAGMA application_id, in the database header): "wmct". It is what makes
# a directory warmctl's, and so what allows warmctl to create and sweep files in it.
APPLICATION_ID = 0x776D6374
DB_NAME = "catalogue.db"
# Everything warmctl itself puts in HOME: a directory holding only these, all empty (a first
# open that was interrupted), is as good as an empty one.
_SQLITE_FILES = frozenset({DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"})
_LAYOUT = _SQLITE_FILES | {"archives", "tmp", "logs", "rescued"}
# The names of warmctl's temporary files in tmp/ (new_temp_file, hold_archive): the only
# names the sweep ever deletes.
TEMP_SUFFIXES = (".partial", ".hold", ".plain", ".creating")
ARCHIVE_NAME = re.compile(rf"{NAME_PATTERN}@[1-9][0-9]*\.tar")  # archives/NAME@GEN.tar
TEMP_NAME = re.compile(r"[0-9]+-[0-9a-f]{32}\.(?:partial|hold|plain|creating)")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    next_generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created TEXT NOT NULL,
    archive TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    compression TEXT NOT NULL,
    container_name TEXT NOT NULL,
    container_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    image_id TEXT NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (name, generation)
);
"""


@dataclass(frozen=True)
class SnapshotRecord:
    """What is known about a snapshot before it has a generation."""

    name: str
    container_name: str
    container_id: str
    image_name: str
    image_id: str
    compression: str
    ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    host: dict[str, str] = field(default_factory=dict)  # podman/runtime/criu/kernel/hostname
    criu_stats: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. warm-up facts

    def meta(self) -> dict[str, Any]:
        """What is stored as one JSON column: nothing in it is ever queried by SQL, and
        one parse per row keeps `list` fast at 10,000 snapshots."""
        return {"ports": self.ports, "labels": self.labels, "host": self.host,
                "criu_stats": self.criu_stats, "extra": self.extra}


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot: a row in the catalogue with its archive."""

    name: str
    generation: int
    created: datetime
    archive_path: str  # str, not Path: Path objects cost a third of `list` at 10,000 rows
    size_bytes: int
    sha256: str
    compression: str
    container_name: str
    container_id: str
    image_name: str
    image_id: str
    ports: list[str]
    labels: dict[str, str]
    host: dict[str, str]
    criu_stats: dict[str, int]
    extra: dict[str, Any]

    @property
    def ref(self) -> str:
        return format_ref(self.name, self.generation)

    @property
    def plain_bytes(self) -> int | None:
        """The size of the archive's plain tar, when warmctl compressed it (extra)."""
        value = self.extra.get("plain_bytes")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def archive(self) -> Path:
        return Path(self.archive_path)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape documented in docs/exit-codes-and-json.md."""
        return {
            "ref": self.ref,
            "name": self.name,
            "generation": self.generation,
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "compression": self.compression,
            "container": self.container_name,
            "container_id": self.container_id,
            "image": self.image_name,
            "image_id": self.image_id,
            "ports": self.ports,
            "labels": self.labels,
            "host": self.host,
            "criu_stats": self.criu_stats,
            "warm": self.extra.get("warm"),
            "pulled": self.extra.get("pulled"),  # where `warmctl pull` got it, else None
            "archive": self.archive_path,
        }


# Snapshot.to_dict() built by SQLite, for `list --json`: at 10,000 snapshots, building
# Snapshot objects and encoding them in Python costs more than the 300 ms budget allows.
# tests/unit/test_catalogue.py pins it to to_dict(), key for key.
_JSON_SHAPE = """json_object(
    'ref', name || '@' || generation, 'name', name, 'generation', generation,
    'created', replace(created, '+00:00', 'Z'), 'size_bytes', size_bytes, 'sha256', sha256,
    'compression', compression, 'container', container_name, 'container_id', container_id,
    'image', image_name, 'image_id', image_id,
    'ports', json_extract(meta, '$.ports'), 'labels', json_extract(meta, '$.labels'),
    'host', json_extract(meta, '$.host'), 'criu_stats', json_extract(meta, '$.criu_stats'),
    'warm', json_extract(meta, '$.extra.warm'), 'pulled', json_extract(meta, '$.extra.pulled'),
    'archive', :prefix || archive)"""


class TempFile:
    """A file in ``tmp/`` owned by this process for as long as the object is open."""

    def __init__(self, path: Path, fd: int, *, owned: bool = True) -> None:
        self.path = path
        self._fd = fd
        self._owned = owned  # False: the archive itself, read where it is (never removed)

    def close(self, *, remove: bool = True) -> None:
        if self._fd >= 0:
            if remove and self._owned:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeldArchive(TempFile):
    """A hard link to a snapshot's archive in tmp/ (see Catalogue.hold_archive). An error
    about it that leaves its ``with`` block names the snapshot and its archive instead: the
    link's PID-UUID.hold name means nothing to the person reading the message."""

    def __init__(self, path: Path, fd: int, snapshot: Snapshot, *, owned: bool = True) -> None:
        super().__init__(path, fd, owned=owned)
        self.snapshot = snapshot

    def __exit__(self, *exc_info: object) -> None:
        exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(exc, WarmctlError) and str(self.path) in exc.message:
            subject = f"{self.snapshot.ref}'s archive ({self.snapshot.archive})"
            exc.message = exc.message.replace(str(self.path), subject)
            exc.args = (exc.message, *exc.args[1:])
        self.close()


def _secure_mkdir(path: Path, *, existing_too: bool = True) -> None:
    """A 0700 directory whatever the umask, an existing one too (``existing_too``): the
    catalogue holds containers' memory. Inside a catalogue whose mark was checked (or a new
    one), every directory is warmctl's to change."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not existing_too:
            return
    _restrict(path, 0o700)


def _on_read_only_fs(path: Path) -> bool:
    """Whether ``path``, or its nearest existing parent, is on a read-only mount."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _restrict(path: Path, mode: int) -> None:
    """Give ``path`` exactly ``mode`` (mkdir's and SQLite's are filtered by the umask, and an
    existing file keeps whatever it had). Not on a read-only file system, where nothing can be
    changed, nor where the file is not this user's (doctor warns of an open mode)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EPERM):
            raise


class Catalogue:
    """The snapshot store. Any number of processes may use one catalogue at once."""

    def __init__(self, home: Path, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.home = home
        self.archives_dir = home / "archives"
        self._archives_prefix = f"{self.archives_dir}{os.sep}"
        self.tmp_dir = home / "tmp"
        self.logs_dir = home / "logs"
        self.db_path = home / DB_NAME
        self.lock_timeout = lock_timeout
        self._db: sqlite3.Connection | None = None
        self.swept_on_open: list[Path] = []  # what open() removed from tmp/
        # On a read-only file system (or opened so by doctor): read, never written.
        self.read_only = False
        self.needs_upgrade = False  # read-only, with a schema from an older (or no) warmctl

    # --- opening ------------------------------------------------------------------------------

    def open(self, *, read_only: bool = False) -> Catalogue:
        """Open the catalogue, creating it when new. On a read-only file system (or with
        ``read_only``, for doctor) it is opened for reading only: nothing is created, changed
        or swept, and any write fails with a HostError saying why (exit 6)."""
        entries = self.check_home()
        if read_only or _on_read_only_fs(self.home):
            return self._open_read_only(entries)
        try:
            # An existing home is made 0700 once its catalogue.db proved warmctl's, below.
            _secure_mkdir(self.home, existing_too=False)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise self._read_only_error() from exc
            raise WarmctlError(f"cannot create the catalogue at {self.home}: {exc.strerror}") \
                from exc
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE for writes).
            db = sqlite3.connect(self.db_path, timeout=self.lock_timeout, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
            # Read before anything is written: a database that is not warmctl's is left as is.
            version = self._check_identity(db, entries)
            # The database and SQLite's companions (-wal, -shm: made with the database's mode
            # when it had another, or kept from an older run) hold the snapshots' records.
            for name in _SQLITE_FILES:
                _restrict(self.home / name, 0o600)
            _restrict(self.home, 0o700)
            db.execute("PRAGMA journal_mode = WAL")
            if version > SCHEMA_VERSION:
                raise WarmctlError(
                    f"catalogue {self.db_path} was written by a newer warmctl "
                    f"(schema {version}); upgrade warmctl"
                )
            if version < SCHEMA_VERSION:
                with self._write(db):
                    # Not executescript(): it would commit our transaction early.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            else:
                db.execute("SELECT count(*) FROM snapshots").fetchone()
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                # A catalogue made before the mark existed: it gets it now.
                with self._write(db):
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from exc
        try:
            for directory in (self.archives_dir, self.tmp_dir, self.logs_dir):
                _secure_mkdir(directory)
            _restrict(self.home / "rescued", 0o700)  # made when first needed (rescue)
        except OSError as exc:
            db.close()
            raise WarmctlError(f"cannot create the catalogue at {self.home}: {exc.strerror}") \
                from exc
        self._db = db
        self.swept_on_open = self.sweep_temporary_files()
        return self

    def _open_read_only(self, entries: set[str]) -> Catalogue:
        """SQLite cannot open a WAL database where it cannot write its -shm; ``immutable``
        reads the database file alone, which is whole unless a -wal holds writes not yet
        copied into it (a warmctl killed before it closed): that is refused, not read stale.
        On a writable file system (doctor) the database is opened as usual (``mode=rw``: never
        created) and only read: a read-only connection would leave a -wal and -shm behind,
        where the last connection to close removes them."""
        self.read_only = True
        if DB_NAME not in entries:
            raise self._read_only_error(f"it holds no {DB_NAME}, and none can be made there")
        on_read_only_fs = _on_read_only_fs(self.home)
        wal = self.home / f"{DB_NAME}-wal"
        if on_read_only_fs and wal.exists() and wal.stat().st_size:
            raise self._read_only_error(
                f"its last writes are still in {wal.name}, which SQLite can apply only where "
                "it may write")
        uri = f"file:{urllib.parse.quote(str(self.db_path))}?" + \
            ("mode=ro&immutable=1" if on_read_only_fs else "mode=rw")
        try:
            db = sqlite3.connect(uri, uri=True, timeout=self.lock_timeout, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
            version = self._check_identity(db, entries)
            if version > SCHEMA_VERSION:
                db.close()
                raise WarmctlError(f"catalogue {self.db_path} was written by a newer warmctl "
                                   f"(schema {version}); upgrade warmctl")
            if version < SCHEMA_VERSION and on_read_only_fs:
                db.close()
                raise self._read_only_error(
                    f"its schema ({version}) must be brought to {SCHEMA_VERSION}, a write")
            self.needs_upgrade = version < SCHEMA_VERSION  # done by the next command that
            if not self.needs_upgrade:                     # opens it writable
                db.execute("SELECT count(*) FROM snapshots").fetchone()
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from exc
        self._db = db
        return self

    def _read_only_error(self, detail: str = "") -> HostError:
        return HostError(
            f"the catalogue {self.home} is on a read-only file system"
            + (f" ({detail})" if detail else "")
            + ": only commands that read it (list, show, verify, resume, push, doctor) work there",
            hint="remount it read-write, or choose another catalogue with --home or "
                 "WARMCTL_HOME")

    def check_home(self) -> set[str]:
        """What HOME holds, after refusing (exit 2) a HOME that is not warmctl's to fill and
        sweep: the root directory, a file, or a directory holding other things and no
        catalogue.db. A missing or empty directory becomes a new catalogue."""
        refuse = "give an empty or new directory, or an existing catalogue, as --home or " \
            "WARMCTL_HOME"
        try:
            resolved = self.home.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise UsageError(f"catalogue home {self.home} cannot be resolved: {exc}") from exc
        if self.home.is_symlink() and not self.home.exists():
            raise UsageError(f"catalogue home {self.home} is a symbolic link to "
                             f"{os.readlink(self.home)}, which does not exist ({refuse})")
        if resolved == Path(resolved.anchor):
            raise UsageError(
                f"catalogue home {self.home} is the root directory, not a catalogue ({refuse})")
        try:
            entries = set(os.listdir(self.home))
        except FileNotFoundError:
            return set()
        except NotADirectoryError:
            raise UsageError(
                f"catalogue home {self.home} is not a directory ({refuse})") from None
        except OSError as exc:
            raise WarmctlError(f"cannot read the catalogue at {self.home}: {exc.strerror}") \
                from exc
        if DB_NAME in entries or self._only_empty_layout(entries):
            return entries  # catalogue.db's own mark is checked once it is open
        raise UsageError(
            f"{self.home} is not a warmctl catalogue: it is not empty and has no {DB_NAME} "
            f"({refuse})"
        )

    def _only_empty_layout(self, entries: set[str]) -> bool:
        if not entries <= _LAYOUT:
            return False
        for entry in entries:
            path = self.home / entry
            if path.is_symlink() or (path.is_dir() and any(path.iterdir())):
                return False
            if not path.is_dir() and path.stat().st_size:
                return False
        return True

    def _check_identity(self, db: sqlite3.Connection, entries: set[str]) -> int:
        """catalogue.db's schema version, once it is known to be warmctl's: marked, or made by
        a warmctl from before the mark (its two tables), or new and empty in a directory that
        holds nothing else. Anything else is another program's database: exit 2."""
        application_id, version, tables = self._identity(db)
        if application_id != APPLICATION_ID:
            # Another warmctl may be creating this catalogue right now (it commits the schema
            # and the mark together): wait for its write lock, and look again.
            db.execute("BEGIN IMMEDIATE")
            try:
                application_id, version, tables = self._identity(db)
            finally:
                db.execute("ROLLBACK")
        if application_id == APPLICATION_ID:
            return version
        if application_id == 0 and version == SCHEMA_VERSION and {"names", "snapshots"} <= tables:
            return version
        if application_id == 0 and version == 0 and not tables \
                and self._only_empty_layout(entries - _SQLITE_FILES):
            return version
        db.close()
        raise UsageError(
            f"{self.db_path} is not a warmctl catalogue (give an empty or new directory, or an "
            "existing catalogue, as --home or WARMCTL_HOME)"
        )

    @staticmethod
    def _identity(db: sqlite3.Connection) -> tuple[int, int, set[str]]:
        """catalogue.db's application_id, user_version and table names."""
        application_id: int = db.execute("PRAGMA application_id").fetchone()[0]
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return application_id, version, tables

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Catalogue:
        return self.open() if self._db is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("catalogue is not open")
        return self._db

    def _unreadable(self, exc: sqlite3.DatabaseError) -> IntegrityError:
        """A catalogue.db that is not a database SQLite can read (random bytes, a cut copy)."""
        return IntegrityError(
            f"catalogue {self.db_path} is unreadable: {exc}",
            hint="restore it from a backup, or move it aside to start a new catalogue",
        )

    def _translate(self, exc: sqlite3.OperationalError) -> WarmctlError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CatalogueBusyError(
                f"catalogue {self.home} is busy: another warmctl held it for "
                f"{self.lock_timeout:.0f}s",
                hint="retry later, or raise WARMCTL_LOCK_TIMEOUT",
            )
        if self.read_only or "readonly" in text:
            return self._read_only_error()
        if "unable to open" in text or "disk I/O" in text:
            return WarmctlError(f"cannot use the catalogue {self.db_path}: {text}")
        return IntegrityError(f"catalogue {self.db_path} is unreadable: {text}")

    @contextlib.contextmanager
    def _write(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: the write lock is taken at BEGIN or not at all."""
        if self.read_only:
            raise self._read_only_error()
        db = db or self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._translate(exc) from exc

    @contextlib.contextmanager
    def _patience(self, seconds: float) -> Iterator[None]:
        """Wait up to ``seconds`` (at least the usual timeout) for the lock in this block."""
        longer = max(seconds, self.lock_timeout)
        self.db.execute(f"PRAGMA busy_timeout = {int(longer * 1000)}")
        try:
            yield
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")

    def _query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[sqlite3.Row]:
        try:
            cursor = self.db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise IntegrityError(f"catalogue {self.db_path} is unreadable: {exc}") from exc

    # --- temporary files ----------------------------------------------------------------------

    def new_temp_file(self, suffix: str = ".partial") -> TempFile:
        """An empty 0600 file in tmp/, locked by this process, for podman to export into."""
        if suffix not in TEMP_SUFFIXES:
            raise ValueError(f"not a temporary file suffix the sweep knows: {suffix}")
        if self.read_only:
            raise self._read_only_error()
        stem = f"{os.getpid()}-{uuid.uuid4().hex}"
        creating = self.tmp_dir / f"{stem}.creating"
        fd = os.open(creating, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # The sweep ignores fresh .creating files, so nothing can take this one between its
        # creation and its lock; the rename keeps the inode and so the lock.
        path = self.tmp_dir / f"{stem}{suffix}"
        os.rename(creating, path)
        return TempFile(path, fd)

    def hold_archive(self, snapshot: Snapshot) -> HeldArchive:
        """A locked hard link to a snapshot's archive, so that a concurrent rm or prune
        cannot pull the file from under a resume or verify that is reading it. A read-only
        catalogue's archive is read where it is: nothing can remove it there."""
        if self.read_only:
            try:
                fd = os.open(snapshot.archive, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise IntegrityError(f"archive of {snapshot.ref} is missing: "
                                     f"{snapshot.archive}") from exc
            return HeldArchive(snapshot.archive, fd, snapshot, owned=False)
        stem = f"{os.getpid()}-{uuid.uuid4().hex}"
        creating = self.tmp_dir / f"{stem}.creating"
        try:
            os.link(snapshot.archive, creating)
        except FileNotFoundError as exc:
            raise IntegrityError(
                f"archive of {snapshot.ref} is missing: {snapshot.archive}",
                hint=f"remove the entry with: warmctl rm {snapshot.ref}",
            ) from exc
        fd = os.open(creating, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        # As in new_temp_file: locked before it gets a name the sweep looks at.
        path = self.tmp_dir / f"{stem}.hold"
        os.rename(creating, path)
        return HeldArchive(path, fd, snapshot)

    def rescue(self, path: Path, name: str) -> Path:
        """Move a checkpoint that could not be recorded to rescued/, where no sweep touches
        it: when podman's checkpoint stopped the container, it is the only copy left."""
        rescued = self.home / "rescued"
        _secure_mkdir(rescued)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        dest = rescued / f"{name}-{stamp}-{uuid.uuid4().hex[:8]}.tar"
        os.rename(path, dest)
        os.chmod(dest, 0o600)
        return dest

    def sweep_temporary_files(self) -> list[Path]:
        """Remove temporary files whose owner is gone. Returns what was removed.

        Only regular files under the names warmctl gives them (TEMP_NAME) are considered:
        anything else in tmp/ (a directory, a symlink, a file someone put there) is left alone.
        """
        removed: list[Path] = []
        if self.read_only:
            return removed
        try:
            entries = list(self.tmp_dir.iterdir())
        except FileNotFoundError:
            return removed
        now = time.time()
        for path in entries:
            if not TEMP_NAME.fullmatch(path.name):
                continue
            try:
                found = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(found.st_mode):
                continue  # never opened: a FIFO would block, a symlink lead elsewhere
            if path.suffix == ".creating":
                # ctime, not mtime: a hard link to an old archive has an old mtime, but
                # making the link set its ctime.
                if now - found.st_ctime > STALE_CREATING_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
                continue
            if owner_is_gone(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        return removed

    def sweep_orphan_archives(self) -> list[Path]:
        """Remove archives that no row names: left by a crash between rename and commit."""
        removed: list[Path] = []
        with self._write() as db:
            known = {row[0] for row in db.execute("SELECT archive FROM snapshots")}
            for path in self.archives_dir.iterdir():
                if path.name in known or not ARCHIVE_NAME.fullmatch(path.name) \
                        or not path.is_file() or path.is_symlink():
                    continue  # not an archive warmctl published: not warmctl's to delete
                # A concurrent rm unlinks its files after its own transaction.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        return removed

    def check_writable(self) -> None:
        """Fail now (exit 8) if the write lock cannot be had, before touching a container:
        a checkpoint that stops a container and then cannot be recorded would lose its state."""
        with self._write():
            pass

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, temp: TempFile, record: SnapshotRecord, *, sha256: str) -> Snapshot:
        """Give the exported archive the next generation of its name, atomically."""
        validate_name(record.name)
        os.chmod(temp.path, 0o600)
        size = temp.path.stat().st_size
        # The data must be on disk before a row can point at it.
        fd = os.open(temp.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        created = datetime.now(UTC)
        # The checkpoint is taken: giving up now could lose the only copy of a stopped
        # container's memory, so wait much longer than commands wait to start (they checked
        # the lock before touching the container; writers hold it for milliseconds).
        published: Path | None = None
        try:
            with self._patience(PUBLISH_LOCK_TIMEOUT), self._write() as db:
                row = db.execute(
                    "SELECT next_generation FROM names WHERE name = ?", (record.name,)
                ).fetchone()
                generation = row[0] if row else 1
                archive_name = f"{format_ref(record.name, generation)}.tar"
                db.execute(
                    "INSERT INTO names (name, next_generation) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET next_generation = excluded.next_generation",
                    (record.name, generation + 1),
                )
                db.execute(
                    "INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record.name, generation, created.isoformat(), archive_name, size, sha256,
                        record.compression, record.container_name, record.container_id,
                        record.image_name, record.image_id, json.dumps(record.meta()),
                    ),
                )
                published = self.archives_dir / archive_name
                os.rename(temp.path, published)
                _fsync_dir(self.archives_dir)
        except BaseException:
            # Not committed (COMMIT itself can fail, e.g. on a full disk): the file goes back
            # to the caller's temporary name instead of waiting as an orphan to be swept.
            if published is not None and published.exists() and not temp.path.exists():
                os.rename(published, temp.path)
            raise
        temp.close(remove=False)
        return self.get(Ref(record.name, generation))

    # --- reading ------------------------------------------------------------------------------

    def list_snapshots(self, name: str | None = None) -> list[Snapshot]:
        if name is not None:
            rows = self._query(
                "SELECT * FROM snapshots WHERE name = ? ORDER BY generation", (name,)
            )
        else:
            rows = self._query("SELECT * FROM snapshots ORDER BY name, generation")
        return [self._snapshot(row) for row in rows]

    def list_json(self, name: str | None = None) -> str:
        """The JSON array `list --json` prints, as list_snapshots() would give it."""
        where = "WHERE name = :name" if name is not None else ""
        rows = self._query(
            f"SELECT {_JSON_SHAPE} FROM snapshots {where} ORDER BY name, generation",
            {"prefix": self._archives_prefix, "name": name},
        )
        return "[" + ",".join(row[0] for row in rows) + "]"

    def get(self, ref: Ref) -> Snapshot:
        if ref.generation is None:
            rows = self._query(
                "SELECT * FROM snapshots WHERE name = ? ORDER BY generation DESC LIMIT 1",
                (ref.name,),
            )
        else:
            rows = self._query(
                "SELECT * FROM snapshots WHERE name = ? AND generation = ?",
                (ref.name, ref.generation),
            )
        if not rows:
            raise NotFoundError(f"no snapshot {ref}", hint="see: warmctl list")
        return self._snapshot(rows[0])

    def _snapshot(self, row: sqlite3.Row) -> Snapshot:
        return Snapshot(
            name=row["name"],
            generation=row["generation"],
            created=datetime.fromisoformat(row["created"]),
            archive_path=f"{self._archives_prefix}{row['archive']}",
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            compression=row["compression"],
            container_name=row["container_name"],
            container_id=row["container_id"],
            image_name=row["image_name"],
            image_id=row["image_id"],
            **json.loads(row["meta"]),
        )

    # --- removing -----------------------------------------------------------------------------

    def remove(self, snapshots: Sequence[Snapshot]) -> int:
        """Delete rows, then their archives. Returns the bytes freed.

        The rows go first, in one transaction: a crash after it leaves orphan archives that
        the next sweep removes, never a row without its archive.
        """
        with self._write() as db:
            for snap in snapshots:
                db.execute(
                    "DELETE FROM snapshots WHERE name = ? AND generation = ?",
                    (snap.name, snap.generation),
                )
        freed = 0
        for snap in snapshots:
            with contextlib.suppress(FileNotFoundError):
                freed += snap.archive.stat().st_size
                snap.archive.unlink()
        return freed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
