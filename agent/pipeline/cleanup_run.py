"""One cleanup run: snapshot the buckets and folders, select (``cleaner``), guard, delete in batches.

``plan_cleanup`` does every read and every decision; ``execute`` only carries a
plan out, so ``--dry-run`` prints exactly what a real run would delete. The
thumbnail bucket is listed before the source bucket: a thumbnail can only exist
after its original, so a source uploaded during the run cannot look missing.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from agent.cloud.capabilities import degrade
from agent.cloud.clients import Backend
from agent.cloud.errors import call, translate
from agent.config.cleanup_checks import policy_problems
from agent.config.model import Config
from agent.errors import (
    BackendError,
    ConfigError,
    MassDeleteError,
    ObjectGoneError,
    ResourceMissingError,
    ThumbdropError,
    UnsupportedError,
)
from agent.pipeline.cleaner import LOCAL, Deletion, Obj, Scope, Snapshot, Upload, guard_problems, needs, scopes, select_remote
from agent.pipeline.cleaner_local import UploadedFrom, select_local, walk_thumbnails
from agent.pipeline.cleaner_sizes import select_unlisted_sizes
from agent.state.watch_folders import AcceptedId, RecordedUnder
from agent.text import printable

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # DeleteObjects takes at most 1000 keys


@dataclass
class Plan:
    deletions: list[Deletion]
    scopes: list[Scope]
    problems: list[str]  # mass-delete guard: a real run stops unless forced
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.deletions)


@dataclass
class Outcome:
    done: list[Deletion] = field(default_factory=list)
    errors: list[tuple[Deletion, str]] = field(default_factory=list)
    stopped: bool = False  # the agent is stopping: the rest waits for the next run


# --- reading ------------------------------------------------------------------------------------


def _objects(backend: Backend, bucket: str, prefix: str, stop: threading.Event | None, notes: list[str]) -> dict[str, Obj]:
    out: dict[str, Obj] = {}
    paginator = backend.s3.get_paginator("list_objects_v2")
    try:
        with translate(f"list s3://{bucket}/{prefix}"):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    if o["Key"].startswith(prefix):  # a store that ignores Prefix must not widen the scope
                        out[o["Key"]] = Obj(o["Key"], int(o["Size"]), o["LastModified"])
                if stop is not None and stop.is_set():
                    break
    except ResourceMissingError:
        notes.append(f"bucket {bucket} does not exist: nothing to prune there")
    return out


def _uploads(backend: Backend, bucket: str, prefix: str) -> list[Upload]:
    out: list[Upload] = []
    paginator = backend.s3.get_paginator("list_multipart_uploads")
    try:
        with translate(f"list incomplete uploads in s3://{bucket}/{prefix}"):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for u in page.get("Uploads", []):
                    if u["Key"].startswith(prefix):
                        out.append(Upload(bucket, u["Key"], u["UploadId"], u["Initiated"]))
    except ResourceMissingError:
        pass  # reported by the object listing, or nothing to abort
    except UnsupportedError:
        degrade("multipart listing (ListMultipartUploads)", "cleanup cannot find unfinished multipart uploads to abort")
    return out


def take_snapshot(cfg: Config, backend: Backend, parts: set[str], stop: threading.Event | None, notes: list[str]) -> Snapshot:
    snap = Snapshot()
    if "thumbs" in parts:
        snap.thumbs = _objects(backend, cfg.thumbnails.bucket, cfg.thumbnails.prefix, stop, notes)
    if "source" in parts:
        snap.source = _objects(backend, cfg.source.bucket, cfg.source.prefix, stop, notes)
    # The embedded backend (moto) dates every multipart upload 2010-11-10: each would look stale, and the
    # uploader's own upload in progress would be aborted. It keeps nothing across restarts anyway.
    if "uploads" in parts and not backend.local:
        snap.uploads = _uploads(backend, cfg.source.bucket, cfg.source.prefix)
        snap.uploads += _uploads(backend, cfg.thumbnails.bucket, cfg.thumbnails.prefix)
    if "local" in parts:
        snap.local_thumbs = walk_thumbnails(Path(cfg.local.thumbnails_dir))
    return snap


def recorded_source(backend: Backend, bucket: str) -> Callable[[str], str | None]:
    """A lookup of the ``source-key`` metadata the worker writes on every thumbnail."""

    def lookup(key: str) -> str | None:
        try:
            head = call(f"read s3://{bucket}/{key}", backend.s3.head_object, Bucket=bucket, Key=key)
        except ObjectGoneError:
            return None
        value = head.get("Metadata", {}).get("source-key")
        return unquote(value) if value else None

    return lookup


# --- deciding -------------------------------------------------------------------------------------


def in_scope(cfg: Config, d: Deletion) -> bool:
    """The last check before anything is removed: inside the configured bucket/prefix or folders only."""
    if d.bucket == LOCAL:
        path = Path(d.key)
        roots = [Path(cfg.local.thumbnails_dir), *(Path(f) for f in cfg.watch.folders)]
        return any(root in path.parents for root in roots)
    sb, sp, tb, tp = cfg.source.bucket, cfg.source.prefix, cfg.thumbnails.bucket, cfg.thumbnails.prefix
    shared = sb == tb
    if d.bucket == sb and d.key.startswith(sp) and not (shared and d.key.startswith(tp)):
        return True
    return d.bucket == tb and d.key.startswith(tp) and not (shared and d.key.startswith(sp))


def plan_cleanup(
    cfg: Config,
    backend: Backend,
    *,
    now: datetime,
    uploaded_from: UploadedFrom | None = None,
    recorded_under: RecordedUnder | None = None,
    accepted: AcceptedId | None = None,
    stop: threading.Event | None = None,
) -> Plan:
    """Everything a run would delete, and whether the mass-delete guard would stop it. Deletes nothing."""
    problems = policy_problems(cfg)
    if problems:
        raise ConfigError(cfg.origin, problems)
    parts = needs(cfg)
    notes: list[str] = []
    snap = take_snapshot(cfg, backend, parts, stop, notes)
    lookup = recorded_source(backend, cfg.thumbnails.bucket)
    remote = select_remote(cfg, snap, now, recorded_source=lookup)
    if cfg.cleanup.remove_unlisted_sizes:
        remote += select_unlisted_sizes(cfg, snap, lookup)
    local, local_notes = select_local(
        cfg,
        snap,
        remote,
        uploaded_from=uploaded_from or (lambda _path: None),
        recorded_under=recorded_under,
        accepted=accepted,
    )
    seen: set[tuple[str, str, str | None]] = set()
    deletions = []
    for d in remote + local:
        if (d.bucket, d.key, d.upload_id) in seen:
            continue
        seen.add((d.bucket, d.key, d.upload_id))
        if not in_scope(cfg, d):
            raise BackendError(
                f"internal error: cleanup selected {d.bucket}:{d.key} outside the configured scope; nothing deleted"
            )
        deletions.append(d)
    checked = scopes(cfg, snap, deletions, parts)
    return Plan(deletions, checked, guard_problems(cfg, checked), notes + local_notes)


# --- doing ------------------------------------------------------------------------------------------


def execute(
    plan: Plan,
    cfg: Config,
    backend: Backend,
    *,
    force: bool = False,
    stop: threading.Event | None = None,
    batch_size: int = MAX_BATCH,
) -> Outcome:
    """Carry a plan out: DeleteObjects in batches, aborts, local moves and deletes; per-item errors collected."""
    if plan.problems and not force:
        raise MassDeleteError(plan.problems)
    batch_size = max(1, min(batch_size, MAX_BATCH))
    outcome = Outcome()
    by_bucket: dict[str, list[Deletion]] = {}
    for d in plan.deletions:
        if not in_scope(cfg, d):  # the plan may come from elsewhere (a test, a future caller): check again
            raise BackendError(f"refusing to delete {d.bucket}:{d.key}: outside the configured scope")
        if d.bucket != LOCAL and d.upload_id is None:
            by_bucket.setdefault(d.bucket, []).append(d)
    for bucket, items in by_bucket.items():
        for i in range(0, len(items), batch_size):
            if stop is not None and stop.is_set():
                outcome.stopped = True
                return outcome
            _delete_batch(backend, bucket, items[i : i + batch_size], outcome)
    for d in plan.deletions:
        if d.upload_id is not None:
            _abort(backend, d, outcome)
        elif d.bucket == LOCAL:
            error = _apply_local(cfg, d)
            if error:
                outcome.errors.append((d, error))
            else:
                outcome.done.append(d)
    return outcome


def _delete_batch(backend: Backend, bucket: str, batch: list[Deletion], outcome: Outcome) -> None:
    resp = call(
        f"delete {len(batch)} object(s) from {bucket}",
        backend.s3.delete_objects,
        Bucket=bucket,
        Delete={"Objects": [{"Key": d.key} for d in batch], "Quiet": True},
    )
    failed = {str(e.get("Key")): f"{e.get('Code', 'error')}: {e.get('Message', '')}".strip() for e in resp.get("Errors", [])}
    for d in batch:
        if d.key in failed:
            outcome.errors.append((d, failed[d.key]))
        else:
            outcome.done.append(d)


def _abort(backend: Backend, d: Deletion, outcome: Outcome) -> None:
    try:
        call(f"abort the upload of {d.key}", backend.s3.abort_multipart_upload, Bucket=d.bucket, Key=d.key, UploadId=d.upload_id)
    except ObjectGoneError:
        pass  # completed or aborted meanwhile: nothing left to free
    except UnsupportedError as exc:
        degrade("multipart abort (AbortMultipartUpload)", "cleanup cannot abort unfinished multipart uploads")
        outcome.errors.append((d, str(exc)))
        return
    except ThumbdropError as exc:
        if exc.kind == "transient":
            raise
        outcome.errors.append((d, str(exc)))
        return
    outcome.done.append(d)


def _apply_local(cfg: Config, d: Deletion) -> str | None:
    """Move or delete one local file; the reason it was left alone, or None."""
    path = Path(d.key)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None  # gone already: that is what we wanted
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if d.stamp is not None and st.st_mtime_ns != d.stamp:
        return "changed since it was selected; left alone"
    try:
        if d.move_to:
            dest = Path(d.move_to)
            if dest.exists():
                return f"not moved: {dest} already exists"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(dest))
        else:
            path.unlink()
    except OSError as exc:
        return f"{'move' if d.move_to else 'delete'} failed: {exc.strerror or exc}"
    # Each local file by name: a removal the user did not expect can be traced in the log.
    if d.move_to:
        log.info("cleanup: moved %s -> %s (%s)", printable(str(path)), printable(d.move_to), d.reason)
    else:
        log.info("cleanup: removed %s (%s)", printable(str(path)), d.reason)
    for root in (Path(cfg.local.thumbnails_dir), *(Path(f) for f in cfg.watch.folders)):
        if root in path.parents:
            _prune_empty_dirs(path.parent, root)
            break
    return None


def _prune_empty_dirs(folder: Path, root: Path) -> None:
    """Folders left empty by a delete or a move go too: in the thumbnails tree and in the watch folders
    (inbox_after_upload), never the root itself, never a folder with anything else in it."""
    while root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or not ours to remove): stop climbing
        folder = folder.parent


def summary(outcome: Outcome) -> str:
    size = sum(d.size for d in outcome.done)
    text = f"{len(outcome.done)} item(s), {size} bytes removed"
    return text + (f"; {len(outcome.errors)} failed" if outcome.errors else "")
