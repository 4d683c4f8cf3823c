"""The cleanup policy as selection: a snapshot of the buckets and folders in, Deletions out.

Pure apart from one injected lookup (a thumbnail's recorded source key), so the
dry run and the real run share every decision, and unit tests need no backend.
The snapshot is taken by ``cleanup_run``; the local-folder rules live in
``cleaner_local``. Age rules take ``now`` from the caller (tests inject it).

Safety rules every selection obeys:
* only keys the layout maps back (inside the configured prefix, never the other
  side's prefix in a shared bucket, failure markers only under their folder);
* only names a thumbnail could have, for the rules that act on thumbnails;
* an orphan is deleted only when its own metadata names a source that is gone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from agent.config.model import CleanupConfig, Config
from agent.errors import LOCAL_SCOPE
from agent.imaging.spec import FORMAT_EXTENSIONS
from agent.pipeline.keys import Layout, thumbnail_name

LOCAL = "(local)"  # the "bucket" of Deletions that act on files on this machine
MTIME_SLACK = 0.001  # the puller stamps local thumbnails with LastModified; float rounding only


@dataclass(frozen=True)
class Deletion:
    """One thing a cleanup run removes: an object, an incomplete upload, or a local file."""

    bucket: str  # bucket name, or LOCAL
    key: str  # object key, or the local file's path
    reason: str
    size: int
    upload_id: str | None = None  # abort this incomplete multipart upload instead of deleting an object
    move_to: str | None = None  # local file moved here instead of deleted
    stamp: int | None = None  # local file's mtime_ns when selected: a changed file is left alone
    local_copy: bool = False  # a verified local copy exists: the mass-delete guard does not count it

    @property
    def action(self) -> str:
        return "abort" if self.upload_id else "move" if self.move_to else "delete"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"bucket": self.bucket, "key": self.key, "reason": self.reason, "size": self.size}
        out["action"] = self.action
        if self.move_to:
            out["move_to"] = self.move_to
        return out


class Obj(NamedTuple):
    key: str
    size: int
    modified: datetime


class Upload(NamedTuple):
    bucket: str
    key: str
    upload_id: str
    initiated: datetime


class LocalStat(NamedTuple):
    size: int
    mtime: float


@dataclass
class Snapshot:
    """What one run looked at. Thumbnails are listed before sources (see ``cleanup_run``)."""

    source: dict[str, Obj] = field(default_factory=dict)  # every key under source.prefix
    thumbs: dict[str, Obj] = field(default_factory=dict)  # every key under thumbnails.prefix
    uploads: list[Upload] = field(default_factory=list)  # incomplete multipart uploads under both prefixes
    local_thumbs: dict[str, LocalStat] = field(default_factory=dict)  # rel below thumbnails_dir -> stat


# --- which rules run where ------------------------------------------------------------------


def agent_runs_age_rules(c: CleanupConfig) -> bool:
    """In lifecycle mode S3 applies the age rules and multipart aborts; the agent leaves them alone."""
    return c.mode in ("agent", "both")


def needs(cfg: Config) -> set[str]:
    """Which parts of the snapshot the enabled rules read: 'source', 'thumbs', 'uploads', 'local'."""
    c, age = cfg.cleanup, agent_runs_age_rules(cfg.cleanup)
    out: set[str] = set()
    if (c.delete_originals and age) or c.delete_orphans or c.inbox_after_upload == "delete":
        out.add("source")
    if (c.delete_originals and age) or c.delete_pulled_thumbnails or (c.thumbnails_max_age_days and age):
        out.add("thumbs")
    if c.delete_orphans or c.remove_orphan_local_thumbnails:
        out.add("thumbs")
    if c.abort_multipart_after_hours and age:
        out.add("uploads")
    if (c.delete_originals and age) or c.delete_pulled_thumbnails or c.inbox_after_upload != "keep":
        out.add("local")
    if c.remove_orphan_local_thumbnails:
        out.add("local")
    if c.remove_unlisted_sizes:
        out |= {"source", "thumbs", "local"}
    return out


# --- naming -----------------------------------------------------------------------------------


def source_rels_of(layout: Layout, thumb_rel: str) -> list[str]:
    """The source rels whose thumbnail is ``thumb_rel`` ([] when no source could produce that name).

    ``a.png.jpg`` comes from ``a.png`` or from ``a.png.jpg``; a name without one of
    the format's extensions, or outside a size folder when there are several, is no thumbnail.
    A video's web preview (``clip.mov.mp4``, beside the poster) counts as one of its thumbnails.
    """
    video = layout.source_of_preview(thumb_rel)
    if video is not None:
        return [video]
    rel = thumb_rel
    if len(layout.sizes) > 1:
        head, _, rel = rel.partition("/")
        if head not in {str(s) for s in layout.sizes} or not rel:
            return []
    folder, _, name = rel.rpartition("/")
    candidates = {name}
    for ext in FORMAT_EXTENSIONS[layout.fmt]:
        if name.lower().endswith(ext):
            candidates.add(name[: -len(ext)])
    names = sorted(n for n in candidates if n and thumbnail_name(n, layout.fmt) == name)
    return [f"{folder}/{n}" if folder else n for n in names]


def _days(value: float) -> str:
    return f"{value:g} day(s)"


def _age(now: datetime, then: datetime) -> timedelta:
    return now - then


# --- bucket rules -------------------------------------------------------------------------------


def select_remote(cfg: Config, snap: Snapshot, now: datetime, *, recorded_source: Callable[[str], str | None]) -> list[Deletion]:
    """Deletions in the buckets. ``recorded_source(thumb_key)``: the source key a thumbnail's metadata names."""
    c, layout = cfg.cleanup, Layout.of(cfg)
    age_rules = agent_runs_age_rules(c)
    sb, tb = cfg.source.bucket, cfg.thumbnails.bucket
    out: dict[tuple[str, str, str | None], Deletion] = {}

    def add(d: Deletion) -> None:
        out.setdefault((d.bucket, d.key, d.upload_id), d)  # the first rule that selects a key names the reason

    if c.delete_originals and age_rules:
        min_age = timedelta(days=c.originals_min_age_days)
        for key, obj in snap.source.items():
            rel = layout.rel_of_source_key(key)
            if rel is None or _age(now, obj.modified) < min_age or not thumbnails_done(layout, snap, rel, obj):
                continue
            why = "original; its thumbnails exist"
            if c.originals_min_age_days:
                why += f" and it is older than {_days(c.originals_min_age_days)}"
            add(Deletion(sb, key, why, obj.size))

    for key, obj in snap.thumbs.items():
        rel = layout.rel_of_thumb_key(key)
        if rel is None or not source_rels_of(layout, rel):
            continue
        if c.delete_pulled_thumbnails:
            local = snap.local_thumbs.get(rel)
            if local is not None and local.size == obj.size:
                add(Deletion(tb, key, "thumbnail; pulled (local copy has the same size)", obj.size, local_copy=True))
        if c.thumbnails_max_age_days and age_rules and _age(now, obj.modified) >= timedelta(days=c.thumbnails_max_age_days):
            add(Deletion(tb, key, f"thumbnail older than {_days(c.thumbnails_max_age_days)}", obj.size))

    if c.delete_orphans:
        for d in select_orphans(layout, snap, tb, recorded_source):
            add(d)

    if c.abort_multipart_after_hours and age_rules:
        limit = timedelta(hours=c.abort_multipart_after_hours)
        for up in snap.uploads:
            if _age(now, up.initiated) >= limit:
                hours = math.floor(_age(now, up.initiated).total_seconds() / 3600)
                add(Deletion(up.bucket, up.key, f"incomplete multipart upload started {hours} h ago", 0, upload_id=up.upload_id))
    return list(out.values())


