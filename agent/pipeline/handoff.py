"""The in-process hand-over inside one agent: uploader -> worker -> puller.

The queues stay the contract between hosts; inside one process they are only a
detour. With a hand-over, a key this process uploaded is thumbnailed at once by
its own worker (no HEAD: the uploader knows the ETag and sha256), and each
thumbnail made here is written to the local folder from the job's own file (no
download). The S3 events that still follow are redundant: the worker finds the
source's ETag in the journal and the puller finds the object in the journal,
so each costs its share of one receive and one batched delete, and no S3 call.

``sync`` uses it; poll mode (issue 11) is meant to plug the same object into
``run``: ``Handoff.uploaded`` as an uploader listener, ``Handoff.thumbnail`` for
keys a listing found, ``Handoff.pull`` for thumbnails a listing found.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from agent.errors import ItemError, ThumbdropError
from agent.pipeline.keys import ThumbOutput
from agent.pipeline.pools import shutdown_within
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.worker import Known, ThumbnailWorker

log = logging.getLogger(__name__)

# (source rel, stage 'thumbnail'|'pull', result, reason): thumbnail -> thumbnailed/skipped/gone/failed,
# pull -> pulled/skipped/failed (once per source, when every size is done).
Listener = Callable[[str, str, str, str], None]


class Handoff:
    """Runs worker and puller jobs on bounded pools of its own and reports each source's outcome once per stage.

    A Role with no threads of its own: ``stop`` takes no new job (queued ones are cancelled), ``join`` waits for
    the running ones until its deadline."""

    name = "handoff"

    def __init__(
        self,
        worker: ThumbnailWorker | None,
        puller: ThumbnailPuller | None,
        *,
        worker_concurrency: int,
        pull_concurrency: int,
        listener: Listener,
        worker_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        """``worker_pool``: run the thumbnail jobs there (an agent's worker consumer pool: one bound for both)."""
        self.worker = worker
        self.puller = puller
        self.listener = listener
        self._own_wpool = worker_pool is None
        self._wpool = worker_pool or (
            ThreadPoolExecutor(worker_concurrency, thread_name_prefix="handoff-worker") if worker else None
        )
        self._ppool = ThreadPoolExecutor(pull_concurrency, thread_name_prefix="handoff-puller") if puller else None
        self._lock = threading.Lock()
        self._pulls_left: dict[str, list[str]] = {}  # rel -> [sizes left, worst result so far]
        # rel -> done with the result of the job that makes it (from the moment its upload starts, ``expect``):
        # the worker's triage lets that source's events wait for it instead of taking a job slot (``pending``).
        self._in_hand: dict[str, Future[str]] = {}
        # On a shared pool at most worker_concurrency thumbnail jobs are queued there at once; the rest wait
        # here, so the consumer's own messages never queue behind a whole backlog of uploads.
        self._waiting: deque[tuple[str, Known | None]] = deque()
        self._fed: Counter[str] = Counter()  # rel -> its jobs queued or running on the shared pool
        self._limit = max(1, worker_concurrency)
        self.closed = False

    # --- entry points --------------------------------------------------------------------

    def thumbnail(self, rel: str, known: Known | None = None) -> None:
        """Make the thumbnails of ``rel`` now (then pull them when this process pulls)."""
        assert self._wpool is not None, "no worker in this process"
        if self._own_wpool:
            self._submit(self._wpool, self._thumbnail_job, rel, known)
            return
        with self._lock:
            closed = self.closed
            if not closed:
                self._in_hand.setdefault(rel, Future())
                self._waiting.append((rel, known))
        if closed:  # the agent is stopping: the event (released) or the next reconcile brings it back
            self.let_go(rel, "cancelled")
            return
        self._feed()

    def expect(self, rel: str) -> None:
        """``rel`` is being uploaded by this process: a hand-over follows (or ``let_go`` if the upload fails)."""
        with self._lock:
            if not self.closed:
                self._in_hand.setdefault(rel, Future())

    def pending(self, rel: str) -> Future[str] | None:
        """Done when the job making ``rel`` ends (thumbnailed, skipped, gone, failed or cancelled)."""
        with self._lock:
            return self._in_hand.get(rel)

    def let_go(self, rel: str, result: str) -> None:
        """No job of this hand-over makes ``rel`` now: whoever waits for it decides again."""
        with self._lock:
            fut = self._in_hand.pop(rel, None)
        if fut is not None:
            fut.set_result(result)

    def _feed(self) -> None:
        """Queue waiting jobs on the shared pool while fewer than its size are queued there."""
        while True:
            with self._lock:
                if self._fed.total() >= self._limit or not self._waiting:
                    return
                rel, known = self._waiting.popleft()
                self._fed[rel] += 1
            if not self._submit(self._wpool, self._fed_job, rel, known):  # type: ignore[arg-type]
                self._unfeed(rel)
                self.let_go(rel, "cancelled")

    def _fed_job(self, rel: str, known: Known | None) -> None:
        try:
            self._thumbnail_job(rel, known)
        finally:
            self._unfeed(rel)
            if not self.closed:
                self._feed()

    def _unfeed(self, rel: str) -> None:
        with self._lock:
            self._fed[rel] -= 1
            if self._fed[rel] <= 0:
                del self._fed[rel]

    def pull(self, rel: str, outputs: list[ThumbOutput]) -> None:
        """Pull thumbnails of ``rel`` known to be in the bucket (a listing, or a worker's skip)."""
        assert self._ppool is not None, "no puller in this process"
        if not outputs:
            self._tell(rel, "pull", "skipped")
            return
        self._start_pulls(rel, outputs, [None] * len(outputs))

    def close(self, *, wait: bool) -> None:
        """Stop taking jobs; ``wait``: finish those in flight (else they are cancelled unless running). Jobs not
        yet queued on a shared pool are dropped: their events (released, or the next reconcile) bring them back."""
        with self._lock:
            self.closed = True
            self._waiting.clear()
            dropped = [rel for rel in self._in_hand if rel not in self._fed]
        for rel in dropped:  # waiting, or still uploading: their events are released for a job
            self.let_go(rel, "cancelled")
        for pool in self._own_pools():
            pool.shutdown(wait=wait, cancel_futures=True)

    def _own_pools(self) -> list[ThreadPoolExecutor]:
        return [p for p in (self._wpool if self._own_wpool else None, self._ppool) if p is not None]

    # --- the Role surface ---------------------------------------------------------------

    def start(self) -> None:
        """Nothing to start: the uploader's listener and the poller bring the jobs."""

    def pause(self) -> None:
        """Jobs in hand go on; a pause holds the uploads that feed it."""

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        self.close(wait=False)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all([shutdown_within(pool, deadline, cancel_futures=True) for pool in self._own_pools()])

    # --- jobs ----------------------------------------------------------------------------

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[..., None], *args: object) -> bool:
        try:
            pool.submit(fn, *args)
        except RuntimeError:  # shut down: the owner stopped (timeout, Ctrl-C); it lists what is left
            return False
        return True

    def _thumbnail_job(self, rel: str, known: Known | None) -> None:
        assert self.worker is not None
        keys = self.worker.layout.thumb_keys(rel)
        if self.puller is not None:
            self.puller.expect(keys)  # their pull events wait for the placing below instead of downloading
        made: list[tuple[ThumbOutput, bytes]] = []
        result = "failed"
        try:
            result, made = self._make(rel, known)
        finally:
            self.let_go(rel, result)  # after the journal has it: see WorkerTriage.triage
            if self.puller is not None:
                placing = {out.key for out, _data in made}
                self.puller.release([k for k in keys if k not in placing])
        if made:
            self._start_pulls(rel, [out for out, _data in made], [data for _out, data in made])

    def _make(self, rel: str, known: Known | None) -> tuple[str, list[tuple[ThumbOutput, bytes]]]:
        """The thumbnail job; returns its result and the new thumbnails (with their bytes) to place locally."""
        assert self.worker is not None
        made: list[tuple[ThumbOutput, bytes]] = []

        def keep(out: ThumbOutput) -> None:
            # Thumbnails are small: their bytes go to the pull pool, which writes (and fsyncs) them while this
            # job slot takes the next image.
            if self.puller is not None and out.path is not None:
                made.append((out, out.path.read_bytes()))

        try:
            result, outputs = self.worker.make(rel, known=known, place=keep)
        except ItemError as exc:
            self._tell(rel, "thumbnail", "failed", str(exc))
            return "failed", []
        except ThumbdropError as exc:
            self._tell(rel, "thumbnail", "failed", f"not thumbnailed: {exc}")
            return "failed", []
        except Exception as exc:  # noqa: BLE001 - a bug: report this item by name, keep the pool alive
            log.exception("unexpected error thumbnailing %s", rel)
            self._tell(rel, "thumbnail", "failed", f"not thumbnailed: {type(exc).__name__}: {exc}")
            return "failed", []
        self._tell(rel, "thumbnail", result)
        if self.puller is None or result == "gone":
            return result, []
        if not made:
            self.pull(rel, outputs)
        return result, made

    def _start_pulls(self, rel: str, outputs: list[ThumbOutput], data: list[bytes | None]) -> None:
        assert self._ppool is not None
        with self._lock:
            self._pulls_left[rel] = [str(len(outputs)), "skipped", ""]
        for out, body in zip(outputs, data, strict=True):
            if not self._submit(self._ppool, self._pull_job, rel, out, body) and self.puller is not None:
                self.puller.release([out.key])  # not placed after all: a pull event downloads it

    def _pull_job(self, rel: str, out: ThumbOutput, data: bytes | None = None) -> None:
        assert self.puller is not None
        reason = ""
        try:
            if data is not None:
                try:
                    result = self.puller.place(out, data)
                finally:
                    self.puller.release([out.key])
            else:
                result = self.puller.pull(out.key, out.rel, size=out.size or None, etag=out.etag or None)
        except ItemError as exc:
            result, reason = "failed", str(exc)
            self.puller.status.fail(out.key, reason, "puller")
        except ThumbdropError as exc:
            result, reason = "failed", f"not pulled: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug: report this item by name, keep the pool alive
            log.exception("unexpected error pulling %s", out.key)
            result, reason = "failed", f"not pulled: {type(exc).__name__}: {exc}"
        with self._lock:
            entry = self._pulls_left[rel]
            entry[0] = str(int(entry[0]) - 1)
            if result == "failed":
                entry[1:] = ["failed", reason]
            elif result == "pulled" and entry[1] != "failed":
                entry[1] = "pulled"
            finished = entry[0] == "0"
            if finished:
                del self._pulls_left[rel]
        if finished:
            self._tell(rel, "pull", entry[1], entry[2])

    def _tell(self, rel: str, stage: str, result: str, reason: str = "") -> None:
        try:
            self.listener(rel, stage, result, reason)
        except Exception:  # noqa: BLE001 - the listener's bug must not hide the outcome of the next item
            log.exception("hand-over: the listener failed on %s", rel)
