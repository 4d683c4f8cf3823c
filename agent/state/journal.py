"""The local journal: a cache of what was uploaded, so restarts need not re-hash.

SQLite in WAL mode in the state dir. The buckets stay the truth: a missing or
corrupt journal is moved aside and rebuilt empty (with a warning); the next
reconcile fills it again from the bucket listing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.state.status import Status

log = logging.getLogger(__name__)
JOURNAL_FILE = "journal.sqlite3"  # in the state dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    etag TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pulls (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS multipart (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS multipart_parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
);
CREATE TABLE IF NOT EXISTS thumbnailed (
    key TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    path TEXT PRIMARY KEY,
    folder_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class UploadRecord:
    path: str
    key: str
    size: int
    mtime_ns: int
    sha256: str
    etag: str
    # The identity (state.watch_folders marker) of the watch folder the file was in; None: not known
    # (a journal from before identities, or a folder that could not be stamped).
    folder_id: str | None = None


@dataclass(frozen=True)
class MultipartRecord:
    """An unfinished multipart upload of a local file (see agent.pipeline.multipart)."""

    path: str
    key: str
    upload_id: str
    part_size: int
    size: int  # the file as it was when the upload began: any change means starting again
    mtime_ns: int
    sha256: str


_MULTIPART = "SELECT path, key, upload_id, part_size, size, mtime_ns, sha256 FROM multipart"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = self._open()
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("journal %s is unreadable (%s); moved to %s and rebuilt from the buckets", self.path, exc, aside)
            self.path.replace(aside)
            for extra in ("-wal", "-shm"):
                Path(f"{self.path}{extra}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.execute("SELECT count(*) FROM uploads").fetchone()  # fails on a corrupt file
        columns = {row[1] for row in db.execute("PRAGMA table_info(failures)")}
        if "sha256" not in columns:  # a journal from before failures were tied to a version of the file
            db.execute("ALTER TABLE failures ADD COLUMN sha256 TEXT")
        if "folder_id" not in {row[1] for row in db.execute("PRAGMA table_info(uploads)")}:
            db.execute("ALTER TABLE uploads ADD COLUMN folder_id TEXT")  # a journal from before folder identities
        return db

    def _one(self, sql: str, args: tuple[object, ...]) -> Any:
        """The first row of a query, or None."""
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        """One statement; none once the journal is closed (a late write of a stopping role: the next reconcile
        or delivery records it again)."""
        with self._lock:
            if self._closed:
                return
            self._db.execute(sql, args)

    def upload(self, path: str) -> UploadRecord | None:
        row = self._one("SELECT path, key, size, mtime_ns, sha256, etag, folder_id FROM uploads WHERE path = ?", (path,))
        return UploadRecord(*row) if row else None

    def record_upload(self, rec: UploadRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO uploads (path, key, size, mtime_ns, sha256, etag, at, folder_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.path, rec.key, rec.size, rec.mtime_ns, rec.sha256, rec.etag, time.time(), rec.folder_id),
        )

    def uploads_under(self, folder: str) -> Iterator[str]:
        """Paths of the uploads recorded inside ``folder`` (an index range scan: no LIKE, no wildcards to escape).

        Only those of the folder's accepted identity (or of no known identity): files uploaded while another
        drive was mounted there are not the folder's own, so their absence never reads as a deletion.
        """
        prefix = folder.rstrip(os.sep) + os.sep
        upper = prefix[:-1] + chr(ord(os.sep) + 1)  # every path below the folder sorts in [prefix, upper)
        last = ""
        while True:  # in pages: the lock is never held for a whole large journal
            with self._lock:
                if self._closed:
                    return
                try:
                    rows = self._db.execute(
                        "SELECT path FROM uploads WHERE path >= ? AND path < ? AND path > ?"
                        " AND (folder_id IS NULL OR folder_id = (SELECT folder_id FROM folders WHERE path = ?))"
                        " ORDER BY path LIMIT 500",
                        (prefix, upper, last, folder),
                    ).fetchall()
                except UnicodeEncodeError:
                    return  # a folder name that is not UTF-8: nothing under it can have been recorded either
            if not rows:
                return
            for row in rows:
                yield str(row[0])
            last = str(rows[-1][0])

    def folder_identity(self, folder: str) -> str | None:
        """The identity accepted for a watch folder (its marker), None before its first stamped upload."""
        with self._lock:
            try:
                row = self._db.execute("SELECT folder_id FROM folders WHERE path = ?", (folder,)).fetchone()
            except UnicodeEncodeError:
                return None
        return str(row[0]) if row else None

    def accept_folder(self, folder: str, folder_id: str) -> None:
        self._write("INSERT OR REPLACE INTO folders VALUES (?, ?, ?)", (folder, folder_id, time.time()))

    def forget_folder(self, folder: str, folder_id: str | None, present: Callable[[str], bool]) -> int:
        """Accept what is in ``folder`` now: drop the records of its files that are not there, stamp the rest
        with ``folder_id`` (the marker now in it) and make that its identity. Returns the records dropped."""
        paths = list(self.uploads_under(folder))
        prefix = folder.rstrip(os.sep) + os.sep
        upper = prefix[:-1] + chr(ord(os.sep) + 1)
        other = self._all("SELECT path FROM uploads WHERE path >= ? AND path < ? AND folder_id IS NOT NULL", (prefix, upper))
        paths = sorted(set(paths) | {str(r[0]) for r in other})
        dropped = 0
        with self._lock:
            for path in paths:
                if present(path):
                    self._db.execute("UPDATE uploads SET folder_id = ? WHERE path = ?", (folder_id, path))
                else:
                    self._db.execute("DELETE FROM uploads WHERE path = ?", (path,))
                    dropped += 1
            if folder_id is None:
                self._db.execute("DELETE FROM folders WHERE path = ?", (folder,))
            else:
                self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?, ?)", (folder, folder_id, time.time()))
        return dropped

    def forget_upload(self, path: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE path = ?", (path,))

    # --- unfinished multipart uploads ---------------------------------------------------------

    def multipart(self, path: str) -> MultipartRecord | None:
        row = self._one(f"{_MULTIPART} WHERE path = ?", (path,))
        return MultipartRecord(*row) if row else None

    def multiparts(self) -> list[MultipartRecord]:
        return [MultipartRecord(*r) for r in self._all(_MULTIPART)]

    def start_multipart(self, rec: MultipartRecord) -> None:
        """Remember a new upload of ``rec.path`` (replacing any earlier one and its parts)."""
        with self._lock:
            if self._closed:
                return
            self._db.execute("BEGIN")
            try:
                old = self._db.execute("SELECT upload_id FROM multipart WHERE path = ?", (rec.path,)).fetchone()
                if old:
                    self._db.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (old[0],))
                self._db.execute(
                    "INSERT OR REPLACE INTO multipart VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec.path, rec.key, rec.upload_id, rec.part_size, rec.size, rec.mtime_ns, rec.sha256, time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_part(self, upload_id: str, number: int, etag: str) -> None:
        self._write("INSERT OR REPLACE INTO multipart_parts VALUES (?, ?, ?)", (upload_id, number, etag))

    def multipart_parts(self, upload_id: str) -> dict[int, str]:
        """Part number -> ETag of the parts S3 confirmed for this upload."""
        rows = self._all("SELECT number, etag FROM multipart_parts WHERE upload_id = ?", (upload_id,))
        return {int(n): str(e) for n, e in rows}

    def forget_multipart(self, path: str) -> None:
        with self._lock:
            if self._closed:
                return
            row = self._db.execute("SELECT upload_id FROM multipart WHERE path = ?", (path,)).fetchone()
            if row:
                self._db.execute("DELETE FROM multipart_parts WHERE upload_id = ?", (row[0],))
                self._db.execute("DELETE FROM multipart WHERE path = ?", (path,))

    def record_pull(self, path: str, key: str, etag: str, size: int) -> None:
        self._write("INSERT OR REPLACE INTO pulls VALUES (?, ?, ?, ?, ?)", (path, key, etag, size, time.time()))

    def pull(self, path: str) -> tuple[str, str, int] | None:
        """(key, etag, size) of the last pull to ``path``."""
        row = self._one("SELECT key, etag, size FROM pulls WHERE path = ?", (path,))
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    def record_thumbnailed(self, key: str, etag: str) -> None:
        """The thumbnails of source ``key`` at ``etag`` exist: a later event for it is redundant."""
        self._write("INSERT OR REPLACE INTO thumbnailed VALUES (?, ?, ?)", (key, etag, time.time()))

    def thumbnailed(self, key: str) -> str | None:
        """The source ETag whose thumbnails this host last made or found, or None."""
        with self._lock:
            if self._closed:
                return None
            row = self._db.execute("SELECT etag FROM thumbnailed WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def record_failure(self, name: str, role: str, reason: str, *, sha256: str | None = None) -> int:
        """Remember a failure; returns how many times this item has failed so far. ``sha256``: the content that
        failed, when known (the worker's verdict on those bytes)."""
        now = time.time()
        with self._lock:
            if self._closed:
                return 0
            self._db.execute(
                "INSERT INTO failures (name, role, reason, attempts, first_at, last_at, sha256) VALUES (?, ?, ?, 1, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET reason = excluded.reason, role = excluded.role, "
                "attempts = attempts + 1, last_at = excluded.last_at, sha256 = excluded.sha256",
                (name, role, reason, now, now, sha256),
            )
            row = self._db.execute("SELECT attempts FROM failures WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 1

    def known_bad(self, name: str, sha256: str) -> str | None:
        """The reason the worker refused exactly this content of ``name`` (a source key), if it did."""
        row = self._one("SELECT reason FROM failures WHERE name = ? AND role = 'worker' AND sha256 = ?", (name, sha256))
        return str(row[0]) if row else None

    def clear_failure(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM failures WHERE name = ?", (name,))

    def failures(self) -> list[tuple[str, str, str, int, float]]:
        """(name, role, reason, attempts, last_at), newest first."""
        rows = self._all("SELECT name, role, reason, attempts, last_at FROM failures ORDER BY last_at DESC")
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), float(r[4])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


def keep_verdicts(status: Status, journal: Journal) -> None:
    """Record ``status``'s failures in ``journal`` (with the content's sha256: the worker's verdict on those bytes)
    and forget them once resolved: what ``run`` and ``sync`` both do, so a known-bad file is not uploaded again."""

    def record(name: str, reason: str, role: str, version: str | None) -> None:
        try:
            journal.record_failure(name, role, reason, sha256=version)
        except sqlite3.Error as exc:
            log.debug("could not record the failure of %s: %s", name, exc)

    def forget(name: str, _role: str) -> None:
        try:
            journal.clear_failure(name)
        except sqlite3.Error as exc:
            log.debug("could not clear the failure of %s: %s", name, exc)

    status.on_failure = record
    status.on_resolved = forget
