"""The dead-letter queues (``<queue>-dlq``): list, redrive, purge.

Listing must not lose or hide messages: each is received with a short
visibility timeout and made visible again (visibility 0) at the end, even when
the listing fails half-way. Redrive uses StartMessageMoveTask where the backend
has it and otherwise moves message by message: send to the source queue, then
delete from the dead-letter queue only what was sent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.config

from agent.cloud.clients import Backend
from agent.cloud.errors import call
from agent.cloud.events import parse_body
from agent.errors import ThumbdropError
from agent.text import printable

log = logging.getLogger(__name__)

# The consumer's message attributes on what it dead-letters (agent.pipeline.consumer REASON_ATTR / NAME_ATTR);
# spelled out here because the cloud layer must not import the pipeline.
REASON_ATTR = "thumbdrop-reason"
NAME_ATTR = "thumbdrop-item"
PEEK_SECONDS = 30


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the dead-letter queue's name
    message_id: str
    item: str  # the object key(s) the message is about
    reason: str
    receives: int
    sent_at: float | None  # when it was sent to the dead-letter queue (epoch seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "message_id": self.message_id,
            "item": self.item,
            "reason": self.reason,
            "receives": self.receives,
            "sent_at": self.sent_at,
        }


def describe(msg: dict[str, Any], queue: str, max_receives: int) -> DeadLetter:
    """What a dead-lettered message is about and why it is here."""
    attrs = msg.get("MessageAttributes") or {}
    receives = int((msg.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
    # Our own listing counts as a receive: leave it out of what the source queue saw.
    seen = max(receives - 1, 0)
    item = str((attrs.get(NAME_ATTR) or {}).get("StringValue") or "")
    if not item:
        try:
            item = ", ".join(e.key for e in parse_body(str(msg.get("Body", "")))) or "test event"
        except ThumbdropError:
            item = f"message {msg.get('MessageId', '?')} (not an S3 event)"
    reason = str((attrs.get(REASON_ATTR) or {}).get("StringValue") or "")
    if not reason:
        reason = f"exceeded max_receives ({seen} receives; limit {max_receives})"
    sent = (msg.get("Attributes") or {}).get("SentTimestamp")
    # A key may hold a newline: one message, one line of 'dlq list'.
    return DeadLetter(
        queue, str(msg.get("MessageId")), printable(item), printable(reason), seen, int(sent) / 1000 if sent else None
    )


def list_dead_letters(
    sqs: Any,
    url: str,
    *,
    queue: str,
    max_receives: int,
    limit: int = 1000,
    peek_seconds: int = PEEK_SECONDS,
    done: Callable[[dict[str, Any]], bool] | None = None,
    removed: list[DeadLetter] | None = None,
) -> list[DeadLetter]:
    """Up to ``limit`` messages of a dead-letter queue, left on it (visible again) afterwards.

    ``done``: says of a message that its item went through since (a newer version of the file was thumbnailed):
    such a message is stale, deleted instead of listed, and appended to ``removed``.
    """
    held: list[dict[str, Any]] = []
    out: dict[str, DeadLetter] = {}
    try:
        while len(out) < limit:
            resp = call(
                f"read dead-letter queue {queue}",
                sqs.receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=min(10, limit - len(out)),
                WaitTimeSeconds=1,  # a long poll asks every SQS server: an empty answer means empty
                VisibilityTimeout=peek_seconds,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = resp.get("Messages", [])
            if not messages:
                break
            fresh = [m for m in messages if m["MessageId"] not in out]
            stale = [m for m in fresh if done is not None and _is_done(done, m)]
            gone = _delete(sqs, url, queue, stale)
            held.extend(m for m in messages if m["MessageId"] not in gone)
            for m in fresh:
                entry = describe(m, queue, max_receives)
                if m["MessageId"] in gone:
                    if removed is not None:
                        removed.append(entry)
                else:
                    out[m["MessageId"]] = entry
            if not fresh:
                break  # the peek outlasted its timeout: everything is listed once
    finally:
        release(sqs, url, held)
    return list(out.values())


def _is_done(done: Callable[[dict[str, Any]], bool], msg: dict[str, Any]) -> bool:
    try:
        return done(msg)
    except ThumbdropError as exc:  # cannot tell now: list it, as before
        log.debug("could not tell whether dead-letter message %s is stale: %s", msg.get("MessageId"), exc)
        return False


def _delete(sqs: Any, url: str, queue: str, messages: list[dict[str, Any]]) -> set[str]:
    """Delete messages (received just now); returns the ids of those deleted."""
    deleted: set[str] = set()
    for i in range(0, len(messages), 10):
        chunk = messages[i : i + 10]
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)]
        try:
            out = call(f"remove stale messages from {queue}", sqs.delete_message_batch, QueueUrl=url, Entries=entries)
        except ThumbdropError as exc:
            log.warning("could not remove %d stale dead-letter message(s) from %s: %s", len(entries), queue, exc)
            continue
        deleted.update(chunk[int(ok["Id"])]["MessageId"] for ok in out.get("Successful", []))
    return deleted


def release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    """Make received messages visible again at once."""
    for i in range(0, len(messages), 10):
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(messages[i : i + 10])
        ]
        try:
            out = call("release dead-letter messages", sqs.change_message_visibility_batch, QueueUrl=url, Entries=entries)
        except ThumbdropError as exc:
            log.warning(
                "could not make %d dead-letter message(s) visible again (they reappear by themselves): %s", len(entries), exc
            )
            continue
        for failed in out.get("Failed", []):
            log.debug("message not released: %s", failed)


@dataclass
class RedriveResult:
    moved: int = 0
    failed: int = 0
    task: str | None = None  # StartMessageMoveTask's handle when the backend moves them itself


def queue_arn(sqs: Any, url: str) -> str:
    out = call("read queue ARN", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
    return str(out["Attributes"]["QueueArn"])


def _single_try_sqs(backend: Backend) -> Any:
    """An SQS client that does not retry: a backend without StartMessageMoveTask answers 500 (moto),
    and the standard retries would wait seconds on an error that will not go away."""
    base = backend.sqs
    config = base.meta.config.merge(botocore.config.Config(retries={"mode": "standard", "max_attempts": 1}))
    kwargs: dict[str, Any] = {"config": config, "verify": backend.verify}
    endpoint = backend.endpoint_for("sqs")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return backend.session.client("sqs", **kwargs)


def redrive(backend: Backend, *, dlq_url: str, source_url: str, queue: str, use_move_task: bool = True) -> RedriveResult:
    """Send every message of a dead-letter queue back to its source queue for another try."""
    sqs = backend.sqs
    if use_move_task:
        try:
            out = call(
                f"start moving {queue} back",
                _single_try_sqs(backend).start_message_move_task,
                SourceArn=queue_arn(sqs, dlq_url),
                DestinationArn=queue_arn(sqs, source_url),
            )
            return RedriveResult(task=str(out.get("TaskHandle", "")))
        except ThumbdropError as exc:
            # UnsupportedOperation / NotImplemented on S3-compatible stores and moto; moving by hand works everywhere.
            log.info("StartMessageMoveTask unavailable (%s); moving messages one by one", exc)
    return _redrive_by_hand(sqs, dlq_url, source_url, queue)


def _redrive_by_hand(sqs: Any, dlq_url: str, source_url: str, queue: str) -> RedriveResult:
    result = RedriveResult()
    seen: set[str] = set()
    # Bodies already sent back in this run. A running agent that fails the same item again dead-letters a new
    # message (new id) with the same body: without this, redrive and agent would pass it back and forth forever.
    moved_bodies: set[str] = set()
    held: list[dict[str, Any]] = []
    while True:
        resp = call(
            f"read dead-letter queue {queue}",
            sqs.receive_message,
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        received = resp.get("Messages", [])
        messages = [m for m in received if m["MessageId"] not in seen and _body_id(m) not in moved_bodies]
        # Failed again since this redrive began: kept invisible until the end (so the next receives reach what
        # is left), then left in the dead-letter queue.
        held.extend(m for m in received if m not in messages)
        if not messages:
            release(sqs, dlq_url, held)
            return result  # empty, or only what this run already handled came back: stop
        seen.update(m["MessageId"] for m in messages)
        moved_bodies.update(_body_id(m) for m in messages)
        entries = [
            {"Id": str(n), "MessageBody": m["Body"], "MessageAttributes": _foreign_attributes(m)} for n, m in enumerate(messages)
        ]
        sent = call(f"send messages back from {queue}", sqs.send_message_batch, QueueUrl=source_url, Entries=entries)
        ok = {s["Id"] for s in sent.get("Successful", [])}
        result.failed += len(messages) - len(ok)
        done = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages) if str(n) in ok]
        if done:
            out = call(f"delete redriven messages from {queue}", sqs.delete_message_batch, QueueUrl=dlq_url, Entries=done)
            # A copy not deleted here is redriven twice; consumers are idempotent, so that only costs a repeat.
            result.moved += len(done) - len(out.get("Failed", []))
        release(sqs, dlq_url, [m for n, m in enumerate(messages) if str(n) not in ok])


def _body_id(msg: dict[str, Any]) -> str:
    return hashlib.sha256(str(msg.get("Body", "")).encode("utf-8", "surrogatepass")).hexdigest()


def _foreign_attributes(msg: dict[str, Any]) -> dict[str, Any]:
    """A message's attributes minus our reason and item (stale on a new try), in the form SendMessage takes."""
    out: dict[str, Any] = {}
    for name, value in (msg.get("MessageAttributes") or {}).items():
        if name in (REASON_ATTR, NAME_ATTR):
            continue
        kept = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        out[name] = kept
    return out


def depth(sqs: Any, url: str) -> int:
    attrs = call("read queue depth", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0))


def purge(sqs: Any, url: str, queue: str) -> int:
    """Drop every message of a queue; returns about how many there were. SQS allows one purge a minute."""
    count = depth(sqs, url)
    try:
        call(f"purge queue {queue}", sqs.purge_queue, QueueUrl=url)
    except ThumbdropError as exc:
        if exc.code not in ("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress"):
            raise
        # SQS allows one PurgeQueue a minute: drop them one batch at a time instead.
        return _delete_all(sqs, url, queue)
    return count  # SQS purges asynchronously (up to 60 s): the count read before is what it drops


def _delete_all(sqs: Any, url: str, queue: str) -> int:
    deleted = empty = 0
    while empty < 2:
        got = call(
            f"receive from {queue}",
            sqs.receive_message,
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
        ).get("Messages", [])
        if not got:
            empty += 1
            continue
        empty = 0
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)]
        out = call(f"delete messages from {queue}", sqs.delete_message_batch, QueueUrl=url, Entries=entries)
        deleted += len(out.get("Successful", []))
        for failed in out.get("Failed", []):
            log.warning("could not delete a message from %s: %s", queue, failed.get("Message"))
    return deleted