def thumbnails_done(layout: Layout, snap: Snapshot, rel: str, source: Obj) -> bool:
    """Every size has a thumbnail made after this version of the source: in the bucket, or pulled locally."""
    made_after = source.modified.timestamp() - MTIME_SLACK
    for size in layout.sizes:
        trel = layout.thumb_rel(rel, size)
        remote = snap.thumbs.get(layout.thumb_prefix + trel)
        if remote is not None and remote.modified.timestamp() >= made_after:
            continue
        local = snap.local_thumbs.get(trel)
        if local is not None and local.mtime >= made_after:
            continue
        return False
    if layout.wants_preview(rel):
        # The preview is made after the poster, from the original: never delete the original before it exists.
        prel = layout.preview_rel(rel)
        remote = snap.thumbs.get(layout.thumb_prefix + prel)
        local = snap.local_thumbs.get(prel)
        fresh_remote = remote is not None and remote.modified.timestamp() >= made_after
        return fresh_remote or (local is not None and local.mtime >= made_after)
    return True


def select_orphans(layout: Layout, snap: Snapshot, bucket: str, recorded_source: Callable[[str], str | None]) -> list[Deletion]:
    """Thumbnails and failure markers whose original is gone from the source bucket.

    Names alone pick the candidates (no source that could produce the name is
    listed); the thumbnail's own ``source-key`` metadata must then confirm both
    that thumbdrop wrote it and that its source is gone.
    """
    out: list[Deletion] = []
    for key, obj in snap.thumbs.items():
        marker_rel = layout.rel_of_failure_key(key)
        if marker_rel is not None:
            if (
                layout.rel_of_source_key(layout.source_key(marker_rel)) is not None
                and layout.source_key(marker_rel) not in snap.source
            ):
                out.append(Deletion(bucket, key, "failure marker of a deleted original", obj.size))
            continue
        rel = layout.rel_of_thumb_key(key)
        if rel is None:
            continue
        sources = [layout.source_key(r) for r in source_rels_of(layout, rel)]
        if not sources or any(s in snap.source for s in sources):
            continue
        recorded = recorded_source(key)
        if recorded is None or recorded in snap.source or layout.rel_of_source_key(recorded) is None:
            continue  # not written by thumbdrop for this layout, or its source is there after all
        out.append(Deletion(bucket, key, f"orphan: its original {recorded} is gone", obj.size))
    return out


