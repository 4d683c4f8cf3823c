"""A running agent against hostile or odd input: redelivered events, keys that try to escape the thumbnails
folder, events for buckets and prefixes that are not ours, malformed messages."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import (
    EVENTS_DLQ,
    EVENTS_QUEUE,
    PULL_DLQ,
    PULL_QUEUE,
    REASON_ATTR,
    SOURCE_BUCKET,
    THUMB_BUCKET,
    E2EEnv,
    check_thumbnail,
    files_under,
    image_bytes,
    make_image,
    s3_event,
    wait_for,
)

pytestmark = pytest.mark.e2e


def thumbnailed_lines(log: str, key: str) -> list[str]:
    return [line for line in log.splitlines() if f" thumbnailed {key} (" in line]


def reason(msg: dict[str, Any]) -> str:
    attrs = msg.get("MessageAttributes", {})
    assert REASON_ATTR in attrs, f"no {REASON_ATTR} attribute on {msg}"
    return str(attrs[REASON_ATTR]["StringValue"])


def test_redelivered_event_gives_one_thumbnail(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    make_image(e2e.inbox / "again/été 1.jpg", (900, 600), color=(60, 90, 200))
    thumb = e2e.thumbs / "again/été 1.jpg"
    wait_for(thumb.exists, 45, "the first thumbnail", agent.diagnose)
    key = "again/été 1.jpg"
    head = e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key=key)
    etag = head["ETag"].strip('"')
    before = e2e.s3.head_object(Bucket=THUMB_BUCKET, Key=key)

    event = s3_event(SOURCE_BUCKET, key, size=head["ContentLength"], etag=etag)
    e2e.send(EVENTS_QUEUE, event)  # the same body, delivered twice more
    e2e.send(EVENTS_QUEUE, event)
    wait_for(lambda: e2e.depth(EVENTS_QUEUE) == (0, 0), 30, "the redelivered events to be consumed", agent.diagnose)
    time.sleep(1.0)

    after = e2e.s3.head_object(Bucket=THUMB_BUCKET, Key=key)
    assert after["LastModified"] == before["LastModified"], "the thumbnail was written again"
    assert after["Metadata"]["source-etag"] == etag
    assert set(e2e.keys(THUMB_BUCKET)) == {key}
    assert len(thumbnailed_lines(agent.log(), key)) == 1, agent.diagnose()
    assert e2e.depth(EVENTS_DLQ) == (0, 0)
    check_thumbnail(thumb, (900, 600), color=(60, 90, 200))


def test_multipart_upload_double_event_gives_one_thumbnail(e2e: E2EEnv) -> None:
    """moto sends ObjectCreated:Put and ObjectCreated:CompleteMultipartUpload for one multipart upload."""
    e2e.write_config({"transfer": {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}})
    agent = e2e.start_agent()
    agent.wait_ready()
    make_image(e2e.inbox / "mp/big one.png", (1550, 1550), noise=True)
    thumb = e2e.thumbs / "mp/big one.png.jpg"
    wait_for(thumb.exists, 60, "the thumbnail of the multipart upload", agent.diagnose)
    wait_for(
        lambda: e2e.depth(EVENTS_QUEUE) == (0, 0) and e2e.depth(PULL_QUEUE) == (0, 0),
        30,
        "both events to be consumed",
        agent.diagnose,
    )
    time.sleep(1.0)
    etag = e2e.s3.head_object(Bucket=SOURCE_BUCKET, Key="mp/big one.png")["ETag"].strip('"')
    assert etag.endswith("-2")
    assert set(e2e.keys(THUMB_BUCKET)) == {"mp/big one.png.jpg"}
    assert e2e.s3.head_object(Bucket=THUMB_BUCKET, Key="mp/big one.png.jpg")["Metadata"]["source-etag"] == etag
    assert len(thumbnailed_lines(agent.log(), "mp/big one.png")) == 1, agent.diagnose()
    check_thumbnail(thumb, (1550, 1550))


def test_thumbnail_keys_that_escape_the_folder_are_refused(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    body = image_bytes((64, 64))
    # Objects in the thumbnail bucket whose events would write outside thumbs/ ...
    put_keys = ["../../escape.jpg", "a/../../x.jpg"]
    for key in put_keys:
        e2e.s3.put_object(Bucket=THUMB_BUCKET, Key=key, Body=body)
    # ... and hand-made pull-queue messages: absolute paths, backslashes, dot segments.
    absolute = str(e2e.root / "absolute-escape.jpg")
    sent_keys = [
        "../../escape2.jpg",
        absolute,
        "..\\..\\backslash-escape.jpg",
        "sub\\..\\..\\x2.jpg",
        "./dot/../../dot-escape.jpg",
        "ok/../../../deep-escape.jpg",
    ]
    for key in sent_keys:
        e2e.send(PULL_QUEUE, s3_event(THUMB_BUCKET, key, size=len(body)))

    dead = e2e.receive_all(PULL_DLQ, expect=len(put_keys) + len(sent_keys))
    assert len(dead) == len(put_keys) + len(sent_keys), agent.diagnose()
    refused: set[str] = set()
    for msg in dead:
        assert "refused" in reason(msg), msg
        refused.update(r["s3"]["object"]["key"] for r in json.loads(msg["Body"])["Records"])
    assert len(refused) == len(put_keys) + len(sent_keys)

    # Nothing was written outside thumbs/ (nor inside it).
    assert not (e2e.root.parent / "escape.jpg").exists()
    assert not (e2e.root.parent / "escape2.jpg").exists()
    assert not (e2e.root / "x.jpg").exists()
    assert not (e2e.root / "absolute-escape.jpg").exists()
    expected_top = {"inbox", "thumbs", "state", "outside", "home", "thumbdrop.yaml", "agent-1.log"}
    assert {p.name for p in e2e.root.iterdir()} <= expected_top
    assert files_under(e2e.thumbs) == set()
    # Dead-lettered messages are deleted from the pull queue in batches, about once a second.
    wait_for(lambda: e2e.depth(PULL_QUEUE) == (0, 0), 15, "the pull queue to be empty", agent.diagnose)

    # The agent keeps running: a good image dropped now still arrives.
    assert agent.alive(), agent.diagnose()
    make_image(e2e.inbox / "after.jpg", (640, 480), color=(10, 200, 90))
    wait_for((e2e.thumbs / "after.jpg").exists, 45, "a good thumbnail after the refusals", agent.diagnose)
    check_thumbnail(e2e.thumbs / "after.jpg", (640, 480), color=(10, 200, 90))
    assert files_under(e2e.thumbs) == {"after.jpg"}


def test_events_for_foreign_buckets_are_ignored_and_other_prefixes_left_for_their_agent(e2e: E2EEnv) -> None:
    e2e.write_config({"source": {"prefix": "originals/"}, "thumbnails": {"prefix": "thumbs/"}, "queues": {"max_receives": 2}})
    agent = e2e.start_agent()
    agent.wait_ready()
    body = image_bytes((400, 300))
    e2e.s3.create_bucket(Bucket="foreign-bucket")
    e2e.s3.put_object(Bucket="foreign-bucket", Key="originals/x.jpg", Body=body)
    e2e.s3.put_object(Bucket=SOURCE_BUCKET, Key="elsewhere/y.jpg", Body=body)  # outside source.prefix
    e2e.s3.put_object(Bucket=THUMB_BUCKET, Key="elsewhere/z.jpg", Body=body)  # outside thumbnails.prefix
    e2e.send(EVENTS_QUEUE, s3_event("foreign-bucket", "originals/x.jpg", size=len(body)))
    e2e.send(EVENTS_QUEUE, s3_event(SOURCE_BUCKET, "elsewhere/y.jpg", size=len(body)))
    e2e.send(EVENTS_QUEUE, s3_event(SOURCE_BUCKET, "originals", size=len(body)))  # the prefix without its slash
    e2e.send(PULL_QUEUE, s3_event("foreign-bucket", "thumbs/x.jpg", size=len(body)))
    e2e.send(PULL_QUEUE, s3_event(THUMB_BUCKET, "elsewhere/z.jpg", size=len(body)))

    # Another bucket: ignored and consumed. Another prefix (another agent's work, in a fleet): released, never
    # consumed here; after queues.max_receives it rests in the dead-letter queue, where 'dlq list' shows it.
    wait_for(
        lambda: (
            e2e.depth(EVENTS_QUEUE) == (0, 0)
            and e2e.depth(PULL_QUEUE) == (0, 0)
            and e2e.depth(EVENTS_DLQ)[0] == 2
            and e2e.depth(PULL_DLQ)[0] == 1
        ),
        120,
        "the foreign bucket's events consumed, the other prefixes' dead-lettered",
        agent.diagnose,
    )
    assert not e2e.keys(THUMB_BUCKET, "thumbs/"), "something foreign was thumbnailed"
    assert files_under(e2e.thumbs) == set()
    log = agent.log()
    assert "ignored event for bucket foreign-bucket" in log
    assert "elsewhere/y.jpg is outside source.prefix 'originals/'" in log
    assert "elsewhere/z.jpg is outside thumbnails.prefix 'thumbs/'" in log
    assert "another agent's work, left on the queue for it" in log

    make_image(e2e.inbox / "mine.jpg", (640, 480), color=(200, 60, 60))
    wait_for((e2e.thumbs / "mine.jpg").exists, 45, "the thumbnail of our own image", agent.diagnose)
    check_thumbnail(e2e.thumbs / "mine.jpg", (640, 480), color=(200, 60, 60))
    assert set(e2e.keys(SOURCE_BUCKET, "originals/")) == {"originals/mine.jpg"}
    assert set(e2e.keys(THUMB_BUCKET, "thumbs/")) == {"thumbs/mine.jpg"}
    assert files_under(e2e.thumbs) == {"mine.jpg"}


def test_malformed_messages_are_dead_lettered_with_a_reason(e2e: E2EEnv) -> None:
    agent = e2e.start_agent()
    agent.wait_ready()
    bad_events = ["{not json", "[1, 2, 3]", json.dumps({"Records": "nope"}), json.dumps({"Records": [{"s3": {}}]})]
    for body in bad_events:
        e2e.send(EVENTS_QUEUE, body)
    e2e.send(EVENTS_QUEUE, {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": SOURCE_BUCKET})  # fine: deleted
    e2e.send(PULL_QUEUE, "definitely not JSON")

    dead = e2e.receive_all(EVENTS_DLQ, expect=len(bad_events))
    assert sorted(m["Body"] for m in dead) == sorted(bad_events), agent.diagnose()
    reasons = {m["Body"]: reason(m) for m in dead}
    assert "JSON" in reasons["{not json"]
    assert reasons["[1, 2, 3]"]
    assert "Records" in reasons[json.dumps({"Records": "nope"})]
    pulled_dead = e2e.receive_all(PULL_DLQ, expect=1)
    assert [m["Body"] for m in pulled_dead] == ["definitely not JSON"]
    assert "JSON" in reason(pulled_dead[0])
    wait_for(lambda: e2e.depth(EVENTS_QUEUE) == (0, 0), 30, "the events queue to be empty", agent.diagnose)
    assert e2e.receive_all(EVENTS_DLQ, expect=1, timeout=2) == [], "the test event was dead-lettered"

    assert agent.alive(), agent.diagnose()
    make_image(e2e.inbox / "fine.png", (300, 300), color=(90, 90, 20))
    wait_for((e2e.thumbs / "fine.png.jpg").exists, 45, "a good thumbnail after the bad messages", agent.diagnose)
    check_thumbnail(e2e.thumbs / "fine.png.jpg", (300, 300), color=(90, 90, 20))
