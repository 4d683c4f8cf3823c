"""The uploader's watching part: watchdog observers, the settle table, close-write tracking, folder identity.

The watchdog handler only filters and notes paths in the settle table; ``settle`` (called by the uploader's
settle thread) returns the files whose size and mtime have been still for ``watch.settle_seconds`` and, where
the platform tells (inotify on Linux), whose writer has closed them. It also checks that each watch folder is
still the one its watch is on, waits for a missing folder, and works out each folder's identity
(``agent.state.watch_folders``) for the journal.

What each platform can know about a file still being written:
- Linux, inotify (the default observer there): every write gives IN_MODIFY and
  the writer's close gives IN_CLOSE_WRITE, which watchdog reports as ``closed``.
  A file written to since its last close-write is still open: it waits, however
  long its writer pauses between chunks (up to OPEN_WAIT_CAP since its last
  write, for a writer that never closes or a missed event). A writer that
  closes and reopens (scp/SMB/FTP resuming, appending in chunks) is covered by
  the settle time after each close only.
- macOS (FSEvents), Windows (ReadDirectoryChangesW), BSD (kqueue) and the
  polling observer report no close: only the settle time applies.
- Network file systems (NFS, SMB/CIFS mounts): inotify sees only writes made
  through this host; a writer on another host produces no events at all, so such
  files are found by the rescan and uploaded once their timestamps have been
  quiet for the settle time.
- /proc/*/fd is not used: reading it costs a walk of every process, shows other
  users' processes only to root, and sees nothing of other hosts or containers.

Locks: ``_lock`` guards the settle table (``_pending``, ``_open_for_write``, ``_dirs_to_scan``); ``_id_lock``
guards ``_folder_ids``. The observers and ``_watches``/``_roots_seen`` belong to the settle thread (after
``start``). Neither lock is held while calling out, so no lock order exists with the uploading part's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.cleanup_checks import move_target
from agent.config.model import Config
from agent.pipeline.keys import printable
from agent.pipeline.local_files import LocalFiles
from agent.state.journal import Journal
from agent.state.status import Status
from agent.state.watch_folders import MISSING, NEW, WatchFolder, check_folder, identify, read_marker

if TYPE_CHECKING:  # watchdog loads when the uploader watches: not for a no-op sync
    from watchdog.events import FileSystemEvent

log = logging.getLogger(__name__)
# The longest a file written to but not closed again waits after its last write: a writer that keeps a file open
# without writing (or a close event lost to an inotify queue overflow) must not hold it back for ever.
OPEN_WAIT_CAP = 300.0


class Watcher:
    """Observers on the watch folders and the table of files settling in them."""

    def __init__(self, cfg: Config, files: LocalFiles, status: Status, journal: Journal) -> None:
        self.cfg = cfg
        self.files = files
        self.status = status
        self.journal = journal
        self._lock = threading.Lock()
        # path -> (size, mtime_ns, still since); size -1 = not yet looked at, "since" = the event's time
        self._pending: dict[Path, tuple[int, int, float]] = {}
        # path -> when it was last written to, for files not closed since (only where close events exist).
        self._open_for_write: dict[Path, float] = {}
        self._dirs_to_scan: set[Path] = set()  # folders created or moved in: the settle thread walks them
        self.close_events = False  # set by start when the observer reports close-write (inotify)
        self.open_wait_cap = OPEN_WAIT_CAP
        # Wakes the settle thread: a file event, a folder to scan, a resume. Otherwise it sleeps until the next
        # deadline (a file due to settle, a retry, the folder check): an idle agent does not tick.
        self.wakeup = threading.Event()
        self._handler: Any = None  # a watchdog handler (see _handler_class)
        self._observers: list[Any] = []
        self._watches: list[Any] = []  # the observer watch of each folder (None while it is missing); replaced with the folder
        self._roots_seen: list[tuple[int, int] | None] = []  # (st_dev, st_ino) of each folder when watched
        self._id_lock = threading.Lock()
        # folder index -> ((st_dev, st_ino) when worked out, its identity): see folder_id
        self._folder_ids: dict[int, tuple[tuple[int, int] | None, str | None]] = {}

    # --- the settle table ----------------------------------------------------------------

    def touch(self, path: Path, *, written: bool = False) -> None:
        """Something happened to ``path``: (re)start its settle clock. ``written``: its content was written
        (IN_MODIFY), so with close events it counts as open until its writer closes it."""
        now = time.monotonic()
        with self._lock:
            self._pending[path] = (-1, -1, now)
            if written and self.close_events:
                self._open_for_write[path] = now
        self.wakeup.set()

    def closed(self, path: Path) -> None:
        """The writer closed ``path`` (IN_CLOSE_WRITE): the settle time runs from now (it may reopen it)."""
        with self._lock:
            self._open_for_write.pop(path, None)
        self.touch(path)

    def still_open(self, path: Path, now: float | None = None) -> bool:
        """Written to and not closed since (inotify only), within ``open_wait_cap`` of its last write."""
        now = time.monotonic() if now is None else now
        with self._lock:
            since = self._open_for_write.get(path)
            if since is None:
                return False
            if now - since < self.open_wait_cap:
                return True
            del self._open_for_write[path]
        if not path.is_symlink():  # a symlink (or a hard link) gets no close event: no need to say so
            log.info(
                "%s: still open for writing after %.0f s without a write; uploading it as it is",
                printable(str(path)),
                now - since,
            )
        return False

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._open_for_write.pop(path, None)

    def touch_tree(self, folder: Path) -> None:
        """A folder appeared (created or moved in): its files produce no events of their own."""
        for lf in self.files.walk(folder):
            self.touch(lf.path)

    def scan_later(self, folder: Path) -> None:
        with self._lock:
            self._dirs_to_scan.add(folder)
        self.wakeup.set()

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def settle_deadlines(self) -> list[float]:
        """When (monotonic) each pending file may be settled."""
        settle = self.cfg.watch.settle_seconds
        with self._lock:
            return [since + settle for (_size, _mtime, since) in self._pending.values()]

    def settle(self, due_retries: Callable[[float], list[Path]]) -> tuple[list[Path], float]:
        """The files settled now, and that now (monotonic). ``due_retries(now)``: postponed files due again,
        looked at from the next round (they settle again like a changed file)."""
        settle = self.cfg.watch.settle_seconds
        with self._lock:
            dirs, self._dirs_to_scan = self._dirs_to_scan, set()
        for folder in dirs:
            self.touch_tree(folder)
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            items = list(self._pending.items())
        for p in due_retries(now):
            with self._lock:
                self._pending.setdefault(p, (-1, -1, now))
        for path, seen in items:
            st = stat_or_none(path)
            if st is None:
                self.forget(path)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            with self._lock:
                if self._pending.get(path) != seen:
                    continue  # touched again meanwhile: look at it on the next tick
                if seen[0] == -1:
                    # The settle clock starts at the event, not at this tick.
                    self._pending[path] = (*sig, seen[2])
                    settled = now - seen[2] >= settle
                elif seen[:2] != sig:
                    self._pending[path] = (*sig, now)
                    settled = False
                else:
                    settled = now - seen[2] >= settle
            if settled and not self.still_open(path, now):
                with self._lock:
                    if self._pending.get(path, (0, 0, 0.0))[:2] == sig:
                        del self._pending[path]
                        ready.append(path)
        return ready, now

    # --- the observers and the folders ----------------------------------------------------

    def start(self) -> None:
        """An observer on each watch folder; a missing one is created (first run) or waited for."""
        from watchdog.observers import Observer

        self._handler = _handler_class()(self)
        for root in self.files.folders:
            if not root.is_dir():
                folder = check_folder(root, self.journal.uploads_under)
                if folder.state == NEW:
                    # First run: ~/ThumbDrop/inbox is made for the user. Never a folder files were uploaded
                    # from: that is an unplugged drive, and an empty stand-in would read as "all deleted".
                    root.mkdir(parents=True, exist_ok=True)
                    log.info("created watch folder %s", root)
                else:
                    self._report_missing(folder)
            else:
                self._note_other_drive(root)
            observer = Observer()
            self.close_events = reports_close_write(observer)
            observer.name = f"watch-{root.name}"
            self._watches.append(self._schedule(observer, root))
            self._roots_seen.append(_identity(root))
            observer.start()
            self._observers.append(observer)

    def stop(self) -> None:
        for o in self._observers:
            o.stop()

    def join(self, deadline: float) -> bool:
        """Wait for the observers until ``deadline`` (monotonic); True when all have ended."""
        for o in self._observers:
            o.join(max(0.1, deadline - time.monotonic()))
        return not any(o.is_alive() for o in self._observers)

    def check_roots(self) -> None:
        """A watch folder deleted, or renamed and replaced, takes its inotify watch with it: watch the new one.

        inotify watches an inode, not a path: without this, files dropped into a recreated folder would wait
        for the next rescan (5 minutes by default) with no word in the log.
        """
        for i, root in enumerate(self.files.folders):
            now = _identity(root)
            if now == self._roots_seen[i]:
                continue
            if now is None:
                self._report_missing(check_folder(root, self.journal.uploads_under))
            else:
                observer = self._observers[i]
                if self._watches[i] is not None:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        observer.unschedule(self._watches[i])
                self._watches[i] = self._schedule(observer, root)
                if self._watches[i] is None:
                    continue
                if self._roots_seen[i] is None:
                    log.info("watch folder %s is back: watching it again", root)
                else:
                    log.info("watch folder %s was replaced: watching the new one", root)
                self.status.folder_back(str(root))
                self._note_other_drive(root)
                self.touch_tree(root)
            self._roots_seen[i] = now

    def _schedule(self, observer: Any, root: Path) -> Any:
        """Watch ``root``; None while it is not there (``check_roots`` tries again)."""
        if not root.is_dir():
            return None
        try:
            return observer.schedule(self._handler, str(root), recursive=True)
        except OSError as exc:
            log.warning("cannot watch %s yet: %s", root, exc)
            return None

    def _moved_to(self) -> Path | None:
        return move_target(self.cfg) if self.cfg.cleanup.inbox_after_upload == "move" else None

    def _note_other_drive(self, root: Path) -> None:
        """A folder that is there but holds another drive (or an empty mount point): status and the log say so
        (status shows it as WAITING, like a missing one); uploads from it go on."""
        folder = check_folder(root, self.journal.uploads_under, moved_to=self._moved_to(), accepted=self.journal.folder_identity)
        if folder.trusted:
            return
        text = f"{folder.describe()} ({folder.fix()})"
        log.warning("%s", text)
        self.status.folder_missing(folder.path, text)

    def _report_missing(self, folder: WatchFolder) -> None:
        text = (
            f"{folder.describe()} ({folder.fix()})"
            if folder.state == MISSING
            else f"watch folder {folder.path} is gone; watching it again when it is back"
        )
        log.warning("%s", text)
        self.status.folder_missing(folder.path, text)

    def folder_id(self, folder: int) -> str | None:
        """The identity of watch folder ``folder`` to record with an upload (state.watch_folders): worked out
        again when the folder's inode changes (another drive mounted there)."""
        root = self.files.folders[folder]
        marker = read_marker(root)
        if marker is not None and marker == self.journal.folder_identity(str(root)):
            return marker  # the known drive (also right after 'cleanup --forget-folder' accepted one)
        now = _identity(root)
        with self._id_lock:  # parallel uploads from a new folder: one of them stamps it, the others wait
            cached = self._folder_ids.get(folder)
            if cached is not None and cached[0] == now:
                return cached[1]
            j = self.journal
            found = identify(root, j.uploads_under, j.folder_identity, j.accept_folder, moved_to=self._moved_to())
            self._folder_ids[folder] = (now, found)
        return found


