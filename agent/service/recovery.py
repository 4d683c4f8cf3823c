"""The agent's reconcile loop and its recovery from a backend that went away or lost its resources.

At start and every ``watch.rescan_seconds`` a reconcile round uploads, thumbnails and pulls what is missing (events
lost to an outage, files dropped while the agent was not running). A backend that answers again after an outage
wakes every role and catches up at once; one that lost thumbdrop's buckets and queues is set up again
(``backend.auto_setup``), at most once per ``RESETUP_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from agent.backoff import Backoff
from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.errors import ResourceMissingError, ThumbdropError
from agent.service.runtime import ensure_resources, queue_urls
from agent.state.status import Status

if TYPE_CHECKING:
    from agent.pipeline.consumer import QueueConsumer
    from agent.pipeline.poll import Poller
    from agent.pipeline.puller import ThumbnailPuller
    from agent.pipeline.uploader import Uploader
    from agent.pipeline.worker import ThumbnailWorker

log = logging.getLogger("agent.service.agent")
# A backend that lost our buckets and queues is set up again at most this often (auto_setup).
RESETUP_SECONDS = 60.0
# A reconcile round on the backend's return after an outage runs at most this often (a flapping link).
CATCH_UP_SECONDS = 10.0


class Recovery:
    """The reconcile half of ``Agent`` (a mixin: the agent's attributes below are its own)."""

    cfg: Config
    backend: Backend
    status: Status
    stop_event: threading.Event
    paused: threading.Event
    ready: threading.Event
    uploader: Uploader | None
    worker: ThumbnailWorker | None
    puller: ThumbnailPuller | None
    poller: Poller | None
    consumers: list[QueueConsumer]

    def _init_recovery(self) -> None:
        # Set by sync_now() and stop(): the reconcile loop sleeps on it, so either wakes it at once.
        self._wake = threading.Event()
        # Resources gone while running: noted once per episode; with auto_setup the reconcile loop sets up again.
        self._missing_lock = threading.Lock()
        self._missing_noted = False
        self._resetup = threading.Event()
        self._last_setup = float("-inf")
        self._last_good_round = float("-inf")
        self.status.on_back.append(self._backend_back)

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
