"""Is each watch folder the one the journal knows? An unplugged drive must never read as "files deleted".

A watch folder is in one of four states:

* ``ok``: there, and either nothing was uploaded from it yet or at least one file the journal
  recorded under it is still there (or was moved away by ``inbox_after_upload: move``);
* ``new``: not there, and nothing was ever uploaded from it: the agent may create it (first run);
* ``missing``: not there, but the journal records uploads from it: an unplugged drive or an
  unmounted share. Nobody creates it, the agent waits for it, cleanup leaves its files alone;
* ``emptied``: there, but none of the files recorded under it is: an empty mount point, or another
  drive mounted in its place. Cleanup leaves it alone until a file of it is seen again (a new file
  uploaded from it counts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

OK, NEW, MISSING, EMPTIED = "ok", "new", "missing", "emptied"

# folder -> the paths the journal records as uploaded from inside it
RecordedUnder = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class WatchFolder:
    path: str
    state: str  # OK, NEW, MISSING or EMPTIED
    recorded: bool  # the journal records at least one upload from it

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
                "another drive?): cleanup leaves its thumbnails alone until one of its files is seen again"
            )
        if self.state == NEW:
            return f"watch folder {self.path} does not exist yet (the agent creates it)"
        return f"watch folder {self.path} is there"


def check_folder(folder: str | Path, recorded_under: RecordedUnder, *, moved_to: Path | None = None) -> WatchFolder:
    """The state of one watch folder. ``moved_to``: where ``inbox_after_upload: move`` puts its files."""
    root = Path(folder)
    paths = iter(recorded_under(str(root)))
    first = next(paths, None)
    if not root.is_dir():
        return WatchFolder(str(root), MISSING if first is not None else NEW, first is not None)
    if first is None:
        return WatchFolder(str(root), OK, False)
    for path in _chain(first, paths):
        if _still_there(Path(path), root, moved_to):
            return WatchFolder(str(root), OK, True)
    return WatchFolder(str(root), EMPTIED, True)


def check_folders(folders: Iterable[str], recorded_under: RecordedUnder, *, moved_to: Path | None = None) -> list[WatchFolder]:
    return [check_folder(f, recorded_under, moved_to=moved_to) for f in folders]


def _chain(first: str, rest: Iterable[str]) -> Iterable[str]:
    yield first
    yield from rest


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
