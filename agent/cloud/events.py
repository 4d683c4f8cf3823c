"""Parse S3 event notifications as they arrive on SQS: direct, or wrapped by SNS.

Keys in S3 events are URL-encoded with ``+`` for spaces (moto also encodes
``/``), so they are decoded with ``unquote_plus``. ``s3:TestEvent`` messages
carry no records. Delivery is at-least-once and unordered: callers must be
idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from agent.errors import BadMessageError

MAX_BODY = 262144


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str
    event_name: str
    size: int | None
    etag: str | None
    sequencer: str | None

    @property
    def created(self) -> bool:
        return self.event_name.startswith("ObjectCreated")


def created_in(msg: dict[str, Any]) -> list[ObjectEvent]:
    """The object-created events of one queue message; [] for a test event, a removal, or a body that is no S3
    event (the dead-letter queues' stale checks: such a message is never stale)."""
    try:
        return [e for e in parse_body(str(msg.get("Body", ""))) if e.created]
    except BadMessageError:
        return []


def parse_body(body: str) -> list[ObjectEvent]:
    """Records of one message body; [] for a test event. Raises BadMessageError."""
    if len(body) > MAX_BODY:
        raise BadMessageError(f"message body of {len(body)} bytes is larger than any S3 event")
    doc = _json(body)
    # SNS wraps the S3 event unless raw message delivery is on.
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        if not isinstance(doc["Message"], str):
            raise BadMessageError("SNS notification whose Message is not a string")
        doc = _json(doc["Message"])
    if not isinstance(doc, dict):
        raise BadMessageError("message is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise BadMessageError("message has no 'Records' list: not an S3 event notification")
    return [_record(r, i) for i, r in enumerate(records)]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadMessageError(f"message is not valid JSON: {str(exc)[:80]}") from None


def _record(rec: Any, index: int) -> ObjectEvent:
    try:
        s3 = rec["s3"]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
        name = rec.get("eventName", "")
    except (KeyError, TypeError):
        raise BadMessageError(f"record {index} is not an S3 event record (missing s3.bucket.name or s3.object.key)") from None
    if not all(isinstance(v, str) for v in (bucket, raw_key, name)):
        raise BadMessageError(f"record {index} has a non-string bucket, key or eventName")
    size = obj.get("size")
    etag = obj.get("eTag") or obj.get("etag")
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(raw_key),
        event_name=name,
        size=size if isinstance(size, int) else None,
        etag=str(etag).strip('"') if etag else None,
        sequencer=obj.get("sequencer") if isinstance(obj.get("sequencer"), str) else None,
    )


def describe_message(msg: dict[str, Any]) -> str:
    """A queue message named by its object keys, for logs and reports."""
    try:
        return ", ".join(e.key for e in parse_body(msg["Body"])) or "test event"
    except BadMessageError:
        return f"message {msg.get('MessageId', '?')}"


def s3_event_body(bucket: str, key: str) -> str:
    """An ``ObjectCreated`` notification for ``key``, as S3 would send it (key URL-encoded, '+' for space):
    how one item is handed to a queue's consumer again (a retry)."""
    from urllib.parse import quote_plus

    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}},
    }
    return json.dumps({"Records": [record]})
