"""Is each watch folder the one the journal knows? An unplugged drive must never read as "files deleted".

A watch folder is in one of six states:

* ``ok``: there, its identity (below) is the recorded one or none is recorded, and either nothing was
  uploaded from it yet or at least half of the files the journal recorded under it are still there
  (or were moved away by ``inbox_after_upload: move``);
* ``new``: not there, and nothing was ever uploaded from it: the agent may create it (first run);
* ``missing``: not there, but the journal records uploads from it: an unplugged drive or an
  unmounted share. Nobody creates it, the agent waits for it, cleanup leaves its files alone;
* ``emptied``: there, but none of the files recorded under it is: an empty mount point, or another
  drive mounted in its place. Cleanup leaves it alone until its files are seen again, or
  ``thumbdrop cleanup --forget-folder PATH`` accepts it as it is;
* ``other``: there, but its identity is not the one recorded with its uploads: another drive or card
  mounted in its place. No cleanup rule acts on the recorded files until the user accepts it
  (``thumbdrop cleanup --forget-folder PATH``) or the right drive is back;
* ``few``: there, same identity as far as known, but it holds fewer than half (``MIN_SHARE``) of the files
  recorded under it: more likely another drive or a half-copied card than a deletion, so cleanup skips it.

Identity: a hidden marker file ``.thumbdrop-folder-id`` (a random id) written into the folder with its first
upload and recorded in the journal (``folders`` table, and with every upload). A marker goes with the drive:
it survives remounts at other paths and reboots (st_dev does not), and works on every OS. A folder that
cannot be stamped (read-only media) has no identity and relies on the majority rule alone.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OK, NEW, MISSING, EMPTIED, OTHER, FEW = "ok", "new", "missing", "emptied", "other", "few"
MARKER = ".thumbdrop-folder-id"
UNMARKED = "unmarked"  # recorded with a file from a folder that has an identity, when the drive there has no marker
# A folder must still hold at least this share of the files recorded under it before a file absent from it
# is taken as deleted: deleting more than half of a folder's photos at once is rarer than a swapped card.
MIN_SHARE = 0.5

# folder -> the paths the journal records as uploaded from inside it
RecordedUnder = Callable[[str], Iterable[str]]
# folder -> the identity recorded for it (None: none yet)
AcceptedId = Callable[[str], "str | None"]


@dataclass(frozen=True)
class WatchFolder:
    path: str
    state: str  # OK, NEW, MISSING or EMPTIED
    recorded: bool  # the journal records at least one upload from it
    present: int = 0  # recorded files still there (counted up to what the decision needed)
    total: int = 0  # recorded files (counted for the states that need it)

    @property
    def trusted(self) -> bool:
        """Whether a file absent from it may be taken as deleted (what cleanup rules need)."""
        return self.state == OK

    def describe(self) -> str:
        """Why it is not trusted, for logs, status, doctor and cleanup notes."""
        if self.state == MISSING:
            return (
                f"watch folder {self.path} is missing, but files were uploaded from it (an unplugged drive or an "
                "unmounted share?): waiting for it; cleanup leaves its thumbnails alone"
            )
        if self.state == EMPTIED:
            return (
                f"watch folder {self.path} holds none of the files uploaded from it (an empty mount point, or "
                "another drive?): cleanup leaves its thumbnails alone until its files are seen again"
            )
        if self.state == OTHER:
            return (
                f"watch folder {self.path} is another drive than the one its files were uploaded from (its "
                f"{MARKER} differs or is gone): cleanup leaves the first drive's thumbnails alone"
            )
        if self.state == FEW:
            return (
                f"watch folder {self.path} holds only {self.present} of the {self.total} files uploaded from it "
                f"(fewer than {MIN_SHARE:.0%}: another drive or card?): cleanup leaves their thumbnails alone"
            )
        if self.state == NEW:
            return f"watch folder {self.path} does not exist yet (the agent creates it)"
        return f"watch folder {self.path} is there"

    def fix(self) -> str:
        """What the user can do about an untrusted folder."""
        if self.state == MISSING:
            return "plug the drive in or mount the share (the agent waits for it); if it is gone for good, remove it from watch.folders"
        return (
            "mount the right drive; to accept the drive that is there now as this folder (the thumbnails of files "
            f"not on it stay; delete them by hand if unwanted): thumbdrop cleanup --forget-folder {self.path}"
        )


def read_marker(folder: str | Path) -> str | None:
    """The identity stamped into a folder, None when it has none (or it cannot be read)."""
    try:
        text = (Path(folder) / MARKER).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def stamp_marker(folder: str | Path) -> str | None:
    """The folder's identity, writing a new marker when it has none; None when it cannot be written."""
    found = read_marker(folder)
    if found is not None:
        return found
    new = uuid.uuid4().hex
    path = Path(folder) / MARKER
    try:
        # Created exclusively (no rename: FAT/exFAT cards have no hard links): of two writers, the second
        # reads the first one's identity instead of replacing it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return read_marker(folder)
    except OSError as exc:
        log.info("cannot write %s (%s): this folder is told from another drive by its files alone", path, exc.strerror)
        return None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(new + "\n")
    return new


