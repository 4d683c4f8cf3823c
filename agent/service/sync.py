"""``sync``: one shot of the whole pipeline for the images in the watch folders, streamed.

1. Local first: every image whose thumbnails are in the local folder and newer than it is done, with no
   request at all (a no-op sync needs no backend).
2. For the rest: one listing of each bucket, then each image flows on its own: uploaded (unless the bucket has
   this content), handed in-process to this process's worker as soon as it is up, and its thumbnails written to
   the local folder as soon as they are made (``pipeline.handoff``). An image already up with current
   thumbnails is only pulled; one with a current failure marker is reported.
3. It ends the moment every image is accounted for: thumbnailed and pulled, failed with a reason, or left
   unfinished by --timeout / Ctrl-C. The S3 events of what it did still reach the queues; they are
   redundant and whoever meets them (a running consumer, the next ``run``) skips them by the journal
   without an S3 call. ``sync`` never waits on them.

Without the worker role it waits for the fleet's workers (a listing of the thumbnail bucket every few
seconds); without the puller role an image is done once thumbnailed (or, uploader only, once up).
With a running agent on the same state dir, the CLI asks that agent to run this (``Agent.start_sync``) on its
own parts instead of being a second uploader and worker beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.model import Config
from agent.errors import ThumbdropError
from agent.pipeline.keys import Layout, ThumbOutput, printable
from agent.pipeline.uploader import LocalFile, Uploader, UploadOutcome
from agent.service.sync_ledger import Ledger, Progress, SyncResult
from agent.state.journal import Journal, UploadRecord, keep_verdicts
from agent.state.status import Status

if TYPE_CHECKING:
    from agent.cloud.clients import Backend
    from agent.pipeline.handoff import Handoff
    from agent.pipeline.puller import ThumbnailPuller
    from agent.pipeline.worker import ThumbnailWorker

log = logging.getLogger(__name__)
FLEET_POLL_SECONDS = 3.0  # without a local worker: how often to look for the fleet's thumbnails


@dataclass
class Parts:
    """A running agent's own parts, for a sync it runs on request: one uploader, worker and journal per host."""

    journal: Journal
    uploader: Uploader | None
    worker: ThumbnailWorker | None
    puller: ThumbnailPuller | None


BackendSource = Callable[[], AbstractContextManager["Backend"]]


