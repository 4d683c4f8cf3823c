"""``sync``: one shot of the whole pipeline for the images in the watch folders.

1. upload what is missing or changed (one listing of the source bucket);
2. thumbnail every image in scope whose thumbnails are missing or older than
   it (in-process worker, unless the worker role is off: then wait for the
   fleet's workers), and drain the events queue (idempotent skips);
3. pull every thumbnail missing locally, and drain the pull queue;
4. report: counts, and every failure by name with its reason.

Safe while ``run`` is running: every step is idempotent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.config.model import Config
from agent.errors import ItemError, ThumbdropError
from agent.pipeline.consumer import QueueConsumer
from agent.pipeline.keys import Layout, printable
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.uploader import Uploader
from agent.pipeline.worker import ThumbnailWorker
from agent.service.runtime import ensure_resources, queue_urls, worker_concurrency
from agent.state.journal import Journal, keep_verdicts
from agent.state.status import Status

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class SyncResult:
    files: int = 0
    uploaded: int = 0
    thumbnailed: int = 0
    pulled: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # name -> reason
    unfinished: list[str] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.unfinished and not self.timed_out and not self.interrupted

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "uploaded": self.uploaded,
            "thumbnailed": self.thumbnailed,
            "pulled": self.pulled,
            "failures": [{"name": k, "reason": v} for k, v in sorted(self.failures.items())],
            "unfinished": sorted(self.unfinished),
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
        }


class Sync:
    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        state_dir: Path,
        *,
        timeout: float | None,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.state_dir = state_dir
        self.deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        self.progress = progress
        self.stop = stop
        self.layout = Layout.of(cfg)
        self.status = Status(cfg.roles, one_shot=True)
        self.result = SyncResult()
        self._thumbnails_checked = False

    def _late(self) -> bool:
        if self.stop.is_set():
            self.result.interrupted = True
            return True
        if time.monotonic() >= self.deadline:
            self.result.timed_out = True
            return True
        return False

    def run(self) -> SyncResult:
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
        ensure_resources(self.cfg, self.backend)
        scope = self._upload()
        # An uploader-only host has nothing to wait for: thumbnails are made and pulled elsewhere.
        if not self._late() and ({"worker", "puller"} & set(self.cfg.roles)):
            self._thumbnail(scope)
        if not self._late() and "puller" in self.cfg.roles:
            self._pull()
        for f in self.status.failures:
            self.result.failures.setdefault(f.name, f.reason)
        if self.result.timed_out or self.result.interrupted:
            self._list_unfinished(scope)
        # One name per item, shown as everywhere else: the status keeps names escaped, the steps here raw keys.
        failures: dict[str, str] = {}
        for name, reason in self.result.failures.items():
            failures.setdefault(printable(name), printable(reason))
        self.result.failures = failures
        self.result.unfinished = sorted({printable(n) for n in self.result.unfinished} - set(failures))
        return self.result

    def _list_unfinished(self, scope: set[str]) -> None:
        """On --timeout, list every in-scope image not done yet, whichever step the deadline cut short."""
        if "puller" not in self.cfg.roles and self._thumbnails_checked:
            return  # without a puller, step 2 has listed what it left
        listed = set(self.result.unfinished) | set(self.result.failures)
        root = Path(self.cfg.local.thumbnails_dir)
        for rel in sorted(scope):
            key = self.layout.source_key(rel)
            if key in listed or printable(key) in listed:
                continue
            if "puller" in self.cfg.roles and all(_is_file(root / self.layout.thumb_rel(rel, s)) for s in self.layout.sizes):
                continue
            self.result.unfinished.append(key)

    # --- 1. uploads ------------------------------------------------------------------------

    def _upload(self) -> set[str]:
        journal = Journal(self.state_dir / "journal.sqlite3")
        uploader = Uploader(self.cfg, self.backend, self.status, journal)
        try:
            paths = {lf.rel: lf.path for lf in uploader.scan()}
            scope = set(paths)
            self.result.files = len(scope)
            uploader.abort_stale_multipart(ours_too=False)  # an agent running meanwhile may own recent ones
            futures = uploader.reconcile()
            done = 0
            pending = set(futures)
            while pending and not self._late():
                finished, pending = wait(pending, timeout=0.25)
                done += len(finished)
                self.progress("upload", done, len(futures))
            for fut in futures:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    outcome = fut.result()
                    if outcome == "uploaded":
                        self.result.uploaded += 1
                    elif outcome == "postponed":
                        self.result.failures.setdefault("(upload)", "backend unreachable; some files were not uploaded")
                    elif outcome == "gone":
                        pass
            if self._late():
                uploader.stop_event.set()  # uploads still settling give up; in-flight requests finish
            uploader.pool.shutdown(wait=not self._late(), cancel_futures=True)
            # The status names a file escaped (printable): compare it that way, or a name that is not UTF-8 stays in scope.
            refused = {f.name for f in self.status.failures}
            scope = {rel for rel in scope if printable(str(paths[rel])) not in refused}
        finally:
            journal.close()
        return scope

    # --- 2. thumbnails -------------------------------------------------------------------------

    def _thumbnail(self, scope: set[str]) -> None:
        urls = queue_urls(self.cfg, self.backend)
        worker = ThumbnailWorker(self.cfg, self.backend, self.status, self.state_dir / "tmp")
        # sync uploads only settled files and reports what it finds: a truncated file is reported, not waited for.
        worker.incomplete_grace = 0.0
        local_worker = "worker" in self.cfg.roles
        while True:
            todo = self._missing_thumbnails(worker, scope)
            if not todo or self._late():
                break
            if not local_worker:
                self.progress("waiting for workers", len(scope) - len(todo), len(scope))
                self.stop.wait(2.0)
                continue
            self._run_worker(worker, sorted(todo), len(scope))
            break
        if local_worker and urls.events and not self._late():
            # The events for what we just made are now redundant: consume them (each is a cheap skip).
            self._drain(
                urls.events, urls.events_dlq, worker.handle_message, worker.describe, "worker", worker_concurrency(self.cfg)
            )
        left = self._missing_thumbnails(worker, scope) if not self.stop.is_set() else set()
        self.result.unfinished.extend(self.layout.source_key(r) for r in left)
        self._thumbnails_checked = True
        worker.close()

    def _missing_thumbnails(self, worker: ThumbnailWorker, scope: set[str]) -> set[str]:
        """In-scope sources without up-to-date thumbnails; those with a current failure marker are reported."""
        missing, failed = worker.pending(scope)
        for rel in failed:
            self._report_marker(rel)
        return missing

    def _report_marker(self, rel: str) -> None:
        key = self.layout.source_key(rel)
        if key in self.result.failures:
            return
        try:
            resp = call(
                "read a failure marker",
                self.backend.s3.get_object,
                Bucket=self.cfg.thumbnails.bucket,
                Key=self.layout.failure_key(rel),
            )
            reason = str(json.loads(resp["Body"].read(65536)).get("reason", "failed"))
        except (ThumbdropError, ValueError):
            reason = "failed (reason unavailable)"
        self.result.failures[key] = reason

    def _run_worker(self, worker: ThumbnailWorker, todo: list[str], total: int) -> None:
        done = total - len(todo)

        def one(rel: str) -> None:
            try:
                if worker.process(rel) == "thumbnailed":
                    self.result.thumbnailed += 1
            except ItemError as exc:
                self.result.failures[self.layout.source_key(rel)] = str(exc)
            except ThumbdropError as exc:
                self.result.failures[self.layout.source_key(rel)] = f"not thumbnailed: {exc}"

        with ThreadPoolExecutor(worker_concurrency(self.cfg), thread_name_prefix="sync-worker") as pool:
            futures = [pool.submit(one, rel) for rel in todo]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.25)
                done += len(finished)
                self.progress("thumbnail", done, total)
                if self._late():
                    for f in pending:
                        f.cancel()
                    break

    # --- 3. pulls ------------------------------------------------------------------------------

    def _pull(self) -> None:
        puller = ThumbnailPuller(self.cfg, self.backend, self.status)
        counts = puller.reconcile()
        self.result.pulled += counts["pulled"]
        self.progress("pull", counts["pulled"] + counts["skipped"], counts["pulled"] + counts["skipped"] + counts["failed"])
        urls = queue_urls(self.cfg, self.backend)
        if urls.pull and not self._late():
            self._drain(urls.pull, urls.pull_dlq, puller.handle_message, puller.describe, "puller", self.cfg.transfer.concurrency)

    def _drain(self, url: str, dlq: str | None, handle: Any, describe: Any, name: str, concurrency: int) -> None:
        consumer = QueueConsumer(
            name=f"sync-{name}",
            sqs=self.backend.sqs,
            queue_url=url,
            dlq_url=dlq,
            handle=handle,
            describe=describe,
            concurrency=concurrency,
            visibility_timeout=self.cfg.queues.visibility_timeout,
            wait_seconds=1,
            status=self.status,
        )
        consumer.drain(deadline=min(self.deadline, time.monotonic() + 60))
        consumer.join(timeout=10)


def _is_file(path: Path) -> bool:
    """Path.is_file() that answers False, not OSError, for a name the file system cannot hold (ENAMETOOLONG)."""
    try:
        return path.is_file()
    except OSError:
        return False