class _Handler:
    """Runs under the observer's lock: filter and enqueue only, never I/O."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        watcher = self.watcher
        if kind in ("opened", "closed_no_write"):
            return
        if kind == "deleted":
            watcher.forget(Path(os.fsdecode(event.src_path)))
            return
        if kind == "closed":
            path = Path(os.fsdecode(event.src_path))
            if watcher.files.local_file(path) is not None:
                watcher.closed(path)
            return
        if kind == "moved" and not event.is_directory:
            watcher.forget(Path(os.fsdecode(event.src_path)))
        target = event.dest_path if kind == "moved" else event.src_path
        path = Path(os.fsdecode(target))
        if event.is_directory:
            if kind in ("created", "moved"):
                # Scanning is I/O: the settle thread does it, not the observer.
                watcher.scan_later(path)
            return
        if watcher.files.local_file(path) is not None:
            watcher.status.count("seen")
            # Only a write (IN_MODIFY) says a writer has the file open: "created" is also what a file renamed in from
            # outside the watch looks like (IN_MOVED_TO), and a rename has no close to wait for.
            watcher.touch(path, written=kind == "modified")


def reports_close_write(observer: Any) -> bool:
    """Whether ``observer`` tells a file's close after writing apart from its other changes: inotify does
    (watchdog's ``closed``), once attribute changes have their own event (``attrib``, watchdog 5+) and no
    longer look like writes. FSEvents, Windows, kqueue and polling do not report closes at all."""
    from watchdog import events

    return type(observer).__name__.startswith("Inotify") and hasattr(events, "FileAttribEvent")


@functools.cache
def _handler_class() -> type[_Handler]:
    """_Handler as a watchdog handler; built on first use so that importing the uploader does not load watchdog."""
    from watchdog.events import FileSystemEventHandler

    return type("_WatchHandler", (_Handler, FileSystemEventHandler), {})


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when it is not there (or not a folder)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None
