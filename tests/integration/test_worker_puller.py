"""ThumbnailWorker, ThumbnailPuller and QueueConsumer in-process, against the moto server over HTTP."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import botocore.exceptions as bx
import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig
from PIL import Image

from agent.cloud.clients import Backend
from agent.cloud.provision import Provisioner
from agent.config.loader import parse_config
from agent.config.model import Config
from agent.errors import ItemError, OfflineError, TransientError, UnsafeKeyError
from agent.pipeline.consumer import NAME_ATTR, REASON_ATTR, START_VISIBILITY, QueueConsumer
from agent.pipeline.puller import ThumbnailPuller
from agent.pipeline.worker import ThumbnailWorker
from agent.service.runtime import queue_urls
from agent.state.status import Status
from tests.support import wait_for

Message = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------------------


def jpeg(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (180, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noise_png(size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def s3_event(bucket: str, key: str, *, size: int = 1, etag: str = "0" * 32, name: str = "ObjectCreated:Put") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": name,
                    "s3": {
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {"key": quote_plus(key, safe=""), "size": size, "eTag": etag},
                    },
                }
            ]
        }
    )


def sns_wrap(body: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": body,
            "Timestamp": "2024-01-01T00:00:00.000Z",
        }
    )


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@dataclass
class Urls:
    events: str
    events_dlq: str
    pull: str
    pull_dlq: str


@dataclass
class Stack:
    cfg: Config
    backend: Backend
    status: Status
    urls: Urls
    root: Path

    @property
    def s3(self) -> Any:
        return self.backend.s3

    @property
    def sqs(self) -> Any:
        return self.backend.sqs

    @property
    def thumbs(self) -> Path:
        return Path(self.cfg.local.thumbnails_dir)

    def worker(self) -> ThumbnailWorker:
        return ThumbnailWorker(self.cfg, self.backend, self.status, self.root / "work")

    def puller(self) -> ThumbnailPuller:
        return ThumbnailPuller(self.cfg, self.backend, self.status)

    def depth(self, url: str) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def receive(self, url: str, expect: int, timeout: float = 20.0, *, delete: bool = True) -> list[Message]:
        """Up to ``expect`` messages (waiting at most ``timeout``), S3 test events skipped."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            resp = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"], AttributeNames=["All"]
            )
            for msg in resp.get("Messages", []):
                if delete or "s3:TestEvent" in msg["Body"]:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
                if "s3:TestEvent" not in msg["Body"]:
                    got.append(msg)
        return got

    def thumb_keys(self) -> set[str]:
        resp = self.s3.list_objects_v2(Bucket=self.cfg.thumbnails.bucket)
        return {o["Key"] for o in resp.get("Contents", [])}


def make_stack(moto_url: str, root: Path, extra: dict[str, Any] | None = None) -> Stack:
    data: dict[str, Any] = {
        "backend": {"endpoint_url": moto_url, "addressing_style": "path", "max_attempts": 2},
        "watch": {"folders": [str(root / "inbox")]},
        "local": {"thumbnails_dir": str(root / "thumbs"), "state_dir": str(root / "state")},
        "queues": {"wait_seconds": 1, "visibility_timeout": 30},
        "worker": {"concurrency": 2},
    }
    for section, values in (extra or {}).items():
        data[section] = {**data.get(section, {}), **values}
    cfg = parse_config(data, origin="test")
    backend = Backend(cfg.backend, endpoint_url=moto_url, local=False, pool_size=16)
    Provisioner(cfg, backend).setup()
    found = queue_urls(cfg, backend)
    assert found.events and found.pull and found.events_dlq and found.pull_dlq
    urls = Urls(found.events, found.events_dlq, found.pull, found.pull_dlq)
    for url in (urls.events, urls.pull):
        backend.sqs.purge_queue(QueueUrl=url)  # drop the s3:TestEvent that setting up notifications sends
    return Stack(cfg, backend, Status(cfg.roles), urls, root)


@pytest.fixture()
def stack(moto_url: str, tmp_path: Path) -> Stack:
    return make_stack(moto_url, tmp_path)


