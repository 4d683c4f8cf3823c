"""The worker's video jobs: a poster frame's thumbnails, and a web preview encoded in a pool of its own.

A preview never holds a thumbnail job slot: it runs in ``PreviewPool`` (``video.preview_jobs`` at once, at most
3 x that accepted), and the queue message stays in flight (its visibility extended) until the Future that
``all_of`` returns completes.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.cloud.errors import call
from agent.config.model import Config, VideoConfig
from agent.errors import ImageError, ItemError, TransientError
from agent.imaging.memory import MIB
from agent.imaging.spec import PREVIEW_CONTENT_TYPE
from agent.pipeline.bandwidth import TokenBucket, throttle
from agent.pipeline.keys import Layout, ascii_meta
from agent.pipeline.markers import made_from, mark_failed
from agent.pipeline.pools import shutdown_within
from agent.state.status import Status

log = logging.getLogger("agent.pipeline.worker")
# Kept free in the state dir beyond a video's own bytes (and its preview's): the journal and logs live there too.
FREE_SPACE_RESERVE = 64 * MIB


class VideoJobs:
    """The video half of ``ThumbnailWorker`` (a mixin: the worker's attributes below are its own)."""

    cfg: Config
    s3: Any
    layout: Layout
    status: Status
    limiter: TokenBucket | None
    tmp_root: Path
    video: VideoConfig
    _warned_no_av: bool
    _previews: PreviewPool | None
    _closing: threading.Event
    _running_previews: dict[tuple[str, str], Future[None]]

    def _require_video_support(self, rel: str, key: str, etag: str, sha: str) -> None:
        """Without PyAV a video fails with the install hint (said once in the log), under a failure marker that
        a worker with PyAV ignores."""
        from agent.imaging import video

        if video.available():
            return
        reason = f"not thumbnailed: {video.INSTALL_HINT}"
        if not self._warned_no_av:
            self._warned_no_av = True
            log.error("%s (first video: %s); videos fail until it is installed", video.INSTALL_HINT, key)
        mark_failed(self.s3, self.cfg, self.layout, rel, key, etag, sha, reason, needs="video")
        self.status.fail(key, reason, "worker", once=True)
        raise ImageError(reason)

    def _check_free_space(self, key: str, need: int) -> None:
        """A video is streamed to the state dir: refuse (and retry later) rather than fill the disk."""
        try:
            free = shutil.disk_usage(self.tmp_root).free
        except OSError:
            return
        if free < need + FREE_SPACE_RESERVE:
            raise TransientError(
                f"not enough free space in {self.tmp_root} for {key}: {need // MIB} MiB needed "
                f"(+{FREE_SPACE_RESERVE // MIB} MiB reserve), {free // MIB} MiB free",
                hint="free some space there or point local.state_dir at a larger disk; the video is retried later",
            )

    def _preview_done(self, rel: str, etag: str) -> bool:
        return made_from(self.s3, self.cfg.thumbnails.bucket, self.layout.preview_key(rel), etag) is not None

    def _submit_preview(self, job: PreviewJob) -> Future[None]:
        assert self._previews is not None

        def run() -> None:
            try:
                self._preview(job)
            finally:
                shutil.rmtree(job.work, ignore_errors=True)

        fut = self._previews.submit(run)
        ident = (job.rel, job.etag)
        self._running_previews[ident] = fut
        fut.add_done_callback(lambda _f: self._running_previews.pop(ident, None))
        return fut

    def _preview(self, job: PreviewJob) -> None:
        """Encode (or remux) and upload the web preview; a refusal or a bad file marks the source failed."""
        from agent.imaging.video_preview import VideoSpec, make_preview

        v = self.video
        spec = VideoSpec(True, v.preview_height, v.crf, v.max_seconds, v.max_pixels)
        self.status.begin("transcoding")
        started = time.monotonic()
        try:
            try:
                made = make_preview(job.src, job.work / "preview.mp4", spec, stop=self._closing)
            except ItemError as exc:
                mark_failed(self.s3, self.cfg, self.layout, job.rel, job.key, job.etag, job.sha, str(exc))
                self.status.fail(job.key, str(exc), "worker", once=True)
                log.error("no preview of %s: %s", job.key, exc)
                raise
            nbytes = os.path.getsize(made.path)
            throttle(self.limiter, nbytes)
            with open(made.path, "rb") as body:
                call(
                    f"upload the preview of {job.key}",
                    self.s3.put_object,
                    Bucket=self.cfg.thumbnails.bucket,
                    Key=self.layout.preview_key(job.rel),
                    Body=body,
                    ContentType=PREVIEW_CONTENT_TYPE,
                    Metadata={"source-key": ascii_meta(job.key), "source-etag": job.etag, "source-sha256": job.sha},
                )
        finally:
            self.status.end("transcoding")
        self.status.done("preview", time.monotonic() - started, nbytes)
        self.status.count("previewed")
        how = "remuxed" if made.remuxed else f"encoded at {made.width}x{made.height}"
        log.info("preview of %s %s (%.1f s)", job.key, how, time.monotonic() - started)


def has_av() -> bool:
    from agent.imaging import video

    return video.available()


@dataclass(frozen=True)
class PreviewJob:
    rel: str
    key: str
    etag: str
    sha: str
    src: Path  # the downloaded source, inside ``work``
    work: Path  # the job's temp folder: removed when the preview is done, whatever happens


class PreviewPool:
    """A bounded pool for video previews: ``jobs`` encode at once, at most 3 x ``jobs`` accepted."""

    def __init__(self, jobs: int) -> None:
        self._pool = ThreadPoolExecutor(jobs, thread_name_prefix="worker-preview")
        self._room = threading.BoundedSemaphore(3 * jobs)

    def submit(self, fn: Any) -> Future[None]:
        self._room.acquire()
        try:
            fut: Future[None] = self._pool.submit(fn)
        except BaseException:
            self._room.release()
            raise
        fut.add_done_callback(lambda _f: self._room.release())
        return fut

    def close(self, timeout: float = 2.0) -> bool:
        """Queued previews are dropped (their messages come back and are redone); running ones, told to stop by
        the worker, get ``timeout`` to notice."""
        return shutdown_within(self._pool, time.monotonic() + timeout, cancel_futures=True)


def all_of(futures: list[Future[None]]) -> Future[None]:
    """One Future for several: done when all are, with the first failure."""
    if len(futures) == 1:
        return futures[0]
    combined: Future[None] = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_f: Future[None]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
        if any(f.cancelled() for f in futures):
            combined.cancel()
            combined.set_running_or_notify_cancel()
        elif errors:
            combined.set_exception(errors[0])
        else:
            combined.set_result(None)

    for f in futures:
        f.add_done_callback(one_done)
    return combined
