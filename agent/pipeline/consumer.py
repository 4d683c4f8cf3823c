"""One SQS consumer loop shared by the worker and the puller.

Long polls (<= 20 s) for at most as many messages as there are free job slots
(<= 10 a receive), runs each message's handler on a bounded pool, keeps the
visibility of in-flight messages extended (a slow job is never handed to a
second consumer), and deletes in batches of <= 10, checking ``Failed``.

Messages are received with a short visibility (``START_VISIBILITY``), extended to
``visibility_timeout`` within a second of their job starting: a receive whose
answer was lost on the way (a cut link) hides its messages for seconds, not for
the whole visibility timeout.

Outcomes: success -> delete. ItemError -> copy to the dead-letter queue with
the reason, then delete (dead-lettered at once). TransientError -> released
with a growing visibility timeout; SQS moves it to the dead-letter queue after
``max_receives``. Delivery is at-least-once, so handlers are idempotent.

A ``triage`` hook decides in the receive thread, with no job slot, what needs no job: a redundant message is
deleted at once; one whose work this process is doing elsewhere waits for it outside the pool, then is asked again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.backoff import Backoff
from agent.cloud.errors import call, is_transient
from agent.errors import BadMessageError, IncompleteSourceError, ItemError, OfflineError, ResourceMissingError, ThumbdropError
from agent.pipeline.consumer_housekeeping import Housekeeping
from agent.pipeline.pools import shutdown_within
from agent.pipeline.role import RoleThreads
from agent.state.status import Status

log = logging.getLogger(__name__)

Message = dict[str, Any]
# True: nothing to do, delete it; a Future: wait for that work, then ask again; None: run the handler.
Triage = Callable[[Message], "bool | Future[Any] | None"]
REASON_ATTR = "thumbdrop-reason"
NAME_ATTR = "thumbdrop-item"
# Seconds a received message stays hidden until its job has started and the heartbeat extends it.
START_VISIBILITY = 10
# A job that failed because the link is down is tried again this soon after the link is back (4-6 s).
LINK_RETRY = Backoff(first=6.0, cap=6.0, jitter=1 / 3)
# A message whose job failed otherwise: 5 s x 2^(receives-1), +-20 %, from its 9th receive on at most 900 s.
MESSAGE_RETRY = Backoff(first=6.0, cap=6.0 * 2**8, jitter=1 / 3)
MAX_POSTPONE = 900  # seconds


@dataclass
class Outcome:
    ok: int = 0
    dead_lettered: int = 0
    retried: int = 0


class QueueConsumer(RoleThreads, Housekeeping):
    """A Role: ``start`` runs its receive and heartbeat threads; ``pause`` stops receiving (jobs in hand go on);
    ``join`` finishes the jobs, deletes what is done and releases the rest, within its deadline."""

    def __init__(
        self,
        *,
        name: str,
        sqs: Any,
        queue_url: str,
        dlq_url: str | None,
        handle: Callable[[Message], Future[Any] | None],
        describe: Callable[[Message], str],
        concurrency: int,
        visibility_timeout: int,
        wait_seconds: int,
        status: Status,
        paused: Callable[[], bool] = lambda: False,
        pausable: bool = True,
        receiver: Any = None,
        on_missing: Callable[[ThumbdropError], None] | None = None,
        start_visibility: int = START_VISIBILITY,
        triage: Triage | None = None,
    ) -> None:
        super().__init__(name)
        self.sqs = sqs
        # Long polls go through their own client, whose read timeout is the wait plus a margin.
        self.receiver = receiver if receiver is not None else sqs
        # A queue that is gone (the backend came back empty): the agent sets up again or says what to run.
        self.on_missing = on_missing
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.handle = handle
        self.triage = triage
        self.describe = describe
        self.concurrency = concurrency
        self.visibility = visibility_timeout
        self.start_visibility = min(visibility_timeout, start_visibility)
        self.wait = wait_seconds
        self.status = status
        self.holds = paused  # besides pause(): an outside reason to take no message now
        self.pausable = pausable  # False: pause() leaves it receiving (the worker: a pause holds transfers only)
        self.outcome = Outcome()
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._inflight: dict[str, str] = {}  # message id -> receipt handle
        self._to_delete: list[tuple[str, str]] = []
        self._started: set[str] = set()  # message ids whose job started: extend them to the full visibility
        self._to_postpone: dict[str, tuple[str, int]] = {}  # message id -> (receipt handle, delay), not sent yet
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{name}-job")
        self.backoff = Backoff(first=0.5, cap=4.0)  # a receive is the cheapest probe of a returning backend
        self._slow_backoff = Backoff(first=2.0, cap=15.0)  # refusals that a retry does not cure soon
        self._heartbeat = False  # start() runs the heartbeat that extends the short receive visibility
        # Set when a job starts or a message waits for its delete, and by stop(): the housekeeping thread
        # sleeps on it while there is nothing in flight, instead of waking every second.
        self._busy = threading.Event()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The job pool: the in-process hand-over runs its thumbnail jobs here too (one bound for both)."""
        return self._pool

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = True  # before the receive thread's first poll
        self.spawn(self._receive_loop, "receive")
        self.spawn(self._housekeeping_loop, "heartbeat")

    def pause(self) -> None:
        if self.pausable:
            super().pause()

    def stop(self) -> None:
        super().stop()
        self._busy.set()

    def wake(self) -> None:
        """The backend is back (another role got through): try again now, from the first backoff step."""
        self.backoff.reset()
        self._slow_backoff.reset()
        super().wake()

    def join(self, timeout: float) -> bool:
        """Finish in-flight jobs, delete what is done, release the rest; bounded by ``timeout``. True when
        every thread ended (a receive thread in its long poll may not: it is a daemon, see below)."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        if not shutdown_within(self._pool, deadline, cancel_futures=False):
            # Jobs stuck on an unresponsive backend: their messages come back after the visibility timeout and
            # are redone (idempotent). The deletes and releases below would only hang on the same backend.
            log.warning("%s: jobs still waiting on the backend at the stop deadline: left for redelivery", self.name)
            return False
        self._flush_deletes()
        self._flush_postpones()
        for t in self._threads:
            # The receive thread may sit in a long poll (up to 20 s) that cannot be interrupted: give it
            # a second, not the whole budget. It is a daemon; whatever that poll still returns is
            # released at once (see _receive_batch), so nothing is lost or held.
            limit = 1.0 if t.name.endswith("-receive") else deadline - time.monotonic()
            t.join(max(0.1, min(limit, deadline - time.monotonic())))
        self._release_all()
        return not any(t.is_alive() for t in self._threads)

    # --- one-shot use (sync) ------------------------------------------------------

    def drain(self, *, deadline: float) -> None:
        """Process messages until the queue answers empty twice in a row (or the deadline)."""
        empty = 0
        while empty < 2 and time.monotonic() < deadline and not self.stop_event.is_set():
            got = self._receive_batch(wait=1)
            empty = 0 if got else empty + 1
            self._wait_idle(deadline)
            self._flush_deletes()
        self._release_all()

    def _wait_idle(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    return
            time.sleep(0.05)

    # --- loops ------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while not self.stop_event.is_set():
            if self.paused.is_set() or self.holds():
                self.stop_event.wait(0.5)
                continue
            try:
                self._receive_batch(wait=self.wait)
                self.backoff.reset()
                self._slow_backoff.reset()
                self.status.online()
            except ThumbdropError as exc:
                if self.stop_event.is_set():
                    # A long poll cut off by the stop (the embedded server goes down with the agent): no outage.
                    log.debug("%s: receive ended by the stop: %s", self.name, exc)
                    return
                if exc.kind == "transient":
                    self.status.offline(str(exc))
                    delay = self.backoff.next()
                elif isinstance(exc, ResourceMissingError) and self.on_missing is not None:
                    self.on_missing(exc)  # logs once per episode, not at every try
                    delay = self._slow_backoff.next()
                else:
                    log.error("%s: %s", self.name, exc)
                    delay = self._slow_backoff.next()
                self._wake.clear()
                self._wake.wait(delay)

    def _receive_batch(self, *, wait: int) -> int:
        # Wait for a free slot first: never hold a message we cannot start on.
        while not self._slots.acquire(timeout=0.5):
            if self.stop_event.is_set():
                return 0
        free = 1
        while free < 10 and self._slots.acquire(blocking=False):
            free += 1
        try:
            resp = call(
                f"receive from {self.name} queue",
                self.receiver.receive_message,
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=free,
                WaitTimeSeconds=wait,
                # Short only when the heartbeat runs to extend it (start()); drain() has none.
                VisibilityTimeout=self.start_visibility if self._heartbeat else self.visibility,
                AttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            )
        except BaseException:
            for _ in range(free):
                self._slots.release()
            raise
        messages = resp.get("Messages", [])
        for _ in range(free - len(messages)):
            self._slots.release()
        if self.stop_event.is_set() and messages and not self._pool_alive():
            self._release(messages)
            return 0
        for n, msg in enumerate(messages):
            with self._lock:
                self._inflight[msg["MessageId"]] = msg["ReceiptHandle"]
                self._busy.set()  # under the lock: the housekeeping thread's idle check cannot miss it
            if self._triaged(msg):
                self._slots.release()
                continue
            try:
                self._pool.submit(self._run_job, msg)
            except RuntimeError:  # the pool shut down while this poll was open: hand the rest back
                with self._lock:
                    for m in messages[n:]:
                        self._inflight.pop(m["MessageId"], None)
                self._release(messages[n:])
                return n
        return len(messages)

    def _triaged(self, msg: Message) -> bool:
        """True when ``msg`` needs no job: deleted (redundant), or waiting outside the pool for work in hand."""
        if self.triage is None:
            return False
        try:
            verdict = self.triage(msg)
        except Exception:  # noqa: BLE001 - triage only saves work: when it fails, the handler decides
            log.debug("%s: triage of %s failed; handled as a job", self.name, self.describe(msg), exc_info=True)
            return False
        if verdict is True:
            self.outcome.ok += 1
            self._done(msg)
            return True
        if isinstance(verdict, Future):
            with self._lock:
                self._started.add(msg["MessageId"])  # the heartbeat extends it to the full visibility at once
            verdict.add_done_callback(lambda _f: self._after_wait(msg))
            return True
        return False

    def _after_wait(self, msg: Message) -> None:
        """The work ``msg`` waited for ended: redundant now, or released to be received again as a job (its
        work failed or was cancelled: the handler retries or dead-letters it, as for any message)."""
        if self._triaged(msg):
            return
        with self._lock:
            rh = self._inflight.pop(msg["MessageId"], None)
            self._started.discard(msg["MessageId"])
            if rh is not None:
                self._to_postpone[msg["MessageId"]] = (rh, 0)
                self._busy.set()

    def _pool_alive(self) -> bool:
        return not getattr(self._pool, "_shutdown", False)

    def _run_job(self, msg: Message) -> None:
        with self._lock:
            self._started.add(msg["MessageId"])
        try:
            later = self.handle(msg)
        except BaseException as exc:  # noqa: BLE001 - _settle sorts them; KeyboardInterrupt and co. re-raised there
            self._settle(msg, exc)
        else:
            if isinstance(later, Future):
                # Work handed to another pool (a video preview): the job slot is free for the next message, while
                # this one stays in flight (its visibility extended) until that work is done.
                later.add_done_callback(lambda f: self._settle_future(msg, f))
            else:
                self._settle(msg, None)
        finally:
            self._slots.release()

    def _settle_future(self, msg: Message, fut: Future[Any]) -> None:
        if fut.cancelled():
            return  # its pool shut down: left in flight, released by join, redelivered
        self._settle(msg, fut.exception())

    def _settle(self, msg: Message, exc: BaseException | None) -> None:
        if exc is None:
            self.outcome.ok += 1
            self._done(msg)
        elif isinstance(exc, ItemError):
            self._dead_letter(msg, exc)
        elif isinstance(exc, ThumbdropError):
            if isinstance(exc, ResourceMissingError) and self.on_missing is not None:
                self.on_missing(exc)
            self._retry_later(msg, exc)
        elif isinstance(exc, Exception):  # a bug in a handler must not kill the loop; it is retried, then dead-lettered
            log.error("%s: unexpected error handling %s", self.name, self.describe(msg), exc_info=exc)
            self._retry_later(msg, exc)
        else:
            raise exc

    def _done(self, msg: Message) -> None:
        with self._lock:
            self._inflight.pop(msg["MessageId"], None)
            self._started.discard(msg["MessageId"])
            self._to_delete.append((msg["MessageId"], msg["ReceiptHandle"]))
            self._busy.set()
            full = len(self._to_delete) >= 10
        if full:
            self._flush_deletes()

    def _dead_letter(self, msg: Message, exc: ThumbdropError) -> None:
        name = self.describe(msg)
        self.outcome.dead_lettered += 1
        if isinstance(exc, BadMessageError):
            # Handlers report bad files themselves; a message that is not an S3 event only shows here.
            log.error("dead-lettered %s on the %s queue: %s", name, self.name, exc)
            self.status.fail(name, str(exc), self.name)
        if self.dlq_url:
            try:
                call(
                    f"dead-letter a message of {self.name}",
                    self.sqs.send_message,
                    QueueUrl=self.dlq_url,
                    MessageBody=msg["Body"],
                    MessageAttributes={
                        REASON_ATTR: {"DataType": "String", "StringValue": str(exc)[:4000] or exc.title},
                        NAME_ATTR: {"DataType": "String", "StringValue": name[:1000] or "?"},
                    },
                )
            except ThumbdropError as send_exc:
                log.warning("%s: could not dead-letter %s (%s); it will be retried", self.name, name, send_exc)
                self._retry_later(msg, send_exc)
                return
        self._done(msg)

    def _retry_later(self, msg: Message, exc: BaseException) -> None:
        self.outcome.retried += 1
        receives = int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        level = logging.WARNING
        if isinstance(exc, IncompleteSourceError):
            delay = min(MAX_POSTPONE, max(1, int(exc.retry_after)))  # the handler knows when another look makes sense
            level = logging.INFO  # not a failure (yet): most likely a newer version is on its way
        elif isinstance(exc, OfflineError) or (is_transient(exc) and self.status.offline_since is not None):
            # The link failed, not this message: it is due again as soon as the link is back.
            delay = int(LINK_RETRY.delay_for(0))
        else:
            delay = min(MAX_POSTPONE, int(MESSAGE_RETRY.delay_for(receives - 1)))
        log.log(level, "%s: %s failed (attempt %d), retrying in %d s: %s", self.name, self.describe(msg), receives, delay, exc)
        with self._lock:
            self._inflight.pop(msg["MessageId"], None)
            self._started.discard(msg["MessageId"])
        try:
            call(
                "postpone a message",
                self.sqs.change_message_visibility,
                QueueUrl=self.queue_url,
                ReceiptHandle=msg["ReceiptHandle"],
                VisibilityTimeout=delay,
            )
        except ThumbdropError as vis_exc:
            # Left as it is, the message would stay hidden for the rest of its (extended) visibility, long after
            # the link is back: the heartbeat sends the postponement again until it gets through.
            log.debug("%s: could not postpone message (tried again): %s", self.name, vis_exc)
            with self._lock:
                self._to_postpone[msg["MessageId"]] = (msg["ReceiptHandle"], delay)
                self._busy.set()
