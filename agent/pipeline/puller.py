"""The puller role: thumbnail-bucket events -> files under local.thumbnails_dir.

Writes are atomic (temp file in the same folder, fsync, rename), so a reader
never sees half a thumbnail. A local copy that already matches (size and the
object's mtime, or size and MD5 = ETag) is left alone. Keys that would land
outside the folder are refused by ``keys.safe_local_path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from agent.cloud.clients import Backend
from agent.cloud.errors import call, translate
from agent.cloud.events import ObjectEvent, describe_message, parse_body
from agent.cloud.objects import download
from agent.config.model import Config
from agent.errors import ItemError, ObjectGoneError, ThumbdropError
from agent.pipeline.bandwidth import limiter_for, throttle
from agent.pipeline.keys import Layout, ThumbOutput, is_probe, not_ours, safe_local_path
from agent.pipeline.markers import done_since as stale_when
from agent.state.files import TMP_MARK, abandoned_temp_file, atomic_file
from agent.state.journal import Journal
from agent.state.status import Status

log = logging.getLogger(__name__)
# mkstemp creates 0600 files; thumbnails get the usual mode the umask gives (read once, at import).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
CHUNK = 1 << 20
_UTIME_FD = os.utime in os.supports_fd  # not on Windows: there the file is stamped right after its rename
PLACE_WAIT = 60.0  # seconds a pull waits for the hand-over to place the same thumbnail


class ThumbnailPuller:
    """A Role with no threads of its own: its consumer, the hand-over and the reconcile run its pulls."""

    name = "puller"

    def __init__(self, cfg: Config, backend: Backend, status: Status, journal: Journal | None = None) -> None:
        self.journal = journal
        # Set by the agent while remove_orphan_local_thumbnails is on: thumb rel -> its source was deleted here.
        self.deleted_locally: Callable[[str], bool] | None = None
        self.cfg = cfg
        self.s3 = backend.s3
        self.layout = Layout.of(cfg)
        self.root = Path(cfg.local.thumbnails_dir)
        self.status = status
        self.limiter = limiter_for(cfg.backend.max_bandwidth)
        # Thumbnails this process's worker is making and will place itself (the hand-over): a pull event for one
        # waits for that instead of downloading it a second time.
        self._placing: dict[str, threading.Event] = {}
        self._placing_lock = threading.Lock()

    def start(self) -> None:
        pass

    def pause(self) -> None:
        """Its consumer (and the poller) pause; a pull in hand finishes."""

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> bool:
        return True

    def expect(self, keys: list[str]) -> None:
        with self._placing_lock:
            for key in keys:
                self._placing.setdefault(key, threading.Event())

    def release(self, keys: list[str]) -> None:
        with self._placing_lock:
            events = [self._placing.pop(key, None) for key in keys]
        for ev in events:
            if ev is not None:
                ev.set()

    def handle_message(self, msg: dict[str, Any]) -> None:
        errors: list[ItemError] = []
        foreign: list[str] = []
        for event in parse_body(msg["Body"]):
            if event.bucket != self.cfg.thumbnails.bucket or not event.created:
                if event.bucket != self.cfg.thumbnails.bucket:
                    log.info("ignored event for bucket %s (not thumbnails.bucket)", event.bucket)
                    self.status.count("ignored")
                continue
            failed_rel = self.layout.rel_of_failure_key(event.key)
            if failed_rel is not None:
                self._report_failure(event.key, failed_rel)
                continue
            rel = self.layout.rel_of_thumb_key(event.key)
            if rel is None and is_probe(event.key):
                log.debug("ignored event for %s (a 'thumbdrop doctor' probe)", event.key)
                continue
            if rel is None and self.layout.foreign_thumb_key(event.key):
                foreign.append(event.key)
                continue
            if rel is None:
                log.info("ignored event for %s (not a thumbnail)", event.key)
                self.status.count("ignored")
                continue
            try:
                self.pull(event.key, rel, size=event.size, etag=event.etag)
            except ItemError as exc:
                self.status.fail(event.key, str(exc), "puller")
                log.error("failed %s: %s", event.key, exc)
                errors.append(exc)
        if errors:
            raise errors[0]
        if foreign:
            raise not_ours(foreign[0], "thumbnails.prefix", self.layout.thumb_prefix, "queues.pull")

    def describe(self, msg: dict[str, Any]) -> str:
        return describe_message(msg)

    def _report_failure(self, key: str, rel: str) -> None:
        try:
            resp = call(f"read {key}", self.s3.get_object, Bucket=self.cfg.thumbnails.bucket, Key=key)
            marker = json.loads(resp["Body"].read(65536))
            reason = str(marker.get("reason", "unknown reason"))
            version = str(marker.get("source_sha256") or "") or None
        except (ThumbdropError, ValueError, AttributeError):
            return  # cleared meanwhile, or not ours: nothing to report
        self.status.fail(self.layout.source_key(rel), reason, "worker", once=True, version=version)

    # --- one thumbnail --------------------------------------------------------------

    def pull(self, key: str, rel: str, *, size: int | None = None, etag: str | None = None, mtime: float | None = None) -> str:
        """Download one thumbnail unless the local copy matches; returns 'pulled' or 'skipped'."""
        path = safe_local_path(self.root, rel)
        if self.deleted_locally is not None and not path.exists() and self.deleted_locally(rel):
            # Made elsewhere (or before a sizes change) for a photo the user deleted here: it stays away.
            log.debug("skipped %s: its source was deleted locally (remove_orphan_local_thumbnails)", key)
            self.status.count("skipped")
            return "skipped"
        with self._placing_lock:
            placing = self._placing.get(key)
        if placing is not None:
            placing.wait(PLACE_WAIT)
        if self._journal_matches(path, key, size, etag) or _matches(path, size, etag, mtime):
            self.status.count("skipped")
            return "skipped"
        self.status.begin("pulling")
        started = time.monotonic()
        try:
            try:
                resp = call(f"download {key}", self.s3.get_object, Bucket=self.cfg.thumbnails.bucket, Key=key)
            except ObjectGoneError:
                log.info("skipped %s: deleted from the bucket before it could be pulled", key)
                return "skipped"
            stamp = _timestamp(resp.get("LastModified"))
            try:
                self._write_atomic(path, stamp, lambda out: self._download(key, resp, out))
            except OSError as exc:  # the local disk (full, read-only, permissions), not the backend
                raise ItemError(
                    f"cannot write {path}: {exc.strerror or exc}",
                    hint="free space or fix the permissions of local.thumbnails_dir; it is pulled again at the next rescan",
                ) from None
        finally:
            self.status.end("pulling")
        self.status.done("pull", time.monotonic() - started, int(resp.get("ContentLength") or 0))
        self.status.pulled(str(path))
        source = (resp.get("Metadata") or {}).get("source-key")
        if source:
            # A thumbnail of this source exists now: a failure of an older version of it (relayed from its
            # marker, perhaps from a worker elsewhere) is over.
            self.status.resolved(unquote(source), "worker")
        if self.journal is not None:
            self.journal.record_pull(str(path), key, str(resp.get("ETag", "")).strip('"'), int(resp.get("ContentLength") or 0))
        log.info("pulled %s -> %s", key, path)
        return "pulled"

    def _journal_matches(self, path: Path, key: str, size: int | None, etag: str | None) -> bool:
        """This very object was written to ``path`` (journal) and the file still has its size: no MD5 to compare."""
        if self.journal is None or size is None or not etag:
            return False
        try:
            if self.journal.pull(str(path)) != (key, etag, size):
                return False
            return path.stat().st_size == size
        except Exception:  # noqa: BLE001 - sqlite (a name it cannot hold, a closed journal) or the file: compare the usual way
            return False

    def place(self, out: ThumbOutput, data: bytes) -> str:
        """The in-process hand-over: write a thumbnail this process's worker just uploaded, from its bytes.

        The same bytes as the object, so no download. Stamped with the time now (the object's LastModified is
        not known without a request): the journal records what it is, so a later pull of it is a skip.
        """
        path = safe_local_path(self.root, out.rel)
        started = time.monotonic()
        try:
            self._write_atomic(path, None, lambda f: f.write(data))
        except OSError as exc:
            raise ItemError(
                f"cannot write {path}: {exc.strerror or exc}",
                hint="free space or fix the permissions of local.thumbnails_dir; it is pulled again at the next rescan",
            ) from None
        self.status.done("pull", time.monotonic() - started, out.size)
        self.status.pulled(str(path))
        if self.journal is not None:
            self.journal.record_pull(str(path), out.key, out.etag, out.size)
        log.info("pulled %s -> %s (made here)", out.key, path)
        return "pulled"

    def _write_atomic(self, path: Path, stamp: float | None, write: Callable[[IO[bytes]], object]) -> None:
        """``write`` the file's bytes to ``path``, whole or not at all, stamped with ``stamp`` (or now)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ItemError(f"cannot create the folder for {path}: a file is in the way ({exc})") from None
        # The writer's pid in the temp name (agent.state.files): a reconcile elsewhere (a reload, a 'sync' next
        # to 'run') removes only temp files whose writer is gone.
        with atomic_file(path, "wb", perms=FILE_MODE, fsync=True) as out:
            write(out)
            if stamp is not None and _UTIME_FD:
                out.flush()
                os.utime(out.fileno(), (stamp, stamp))  # before the rename: never seen with another time
        if stamp is not None and not _UTIME_FD:
            os.utime(path, (stamp, stamp))

    def _download(self, key: str, resp: Any, out: IO[bytes]) -> None:
        """The body of ``resp`` (a GET of ``key``) into ``out``; read again if it breaks off."""
        try:
            download(
                self.s3,
                self.cfg.thumbnails.bucket,
                key,
                out,
                action=f"download {key}",
                on_chunk=lambda n: throttle(self.limiter, n),
                first=resp,
            )
        finally:
            body = resp.get("Body")
            if body is not None:  # not read: the write failed before
                body.close()

    # --- reconcile --------------------------------------------------------------------

    def reconcile(self, *, only_rels: set[str] | None = None) -> dict[str, int]:
        """Pull every thumbnail in the bucket missing or different locally (lost events included)."""
        self.remove_stale_temp_files()
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.cfg.thumbnails.bucket, Prefix=self.layout.thumb_prefix))
        counts = {"pulled": 0, "skipped": 0, "failed": 0}

        def one(item: tuple[str, str, int, str, float]) -> None:
            key, rel, size, etag, mtime = item
            try:
                counts[self.pull(key, rel, size=size, etag=etag, mtime=mtime)] += 1
            except ItemError as exc:
                counts["failed"] += 1
                self.status.fail(key, str(exc), "puller")
                log.error("failed %s: %s", key, exc)

        # Page by page (<= 1000 keys): a bucket of 100,000 thumbnails is never held at once.
        with ThreadPoolExecutor(self.cfg.transfer.concurrency, thread_name_prefix="puller-reconcile") as pool:
            while True:
                with translate("list the thumbnail bucket"):
                    page = next(pages, None)
                if page is None:
                    break
                todo: list[tuple[str, str, int, str, float]] = []
                for obj in page.get("Contents", []):
                    rel = self.layout.rel_of_thumb_key(obj["Key"])
                    if rel is None or (only_rels is not None and rel not in only_rels):
                        continue
                    todo.append((obj["Key"], rel, obj["Size"], str(obj["ETag"]).strip('"'), obj["LastModified"].timestamp()))
                list(pool.map(one, todo))
        return counts

    def remove_stale_temp_files(self) -> int:
        """Temp files a crash left behind are never a thumbnail: remove them, never one a live writer is filling."""
        removed = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if TMP_MARK in name:
                    path = os.path.join(dirpath, name)
                    if abandoned_temp_file(path, name, now):
                        with contextlib.suppress(OSError):
                            os.unlink(path)
                            removed += 1
        return removed