# --- the mass-delete guard --------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One place the guard watches: a bucket's prefix, or the local thumbnails folder."""

    label: str
    total: int
    selected: int

    @property
    def fraction(self) -> float:
        return self.selected / self.total if self.total else 0.0


def scopes(cfg: Config, snap: Snapshot, deletions: list[Deletion], listed: set[str]) -> list[Scope]:
    """Objects (or local thumbnails) listed vs selected for deletion, per scope that was looked at."""
    # Thumbnails that exist locally are not at risk: counting them would trip the guard on every
    # run of delete_pulled_thumbnails, which keeps the prefix nearly empty by design.
    objects = [d for d in deletions if d.upload_id is None and not d.local_copy]
    sb, sp, tb, tp = cfg.source.bucket, cfg.source.prefix, cfg.thumbnails.bucket, cfg.thumbnails.prefix
    out = []
    if "source" in listed:
        n = sum(1 for d in objects if d.bucket == sb and d.key.startswith(sp) and d.key in snap.source)
        out.append(Scope(f"s3://{sb}/{sp}", len(snap.source), n))
    if "thumbs" in listed:
        n = sum(1 for d in objects if d.bucket == tb and d.key.startswith(tp) and d.key in snap.thumbs)
        out.append(Scope(f"s3://{tb}/{tp}", len(snap.thumbs), n))
    if "local" in listed:
        root = os.path.join(cfg.local.thumbnails_dir, "")
        n = sum(1 for d in objects if d.bucket == LOCAL and d.move_to is None and d.key.startswith(root))
        out.append(Scope(f"{cfg.local.thumbnails_dir} {LOCAL_SCOPE}", len(snap.local_thumbs), n))
    return out


def guard_problems(cfg: Config, checked: list[Scope]) -> list[str]:
    """Scopes where the run would delete more than ``cleanup.max_delete_fraction``."""
    limit = cfg.cleanup.max_delete_fraction
    return [
        f"would delete {s.selected} of the {s.total} objects under {s.label} ({s.fraction:.0%}), more than "
        f"cleanup.max_delete_fraction ({limit:g})"
        for s in checked
        if s.selected and s.fraction > limit
    ]