@contextmanager
def consuming(
    stack: Stack,
    url: str,
    dlq: str | None,
    handle: Callable[[Message], None],
    *,
    concurrency: int = 2,
    visibility: int = 30,
    name: str = "test",
    sqs: Any = None,
    receiver: Any = None,
    start_visibility: int = START_VISIBILITY,
    triage: Any = None,
) -> Iterator[QueueConsumer]:
    consumer = QueueConsumer(
        name=name,
        sqs=sqs or stack.sqs,
        receiver=receiver,
        start_visibility=start_visibility,
        queue_url=url,
        dlq_url=dlq,
        handle=handle,
        describe=lambda m: str(m.get("MessageId")),
        concurrency=concurrency,
        visibility_timeout=visibility,
        wait_seconds=1,
        status=stack.status,
        triage=triage,
    )
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        consumer.join(timeout=20)


# --- the worker -------------------------------------------------------------------------------------------------


def test_redelivered_event_makes_one_thumbnail(stack: Stack) -> None:
    key = "r/été 1.jpg"
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key=key, Body=jpeg((1200, 800)))
    etag = stack.s3.head_object(Bucket=stack.cfg.source.bucket, Key=key)["ETag"].strip('"')
    (event,) = stack.receive(stack.urls.events, expect=1)
    worker = stack.worker()
    worker.handle_message(event)
    worker.handle_message(event)  # redelivered
    worker.handle_message({**event, "Body": sns_wrap(event["Body"])})  # and once more, wrapped by SNS
    assert stack.status.counts["thumbnailed"] == 1
    assert stack.status.counts["skipped"] == 2
    assert stack.thumb_keys() == {key}
    head = stack.s3.head_object(Bucket=stack.cfg.thumbnails.bucket, Key=key)
    assert head["Metadata"]["source-etag"] == etag
    assert head["Metadata"]["source-key"].isascii()
    with Image.open(io.BytesIO(stack.s3.get_object(Bucket=stack.cfg.thumbnails.bucket, Key=key)["Body"].read())) as im:
        assert im.size == (256, 171)
    # One thumbnail write: one event on the pull queue.
    assert len(stack.receive(stack.urls.pull, expect=2, timeout=3)) == 1


def test_the_same_bytes_uploaded_again_are_not_pending(stack: Stack) -> None:
    """A second upload of identical content (a rescan, a second agent) is newer than its thumbnails but done."""
    body = jpeg((640, 480))
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="again/a.jpg", Body=body)
    (event,) = stack.receive(stack.urls.events, expect=1)
    worker = stack.worker()
    worker.handle_message(event)
    assert worker.pending() == (set(), set())
    time.sleep(1.1)  # S3 timestamps have one-second resolution
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="again/a.jpg", Body=body)
    assert worker.pending() == (set(), set())  # was: "missing" for ever, so sync said UNFINISHED on every run
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="again/a.jpg", Body=jpeg((640, 480), (10, 200, 10)))
    assert worker.pending() == ({"again/a.jpg"}, set())  # new content: its thumbnail is out of date


def test_multipart_double_event_makes_one_thumbnail_write(stack: Stack) -> None:
    """moto sends ObjectCreated:Put and ObjectCreated:CompleteMultipartUpload; handled at once by two job slots."""
    data = noise_png((1550, 1550))
    src = stack.root / "big.png"
    src.write_bytes(data)
    key = "mp/big.png"
    stack.s3.upload_file(
        str(src),
        stack.cfg.source.bucket,
        key,
        Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, use_threads=False),
    )
    etag = stack.s3.head_object(Bucket=stack.cfg.source.bucket, Key=key)["ETag"].strip('"')
    assert etag.endswith("-2")
    wait_for(lambda: stack.depth(stack.urls.events)[0] == 2, 10, "both events of the multipart upload")

    worker = stack.worker()
    with consuming(stack, stack.urls.events, stack.urls.events_dlq, worker.handle_message, concurrency=2) as consumer:
        wait_for(lambda: consumer.outcome.ok + consumer.outcome.dead_lettered + consumer.outcome.retried >= 2, 30, "both events")
        wait_for(lambda: stack.depth(stack.urls.events) == (0, 0), 10, "the events to be deleted")
    assert consumer.outcome.ok == 2
    assert stack.status.counts["thumbnailed"] == 1, stack.status.counts
    assert stack.status.counts["skipped"] == 1, stack.status.counts
    assert stack.thumb_keys() == {"mp/big.png.jpg"}
    meta = stack.s3.head_object(Bucket=stack.cfg.thumbnails.bucket, Key="mp/big.png.jpg")["Metadata"]
    assert meta["source-etag"] == etag
    assert len(stack.receive(stack.urls.pull, expect=2, timeout=3)) == 1, "the thumbnail was written more than once"


