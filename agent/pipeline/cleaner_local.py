"""The cleanup rules for this machine's folders: finished inbox files, orphaned local thumbnails.

* ``inbox_after_upload``: a file whose thumbnails in ``local.thumbnails_dir`` are
  newer than it (the uploader's own "done" test) is moved or deleted; delete only
  while the source bucket holds its original at the same size and no rule of
  this run deletes that original, so the last full-size copy is never removed.
* ``remove_orphan_local_thumbnails``: a thumbnail whose source path this machine
  uploaded (the journal says so) and that is gone from the watch folders and the
  move folder. Never for a watch folder that is missing or came back without any of its files
  (``state.watch_folders``): an unplugged drive is not a deletion.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from agent.config.cleanup_checks import move_target
from agent.config.model import Config
from agent.pipeline.cleaner import LOCAL, MTIME_SLACK, Deletion, LocalStat, Snapshot, source_rels_of
from agent.pipeline.cleaner_sizes import select_unlisted_sizes_local
from agent.pipeline.keys import Layout
from agent.pipeline.uploader import NameFilter
from agent.state.files import TMP_MARK
from agent.state.journal import Journal
from agent.state.watch_folders import (
    EMPTIED,
    FEW,
    MIN_SHARE,
    MISSING,
    NEW,
    OTHER,
    AcceptedId,
    RecordedUnder,
    check_folders,
)

# path of a source file -> the key this machine uploaded it to (None: never uploaded from here)
UploadedFrom = Callable[[str], "str | None"]


def journal_lookup(journal: Journal) -> UploadedFrom:
    """The key the journal says a local path was uploaded to: proof the file was this machine's."""

    def lookup(path: str) -> str | None:
        rec = journal.upload(path)
        if rec is None:
            return None
        if rec.folder_id is not None and rec.folder_id != journal.folder_identity(_root_of(path, journal)):
            return None  # uploaded while another drive was mounted there: not this folder's file
        return rec.key

    return lookup


def _root_of(path: str, journal: Journal) -> str:
    """The watch folder whose accepted identity a record's path falls under ("" when none does)."""
    for parent in Path(path).parents:
        if journal.folder_identity(str(parent)) is not None:
            return str(parent)
    return ""


def accepted_lookup(journal: Journal | None) -> AcceptedId | None:
    return journal.folder_identity if journal is not None else None


def walk_thumbnails(root: Path) -> dict[str, LocalStat]:
    """rel (``/``-separated) -> size and mtime of every file below ``root``, temp files left out."""
    out: dict[str, LocalStat] = {}
    if not root.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TMP_MARK in name:
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue
            out[path.relative_to(root).as_posix()] = LocalStat(st.st_size, st.st_mtime)
    return out


def select_local(
    cfg: Config,
    snap: Snapshot,
    remote: list[Deletion],
    *,
    uploaded_from: UploadedFrom,
    recorded_under: RecordedUnder | None = None,
    accepted: AcceptedId | None = None,
) -> tuple[list[Deletion], list[str]]:
    """Deletions and moves in the local folders, and notes on rules that were skipped.

    ``recorded_under(folder)``: the paths the journal records as uploaded from a folder (how a folder
    that came back empty is told from one whose files were deleted); None: no journal to ask.
    ``accepted(folder)``: the identity recorded for a folder (how another drive in its place is told apart).
    """
    out: list[Deletion] = []
    notes: list[str] = []
    if cfg.cleanup.inbox_after_upload != "keep":
        out.extend(_finished_inbox_files(cfg, snap, remote, notes))
    if cfg.cleanup.remove_orphan_local_thumbnails:
        out.extend(_orphan_local_thumbnails(cfg, snap, uploaded_from, recorded_under or _no_records, accepted, notes))
    if cfg.cleanup.remove_unlisted_sizes:
        out.extend(select_unlisted_sizes_local(cfg, snap, remote))
    return out, notes


def _no_records(_folder: str) -> list[str]:
    return []


def _finished_inbox_files(cfg: Config, snap: Snapshot, remote: list[Deletion], notes: list[str]) -> list[Deletion]:
    layout = Layout.of(cfg)
    names = NameFilter(cfg.watch.include, cfg.watch.exclude)
    mode = cfg.cleanup.inbox_after_upload
    target = move_target(cfg)
    originals_going = {d.key for d in remote if d.bucket == cfg.source.bucket}
    out: list[Deletion] = []
    for i, folder in enumerate(Path(f) for f in cfg.watch.folders):
        if not folder.is_dir():
            continue
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not names.excluded(d)]
            for name in files:
                path = Path(dirpath) / name
                local_rel = path.relative_to(folder).as_posix()
                if not names.wanted(local_rel) or path.is_symlink():
                    continue  # a symlink's target is not ours to move or delete
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = layout.source_rel(i, local_rel)
                if not _thumbnailed_locally(layout, snap, rel, st):
                    continue
                if mode == "delete":
                    key = layout.source_key(rel)
                    obj = snap.source.get(key)
                    if obj is None or obj.size != st.st_size or key in originals_going:
                        continue
                    why = f"uploaded and thumbnailed; the original stays in s3://{cfg.source.bucket}/{key}"
                    out.append(Deletion(LOCAL, str(path), why, st.st_size, stamp=st.st_mtime_ns))
                else:
                    dest = target.joinpath(*rel.split("/"))
                    if dest.exists():
                        notes.append(f"not moved: {path} ({dest} already exists)")
                        continue
                    out.append(
                        Deletion(
                            LOCAL, str(path), "uploaded and thumbnailed", st.st_size, move_to=str(dest), stamp=st.st_mtime_ns
                        )
                    )
    return out


