"""backend.max_bandwidth (one token bucket for the whole agent) and watch.pause_hours."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.config.values import in_window, parse_rate, parse_window
from agent.errors import ConfigError
from agent.pipeline import bandwidth
from agent.pipeline.bandwidth import PauseSchedule, ThrottledReader, TokenBucket, limiter_for
from agent.pipeline.uploader import Uploader
from agent.state.journal import Journal
from agent.state.status import Status

MB = 1_000_000


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("2MB/s", 2_000_000),
        ("2 MB/s", 2_000_000),
        ("500KB/s", 500_000),
        ("500k", 500_000),
        ("1MiB/s", 1_048_576),
        ("8Mbit/s", 1_000_000),
        ("8mbps", 1_000_000),
        ("1.5GB/s", 1_500_000_000),
        ("2000000", 2_000_000),
        (2_000_000, 2_000_000),
    ],
)
def test_rates(text: str | int, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "2XB/s", "-1MB/s", "100", "MB/s", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_windows() -> None:
    assert parse_window("09:00-17:00") == (540, 1020)
    assert parse_window(" 22:30 - 6:00 ") == (1350, 360)
    for bad in ("9-17", "25:00-26:00", "09:00-09:00", "09:60-10:00"):
        with pytest.raises(ValueError):
            parse_window(bad)
    day = parse_window("09:00-17:00")
    assert in_window(day, clock(9, 0)) and in_window(day, clock(16, 59)) and not in_window(day, clock(17, 0))
    night = parse_window("22:00-06:00")
    assert in_window(night, clock(23, 0)) and in_window(night, clock(5, 59)) and not in_window(night, clock(12, 0))


def test_config_keys() -> None:
    cfg = parse_config({"backend": {"max_bandwidth": 2_000_000}, "watch": {"pause_hours": "09:00-17:00"}})
    assert cfg.backend.max_bandwidth == "2000000"
    assert cfg.watch.pause_hours == ["09:00-17:00"]
    with pytest.raises(ConfigError) as err:
        parse_config({"backend": {"max_bandwidth": "quick"}, "watch": {"pause_hours": ["9 to 5"]}})
    text = "\n".join(err.value.problems)
    assert "backend.max_bandwidth: 'quick' is not a rate" in text
    assert "watch.pause_hours: [0] '9 to 5' is not a time window" in text


def test_bucket_holds_the_rate() -> None:
    bucket = TokenBucket(4 * MB)  # burst: a quarter second's worth
    started = time.monotonic()
    bucket.consume(5 * MB)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.6, elapsed  # (5 MB - 1 MB burst) / 4 MB/s


def test_one_bucket_is_shared_by_concurrent_transfers() -> None:
    bucket = TokenBucket(4 * MB)
    bucket.consume(bucket.capacity)  # start empty
    started = time.monotonic()
    threads = [threading.Thread(target=bucket.consume, args=(2 * MB,), name=f"transfer-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, elapsed  # 4 MB at 4 MB/s in total, not 2 MB each at full speed


def test_stop_lifts_the_cap() -> None:
    bucket = TokenBucket(64 * 1024)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    bucket.consume(10 * MB, stop=stop)
    assert time.monotonic() - started < 0.5


def test_reader_charges_each_byte_once() -> None:
    charged: list[int] = []

    class Counting(TokenBucket):
        def consume(self, n: int, *, stop: threading.Event | None = None) -> None:
            charged.append(n)

    data = bytes(range(256)) * 100
    reader = ThrottledReader(io.BytesIO(data), Counting(MB))
    assert reader.read(1000) == data[:1000]
    reader.seek(0)  # botocore rewinds after hashing
    assert reader.read() == data
    reader.seek(0, 2)
    assert reader.tell() == len(data)
    assert sum(charged) == len(data)


def test_limiter_is_shared_per_rate() -> None:
    assert limiter_for(None) is None
    a = limiter_for("2MB/s")
    assert a is not None and a is limiter_for("2000000") and a.rate == 2 * MB
    assert limiter_for("3MB/s") is not a


def test_pause_schedule() -> None:
    s = PauseSchedule.parse(["09:00-12:00", "13:00-17:00"])
    assert s.active(datetime(2026, 1, 5, 10, 0)) == "09:00-12:00"
    assert s.active(datetime(2026, 1, 5, 12, 30)) is None
    assert s.active(datetime(2026, 1, 5, 16, 59)) == "13:00-17:00"


# --- the uploader under a cap and a schedule (a fake S3 client: no network in unit tests) ----------------


class FakeS3:
    def __init__(self) -> None:
        self.put: dict[str, int] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_kw: Any) -> dict[str, str]:  # noqa: N803
        self.put[Key] = len(Body)
        return {"ETag": '"x"'}

    def upload_fileobj(self, fileobj: Any, bucket: str, key: str, **_kw: Any) -> None:
        size = 0
        while chunk := fileobj.read(1 << 20):
            size += len(chunk)
        self.put[key] = size

    def head_object(self, **_kw: Any) -> dict[str, str]:
        return {"ETag": '"x-2"'}

    # Large files go in resumable parts (agent.pipeline.multipart).
    def create_multipart_upload(self, *, Key: str, **_kw: Any) -> dict[str, str]:  # noqa: N803
        self.put[Key] = 0
        return {"UploadId": "u1"}

    def upload_part(self, *, Key: str, Body: Any, **_kw: Any) -> dict[str, str]:  # noqa: N803
        while chunk := Body.read(1 << 20):
            self.put[Key] += len(chunk)
        return {"ETag": '"p"'}

    def complete_multipart_upload(self, **_kw: Any) -> dict[str, str]:
        return {"ETag": '"x-2"'}

    def get_paginator(self, _name: str) -> Any:
        class Pages:
            def paginate(self, **_kw: Any) -> list[dict[str, Any]]:
                return [{"Contents": []}]

        return Pages()


class FakeBackend:
    def __init__(self) -> None:
        self.s3 = FakeS3()


def uploader(tmp_path: Path, **watch: Any) -> tuple[Uploader, FakeS3, Journal]:
    cfg = parse_config(
        {
            "backend": {"endpoint_url": "http://127.0.0.1:9", "max_bandwidth": "8MB/s"},
            "watch": {"folders": [str(tmp_path / "inbox")], **watch},
            "transfer": {"multipart_threshold_mb": 5},
            "local": {"thumbnails_dir": str(tmp_path / "thumbs"), "state_dir": str(tmp_path / "state")},
        }
    )
    backend = FakeBackend()
    journal = Journal(tmp_path / "journal.sqlite3")
    return Uploader(cfg, backend, Status(["uploader"]), journal), backend.s3, journal  # type: ignore[arg-type]


def test_large_upload_goes_through_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bandwidth, "_buckets", {})
    up, s3, journal = uploader(tmp_path)
    try:
        (tmp_path / "inbox").mkdir()
        big = tmp_path / "inbox" / "big.jpg"
        big.write_bytes(b"\xff" * (12 * MB))
        started = time.monotonic()
        lf = up.local_file(big)
        assert lf is not None
        assert up.upload(lf) == "uploaded"
        elapsed = time.monotonic() - started
        assert s3.put["big.jpg"] == 12 * MB
        assert 1.0 <= elapsed < 2.5, elapsed  # (12 MB - 2 MB burst) / 8 MB/s
        assert up.status.snapshot()["bytes"]["upload"] == 12 * MB
    finally:
        up.pool.shutdown()
        journal.close()


def test_small_upload_is_paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bandwidth, "_buckets", {})
    up, s3, journal = uploader(tmp_path)
    try:
        (tmp_path / "inbox").mkdir()
        for i in range(3):
            (tmp_path / "inbox" / f"{i}.jpg").write_bytes(bytes([i]) * (4 * MB))
        started = time.monotonic()
        for i in range(3):
            lf = up.local_file(tmp_path / "inbox" / f"{i}.jpg")
            assert lf is not None and up.upload(lf) == "uploaded"
        elapsed = time.monotonic() - started
        assert len(s3.put) == 3
        assert elapsed >= 1.0, elapsed  # 12 MB at 8 MB/s less the 2 MB burst
    finally:
        up.pool.shutdown()
        journal.close()


def test_pause_hours_hold_uploads_until_the_window_ends(tmp_path: Path) -> None:
    up, s3, journal = uploader(tmp_path)
    try:
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "a.jpg").write_bytes(b"\xff\xd8 not really")
        up.schedule = PauseSchedule.parse(["00:00-24:00"])
        assert up.held()
        assert up.reconcile() == []  # nothing submitted: the file waits, watched
        assert tmp_path / "inbox" / "a.jpg" in up.watcher._pending
        assert s3.put == {}
        up.schedule = None  # the window is over
        assert not up.held()
        futures = up.reconcile()
        assert [f.result(timeout=10) for f in futures] == ["uploaded"]
    finally:
        up.pool.shutdown()
        journal.close()


def test_a_rescan_during_a_backlog_does_not_queue_the_same_files_again(tmp_path: Path) -> None:
    """On a capped link the queue outlives rescan_seconds: each file must still go up once, not once per rescan."""
    import threading

    up, s3, journal = uploader(tmp_path)
    gate = threading.Event()
    puts: list[str] = []
    real_put = s3.put_object

    def slow_put(**kw: Any) -> dict[str, str]:
        gate.wait(10)  # the link is busy: everything queues up behind
        puts.append(kw["Key"])
        return real_put(**kw)

    s3.put_object = slow_put  # type: ignore[method-assign]
    try:
        (tmp_path / "inbox").mkdir()
        for i in range(12):  # more than the 8 upload threads: some are queued, not started
            (tmp_path / "inbox" / f"{i}.jpg").write_bytes(bytes([i]) * 1000)
        first = up.reconcile()
        time.sleep(0.3)
        second = up.reconcile()  # the periodic rescan, while the backlog is still there
        assert len(first) == 12 and second == [], (len(first), len(second))  # queued or uploading: not queued again
        gate.set()
        outcomes = [f.result(timeout=20) for f in first + second]
        assert sorted(puts) == sorted(f"{i}.jpg" for i in range(12)), puts  # each file uploaded exactly once
        assert outcomes.count("uploaded") == 12
    finally:
        gate.set()
        up.pool.shutdown()
        journal.close()