def test_worker_ignores_foreign_buckets_and_prefixes(moto_url: str, tmp_path: Path) -> None:
    stack = make_stack(moto_url, tmp_path, {"source": {"prefix": "originals/"}, "thumbnails": {"prefix": "thumbs/"}})
    body = jpeg()
    stack.s3.create_bucket(Bucket="foreign-bucket")
    stack.s3.put_object(Bucket="foreign-bucket", Key="originals/x.jpg", Body=body)
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="elsewhere/y.jpg", Body=body)
    stack.receive(stack.urls.events, expect=1, timeout=2)  # whatever moto delivered for the object outside the prefix
    bodies = [
        s3_event("foreign-bucket", "originals/x.jpg"),
        s3_event(stack.cfg.source.bucket, "originals/"),  # the prefix itself
        s3_event(stack.cfg.source.bucket, "originals/z.jpg", name="ObjectRemoved:Delete"),
    ]
    for b in bodies:
        stack.sqs.send_message(QueueUrl=stack.urls.events, MessageBody=b)
    # Another prefix of our bucket is another agent's work (a fleet): released for it, never consumed here.
    stack.sqs.send_message(QueueUrl=stack.urls.events, MessageBody=s3_event(stack.cfg.source.bucket, "elsewhere/y.jpg"))
    worker = stack.worker()
    with consuming(stack, stack.urls.events, stack.urls.events_dlq, worker.handle_message) as consumer:
        wait_for(lambda: consumer.outcome.ok >= len(bodies), 30, "the foreign events")
        wait_for(lambda: consumer.outcome.retried >= 1, 30, "the other prefix's event to be released")
        wait_for(lambda: stack.depth(stack.urls.events) == (0, 1), 10, "only the released event left")
    assert consumer.outcome.dead_lettered == 0
    assert stack.depth(stack.urls.events_dlq) == (0, 0)
    assert stack.status.counts["ignored"] == 2  # the foreign bucket and the prefix itself (a delete is skipped)
    assert stack.status.counts["thumbnailed"] == 0
    assert stack.thumb_keys() == set()


def test_shared_bucket_worker_never_thumbnails_its_own_output(moto_url: str, tmp_path: Path) -> None:
    stack = make_stack(
        moto_url,
        tmp_path,
        {
            "source": {"bucket": "shared-bucket", "prefix": "originals/"},
            "thumbnails": {"bucket": "shared-bucket", "prefix": "thumbs/"},
        },
    )
    worker, puller = stack.worker(), stack.puller()
    with (
        consuming(stack, stack.urls.events, stack.urls.events_dlq, worker.handle_message, name="w"),
        consuming(stack, stack.urls.pull, stack.urls.pull_dlq, puller.handle_message, name="p"),
    ):
        stack.s3.put_object(Bucket="shared-bucket", Key="originals/a/b.jpg", Body=jpeg((800, 400)))
        wait_for((stack.thumbs / "a/b.jpg").exists, 30, "the pulled thumbnail")
        # An event naming our own output, as a store that ignores prefix filters would send it.
        stack.sqs.send_message(QueueUrl=stack.urls.events, MessageBody=s3_event("shared-bucket", "thumbs/a/b.jpg"))
        wait_for(lambda: stack.depth(stack.urls.events) == (0, 0) and stack.depth(stack.urls.pull) == (0, 0), 20, "idle queues")
        time.sleep(1.0)
    keys = {o["Key"] for o in stack.s3.list_objects_v2(Bucket="shared-bucket")["Contents"]}
    assert keys == {"originals/a/b.jpg", "thumbs/a/b.jpg"}
    assert files_under(stack.thumbs) == {"a/b.jpg"}
    assert stack.status.counts["thumbnailed"] == 1