def identify(
    folder: str | Path,
    recorded_under: RecordedUnder,
    accepted: AcceptedId,
    accept: Callable[[str, str], None],
    *,
    moved_to: Path | None = None,
) -> str | None:
    """The identity to record with an upload from ``folder``: its marker, stamped and accepted on the first
    upload (or, for a journal from before identities, once the folder still holds most of its files)."""
    root = Path(folder)
    known = accepted(str(root))
    if known is not None:
        # Another drive's marker when it is not ``known``; one without a marker still must not pass for
        # the known drive (its files would read as deleted once the right drive is back).
        return read_marker(root) or UNMARKED
    if check_folder(root, recorded_under, moved_to=moved_to).state != OK:
        return read_marker(root)
    stamped = stamp_marker(root)
    if stamped is not None:
        accept(str(root), stamped)
    return stamped


def check_folder(
    folder: str | Path, recorded_under: RecordedUnder, *, moved_to: Path | None = None, accepted: AcceptedId | None = None
) -> WatchFolder:
    """The state of one watch folder. ``moved_to``: where ``inbox_after_upload: move`` puts its files;
    ``accepted``: the identity recorded for a folder (None: identities are not checked)."""
    root = Path(folder)
    if not root.is_dir():
        recorded = next(iter(recorded_under(str(root))), None) is not None
        return WatchFolder(str(root), MISSING if recorded else NEW, recorded)
    paths = list(recorded_under(str(root)))
    known = accepted(str(root)) if accepted is not None else None
    if known is not None and read_marker(root) != known:
        # Not the drive its files came from. An empty mount point reads better as "holds none of its files".
        return WatchFolder(str(root), OTHER if _has_content(root) else EMPTIED, bool(paths))
    if not paths:
        return WatchFolder(str(root), OK, False)
    need = max(1, math.ceil(len(paths) * MIN_SHARE))
    present = 0
    for path in paths:
        if _still_there(Path(path), root, moved_to):
            present += 1
            if present >= need:
                return WatchFolder(str(root), OK, True, present, len(paths))
    return WatchFolder(str(root), EMPTIED if present == 0 else FEW, True, present, len(paths))


def check_folders(
    folders: Iterable[str], recorded_under: RecordedUnder, *, moved_to: Path | None = None, accepted: AcceptedId | None = None
) -> list[WatchFolder]:
    return [check_folder(f, recorded_under, moved_to=moved_to, accepted=accepted) for f in folders]


def _has_content(root: Path) -> bool:
    try:
        with os.scandir(root) as entries:
            return any(e.name != MARKER for e in entries)
    except OSError:
        return False


def _still_there(path: Path, root: Path, moved_to: Path | None) -> bool:
    if path.exists():
        return True
    if moved_to is None:
        return False
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    # The move keeps the source-relative path, which starts with the folder's name when there are several.
    return (moved_to / rel).exists() or (moved_to / root.name / rel).exists()
