"""The agent: composes the configured roles, drives their one lifecycle, publishes status.

Every role (``agent.pipeline.role.Role``: uploader, cleaner, worker and its consumer, puller and its consumer,
the hand-over or the poller) is started in order, paused and resumed together, stopped together, then joined
in reverse order against one deadline (a consumer releases its messages before the worker interrupts their
encodes). Knows nothing of the CLI, the tray or systemd; signal handling lives in ``service.run``. Every
thread is named and joined on stop.
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
from agent.errors import ThumbdropError
from agent.pipeline.bandwidth import PauseSchedule
from agent.pipeline.cleaner_local import DeletedLocally
from agent.pipeline.cleaner_role import CleanerRole
from agent.pipeline.consumer import QueueConsumer
from agent.pipeline.handoff import Handoff
from agent.pipeline.poll import Poller
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.role import Role
from agent.pipeline.uploader import LocalFile, Uploader, UploadOutcome
from agent.pipeline.worker import Known, ThumbnailWorker
from agent.service.agent_syncs import SyncRequests
from agent.service.control import ControlServer
from agent.service.recovery import CATCH_UP_SECONDS, RESETUP_SECONDS, Recovery
from agent.service.runtime import Queues, ensure_resources, queue_urls, worker_concurrency
from agent.service.sync import SyncJob
from agent.state.journal import Journal, UploadRecord, keep_verdicts
from agent.state.status import Status

__all__ = ["CATCH_UP_SECONDS", "PAUSE_FILE", "RESETUP_SECONDS", "STOP_TIMEOUT", "Agent"]

log = logging.getLogger(__name__)
STOP_TIMEOUT = 8.0
# In the state dir while the agent is paused: a pause outlives a restart until 'thumbdrop resume'.
PAUSE_FILE = "paused"
PUBLISH_EVERY = 1.0  # seconds: at most one status.json write this often


class Agent(Recovery, SyncRequests):
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
        self.running: list[Role] = []  # every role started, in start order
        self.uploader: Uploader | None = None
        self.consumers: list[QueueConsumer] = []
        self.puller: ThumbnailPuller | None = None
        self.worker: ThumbnailWorker | None = None
        self.handoff: Handoff | None = None
        self._sent: set[str] = set()  # rels whose upload told the hand-over to expect them (_sending)
        self._sent_lock = threading.Lock()
        self.poller: Poller | None = None  # in queues.mode poll
        self._threads: list[threading.Thread] = []  # the agent's own: bootstrap-then-reconcile, status
        self._roles_lock = threading.Lock()  # start (bootstrap thread) vs pause/resume/stop (other threads)
        self.ready = threading.Event()
        self._init_recovery()
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
            self.uploader.on_missing = self.resources_missing
            self._run(self.uploader)
        if "cleaner" in self.roles:
            self._run(CleanerRole(self.cfg, self.backend, self.status, ready=self.ready, journal=self.journal))
        self._spawn(self._bootstrap, "agent-bootstrap")
        self._spawn(self._publish_loop, "agent-status")

    def _run(self, role: Role) -> None:
        """Start a role (paused first when the agent is); a role made after stop() is never started."""
        with self._roles_lock:
            if self.stop_event.is_set():
                return
            self.running.append(role)
            if self.paused.is_set():
                role.pause()
            role.start()

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

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _bootstrap(self) -> None:
        """Provision and find the queues, waiting out an offline backend, then start the roles and reconcile."""
        urls = self._provision()
        if urls is None:
            return
        self.status.online()
        if self.uploader is not None:
            self.uploader.provisioned.set()
            self.uploader.wake()
        self._start_roles(urls)
        self.status.set_state("paused" if self.paused.is_set() else "running")
        self.ready.set()
        log.info("thumbdrop agent running")
        self._reconcile_loop()

    def _provision(self) -> Queues | None:
        backoff = Backoff(first=1.0, cap=5.0)
        while not self.stop_event.is_set():
            try:
                ensure_resources(self.cfg, self.backend)
                return queue_urls(self.cfg, self.backend)
            except ThumbdropError as exc:
                if exc.kind != "transient":
                    log.error("%s", exc)
                    self.status.set_state("error", fatal=str(exc))
                    self.stop_event.set()
                    self.on_stop()
                    return None
                self.status.offline(str(exc))
                self._sleep(backoff.next())
        return None

    def _start_roles(self, urls: Queues) -> None:
        # Thumbnails of photos deleted here must not come back (made again by a reconcile or a sizes change).
        deleted = DeletedLocally(self.cfg, self.journal) if self.cfg.cleanup.remove_orphan_local_thumbnails else None
        poll = self.cfg.queues.mode == "poll"
        if "worker" in self.roles and (poll or urls.events):
            # With the journal: events for what a sync made in-process are skipped without an S3 call.
            self.worker = ThumbnailWorker(self.cfg, self.backend, self.status, self.state_dir / "tmp", self.journal)
            self.worker.deleted_locally = deleted
            self._run(self.worker)
        if self.worker is not None and urls.events:
            w = self.worker
            concurrency = worker_concurrency(self.cfg)
            self._add_consumer("worker", w.handle_message, w.describe, urls.events, urls.events_dlq, concurrency, w.triage)
        if "puller" in self.roles and (poll or urls.pull):
            self.puller = ThumbnailPuller(self.cfg, self.backend, self.status, self.journal)
            if deleted is not None:
                self.puller.deleted_locally = deleted.thumbnail
            self._run(self.puller)
        if self.puller is not None and urls.pull:
            p = self.puller
            self._add_consumer("puller", p.handle_message, p.describe, urls.pull, urls.pull_dlq, self.cfg.transfer.concurrency)
        if poll:
            self._start_poll()
        elif self.uploader is not None and self.worker is not None:
            self._start_handoff()

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
        self._run(self.handoff)
        # The events of the keys it has in hand wait for its jobs outside the consumer's pool (WorkerTriage),
        # from the moment their upload starts: an event may arrive before its upload returns.
        assert self.worker is not None and self.uploader is not None
        self.worker.in_hand = self.handoff.pending
        self.uploader.add_sending_listener(self._sending)
        self.uploader.add_listener(self._hand_over)

    def _start_poll(self) -> None:
        """queues.mode poll: no consumers. Own uploads go straight to the worker and its thumbnails straight to
        the puller (the hand-over); what other hosts did is found by listings every queues.poll_seconds."""
        self.handoff = Handoff(
            self.worker,
            self.puller if self.worker is not None else None,
            worker_concurrency=worker_concurrency(self.cfg),
            pull_concurrency=self.cfg.transfer.concurrency,
            listener=self._handed_over,
        )
        self._run(self.handoff)
        self.poller = Poller(
            self.cfg,
            self.backend.s3,
            self.handoff,
            self.status,
            worker=self.worker,
            puller=self.puller,
            on_missing=self.resources_missing,
        )
        if self.uploader is not None and self.worker is not None:
            self.uploader.add_listener(self._hand_over)
        self._run(self.poller)

    def _sending(self, lf: LocalFile) -> None:
        if self.handoff is not None and not any(job.sync.claims(lf.rel) for job in self._running_syncs()):
            with self._sent_lock:
                self._sent.add(lf.rel)
            self.handoff.expect(lf.rel)

    def _hand_over(self, lf: LocalFile, outcome: UploadOutcome, rec: UploadRecord | None, _reason: str) -> None:
        if self.handoff is None:
            return
        with self._sent_lock:
            expected = lf.rel in self._sent
            self._sent.discard(lf.rel)
        if outcome is not UploadOutcome.UPLOADED or rec is None or self.stop_event.is_set():
            if expected:  # a send that failed: its events are jobs after all (an unchanged file leaves its job be)
                self.handoff.let_go(lf.rel, "cancelled")
            return
        if any(job.sync.claims(lf.rel) for job in self._running_syncs()):
            if expected:
                self.handoff.let_go(lf.rel, "cancelled")
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

    def _add_consumer(self, name: str, handle, describe, url: str, dlq: str | None, concurrency: int, triage=None) -> None:  # type: ignore[no-untyped-def]
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
            pausable=name == "puller",  # a pause holds uploads and pulls; thumbnails go on
            triage=triage,  # the worker's: its redundant events are deleted without waiting for a job slot
        )
        self.consumers.append(consumer)
        self._run(consumer)

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
        with self._roles_lock:
            self.paused.set()
            for role in self.running:
                role.pause()
        self.status.set_state("paused")
        self._remember_pause(True)
        if not was:
            log.info("paused: uploads and pulls wait until 'thumbdrop resume'")

    def resume(self) -> None:
        was = self.paused.is_set()
        with self._roles_lock:
            self.paused.clear()
            for role in self.running:
                role.resume()
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
        with self._roles_lock:
            self.stop_event.set()
            roles = list(self.running)
        self._wake.set()
        for role in roles:
            role.stop()
        self._stop_syncs()
        # Reverse order: a consumer drains (and releases its messages) before its worker interrupts encodes.
        for role in reversed(roles):
            if not role.join(max(0.5, deadline - time.monotonic())):
                log.debug("%s: still busy at the stop deadline", role.name)
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self._join_syncs(deadline)
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