def _thumbnailed_locally(layout: Layout, snap: Snapshot, rel: str, st: os.stat_result) -> bool:
    """As the uploader decides: every local thumbnail is newer than the file (ctime too: cp -p keeps mtime)."""
    changed = max(st.st_mtime, st.st_ctime) - MTIME_SLACK
    for size in layout.sizes:
        thumb = snap.local_thumbs.get(layout.thumb_rel(rel, size))
        if thumb is None or thumb.mtime < changed:
            return False
    return True


def local_source(cfg: Config, layout: Layout, rel: str) -> Path | None:
    """Where the file of source ``rel`` lives (or lived) in the watch folders."""
    folders = [Path(f) for f in cfg.watch.folders]
    if layout.folder_names:
        first, _, rest = rel.partition("/")
        if first not in layout.folder_names or not rest:
            return None
        return folders[layout.folder_names.index(first)].joinpath(*rest.split("/"))
    return folders[0].joinpath(*rel.split("/")) if folders else None


_SKIPPED = {
    MISSING: "it is missing, but files were uploaded from it (an unplugged drive is not a deletion)",
    EMPTIED: "it holds none of the files uploaded from it (an empty mount point or another drive is not a deletion)",
    NEW: "it does not exist",
    OTHER: "it is another drive than the one its files were uploaded from (another drive is not a deletion)",
    FEW: f"it holds fewer than {MIN_SHARE:.0%} of the files uploaded from it (another drive or card is not a deletion)",
}


def _orphan_local_thumbnails(
    cfg: Config,
    snap: Snapshot,
    uploaded_from: UploadedFrom,
    recorded_under: RecordedUnder,
    accepted: AcceptedId | None,
    notes: list[str],
) -> list[Deletion]:
    if not cfg.watch.folders:
        notes.append("remove_orphan_local_thumbnails skipped: no watch folders")
        return []
    moved_to = move_target(cfg) if cfg.cleanup.inbox_after_upload == "move" else None
    # Only a folder that is there and still holds files of its own proves that a file absent from it was deleted.
    folders = check_folders(cfg.watch.folders, recorded_under, moved_to=moved_to, accepted=accepted)
    untrusted = [f for f in folders if not f.trusted]
    for f in untrusted:
        way_out = f"; {f.fix()}" if f.state in (OTHER, FEW, EMPTIED) else ""
        notes.append(f"remove_orphan_local_thumbnails skipped for {f.path}: {_SKIPPED[f.state]}{way_out}")
    if len(untrusted) == len(cfg.watch.folders):
        return []
    untrusted_roots = [Path(f.path) for f in untrusted]
    layout = Layout.of(cfg)
    root = Path(cfg.local.thumbnails_dir)
    out: list[Deletion] = []
    for trel, stat in sorted(snap.local_thumbs.items()):
        gone: str | None = None
        for rel in source_rels_of(layout, trel):
            path = local_source(cfg, layout, rel)
            if path is None:
                continue
            if any(r in path.parents for r in untrusted_roots):
                gone = None
                break
            if path.exists() or (moved_to is not None and moved_to.joinpath(*rel.split("/")).exists()):
                gone = None
                break
            if uploaded_from(str(path)) == layout.source_key(rel):
                gone = str(path)
        if gone is None:
            continue
        out.append(
            Deletion(LOCAL, str(root.joinpath(*trel.split("/"))), f"local thumbnail; its source {gone} was deleted", stat.size)
        )
        key = layout.thumb_prefix + trel
        if key in snap.thumbs:
            out.append(Deletion(cfg.thumbnails.bucket, key, "thumbnail of a deleted local file", snap.thumbs[key].size))
    return out


class DeletedLocally:
    """Whether the source of a rel is a file this machine uploaded and the user deleted locally, while
    ``remove_orphan_local_thumbnails`` mirrors such deletions: its thumbnails must not be made and pulled again
    (the worker reconcile, the puller), else they come back after the cleaner removed them.

    The same proof as the cleaner's: the journal records the upload from that path to that key (of the
    folder's own drive), the file and its moved copy are gone, and its watch folder is trusted.
    """

    FOLDERS_TTL = 60.0  # folder states are re-checked at most this often (a full check stats the folder's files)

    def __init__(self, cfg: Config, journal: Journal) -> None:
        self.cfg = cfg
        self.journal = journal
        self.layout = Layout.of(cfg)
        self.uploaded_from = journal_lookup(journal)
        self.moved_to = move_target(cfg) if cfg.cleanup.inbox_after_upload == "move" else None
        self._trusted: tuple[float, list[Path]] | None = None

    def __call__(self, rel: str) -> bool:
        path = local_source(self.cfg, self.layout, rel)
        if path is None or path.exists():
            return False
        if self.moved_to is not None and self.moved_to.joinpath(*rel.split("/")).exists():
            return False
        if self.uploaded_from(str(path)) != self.layout.source_key(rel):
            return False
        return any(root in path.parents for root in self._trusted_roots())

    def thumbnail(self, thumb_rel: str) -> bool:
        """The same for a thumbnail: every source that could have made it was deleted locally."""
        rels = source_rels_of(self.layout, thumb_rel)
        return bool(rels) and all(self(rel) for rel in rels)

    def _trusted_roots(self) -> list[Path]:
        now = time.monotonic()
        if self._trusted is None or now - self._trusted[0] > self.FOLDERS_TTL:
            folders = check_folders(
                self.cfg.watch.folders, self.journal.uploads_under, moved_to=self.moved_to, accepted=self.journal.folder_identity
            )
            self._trusted = (now, [Path(f.path) for f in folders if f.trusted])
        return self._trusted[1]
