"""Syncs a running agent does on request (``thumbdrop sync`` beside ``run``), on its own uploader, worker and
journal, through the control interface."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cloud.clients import Backend
from agent.config.model import Config
from agent.service.control import CommandError
from agent.service.sync import Parts, Sync, SyncJob
from agent.state.journal import Journal
from agent.state.status import Status

if TYPE_CHECKING:
    from agent.pipeline.puller import ThumbnailPuller
    from agent.pipeline.uploader import Uploader
    from agent.pipeline.worker import ThumbnailWorker

log = logging.getLogger("agent.service.agent")


class SyncRequests:
    """The sync half of ``Agent`` (a mixin: the agent's attributes below are its own)."""

    cfg: Config
    backend: Backend
    state_dir: Path
    status: Status
    journal: Journal
    ready: threading.Event
    uploader: Uploader | None
    worker: ThumbnailWorker | None
    puller: ThumbnailPuller | None
    _syncs: dict[int, SyncJob]
    _syncs_lock: threading.Lock

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

    def _running_syncs(self) -> list[SyncJob]:
        return [job for job in list(self._syncs.values()) if not job.done.is_set()]

    def _stop_syncs(self) -> None:
        for job in list(self._syncs.values()):
            job.sync.stop.set()

    def _join_syncs(self, deadline: float) -> None:
        for job in list(self._syncs.values()):
            job.thread.join(max(0.1, deadline - time.monotonic()))
