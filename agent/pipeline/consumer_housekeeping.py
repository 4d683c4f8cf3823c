"""The consumer's housekeeping thread: batched deletes, postponements and releases (<= 10 a request, each
batch's ``Failed`` list checked), and the heartbeat that keeps the visibility of in-flight messages extended."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.cloud.errors import call
from agent.errors import ResourceMissingError, ThumbdropError

log = logging.getLogger("agent.pipeline.consumer")
Message = dict[str, Any]


class Housekeeping:
    """The housekeeping half of ``QueueConsumer`` (a mixin: the consumer's attributes below are its own)."""

    name: str
    sqs: Any
    queue_url: str
    visibility: int
    stop_event: threading.Event
    on_missing: Callable[[ThumbdropError], None] | None
    _lock: threading.Lock
    _busy: threading.Event
    _inflight: dict[str, str]
    _to_delete: list[tuple[str, str]]
    _started: set[str]
    _to_postpone: dict[str, tuple[str, int]]

    def _housekeeping_loop(self) -> None:
        """Flush deletions and postponements every second, extend jobs that just started, and every running job
        every visibility/3; with nothing in flight, sleep until a job starts."""
        next_extend = time.monotonic() + self.visibility / 3
        while True:
            with self._lock:
                idle = not self._inflight and not self._to_delete and not self._to_postpone
                if idle:
                    self._busy.clear()
            if idle:
                # Checked after the clear: a stop() that set _busy just before it is seen here, not slept through.
                if self.stop_event.is_set():
                    return
                self._busy.wait()
                next_extend = time.monotonic() + self.visibility / 3  # a job starting now has a fresh visibility
            if self.stop_event.wait(1.0):
                return
            self._flush_deletes()
            self._flush_postpones()
            if time.monotonic() >= next_extend:
                self._extend_visibility()
                next_extend = time.monotonic() + self.visibility / 3
            else:
                self._extend_visibility(started_only=True)

    def _extend_visibility(self, *, started_only: bool = False) -> None:
        with self._lock:
            started, self._started = self._started, set()
            entries = [(mid, rh) for mid, rh in self._inflight.items() if not started_only or mid in started]
        for i in range(0, len(entries), 10):
            batch = [
                {"Id": str(n), "ReceiptHandle": rh, "VisibilityTimeout": self.visibility}
                for n, (_mid, rh) in enumerate(entries[i : i + 10])
            ]
            try:
                out = call("extend visibility", self.sqs.change_message_visibility_batch, QueueUrl=self.queue_url, Entries=batch)
                for failed in out.get("Failed", []):
                    log.debug("%s: visibility not extended: %s", self.name, failed)
            except ThumbdropError as exc:
                log.debug("%s: visibility not extended: %s", self.name, exc)

    def _flush_postpones(self) -> None:
        with self._lock:
            pending, self._to_postpone = self._to_postpone, {}
        items = list(pending.items())
        for i in range(0, len(items), 10):
            chunk = items[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": rh, "VisibilityTimeout": d} for n, (_mid, (rh, d)) in enumerate(chunk)]
            try:
                out = call(
                    "postpone messages", self.sqs.change_message_visibility_batch, QueueUrl=self.queue_url, Entries=entries
                )
            except ThumbdropError:
                with self._lock:
                    for mid, entry in chunk:
                        self._to_postpone.setdefault(mid, entry)
                continue
            for failed in out.get("Failed", []):  # gone or already visible again: nothing more to do
                log.debug("%s: message not postponed: %s", self.name, failed)

    def _flush_deletes(self) -> None:
        with self._lock:
            batch, self._to_delete = self._to_delete, []
        for i in range(0, len(batch), 10):
            chunk = batch[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": rh} for n, (_mid, rh) in enumerate(chunk)]
            try:
                out = call("delete messages", self.sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries)
            except ResourceMissingError as exc:
                if self.on_missing is not None:  # the queue went, and its messages with it: nothing to redo
                    self.on_missing(exc)
                    continue
                log.warning("%s: could not delete %d message(s): %s", self.name, len(entries), exc)
                continue
            except ThumbdropError as exc:
                # Not deleted means redelivered later; handlers are idempotent, so it only costs a repeat.
                log.warning("%s: could not delete %d message(s): %s", self.name, len(entries), exc)
                continue
            for failed in out.get("Failed", []):
                log.warning("%s: message not deleted (%s): %s", self.name, failed.get("Code"), failed.get("Message"))

    def _release(self, messages: list[Message]) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for n, m in enumerate(messages)]
        for i in range(0, len(entries), 10):
            try:
                call(
                    "release messages",
                    self.sqs.change_message_visibility_batch,
                    QueueUrl=self.queue_url,
                    Entries=entries[i : i + 10],
                )
            except ThumbdropError as exc:
                log.debug("%s: could not release messages: %s", self.name, exc)

    def _release_all(self) -> None:
        with self._lock:
            left = [{"ReceiptHandle": rh} for rh in self._inflight.values()]
            self._inflight.clear()
        if left:
            self._release(left)