class Sync(Ledger):
    """The streamed sync (see the module docstring); its bookkeeping is the ``Ledger`` it extends."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend | BackendSource,
        state_dir: Path,
        *,
        timeout: float | None,
        progress: Progress,
        stop: threading.Event,
        parts: Parts | None = None,
        status: Status | None = None,
    ) -> None:
        """``backend``: a Backend, or a callable opening one (only called when there is something to do)."""
        super().__init__(cfg.roles, timeout=timeout, progress=progress, stop=stop)
        self.cfg = cfg
        self._backend_source: BackendSource = (
            backend if callable(backend) else (lambda b=backend: contextlib.nullcontext(b))  # type: ignore[misc]
        )
        self.state_dir = state_dir
        self.parts = parts
        self.layout = Layout.of(cfg)
        self.status = status or Status(cfg.roles, one_shot=True)
        self._sources: dict[str, tuple[int, str, datetime]] = {}
        self._thumbs: dict[str, tuple[int, str, datetime]] = {}
        self._handoff: Handoff | None = None
        self._s3: Any = None
        self._uploaded: set[str] = set()  # rels this sync uploaded: new content, so new thumbnails, whoever makes them

    # --- the whole run ---------------------------------------------------------------------

    def run(self) -> SyncResult:
        if self.parts:
            return self._run()  # inside a running agent: its journal keeps the verdicts already
        # As run does: the worker's verdict on a file's content goes to the journal, so an unchanged bad file is
        # not uploaded again by the next sync (the embedded backend forgets its buckets and markers in between).
        verdicts = Journal(self.state_dir / "journal.sqlite3")
        keep_verdicts(self.status, verdicts)
        try:
            return self._run()
        finally:
            self.status.on_failure = self.status.on_resolved = None
            verdicts.close()

    def _run(self) -> SyncResult:
        journal = self.parts.journal if self.parts else Journal(self.state_dir / "journal.sqlite3")
        uploader = self.parts.uploader if self.parts and self.parts.uploader else Uploader(self.cfg, None, self.status, journal)
        own_uploader = not (self.parts and self.parts.uploader)
        try:
            files = list(uploader.scan())
            self.result.files = len(files)
            local = "puller" in self.roles
            for lf in files:
                if local and uploader.up_to_date_locally(lf):
                    self._pass(lf.rel, *self.phases())
                else:
                    self._open[lf.rel] = lf
            self._show_progress(force=True)
            if self._open and not self._late():
                with self._backend_source() as backend:
                    self._stream(backend, journal, uploader, own_uploader)
            if self._open and (self.result.timed_out or self.result.interrupted or self._late()):
                self.result.unfinished = sorted(self.layout.source_key(rel) for rel in self._open)
            self._show_progress(force=True)
            # One name per item, shown as everywhere else: the status keeps names escaped, the steps here raw keys.
            failures: dict[str, str] = {}
            for name, reason in self.result.failures.items():
                failures.setdefault(printable(name), printable(reason))
            self.result.failures = failures
            self.result.unfinished = sorted({printable(n) for n in self.result.unfinished} - set(failures))
        finally:
            if own_uploader:
                uploader.stop()
                uploader.close(wait=not (self.result.timed_out or self.result.interrupted))
            if not self.parts:
                journal.close()
        return self.result

    def _stream(self, backend: Backend, journal: Journal, uploader: Uploader, own_uploader: bool) -> None:
        from agent.pipeline.handoff import Handoff
        from agent.pipeline.puller import ThumbnailPuller
        from agent.pipeline.worker import ThumbnailWorker
        from agent.service.runtime import ensure_resources, worker_concurrency

        self._s3 = backend.s3
        if own_uploader:
            ensure_resources(self.cfg, backend)
            uploader.attach(backend)
        if self._late():
            return
        if own_uploader:
            uploader.abort_stale_multipart(ours_too=False)  # an agent running meanwhile may own recent ones
        self._sources = _listing(backend.s3, self.cfg.source.bucket, self.cfg.source.prefix, "list the source bucket")
        if {"worker", "puller"} & self.roles:
            self._thumbs = _listing(
                backend.s3, self.cfg.thumbnails.bucket, self.cfg.thumbnails.prefix, "list the thumbnail bucket"
            )
        worker = puller = None
        own_worker = False
        if "worker" in self.roles:
            worker = self.parts.worker if self.parts and self.parts.worker else None
            if worker is None:
                worker = ThumbnailWorker(self.cfg, backend, self.status, self.state_dir / "tmp", journal)
                # sync uploads only settled files and reports what it finds: a truncated file is reported, not waited for.
                worker.incomplete_grace = 0.0
                own_worker = True
        if "puller" in self.roles:
            puller = self.parts.puller if self.parts and self.parts.puller else None
            puller = puller or ThumbnailPuller(self.cfg, backend, self.status, journal)
        self._handoff = Handoff(
            worker,
            puller,
            worker_concurrency=worker_concurrency(self.cfg),
            pull_concurrency=self.cfg.transfer.concurrency,
            listener=self._on_stage,
        )
        uploader.add_listener(self._on_upload)
        try:
            with self._cond:
                todo = sorted(self._open.values(), key=lambda lf: lf.rel)
            for lf in todo:
                source = self._sources.get(self.layout.source_key(lf.rel))
                uploader.submit(lf, source[:2] if source else None)
                # None: the running agent's uploader has it queued or uploading; its outcome reaches _on_upload too.
            self._wait(backend)
        finally:
            uploader.remove_listener(self._on_upload)
            late = self.result.timed_out or self.result.interrupted
            if late and own_uploader:
                uploader.stop()  # uploads still settling give up; in-flight requests finish
            self._handoff.close(wait=not late)
            if own_worker and worker is not None:
                worker.close()

    def _wait(self, backend: Backend) -> None:
        next_fleet_poll = time.monotonic() + FLEET_POLL_SECONDS
        while True:
            with self._cond:
                if not self._open:
                    return
                self._cond.wait(timeout=min(0.5, max(0.0, self.deadline - time.monotonic())))
            self._show_progress()
            if self._late():
                return
            if self._waiting and time.monotonic() >= next_fleet_poll:
                self._poll_fleet(backend)
                next_fleet_poll = time.monotonic() + FLEET_POLL_SECONDS

    # --- outcomes ------------------------------------------------------------------------------

    def _on_upload(self, lf: LocalFile, outcome: UploadOutcome, rec: UploadRecord | None, reason: str) -> None:
        rel = lf.rel
        with self._cond:
            if rel not in self._open or rel in self._passed["upload"]:
                return  # not ours (the agent's uploader serves every file), or already past this stage
        if outcome is UploadOutcome.UPLOADED:
            with self._cond:
                self.result.uploaded += 1
                self._uploaded.add(rel)
        if outcome is UploadOutcome.BUSY:
            return  # the upload running in another thread tells its own outcome
        if outcome is UploadOutcome.GONE:
            self._done(rel)
            return
        if outcome is UploadOutcome.FAILED:
            self._fail(rel, str(lf.path), reason or "not uploaded")
            return
        if outcome is UploadOutcome.KNOWN_BAD:
            # Not uploaded again: the worker refused these very bytes before (the journal's verdict, which the
            # uploader put back in the status). Reported again, as every later sync must until the file changes.
            key = self.layout.source_key(rel)
            known = next((f.reason for f in list(self.status.failures) if f.name == printable(key)), "")
            self._fail(rel, key, known or "failed before with the same content")
            return
        if outcome is UploadOutcome.POSTPONED:
            if not self._late():
                self.result.failures.setdefault("(upload)", "backend unreachable; some files were not uploaded")
                self._done(rel)
            return
        self._pass(rel, "upload")
        if rec is None:  # thumbnailed locally meanwhile
            self._done(rel)
            return
        self._next_after_upload(rel, rec, uploaded=outcome is UploadOutcome.UPLOADED)

    def _next_after_upload(self, rel: str, rec: UploadRecord, *, uploaded: bool) -> None:
        from agent.pipeline.worker import Known

        assert self._handoff is not None
        if not ({"worker", "puller"} & self.roles):
            self._done(rel)  # an uploader-only host: thumbnails are made and pulled elsewhere
            return
        source = self._sources.get(rec.key)
        marker = self._thumbs.get(self.layout.failure_key(rel))
        thumbs = [self._thumbs.get(k) for k in self.layout.thumb_keys(rel)]
        if not uploaded and source is not None:
            if marker is not None and marker[2] >= source[2]:
                self._report_marker(rel)
                return
            if all(t is not None and t[2] >= source[2] for t in thumbs):
                self._pass(rel, "thumbnail")
                self._pull_listed(rel)
                return
        if "worker" not in self.roles:
            with self._cond:
                self._waiting[rel] = datetime.now(UTC) - timedelta(seconds=5)  # clock skew margin
            return
        self._handoff.thumbnail(rel, Known(rec.etag, rec.sha256, all(t is None for t in thumbs), marker is None))

    def _pull_listed(self, rel: str) -> None:
        if "puller" not in self.roles:
            self._done(rel)
            return
        assert self._handoff is not None
        outputs = []
        for size in self.layout.sizes:
            key = self.layout.thumb_key(rel, size)
            listed = self._thumbs.get(key)
            if listed is not None:
                outputs.append(ThumbOutput(key, self.layout.thumb_rel(rel, size), listed[0], listed[1], None))
        self._handoff.pull(rel, outputs)

    def _on_stage(self, rel: str, stage: str, result: str, reason: str) -> None:
        key = self.layout.source_key(rel)
        if result == "failed":
            self._fail(rel, key, reason)
        elif result == "gone":
            self._done(rel)
        elif stage == "thumbnail":
            with self._cond:
                # "skipped" for a file this sync uploaded: the running agent's event path made them meanwhile.
                if result == "thumbnailed" or rel in self._uploaded:
                    self.result.thumbnailed += 1
            self._pass(rel, "thumbnail")
            if "puller" not in self.roles:
                self._done(rel)
        else:
            if result == "pulled":
                with self._cond:
                    self.result.pulled += 1
            self._done(rel)

    def _poll_fleet(self, backend: Backend) -> None:
        """No local worker: list the thumbnail bucket and pull what the fleet's workers have made."""
        try:
            self._thumbs = _listing(
                backend.s3, self.cfg.thumbnails.bucket, self.cfg.thumbnails.prefix, "list the thumbnail bucket"
            )
        except ThumbdropError as exc:
            log.warning("sync: cannot look for the fleet's thumbnails yet: %s", exc)
            return
        with self._cond:
            waiting = list(self._waiting.items())
        for rel, since in waiting:
            marker = self._thumbs.get(self.layout.failure_key(rel))
            thumbs = [self._thumbs.get(k) for k in self.layout.thumb_keys(rel)]
            if marker is not None and marker[2] >= since:
                self._waiting.pop(rel, None)
                self._report_marker(rel)
            elif all(t is not None and t[2] >= since for t in thumbs):
                self._waiting.pop(rel, None)
                self._pass(rel, "thumbnail")
                self._pull_listed(rel)

    def _report_marker(self, rel: str) -> None:
        from agent.cloud.errors import call

        key = self.layout.source_key(rel)
        try:
            resp = call(
                "read a failure marker", self._s3.get_object, Bucket=self.cfg.thumbnails.bucket, Key=self.layout.failure_key(rel)
            )
            reason = str(json.loads(resp["Body"].read(65536)).get("reason", "failed"))
        except (ThumbdropError, ValueError):
            reason = "failed (reason unavailable)"
        self._fail(rel, key, reason)


def _listing(s3: Any, bucket: str, prefix: str, action: str) -> dict[str, tuple[int, str, datetime]]:
    """key -> (Size, ETag, LastModified) under ``prefix``: one paginated listing (1,000 keys a request)."""
    from agent.cloud.errors import translate

    out: dict[str, tuple[int, str, datetime]] = {}
    with translate(action):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'), obj["LastModified"])
    return out


class SyncJob:
    """A sync a running agent does on request (``thumbdrop sync`` beside ``run``), on its own thread."""

    def __init__(self, job_id: int, sync: Sync) -> None:
        self.id = job_id
        self.sync = sync
        self.done = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"agent-sync-{job_id}", daemon=True)

    def _run(self) -> None:
        try:
            self.sync.run()
        except ThumbdropError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the client is waiting: tell it, and log the bug in full
            log.exception("sync requested through the control interface failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def state(self, wait: float) -> dict[str, Any]:
        """Progress and, once done, the result; waits up to ``wait`` seconds for the end first."""
        self.done.wait(max(0.0, min(wait, 5.0)))
        done = self.done.is_set()
        return {
            "done": done,
            "progress": self.sync.progress_snapshot(),
            "result": self.sync.result.as_dict() if done and self.error is None else None,
            "error": self.error,
        }