def test_malformed_event_messages_are_dead_lettered(stack: Stack) -> None:
    bodies = ["{not json", "[]", json.dumps({"Records": [{"s3": {}}]}), sns_wrap("{also not json")]
    for b in bodies:
        stack.sqs.send_message(QueueUrl=stack.urls.events, MessageBody=b)
    stack.sqs.send_message(QueueUrl=stack.urls.events, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    worker = stack.worker()
    with consuming(stack, stack.urls.events, stack.urls.events_dlq, worker.handle_message) as consumer:
        wait_for(lambda: consumer.outcome.dead_lettered >= len(bodies) and consumer.outcome.ok >= 1, 30, "the messages")
        wait_for(lambda: stack.depth(stack.urls.events) == (0, 0), 10, "the queue to be empty")
    dead = stack.receive(stack.urls.events_dlq, expect=len(bodies) + 1, timeout=3)
    assert sorted(m["Body"] for m in dead) == sorted(bodies)
    for m in dead:
        assert m["MessageAttributes"][REASON_ATTR]["StringValue"]
    assert consumer.outcome.retried == 0


# --- the puller -------------------------------------------------------------------------------------------------

UNSAFE_KEYS = [
    "../../escape.jpg",
    "a/../../x.jpg",
    "/abs/escape.jpg",
    "..\\..\\backslash.jpg",
    "sub\\..\\..\\x.jpg",
    "./dot.jpg",
    "a//double.jpg",
    "nul\x00byte.jpg",
]


def test_puller_refuses_keys_outside_the_folder(stack: Stack, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    stack.thumbs.mkdir(parents=True)
    (stack.thumbs / "link").symlink_to(outside, target_is_directory=True)  # a folder inside that leads out
    keys = [*UNSAFE_KEYS, "link/evil.jpg", f"..{'/..' * 3}{tmp_path}/abs-escape.jpg"]
    body = jpeg((64, 64))
    puller = stack.puller()
    for key in keys:
        with pytest.raises(UnsafeKeyError):
            puller.pull(key, key)
    for key in keys:
        stack.sqs.send_message(QueueUrl=stack.urls.pull, MessageBody=s3_event(stack.cfg.thumbnails.bucket, key, size=len(body)))
    with consuming(stack, stack.urls.pull, stack.urls.pull_dlq, puller.handle_message) as consumer:
        wait_for(lambda: consumer.outcome.dead_lettered >= len(keys), 30, "every unsafe key to be dead-lettered")
        wait_for(lambda: stack.depth(stack.urls.pull) == (0, 0), 10, "the pull queue to be empty")
    dead = stack.receive(stack.urls.pull_dlq, expect=len(keys))
    assert len(dead) == len(keys)
    for m in dead:
        attrs = m["MessageAttributes"]
        assert "refused key" in attrs[REASON_ATTR]["StringValue"]
        assert attrs[NAME_ATTR]["StringValue"]
    assert consumer.outcome.ok == 0
    assert list(outside.iterdir()) == []
    assert not (tmp_path.parent / "escape.jpg").exists() and not (tmp_path / "x.jpg").exists()
    assert not (tmp_path / "abs-escape.jpg").exists() and not Path("/abs/escape.jpg").exists()
    assert files_under(stack.thumbs) == set()
    assert {f.name for f in stack.status.failures} >= {"../../escape.jpg", "link/evil.jpg"}


def test_puller_reconcile_skips_unsafe_objects_and_pulls_the_rest(stack: Stack, tmp_path: Path) -> None:
    body = jpeg((64, 48))
    bad = ["../../escape.jpg", "a/../../x.jpg", "/abs.jpg", "back\\slash.jpg"]
    for key in [*bad, "good/one.jpg"]:
        stack.s3.put_object(Bucket=stack.cfg.thumbnails.bucket, Key=key, Body=body)
    counts = stack.puller().reconcile()
    assert counts == {"pulled": 1, "skipped": 0, "failed": len(bad)}
    assert files_under(stack.thumbs) == {"good/one.jpg"}
    assert not (tmp_path.parent / "escape.jpg").exists() and not (tmp_path / "x.jpg").exists()
    assert (stack.thumbs / "good/one.jpg").read_bytes() == body


def test_a_full_disk_is_a_reported_failure_and_the_next_reconcile_pulls_it(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    body = jpeg((64, 48))
    for key in ("disk/a.jpg", "disk/b.jpg"):
        stack.s3.put_object(Bucket=stack.cfg.thumbnails.bucket, Key=key, Body=body)
    real_mkstemp = tempfile.mkstemp

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    counts = stack.puller().reconcile()  # raised OSError out of the rescan thread before: the rescans ended
    assert counts == {"pulled": 0, "skipped": 0, "failed": 2}
    reasons = {f.name: f.reason for f in stack.status.failures}
    assert set(reasons) == {"disk/a.jpg", "disk/b.jpg"}
    assert all("No space left on device" in r and "local.thumbnails_dir" in r for r in reasons.values()), reasons
    assert not [p for p in stack.thumbs.rglob("*") if p.is_file()]  # no partial files

    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)  # space freed: the next rescan gets them
    assert stack.puller().reconcile() == {"pulled": 2, "skipped": 0, "failed": 0}
    assert (stack.thumbs / "disk/a.jpg").read_bytes() == body


# --- the consumer -----------------------------------------------------------------------------------------------


@pytest.fixture()
def plain_queue(stack: Stack) -> tuple[str, str]:
    """A queue and a dead-letter queue of their own (no redrive policy: only the consumer dead-letters)."""
    dlq = stack.sqs.create_queue(QueueName="consumer-test-dlq")["QueueUrl"]
    url = stack.sqs.create_queue(QueueName="consumer-test", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    return url, dlq


def test_consumer_success_deletes(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, dlq = plain_queue
    calls: list[str] = []
    for i in range(12):  # more than one delete batch
        stack.sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    with consuming(stack, url, dlq, lambda m: calls.append(m["Body"]), concurrency=3, visibility=10) as consumer:
        wait_for(lambda: len(calls) >= 12, 30, "every message handled")
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the queue to be empty")
    assert sorted(calls) == sorted(f"m{i}" for i in range(12))
    assert consumer.outcome.ok == 12
    assert stack.depth(dlq) == (0, 0)


def test_consumer_item_error_dead_letters_at_once(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, dlq = plain_queue
    calls: list[str] = []

    def handle(m: Message) -> None:
        calls.append(m["Body"])
        raise ItemError("this one is broken: reason X")

    stack.sqs.send_message(QueueUrl=url, MessageBody="poison")
    with consuming(stack, url, dlq, handle) as consumer:
        dead = stack.receive(dlq, expect=1, timeout=20)
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the message to leave the queue")
    assert [m["Body"] for m in dead] == ["poison"]
    assert dead[0]["MessageAttributes"][REASON_ATTR]["StringValue"] == "this one is broken: reason X"
    assert calls == ["poison"], "an item error must not be retried"
    assert consumer.outcome.dead_lettered == 1


def test_consumer_transient_error_keeps_the_message(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, dlq = plain_queue
    receives: list[str] = []
    failed_once = threading.Event()

    def handle(m: Message) -> None:
        receives.append(m["Attributes"]["ApproximateReceiveCount"])
        if len(receives) == 1:
            failed_once.set()
            raise TransientError("backend hiccup")

    stack.sqs.send_message(QueueUrl=url, MessageBody="retry me")
    with consuming(stack, url, dlq, handle, visibility=30) as consumer:
        wait_for(failed_once.is_set, 20, "the first attempt")
        time.sleep(1.5)  # past the next delete flush
        assert stack.depth(url) == (0, 1), "the failed message must stay in the queue, hidden for a while"
        assert stack.depth(dlq) == (0, 0)
        wait_for(lambda: len(receives) >= 2, 30, "the message to come back")
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the message to be deleted after the retry")
    assert receives[:2] == ["1", "2"]
    assert consumer.outcome.retried == 1 and consumer.outcome.ok == 1
    assert stack.depth(dlq) == (0, 0)


def test_consumer_extends_visibility_of_a_slow_job(stack: Stack, plain_queue: tuple[str, str]) -> None:
    url, dlq = plain_queue
    visibility = 6  # the heartbeat extends it every visibility/3 s
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(m: Message) -> None:
        calls.append(m["Body"])
        started.set()
        release.wait(30)

    stack.sqs.send_message(QueueUrl=url, MessageBody="slow")
    with consuming(stack, url, dlq, slow, concurrency=1, visibility=visibility):
        wait_for(started.is_set, 20, "the slow job to start")
        t0 = time.monotonic()
        stolen: list[Message] = []
        while time.monotonic() - t0 < visibility + 4:  # well past the original visibility timeout
            resp = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=1)
            stolen.extend(resp.get("Messages", []))
            time.sleep(0.25)
        release.set()
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the slow message to be deleted")
    assert stolen == [], "a second consumer received a message whose job was still running"
    assert calls == ["slow"]


class Flaky:
    """A boto3 client whose ``method`` fails ``times`` times with a dropped connection; ``after_call``: the request
    reaches the backend first (the response is what is lost)."""

    def __init__(self, client: Any, method: str, *, times: int = 1, after_call: bool = False) -> None:
        self.client, self.method, self.left, self.after_call = client, method, times, after_call
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name != self.method:
            return real

        def flaky(**kwargs: Any) -> Any:
            if self.left > 0:
                self.left -= 1
                self.failed += 1
                if self.after_call:
                    real(**kwargs)
                raise bx.ConnectionClosedError(endpoint_url="http://127.0.0.1:1")
            return real(**kwargs)

        return flaky


def test_consumer_lost_receive_response_hides_messages_for_seconds_only(stack: Stack, plain_queue: tuple[str, str]) -> None:
    """Issue 14 item 3: the backend received the receive and hid the message, its answer was lost on the link.
    The message must be back in a few seconds, not after the whole visibility timeout (120 s by default)."""
    url, dlq = plain_queue
    handled = threading.Event()
    stack.sqs.send_message(QueueUrl=url, MessageBody="lost once")
    receiver = Flaky(stack.sqs, "receive_message", after_call=True)
    started = time.monotonic()
    with consuming(stack, url, dlq, lambda m: handled.set(), visibility=120, receiver=receiver, start_visibility=3):
        wait_for(handled.is_set, 30, "the message whose receive answer was lost to be handled")
        took = time.monotonic() - started
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the message to be deleted")
    assert receiver.failed == 1
    assert took < 20, f"took {took:.1f} s"


def test_consumer_extends_a_started_job_beyond_the_short_receive_visibility(stack: Stack, plain_queue: tuple[str, str]) -> None:
    """Messages arrive with a short visibility; once a job starts it is extended to the full one at once, not
    only at the heartbeat's visibility/3 tick: a job longer than the short visibility is never handed out twice."""
    url, dlq = plain_queue
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(m: Message) -> None:
        calls.append(m["Body"])
        started.set()
        release.wait(30)

    stack.sqs.send_message(QueueUrl=url, MessageBody="slow")
    with consuming(stack, url, dlq, slow, concurrency=1, visibility=60, start_visibility=2):
        wait_for(started.is_set, 20, "the slow job to start")
        t0 = time.monotonic()
        stolen: list[Message] = []
        while time.monotonic() - t0 < 7:  # well past the 2 s of the receive
            resp = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=1)
            stolen.extend(resp.get("Messages", []))
            time.sleep(0.25)
        release.set()
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the slow message to be deleted")
    assert stolen == [], "a second consumer received a message whose job was still running"
    assert calls == ["slow"]


def test_consumer_job_failed_by_the_link_comes_back_soon_even_if_the_postpone_was_lost(
    stack: Stack, plain_queue: tuple[str, str]
) -> None:
    """A job failed because the link went down, and so did the call that would have made its message visible
    again: the consumer sends it again until it gets through, so the message is back within seconds of the
    link's return instead of at the end of its extended visibility."""
    url, dlq = plain_queue
    receives: list[str] = []

    def handle(m: Message) -> None:
        receives.append(m["Attributes"]["ApproximateReceiveCount"])
        if len(receives) == 1:
            time.sleep(2.5)  # long enough for the heartbeat to extend it to the full visibility first
            raise OfflineError("cannot reach the backend (test)")

    stack.sqs.send_message(QueueUrl=url, MessageBody="offline once")
    sqs = Flaky(stack.sqs, "change_message_visibility")
    started = time.monotonic()
    with consuming(stack, url, dlq, handle, visibility=120, sqs=sqs, receiver=stack.sqs, start_visibility=2):
        wait_for(lambda: len(receives) >= 2, 40, "the message to come back after the link failure")
        took = time.monotonic() - started
        wait_for(lambda: stack.depth(url) == (0, 0), 10, "the message to be deleted after the retry")
    assert sqs.failed == 1
    assert took < 25, f"took {took:.1f} s"


def test_worker_refuses_an_image_larger_than_its_memory_budget_and_thumbnails_the_rest(moto_url: str, tmp_path: Path) -> None:
    """Issue 14 item 16: a job whose estimated decode memory exceeds worker.max_memory_mb could never run: it fails
    as a bad item (marker, status, log naming the key) with a reason that says how to fix it; a small one next to
    it is thumbnailed. The budget (32 MB) is shared by the worker's jobs."""
    stack = make_stack(moto_url, tmp_path, {"worker": {"max_memory_mb": 32}})
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="mem/huge.png", Body=noise_png((4000, 3000)))
    stack.s3.put_object(Bucket=stack.cfg.source.bucket, Key="mem/small.jpg", Body=jpeg((800, 600)))
    worker = stack.worker()
    assert worker.budget.limit == 32 * (1 << 20)
    with pytest.raises(ItemError) as caught:
        worker.process("mem/huge.png")
    assert "4000x3000" in str(caught.value) and "worker.max_memory_mb" in str(caught.value)
    assert worker.process("mem/small.jpg") == "thumbnailed"
    failures = stack.status.snapshot()["failures"]
    assert [f["name"] for f in failures] == ["mem/huge.png"], failures
    assert "worker.max_memory_mb" in failures[0]["reason"]
    assert stack.thumb_keys() == {"mem/small.jpg", worker.layout.failure_key("mem/huge.png")}
    assert worker.budget.in_use == 0


def test_a_drain_without_heartbeat_receives_with_the_full_visibility(stack: Stack, plain_queue: tuple[str, str]) -> None:
    """sync's drain() runs no heartbeat to extend a short receive visibility: its messages must be hidden for the
    whole visibility_timeout, or a slow job's message would go to a second consumer while it runs."""
    url, dlq = plain_queue
    started = threading.Event()
    stack.sqs.send_message(QueueUrl=url, MessageBody="slow in a drain")
    consumer = QueueConsumer(
        name="drain-test",
        sqs=stack.sqs,
        queue_url=url,
        dlq_url=dlq,
        handle=lambda m: (started.set(), time.sleep(4)),
        describe=lambda m: str(m.get("MessageId")),
        concurrency=1,
        visibility_timeout=60,
        wait_seconds=1,
        status=stack.status,
        start_visibility=1,
    )
    drainer = threading.Thread(target=consumer.drain, kwargs={"deadline": time.monotonic() + 30}, name="drain-test")
    drainer.start()
    try:
        wait_for(started.is_set, 20, "the drain's job to start")
        time.sleep(1.5)  # past the short visibility
        stolen = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1, VisibilityTimeout=1)
        assert stolen.get("Messages", []) == [], "a second consumer received a message whose drain job was running"
    finally:
        drainer.join(30)
        consumer.join(timeout=10)
    assert consumer.outcome.ok == 1
