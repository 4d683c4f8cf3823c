"""Poll mode's listing merge, shards, leases and failure markers (in-process moto)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from agent.config import parse_config
from agent.pipeline.keys import Layout
from agent.pipeline.poll import Leases, clear_markers, failure_markers, in_shard, listing, thumb_times, worker_candidates


def _layout(sizes: list[int] | None = None) -> tuple[object, Layout]:
    cfg = parse_config(
        {
            "queues": {"mode": "poll"},
            "source": {"bucket": "src", "prefix": "dev/"},
            "thumbnails": {"bucket": "thm", "prefix": "t/", "sizes": sizes or [256]},
        }
    )
    return cfg, Layout.of(cfg)


def test_candidates_are_sources_with_a_missing_or_older_thumbnail_and_no_current_marker() -> None:
    _cfg, layout = _layout()
    sources = iter(
        [
            ("dev/a b+c&d=é.jpg", 100.0, "e1"),  # thumbnail newer: done
            ("dev/b.png", 100.0, "e2"),  # no thumbnail: work
            ("dev/c.jpg", 100.0, "e3"),  # thumbnail older: new content, unless the same bytes were done
            ("dev/d.jpg", 100.0, "e4"),  # thumbnail older, but the journal/HEAD says these bytes are done
            ("dev/e.jpg", 100.0, "e5"),  # failure marker as new as the source: not retried
            ("dev/f.jpg", 200.0, "e6"),  # failure marker older than the source: a new version, retried
            ("other/g.jpg", 1.0, "e7"),  # outside the prefix
        ]
    )
    times = {
        layout.thumb_key("a b+c&d=é.jpg", 256): 150.0,
        layout.thumb_key("c.jpg", 256): 50.0,
        layout.thumb_key("d.jpg", 256): 50.0,
        layout.failure_key("e.jpg"): 100.0,
        layout.failure_key("f.jpg"): 150.0,
    }
    got = list(worker_candidates(layout, sources, times, done_already=lambda rel, _e: rel == "d.jpg"))
    assert got == [("b.png", "e2"), ("c.jpg", "e3"), ("f.jpg", "e6")]


def test_shards_split_the_key_space_exactly() -> None:
    keys = [f"dev/img-{i}.jpg" for i in range(300)]
    halves = [[k for k in keys if in_shard(k, f"{n}/2")] for n in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(keys)  # every key in exactly one shard
    assert not set(halves[0]) & set(halves[1])
    assert 100 < len(halves[0]) < 200  # roughly even
    assert all(in_shard(k, None) for k in keys)


@pytest.fixture()
def s3():  # type: ignore[no-untyped-def]
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="src")
        client.create_bucket(Bucket="thm")
        yield client


def test_listing_streams_every_page_in_key_order(s3) -> None:  # type: ignore[no-untyped-def]
    for i in range(2100):  # three pages
        s3.put_object(Bucket="src", Key=f"dev/{i:05d}.jpg", Body=b"x")
    keys = [k for k, _t, _e in listing(s3, "src", "dev/", "list")]
    assert keys == sorted(keys) and len(keys) == 2100


def test_thumb_times_hold_one_size_and_the_markers(s3) -> None:  # type: ignore[no-untyped-def]
    cfg, layout = _layout([128, 512])
    for key in (layout.thumb_key("a.jpg", 128), layout.thumb_key("a.jpg", 512), layout.failure_key("b.jpg")):
        s3.put_object(Bucket="thm", Key=key, Body=b"x")
    assert set(thumb_times(s3, cfg, layout)) == {layout.thumb_key("a.jpg", 128), layout.failure_key("b.jpg")}  # type: ignore[arg-type]


def test_a_lease_is_taken_once_and_released(s3) -> None:  # type: ignore[no-untyped-def]
    cfg, layout = _layout()
    one, two = Leases(s3, cfg, layout), Leases(s3, cfg, layout)  # type: ignore[arg-type]
    assert one.probe() is True  # moto honours If-None-Match: *
    assert one.take("a b+c.jpg") is True
    assert two.take("a b+c.jpg") is False  # the other worker has it
    one.release("a b+c.jpg")
    assert two.take("a b+c.jpg") is True
    # A lease is not a thumbnail: the puller never pulls it.
    assert layout.rel_of_thumb_key(one.key("a b+c.jpg")) is None


def test_failure_markers_are_listed_and_redriven(s3) -> None:  # type: ignore[no-untyped-def]
    import json

    cfg, layout = _layout()
    s3.put_object(Bucket="thm", Key=layout.failure_key("bad one.jpg"), Body=json.dumps({"reason": "not an image"}).encode())
    rows = failure_markers(s3, cfg)  # type: ignore[arg-type]
    assert [(r["item"], r["reason"]) for r in rows] == [("dev/bad one.jpg", "not an image")]
    assert clear_markers(s3, cfg, [r["marker"] for r in rows]) == (1, [])  # type: ignore[arg-type]
    assert failure_markers(s3, cfg) == []  # type: ignore[arg-type]


def test_a_listed_job_that_another_worker_did_meanwhile_counts_as_a_duplicate(s3) -> None:  # type: ignore[no-untyped-def]
    from agent.pipeline.poll import Poller
    from agent.state.status import Status

    cfg, layout = _layout()
    s3.put_object(Bucket="src", Key="dev/a.jpg", Body=b"x")
    handed: list[str] = []

    class Handoff:
        def thumbnail(self, rel: str) -> None:
            handed.append(rel)

    class Worker:
        deleted_locally = None

        def journal_done(self, _key: str, _etag: str) -> bool:
            return False

        def has_thumbnails(self, _rel: str, _etag: str) -> bool:
            return False

    status = Status(["worker"])
    poller = Poller(cfg, s3, Handoff(), status, worker=Worker(), puller=None)  # type: ignore[arg-type]
    import threading

    assert poller.worker_pass(threading.Event()) == 1 and handed == ["a.jpg"]
    assert poller.worker_pass(threading.Event()) == 0  # still in flight: not handed over twice
    assert s3.list_objects_v2(Bucket="thm", Prefix="t/.thumbdrop-lease/")["KeyCount"] == 1
    poller.finished("a.jpg", "thumbnail", "skipped")
    assert status.counts["duplicates"] == 1
    assert s3.list_objects_v2(Bucket="thm", Prefix="t/.thumbdrop-lease/")["KeyCount"] == 0  # released
    poller.handing("b.jpg")  # an own upload being thumbnailed: the listing leaves it alone
    s3.put_object(Bucket="src", Key="dev/b.jpg", Body=b"x")
    assert poller.worker_pass(threading.Event()) == 1 and handed == ["a.jpg", "a.jpg"]
    poller.finished("b.jpg", "thumbnail", "skipped")  # not from a listing: not a duplicate
    assert status.counts["duplicates"] == 1


def test_retry_all_in_poll_mode_removes_the_failure_markers(s3) -> None:  # type: ignore[no-untyped-def]
    """The tray's 'Retry all' (control redrive) in poll mode: the markers go, no queue is asked."""
    from types import SimpleNamespace

    from agent.service.control import redrive_dead_letters

    cfg, layout = _layout()
    for name in ("x.jpg", "y z.jpg"):
        s3.put_object(Bucket="thm", Key=layout.failure_key(name), Body=b'{"reason": "bad"}')
    target = SimpleNamespace(cfg=cfg, backend=SimpleNamespace(s3=s3))  # no sqs: any queue call would fail
    out = redrive_dead_letters(target)  # type: ignore[arg-type]
    assert out["sent_back"] == 2 and out["failed"] == 0
    assert failure_markers(s3, cfg) == []  # type: ignore[arg-type]