def done_since(cfg: Config, backend: Backend) -> Callable[[dict[str, Any]], bool]:
    """For the pull dead-letter queue: whether a message's every thumbnail is now in the local folder as it is in
    the bucket (pulled by a later event or a reconcile), so the message is stale."""
    layout = Layout.of(cfg)
    root = Path(cfg.local.thumbnails_dir)
    s3 = backend.s3

    def done(event: ObjectEvent, rel: str) -> bool:
        try:
            path = safe_local_path(root, rel)
            head = call(f"read {event.key}", s3.head_object, Bucket=cfg.thumbnails.bucket, Key=event.key)
        except ItemError:
            return False
        stamp = _timestamp(head.get("LastModified"))
        return _matches(path, int(head.get("ContentLength", -1)), str(head.get("ETag", "")).strip('"'), stamp)

    return stale_when(lambda e: layout.rel_of_thumb_key(e.key) if e.bucket == cfg.thumbnails.bucket else None, done)


def _matches(path: Path, size: int | None, etag: str | None, mtime: float | None) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if size is not None and st.st_size != size:
        return False
    if mtime is not None and abs(st.st_mtime - mtime) < 0.001:
        return True
    if etag and "-" not in etag:
        with contextlib.suppress(OSError):
            return _md5(path) == etag
    return False


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _timestamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None
