"""The agent: composes the configured roles, owns their threads, publishes status.

Knows nothing of the CLI, the tray or systemd; signal handling lives in
``service.run``. Every thread is named and joined on stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.errors import ResourceMissingError, ThumbdropError
from agent.pipeline.bandwidth import PauseSchedule
from agent.pipeline.cleaner_local import DeletedLocally
from agent.pipeline.cleaner_role import CleanerRole
from agent.pipeline.consumer import QueueConsumer
from agent.pipeline.handoff import Handoff
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.uploader import LocalFile, Uploader, UploadOutcome
from agent.pipeline.worker import Known, ThumbnailWorker
from agent.service.control import CommandError, ControlServer
from agent.service.runtime import ensure_resources, queue_urls, worker_concurrency
from agent.service.sync import Parts, Sync, SyncJob
from agent.state.journal import Journal, UploadRecord, keep_verdicts
from agent.state.status import Status

log = logging.getLogger(__name__)
STOP_TIMEOUT = 8.0
# In the state dir while the agent is paused: a pause outlives a restart until 'thumbdrop resume'.
PAUSE_FILE = "paused"
# A backend that lost our buckets and queues is set up again at most this often (auto_setup).
RESETUP_SECONDS = 60.0
# A reconcile round on the backend's return after an outage runs at most this often (a flapping link).
CATCH_UP_SECONDS = 10.0
PUBLISH_EVERY = 1.0  # seconds: at most one status.json write this often


class Agent:
    def __init__(self, cfg: Config, backend: Backend, state_dir: Path, *, roles: list[str] | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.state_dir = state_dir
        self.roles = list(roles if roles is not None else cfg.roles)
        self.status = Status(self.roles)
        self.status.backend = backend.describe()
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self.journal = Journal(state_dir / "journal.sqlite3")
        keep_verdicts(self.status, self.journal)
        self.uploader: Uploader | None = None
        self.consumers: list[QueueConsumer] = []
        self.puller: ThumbnailPuller | None = None
        self.worker: ThumbnailWorker | None = None
        self.handoff: Handoff | None = None
        self.poller: Any = None  # agent.pipeline.poll.Poller in queues.mode poll
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()
        # Set by sync_now() and stop(): the reconcile loop sleeps on it, so either wakes it at once.
        self._wake = threading.Event()
        # Resources gone while running: noted once per episode; with auto_setup the reconcile loop sets up again.
        self._missing_lock = threading.Lock()
        self._missing_noted = False
        self._resetup = threading.Event()
        self._last_setup = float("-inf")
        self._last_good_round = float("-inf")
        self.status.on_back.append(self._backend_back)
        self.control = ControlServer(state_dir, self)
        self.gallery: Any = None  # agent.gallery.server.Gallery when gallery.enabled
        self.on_stop: Callable[[], None] = lambda: None  # told when the agent stops itself (fatal error, stop command)
        self._syncs: dict[int, SyncJob] = {}
        self._syncs_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        # First: a second agent on the same state dir (journal) is refused before it touches anything (or logs
        # that it starts: the refusal is the only line it writes).
        self.control.start()
        log.info("thumbdrop agent starting: roles %s on %s", ", ".join(self.roles), self.backend.describe())
        if (self.state_dir / PAUSE_FILE).exists():
            self.paused.set()
            log.info("paused since an earlier run: uploads and pulls wait for 'thumbdrop resume'")
        if self.cfg.gallery.enabled:
            self._start_gallery()
        if "puller" in self.roles:
            # Made now, not at the first pull: a newcomer opening it right after the start finds it there.
            try:
                Path(self.cfg.local.thumbnails_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create local.thumbnails_dir %s yet: %s", self.cfg.local.thumbnails_dir, exc)
        if "uploader" in self.roles:
            # Watch first: nothing dropped during the initial reconcile is missed.
            self.uploader = Uploader(self.cfg, self.backend, self.status, self.journal)
            self.uploader.schedule = PauseSchedule.parse(self.cfg.watch.pause_hours)
            self.uploader.provisioned.clear()  # files are noticed now, uploaded once notifications exist
            if self.paused.is_set():
                self.uploader.paused.set()
            self.uploader.on_missing = self.resources_missing
            self.uploader.start_watching()
        if "cleaner" in self.roles:
            cleaner = CleanerRole(
                self.cfg,
                self.backend,
                self.status,
                stop=self.stop_event,
                ready=self.ready,
                paused=self.paused.is_set,
                journal=self.journal,
            )
            self._spawn(cleaner.run, "cleaner")  # joined with the others in stop()
        self._spawn(self._bootstrap, "agent-bootstrap")
        self._spawn(self._publish_loop, "agent-status")

    def _start_gallery(self) -> None:
        """The gallery talks to this agent through the control socket, like the CLI and the tray."""
        from agent.gallery.server import Gallery

        gallery = Gallery(self.cfg, self.state_dir)
        try:
            gallery.start()
        except OSError as exc:
            log.warning("no gallery (%s): the agent runs on without it; 'thumbdrop gallery' can serve it alone", exc)
            return
        self.gallery = gallery

    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _bootstrap(self) -> None:
        """Provision and find the queues, waiting out an offline backend, then start the loops."""
        backoff = Backoff(first=1.0, cap=5.0)
        while not self.stop_event.is_set():
            try:
                ensure_resources(self.cfg, self.backend)
                urls = queue_urls(self.cfg, self.backend)
                break
            except ThumbdropError as exc:
                if exc.kind != "transient":
                    log.error("%s", exc)
                    self.status.set_state("error", fatal=str(exc))
                    self.stop_event.set()
                    self.on_stop()
                    return
                self.status.offline(str(exc))
                self._sleep(backoff.next())
        else:
            return
        self.status.online()
        if self.uploader is not None:
            self.uploader.provisioned.set()
            self.uploader.wake()
        # Thumbnails of photos deleted here must not come back (made again by a reconcile or a sizes change).
        deleted = DeletedLocally(self.cfg, self.journal) if self.cfg.cleanup.remove_orphan_local_thumbnails else None
        poll = self.cfg.queues.mode == "poll"
        if "worker" in self.roles and poll:
            self.worker = ThumbnailWorker(self.cfg, self.backend, self.status, self.state_dir / "tmp", self.journal)
        if "worker" in self.roles and urls.events:
            # With the journal: events for what a sync made in-process are skipped without an S3 call.
            worker = self.worker = ThumbnailWorker(self.cfg, self.backend, self.status, self.state_dir / "tmp", self.journal)
            self._add_consumer(
                "worker", worker.handle_message, worker.describe, urls.events, urls.events_dlq, worker_concurrency(self.cfg)
            )
        if self.worker is not None and deleted is not None:
            self.worker.deleted_locally = deleted
        if "puller" in self.roles and poll:
            self.puller = ThumbnailPuller(self.cfg, self.backend, self.status, self.journal)
            if deleted is not None:
                self.puller.deleted_locally = deleted.thumbnail
        if "puller" in self.roles and urls.pull:
            self.puller = ThumbnailPuller(self.cfg, self.backend, self.status, self.journal)
            if deleted is not None:
                self.puller.deleted_locally = deleted.thumbnail
            self._add_consumer(
                "puller",
                self.puller.handle_message,
                self.puller.describe,
                urls.pull,
                urls.pull_dlq,
                self.cfg.transfer.concurrency,
            )
        if poll:
            self._start_poll()
        elif self.uploader is not None and self.worker is not None:
            self._start_handoff()
        self.status.set_state("paused" if self.paused.is_set() else "running")
        self.ready.set()
        log.info("thumbdrop agent running")
        self._reconcile_loop()

    def _start_handoff(self) -> None:
        """Inside this process a key just uploaded goes straight to the worker (no HEAD, no wait for its event);
        the event that follows is skipped by the journal. Jobs run on the worker consumer's own pool, so
        worker.concurrency still bounds the thumbnail jobs of this agent. The thumbnails still come down through
        the pull queue, as every other host's do (sync, and poll mode, also hand them to the puller directly)."""
        pool = next((c.pool for c in self.consumers if c.name == "worker"), None)
        self.handoff = Handoff(
            self.worker,
            None,
            worker_concurrency=worker_concurrency(self.cfg),
            pull_concurrency=self.cfg.transfer.concurrency,
            listener=self._handed_over,
            worker_pool=pool,
        )
        assert self.uploader is not None
        self.uploader.add_listener(self._hand_over)

    def _start_poll(self) -> None:
        """queues.mode poll: no consumers. Own uploads go straight to the worker and its thumbnails straight to
        the puller (the hand-over); what other hosts did is found by listings every queues.poll_seconds."""
        from agent.pipeline.poll import Poller

        self.handoff = Handoff(
            self.worker,
            self.puller if self.worker is not None else None,
            worker_concurrency=worker_concurrency(self.cfg),
            pull_concurrency=self.cfg.transfer.concurrency,
            listener=self._handed_over,
        )
        self.poller = Poller(self.cfg, self.backend.s3, self.handoff, self.status, worker=self.worker, puller=self.puller)
        if self.uploader is not None and self.worker is not None:
            self.uploader.add_listener(self._hand_over)
        self._spawn(self._poll_loop, "agent-poll")

    def _poll_loop(self) -> None:
        assert self.poller is not None
        backoff = Backoff(first=2.0, cap=30.0)
        while not self.stop_event.is_set():
            wait = self.cfg.queues.poll_seconds
            try:
                if self.worker is not None:
                    self.poller.worker_pass(self.stop_event)
                if self.puller is not None and not self.paused.is_set():
                    self.poller.puller_pass()
                backoff.reset()
            except ThumbdropError as exc:
                if exc.kind == "transient":
                    self.status.offline(str(exc))
                    wait = backoff.next()
                elif isinstance(exc, ResourceMissingError):
                    self.resources_missing(exc)
                else:
                    log.error("poll: listing failed: %s", exc)
            except Exception:  # noqa: BLE001 - a bug must not end the listings for good
                log.exception("poll: listing pass failed; trying again at the next one")
            self.stop_event.wait(wait)

    def _hand_over(self, lf: LocalFile, outcome: UploadOutcome, rec: UploadRecord | None, _reason: str) -> None:
        if outcome is UploadOutcome.UPLOADED and rec is not None and self.handoff is not None and not self.stop_event.is_set():
            if any(job.sync.claims(lf.rel) for job in list(self._syncs.values()) if not job.done.is_set()):
                return  # a sync running in this agent hands it over itself (and counts it)
            if self.poller is not None:
                self.poller.handing(lf.rel)
            self.handoff.thumbnail(lf.rel, Known(rec.etag, rec.sha256, no_thumbs=False, no_marker=False))

    def _handed_over(self, rel: str, stage: str, result: str, reason: str) -> None:
        if self.poller is not None:
            self.poller.finished(rel, stage, result)
        # Failures are reported by the roles themselves; the event that follows retries or dead-letters them.
        if result == "failed":
            log.debug("hand-over: %s of %s failed: %s", stage, rel, reason)

    def _add_consumer(self, name: str, handle, describe, url: str, dlq: str | None, concurrency: int) -> None:  # type: ignore[no-untyped-def]
        consumer = QueueConsumer(
            name=name,
            sqs=self.backend.sqs,
            receiver=self.backend.receiver(self.cfg.queues.wait_seconds),
            on_missing=self.resources_missing,
            queue_url=url,
            dlq_url=dlq,
            handle=handle,
            describe=describe,
            concurrency=concurrency,
            visibility_timeout=self.cfg.queues.visibility_timeout,
            wait_seconds=self.cfg.queues.wait_seconds,
            status=self.status,
            paused=self.paused.is_set if name == "puller" else (lambda: False),
        )
        consumer.start()
        self.consumers.append(consumer)

    def _reconcile_loop(self) -> None:
        """At start and every rescan_seconds: upload, thumbnail and pull what is missing."""
        interval = self.cfg.watch.rescan_seconds
        first = True
        backoff = Backoff(first=2.0, cap=30.0)
        while not self.stop_event.is_set():
            try:
                if self._resetup.is_set():
                    self._set_up_again()
                if first and self.uploader is not None:
                    try:
                        self.uploader.abort_stale_multipart()
                    except ThumbdropError as exc:
                        if exc.kind == "transient":
                            raise
                        # Housekeeping only: a refusal (AccessDenied, NoSuchUpload) must not skip the reconciles.
                        log.warning("could not clear unfinished multipart uploads: %s", exc)
                starting, first = first, False
                if self.uploader is not None and not self.paused.is_set():
                    self.uploader.reconcile()
                elif self.uploader is not None:
                    self.uploader.count_unsent()  # 'resume' runs the round this one skips (see resume())
                if self.worker is not None and (self.poller is None or starting):
                    # Events lost to a partial outage (dead-lettered after max_receives) or never sent. In poll mode
                    # the poll loop lists (comparing one size); this full pass at start (and after a reload) also
                    # makes the sizes a changed thumbnails.sizes added.
                    self.worker.reconcile(self.stop_event)
                if self.puller is not None and self.poller is None and not self.paused.is_set():
                    self.puller.reconcile()
                backoff.reset()
                self._last_good_round = time.monotonic()
                with self._missing_lock:
                    self._missing_noted = False
                self.status.online()
            except ThumbdropError as exc:
                if exc.kind == "transient":
                    self.status.offline(str(exc))
                    self._sleep(backoff.next())
                    continue
                if isinstance(exc, ResourceMissingError):
                    self.resources_missing(exc)
                    if self._resetup.is_set():
                        continue  # _set_up_again() waits out its own rate limit
                else:
                    log.error("reconcile failed: %s", exc)
            except Exception:  # noqa: BLE001 - a bug or a local fault must not end the rescans for good
                log.exception("reconcile round failed; trying again at the next rescan")
            # rescan_seconds 0: no periodic rescan, but sync_now() still runs a round.
            self._sleep(interval if interval > 0 else None)

    # --- recovery ---------------------------------------------------------------------

    def _backend_back(self) -> None:
        """Status saw the backend answer again after an outage: every role resumes now, not after its backoff,
        and a reconcile round catches up what the outage left behind (events dead-lettered meanwhile)."""
        if self.uploader is not None:
            self.uploader.retry_now()
        for c in self.consumers:
            c.wake()
        if self.ready.is_set() and time.monotonic() - self._last_good_round >= CATCH_UP_SECONDS:
            self._wake.set()

    def resources_missing(self, exc: ThumbdropError) -> None:
        """A bucket or queue is gone while the agent runs: a store restarted without persistence, or removed by
        hand. With auto_setup the reconcile loop sets everything up again (rate-limited) and retries what failed;
        without it, one line says what to run. Called by every role; acts once per episode."""
        self.status.offline(f"{exc} (the backend lost thumbdrop's buckets or queues)", quiet=True)
        with self._missing_lock:
            if self._missing_noted:
                return
            self._missing_noted = True
        if self.cfg.backend.auto_setup:
            log.warning("the backend lost thumbdrop's buckets or queues (%s): setting them up again", exc.message)
            self._resetup.set()
            self._wake.set()
        else:
            log.error(
                "the backend lost thumbdrop's buckets or queues (%s): run 'thumbdrop setup' (backend.auto_setup is "
                "off); work resumes by itself once they exist",
                exc.message,
            )

    def _set_up_again(self) -> None:
        """Provision again (auto_setup), at most once per RESETUP_SECONDS, then point the consumers at the queues."""
        wait = self._last_setup + RESETUP_SECONDS - time.monotonic()
        if wait > 0:
            log.info("setting up again in %.0f s (at most once a minute)", wait)
            self.stop_event.wait(wait)
            if self.stop_event.is_set():
                return
        self._last_setup = time.monotonic()
        try:
            ensure_resources(self.cfg, self.backend)
            urls = queue_urls(self.cfg, self.backend)
        except ThumbdropError as exc:
            if exc.kind != "transient":  # refused (credentials, permissions): say so once, do not loop on it
                self._resetup.clear()
                log.error("could not set up again: %s; run 'thumbdrop setup' with credentials allowed to create them", exc)
            raise
        self._resetup.clear()
        for c in self.consumers:
            url, dlq = (urls.events, urls.events_dlq) if c.name == "worker" else (urls.pull, urls.pull_dlq)
            if url is not None:  # a store may hand out new queue URLs
                c.queue_url, c.dlq_url = url, dlq
            c.wake()
        with self._missing_lock:
            self._missing_noted = False
        log.info("set up again: buckets, queues and notifications are back; retrying what failed meanwhile")
        if self.uploader is not None:
            self.uploader.retry_now()
            self.uploader.provisioned.set()

    def _sleep(self, seconds: float | None) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def sync_now(self) -> None:
        """Run a reconcile round (upload and pull what is missing) now instead of at the next rescan."""
        self._wake.set()

    # --- sync on request (thumbdrop sync beside run) ---------------------------------------------

    def start_sync(self, timeout: float | None) -> int:
        """Run a streamed sync on this agent's own uploader, worker and journal; returns its id."""
        if not self.ready.is_set():
            raise CommandError("not-ready", "the agent is still starting or waits for the backend; try again in a moment")
        sync = Sync(
            self.cfg,
            self.backend,
            self.state_dir,
            timeout=timeout,
            progress=lambda _p, _d, _t: None,
            stop=threading.Event(),
            parts=Parts(self.journal, self.uploader, self.worker, self.puller),
            status=self.status,
        )
        with self._syncs_lock:
            job = SyncJob(len(self._syncs) + 1, sync)
            self._syncs[job.id] = job
        log.info("sync %d requested through the control interface", job.id)
        job.thread.start()
        return job.id

    def sync_state(self, job_id: int, wait: float) -> dict[str, object]:
        job = self._syncs.get(job_id)
        if job is None:
            raise CommandError("unknown-sync", f"no sync {job_id} in this agent")
        return job.state(wait)

    def cancel_sync(self, job_id: int) -> None:
        job = self._syncs.get(job_id)
        if job is not None:
            job.sync.stop.set()

    def request_stop(self) -> None:
        """Ask the owner of this agent (``service.run``) to stop it; returns at once."""
        log.info("stop requested through the control interface")
        self.stop_event.set()
        self._wake.set()
        self.on_stop()

    def _publish_loop(self) -> None:
        """Write status.json when the status changes, at most once a second; an idle agent writes nothing."""
        while True:
            self.status.changed.clear()
            try:
                self.status.publish(self.state_dir)
            except OSError as exc:
                log.debug("could not publish status: %s", exc)
            if self.stop_event.wait(PUBLISH_EVERY):
                return
            self.status.changed.wait()  # stop() changes the state too, so this wakes for it
            if self.stop_event.is_set():
                return

    def pause(self) -> None:
        was = self.paused.is_set()
        self.paused.set()
        if self.uploader is not None:
            self.uploader.paused.set()
        self.status.set_state("paused")
        self._remember_pause(True)
        if not was:
            log.info("paused: uploads and pulls wait until 'thumbdrop resume'")

    def resume(self) -> None:
        was = self.paused.is_set()
        self.paused.clear()
        if self.uploader is not None:
            self.uploader.paused.clear()
            self.uploader.wake()
        self.status.set_state("running")
        if was:
            log.info("resumed: uploads and pulls go on")
            # Rounds skipped while paused (the start-up one after a restart in the paused state): catch up now,
            # not at the next rescan.
            self.sync_now()
        self._remember_pause(False)

    def _remember_pause(self, paused: bool) -> None:
        """Kept in the state dir, so a restart (a reboot, a crash, a config reload) stays paused."""
        path = self.state_dir / PAUSE_FILE
        try:
            if paused:
                path.write_text(f"paused at {time.strftime('%Y-%m-%d %H:%M:%S')}; 'thumbdrop resume' removes this file\n")
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not record the pause in %s (it holds until this agent stops): %s", path, exc)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Drain in-flight work and join every thread, within ``timeout``."""
        deadline = time.monotonic() + timeout
        self.status.set_state("stopping")
        self.stop_event.set()
        self._wake.set()
        if self.uploader is not None:
            self.uploader.stop()
        for c in self.consumers:
            c.stop()
        for c in self.consumers:
            c.join(max(0.5, deadline - time.monotonic()))
        if self.handoff is not None:
            self.handoff.close(wait=False)
        if self.uploader is not None:
            self.uploader.join(max(0.5, deadline - time.monotonic()))
        for job in list(self._syncs.values()):
            job.sync.stop.set()
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for job in list(self._syncs.values()):
            job.thread.join(max(0.1, deadline - time.monotonic()))
        if self.worker is not None:
            self.worker.close()
        if self.gallery is not None:
            self.gallery.stop()
        # Last: clients see "stopping" while the agent drains.
        self.control.stop()
        self.control.join(max(0.1, deadline - time.monotonic()))
        if self.gallery is not None:  # after the control socket: that ends the gallery's long poll at once
            self.gallery.join(max(0.5, deadline - time.monotonic()))
        if self.status.state != "error":
            self.status.set_state("stopped")
        try:
            self.status.publish(self.state_dir)
        except OSError:
            pass
        self.journal.close()
        log.info("thumbdrop agent stopped")
